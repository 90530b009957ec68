"""Where work runs on a Ray cluster: node names, the workers' nice value, free ports.

What the production sweep (and the endpoint) needs of "the nodes", apart from the development
harness that starts a local multi-node cluster (:mod:`tune.devcluster`, for tests, scripts and
benchmarks; no production module imports it):

* :func:`node_label` names the node of the calling Ray worker: the name given by a custom
  resource ``singr_node_<name>`` on that node (``ray start --resources '{"singr_node_<name>": 1}'``;
  :class:`tune.devcluster.LocalCluster` gives every node one), else the node's IP and the start
  of its id;
* :data:`NICENESS_ENV` is the environment variable a raylet reads, when it starts, for its
  workers' nice value (Ray's internal config ``worker_niceness``, default 15: see
  :mod:`tune.raycompat`);
* :func:`free_ports` / :func:`free_port`: TCP ports free on a host now;
* :func:`driver_env`: what a driver's environment needs, before Ray is imported, to reach a
  cluster that listens on 127.0.0.1 only (the sweep's driver and ``singr serve``).
"""
from __future__ import annotations

import socket
from urllib.parse import urlparse

from .raycompat import WORKER_NICENESS_ENV

__all__ = ["NICENESS_ENV", "NODE_RESOURCE_PREFIX", "driver_env", "free_port", "free_ports", "node_label"]

NODE_RESOURCE_PREFIX = "singr_node_"  # a node's custom resource that names it (see node_label)
NICENESS_ENV = WORKER_NICENESS_ENV  # the workers' nice value, read by a raylet when it starts (Ray's default 15)


def node_label() -> str:
    """A readable name for the node this Ray worker runs on."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    try:
        for n in ray.nodes():
            if n.get("NodeID") == node_id:
                names = [k[len(NODE_RESOURCE_PREFIX):] for k in (n.get("Resources") or {})
                         if k.startswith(NODE_RESOURCE_PREFIX)]
                if names:
                    return names[0]
                return f"{n.get('NodeManagerAddress', '?')}/{node_id[:8]}"
    except Exception:  # noqa: BLE001 - the state lookup is best effort; the id still names the node
        pass
    return node_id[:8]


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports that are free on ``host`` now.

    All ``n`` sockets are bound before any is closed, so the kernel cannot hand out the same port
    twice; picked one at a time (bind, close, bind again) it can, and did: two Ray components of one
    node got port 32959 and its `ray start` refused ("trying to use a port number ... used by other
    components")."""
    if n < 0:
        raise ValueError(f"free_ports: n must be >= 0, got {n}")
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            socks.append(s)
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One TCP port free on ``host`` now (several at once: :func:`free_ports`)."""
    return free_ports(1, host)[0]


def _machine_ip() -> str | None:
    """This machine's own network address, found as Ray finds it (the source address a UDP
    socket would use towards a public address; nothing is sent); None without a route."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("8.8.8.8", 53))
            return str(s.getsockname()[0])
    except OSError:
        return None


def driver_env(address: str, timeout: float = 2.0) -> dict[str, str]:
    """What the environment must hold, before ``ray`` is first imported, for a driver to reach
    the cluster at ``address``: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` for a head that listens on
    127.0.0.1 only (started with that setting, as ``scripts/cluster.sh`` and the sweep's own
    Ray do). Without it Ray replaces a loopback address by the machine's address, which such a
    head does not answer, and retries for ever. Empty for any other address."""
    u = urlparse(address if "://" in address else f"tcp://{address}")
    if address in ("auto", "local", "") or u.scheme != "tcp" or not u.port:
        return {}
    if u.hostname not in ("127.0.0.1", "localhost", "::1"):
        return {}
    ip = _machine_ip()
    if ip is None or ip.startswith("127."):
        return {}
    try:
        with socket.create_connection((ip, u.port), timeout=timeout):
            return {}
    except OSError:
        return {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
