"""A local multi-node Ray cluster anyone can start: the development harness.

For tests (``tests/cluster``), ``scripts/cluster.sh`` and benchmarks only; no production module
(``singr``, ``serve``, the rest of ``tune``) imports this package. Where work runs on a cluster,
for the sweep itself, is :mod:`tune.nodes` (:func:`tune.nodes.node_label` reads the
``singr_node_<name>`` resource every node of this harness gets). The processes' helpers
(``/proc``) are in :mod:`tune.devcluster.procs`.

:class:`LocalCluster` (``scripts/cluster.sh up|down|status|kill-node|env DIR``) starts, on
127.0.0.1 only, a Ray head that runs no work (``--num-cpus 0``), worker nodes with their own
CPUs, and an ``mlflow server`` (SQLite store, artifacts proxied by the server). Several
nodes on one machine need what a real cluster does not (checked on Ray 2.60, see
docs/dependencies.md): token authentication for joining nodes and clients
(``RAY_AUTH_MODE=token``), and per node its own agent, metrics, runtime-env, node-manager,
object-manager and worker ports and its own temp dir. Every server listens on 127.0.0.1
only: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` stays 0 (with 1, Ray's servers listen on every
interface and nodes advertise the machine's address), and worker nodes join through
:mod:`tune._ray_start`, which allows the join in the command-line process alone. (One
exception that no setting changes: the rendezvous store of ``torch.distributed``, which
rank 0 of a multi-worker trial opens, listens on all interfaces; single-worker trials open
none.) Everything lives under one folder::

    cluster.json        addresses (GCS, dashboard, MLflow), nodes, ports, temp dirs
    pids/<node>.pids    the processes each node started (found by its temp dir or GCS address,
                        and their children: the raylet's agents name no folder)
    logs/               output of `ray start` and of the MLflow server
    mlflow/             the MLflow server's store (mlflow.db) and artifacts
    shared/             storage every node sees: data, SiNG cache, Ray storage

``down`` stops only those processes, by PID (never ``ray stop``, which would end every Ray
process of the user on the machine). Ray's temp dirs are short paths under ``/tmp`` (a unix
socket path must stay under 108 bytes); ``cluster.json`` records them.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..nodes import NODE_RESOURCE_PREFIX, free_ports
from .procs import alive, cmdline, descendants, find_processes, listening_sockets, stop_processes

__all__ = ["HEAD_PORTS", "NODE_PORTS", "ClusterInfo", "LocalCluster", "NodeInfo", "descendants", "ensure_auth_token",
           "find_processes", "listening_sockets", "main", "stop_processes"]

NODE_PORTS = ("node_manager", "object_manager", "agent_listen", "agent_grpc", "metrics", "runtime_env")  # every node
HEAD_PORTS = ("gcs", "dashboard", "client")  # the head's as well


def ensure_auth_token(ray_bin: Path | str, env: dict[str, str] | None = None) -> None:
    """Make sure Ray's token (``~/.ray/auth_token``, or ``RAY_AUTH_TOKEN[_PATH]``) exists before a head starts.

    ``ray start --head`` (Ray 2.60) never creates a token (only a local ``ray.init()`` does): with
    ``RAY_AUTH_MODE=token`` it refuses to start without one ("Token authentication is enabled but no
    authentication token was found"), and without that variable it starts with authentication off, so
    clients that send ``RAY_AUTH_MODE=token`` are refused. On a fresh machine the first local cluster
    failed that way. ``ray get-auth-token --generate`` (Ray's own command) writes one where every node
    and client reads it, and keeps an existing one; the token is not printed."""
    r = subprocess.run([str(ray_bin), "get-auth-token", "--generate"], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"`ray get-auth-token --generate` failed (exit {r.returncode}): {r.stderr.strip()[-500:]}")


# --------------------------------------------------------------------------- the cluster


@dataclass
class NodeInfo:
    name: str
    head: bool
    cpus: float
    temp_dir: str
    ports: dict[str, int] = field(default_factory=dict)


@dataclass
class ClusterInfo:
    root: str
    gcs: str
    dashboard: str
    mlflow: str | None
    nodes: list[NodeInfo]
    python: str

    def env(self) -> dict[str, str]:
        """What a client of this cluster needs in its environment."""
        out = {"RAY_AUTH_MODE": "token", "RAY_ADDRESS": self.dashboard}
        if self.mlflow:
            out["MLFLOW_TRACKING_URI"] = self.mlflow
        return out


class LocalCluster:
    """A head without CPUs, ``workers`` worker nodes and an MLflow server, on 127.0.0.1 (see
    the module docstring)."""

    def __init__(self, root: str | Path, workers: int = 2, cpus_per_worker: float = 1.0, mlflow: bool = True,
                 python: str | None = None):
        self.root = Path(root).resolve()
        self.n_workers, self.cpus, self.with_mlflow = int(workers), float(cpus_per_worker), mlflow
        self.python = python or sys.executable
        self.bin = Path(self.python).parent
        tag = hashlib.sha1(str(self.root).encode()).hexdigest()[:8]
        self.tmp_base = Path("/tmp") / f"singr-cluster-{tag}"

    # ---------------------------------------------------------------- state
    @property
    def info_file(self) -> Path:
        return self.root / "cluster.json"

    def info(self) -> ClusterInfo:
        if not self.info_file.exists():
            raise RuntimeError(f"no cluster in {self.root} (run: scripts/cluster.sh up {self.root})")
        d = json.loads(self.info_file.read_text())
        return ClusterInfo(**{**d, "nodes": [NodeInfo(**n) for n in d["nodes"]]})

    def _save(self, info: ClusterInfo) -> None:
        tmp = self.info_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(info), indent=1))
        os.replace(tmp, self.info_file)

    def _record(self, name: str, pids: set[int]) -> None:
        f = self.root / "pids" / f"{name}.pids"
        old = {int(x) for x in f.read_text().split()} if f.exists() else set()
        f.write_text("\n".join(str(p) for p in sorted(old | pids)) + "\n")

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
                    "PATH": f"{self.bin}{os.pathsep}{env.get('PATH', '')}",
                    # a lost node is noticed in seconds, not minutes
                    "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "2000",
                    "RAY_health_check_failure_threshold": "3"})
        # Ray's own worker nice value (15) here, not tune.worker_niceness: several nodes share one machine and
        # their raylets, checked every second, must keep the CPU ahead of the training they host
        return env

    # ---------------------------------------------------------------- up
    def _ray_start(self, node: NodeInfo, gcs: str | None, log: Path) -> None:
        p = node.ports
        start = [str(self.bin / "ray"), "start"] if node.head else [self.python, "-m", "tune._ray_start", "start"]
        cmd = [*start, "--node-ip-address=127.0.0.1", f"--temp-dir={node.temp_dir}",
               f"--num-cpus={node.cpus:g}", "--num-gpus=0", "--disable-usage-stats",
               f"--resources={json.dumps({NODE_RESOURCE_PREFIX + node.name: 1})}",
               f"--node-manager-port={p['node_manager']}", f"--object-manager-port={p['object_manager']}",
               f"--dashboard-agent-listen-port={p['agent_listen']}", f"--dashboard-agent-grpc-port={p['agent_grpc']}",
               f"--metrics-export-port={p['metrics']}", f"--runtime-env-agent-port={p['runtime_env']}",
               f"--min-worker-port={p['min_worker']}", f"--max-worker-port={p['max_worker']}"]
        if node.head:
            cmd += ["--head", f"--port={p['gcs']}", "--dashboard-host=127.0.0.1", f"--dashboard-port={p['dashboard']}",
                    "--include-dashboard=true", f"--ray-client-server-port={p['client']}"]
        else:
            cmd += [f"--address={gcs}"]
        Path(node.temp_dir).mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            r = subprocess.run(cmd, env=self._env(), stdout=out, stderr=subprocess.STDOUT, timeout=300)
        markers = [node.temp_dir] + ([f"--address=127.0.0.1:{p['gcs']}"] if node.head else [])
        self._record(node.name, find_processes(markers))
        if r.returncode != 0:
            raise RuntimeError(f"`ray start` of node {node.name} failed (exit {r.returncode}); see {log}")

    def _ports(self, head: bool, index: int, picked: Iterator[int]) -> dict[str, int]:
        """A node's ports: Ray's components from ``picked`` (the kernel's ephemeral range, 32768 and up
        here; all of the cluster's picked at once so that no two components share one), its workers'
        range from the cluster's folder."""
        names = NODE_PORTS + (HEAD_PORTS if head else ())
        ports = {n: next(picked) for n in names}
        # worker ports: a range below the ephemeral range, so they never meet the ports above; one
        # range per node, the cluster's offset from its folder (two clusters side by side differ)
        base = 10000 + int(hashlib.sha1(str(self.root).encode()).hexdigest(), 16) % 8 * 2400 + 400 * index
        ports["min_worker"], ports["max_worker"] = base, base + 399
        return ports

    def _start_mlflow(self, port: int) -> str:
        store = self.root / "mlflow"
        (store / "artifacts").mkdir(parents=True, exist_ok=True)
        log = open(self.root / "logs" / "mlflow.log", "ab")
        proc = subprocess.Popen([str(self.bin / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                                 "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
                                 "--artifacts-destination", str(store / "artifacts"), "--workers", "1"],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=self._env())
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            self._record("mlflow", descendants([proc.pid]))
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return url
            except OSError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"the MLflow server exited (code {proc.returncode}); "
                                   f"see {self.root}/logs/mlflow.log")
            time.sleep(0.5)
        raise RuntimeError(f"the MLflow server did not answer within 120 s; see {self.root}/logs/mlflow.log")

    def up(self) -> ClusterInfo:
        """Start the cluster (an error when one already runs in this folder)."""
        if self.info_file.exists() and any(alive(p) for p in self._pids()):
            raise RuntimeError(f"a cluster already runs in {self.root}; `down` it first")
        for sub in ("pids", "logs", "shared"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for f in (self.root / "pids").glob("*.pids"):
            f.unlink()
        if self.tmp_base.exists():
            shutil.rmtree(self.tmp_base, ignore_errors=True)
        n_ports = len(HEAD_PORTS) + len(NODE_PORTS) * (1 + self.n_workers) + 1  # the nodes' and MLflow's
        picked = iter(free_ports(n_ports))  # one batch: all distinct
        head = NodeInfo("head", True, 0.0, str(self.tmp_base / "head"), self._ports(True, 0, picked))
        workers = [NodeInfo(f"worker{i}", False, self.cpus, str(self.tmp_base / f"worker{i}"),
                            self._ports(False, i, picked)) for i in range(1, self.n_workers + 1)]
        mlflow_port = next(picked)
        gcs = f"127.0.0.1:{head.ports['gcs']}"
        info = ClusterInfo(str(self.root), gcs, f"http://127.0.0.1:{head.ports['dashboard']}", None,
                           [head, *workers], self.python)
        self._save(info)
        try:
            ensure_auth_token(self.bin / "ray", self._env())
            self._ray_start(head, None, self.root / "logs" / "head.log")
            for w in workers:
                self._ray_start(w, gcs, self.root / "logs" / f"{w.name}.log")
            if self.with_mlflow:
                info.mlflow = self._start_mlflow(mlflow_port)
            self._save(info)
            self.wait_nodes(1 + len(workers))
        except BaseException:
            self.down()
            raise
        return info

    def wait_nodes(self, n: int, timeout: float = 120.0) -> None:
        """Until ``n`` nodes are alive in the cluster (asked through a short-lived client)."""
        code = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
                "print(sum(1 for x in ray.nodes() if x['Alive']))")
        deadline = time.time() + timeout
        seen = -1
        while time.time() < deadline:
            r = subprocess.run([self.python, "-c", code, self.info().gcs], env=self._env(), capture_output=True,
                               text=True, timeout=120)
            try:
                seen = int(r.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                seen = -1
            if seen >= n:
                return
            time.sleep(1.0)
        raise RuntimeError(f"only {seen} of {n} nodes came up within {timeout:.0f} s; see {self.root}/logs")

    # ---------------------------------------------------------------- down, status, faults
    def _pids(self, name: str | None = None) -> set[int]:
        out: set[int] = set()
        for f in (self.root / "pids").glob(f"{name or '*'}.pids"):
            out |= {int(x) for x in f.read_text().split() if x.strip()}
        return out

    def processes(self, name: str | None = None) -> set[int]:
        """The live processes of the cluster (or of one node): recorded, found again by marker,
        and their children."""
        pids = {p for p in self._pids(name) if alive(p)}
        if self.info_file.exists():
            info = self.info()
            for n in info.nodes:
                if name in (None, n.name):
                    markers = [n.temp_dir] + ([f"--address={info.gcs}"] if n.head else [])
                    pids |= find_processes(markers)
        return {p for p in descendants(sorted(pids)) if alive(p) and p != os.getpid()}

    def down(self) -> set[int]:
        """Stop every process the cluster started (by PID); returns the ones that survived."""
        pids = self.processes()
        left = stop_processes(pids)
        for f in (self.root / "pids").glob("*.pids"):
            f.unlink()
        shutil.rmtree(self.tmp_base, ignore_errors=True)
        return left

    def stop_mlflow(self) -> set[int]:
        """Stop the MLflow server (a fault test: the tracking server goes away)."""
        return stop_processes(self.processes("mlflow"))

    def kill_node(self, name: str) -> list[int]:
        """SIGKILL the raylet of node ``name`` (a lost node, as in the fault tests)."""
        node = next((n for n in self.info().nodes if n.name == name), None)
        if node is None:
            raise RuntimeError(f"no node {name!r}; nodes: {[n.name for n in self.info().nodes]}")
        raylets = [p for p in find_processes([node.temp_dir]) if b"raylet" in cmdline(p).split(b"\0")[0]]
        for p in raylets:
            os.kill(p, signal.SIGKILL)
        return raylets

    def status(self) -> dict[str, Any]:
        info = self.info()
        listening = sorted({f"{a}:{p}" for a, p, _ in listening_sockets(self.processes())})
        return {"root": info.root, "gcs": info.gcs, "dashboard": info.dashboard, "mlflow": info.mlflow,
                "nodes": {n.name: {"cpus": n.cpus, "processes": len(self.processes(n.name))} for n in info.nodes},
                "mlflow_processes": len(self.processes("mlflow")), "listening": listening, "env": info.env()}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/cluster.sh", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["up", "down", "status", "kill-node", "env"])
    ap.add_argument("root", help="the folder that holds the cluster's state")
    ap.add_argument("node", nargs="?", help="kill-node: the node's name (worker1, ...)")
    ap.add_argument("--workers", type=int, default=2, help="worker nodes (default 2)")
    ap.add_argument("--cpus", type=float, default=1.0, help="CPUs per worker node (default 1)")
    ap.add_argument("--no-mlflow", action="store_true", help="no MLflow server")
    a = ap.parse_args(argv)
    c = LocalCluster(a.root, a.workers, a.cpus, mlflow=not a.no_mlflow)
    try:
        if a.action == "up":
            info = c.up()
            print(f"[cluster] up in {info.root}: head (0 CPUs) + {a.workers} worker(s) x {a.cpus:g} CPU on 127.0.0.1")
            print(f"[cluster] dashboard {info.dashboard}, GCS {info.gcs}" +
                  (f", MLflow {info.mlflow}" if info.mlflow else ""))
            for k, v in info.env().items():
                print(f"export {k}={v}")
        elif a.action == "down":
            left = c.down()
            print(f"[cluster] down: {'all processes stopped' if not left else f'still alive: {sorted(left)}'}")
            return 0 if not left else 1
        elif a.action == "status":
            print(json.dumps(c.status(), indent=1))
        elif a.action == "env":
            for k, v in c.info().env().items():
                print(f"export {k}={v}")
        else:
            if not a.node:
                ap.error("kill-node needs the node's name")
            print(f"[cluster] killed the raylet of {a.node}: pids {c.kill_node(a.node)}")
    except RuntimeError as e:
        print(f"cluster: error: {e}", file=sys.stderr)
        return 2
    return 0
