"""Every use of a Ray private or internal API, in one place.

The service relies on a few things Ray does not offer publicly. Each is wrapped here, in a
function with explicit parameters whose docstring says what it relies on, why the public API
does not do the job, and the Ray version it was checked on (:data:`CHECKED_ON`). The rest of
``tune`` calls these functions and imports no ``ray._private``, ``ray._raylet`` or
``ray.train.v2`` itself. ``tests/tune/test_raycompat.py`` checks, without starting a cluster,
that each internal still exists with the signature used here, and names the installed Ray
version and the internal when one changed: after a Ray upgrade, run it first.

Ray is imported inside the functions only: importing this module loads no Ray.
"""
from __future__ import annotations

import socket
import threading
from typing import Any, Callable, Sequence

__all__ = ["CHECKED_ON", "WORKER_NICENESS_ENV", "allow_loopback_join", "data_parallel_trainer", "gcs_answers",
           "local_node", "ray_cli", "route_driver_prints_to_stderr", "speaks_grpc", "temp_dir_option"]

CHECKED_ON = "2.60.0"  # the Ray version every function below was checked on

WORKER_NICENESS_ENV = "RAY_worker_niceness"
"""Ray's internal config ``worker_niceness`` (``RAY_<name>`` in a raylet's environment when it
starts): the nice value of the workers it starts (default 15). Checked on Ray 2.60.0. Public
API: none; ``ray start`` and ``ray.init`` have no option for it."""


def speaks_grpc(host: str, port: int, timeout: float) -> bool:
    """True when the server at ``host:port`` answers an HTTP/2 connection preface with a SETTINGS
    frame, as every gRPC server does; an HTTP/1 server, or one that says nothing, does not.

    Relies on Ray's GCS and Ray Client servers being gRPC servers (their wire protocol, an
    implementation detail; checked on Ray 2.60.0). Why: a wrong port (an HTTP server, a port
    that accepts and stays silent) must be reported in seconds, and the public API cannot:
    ``ray.init`` against such a port retries for minutes."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(preface)
            head = b""
            while len(head) < 9:
                chunk = s.recv(9 - len(head))
                if not chunk:
                    return False
                head += chunk
    except OSError:
        return False
    return head[3] == 0x04  # frame type SETTINGS


def gcs_answers(address: str, timeout: float) -> bool:
    """True when ``address`` (``host:port``) answers as a Ray GCS within about ``timeout`` s: a
    key listing of its internal KV store (namespace ``session``) succeeds.

    Uses ``ray._raylet.GcsClient(address=...)`` and its ``internal_kv_keys(prefix, namespace,
    timeout=...)`` (checked on Ray 2.60.0). Why: the public API has no way to ask "is this a Ray
    GCS" without joining the cluster (``ray.init`` connects, registers a driver and retries for
    minutes on a wrong server). The client itself waits up to 40 s for a server that is not a
    GCS, so it is asked from a daemon thread and left behind after ``timeout`` + 2 s."""
    answer: dict[str, Any] = {}

    def ask() -> None:
        try:
            from ray._raylet import GcsClient  # type: ignore[attr-defined]

            answer["keys"] = GcsClient(address=address).internal_kv_keys(b"session", None, timeout=timeout)
        except Exception as e:  # noqa: BLE001 - anything but an answer means: not a Ray GCS
            answer["error"] = e

    t = threading.Thread(target=ask, daemon=True, name="singr-gcs-check")
    t.start()
    t.join(timeout + 2.0)
    return "keys" in answer


def route_driver_prints_to_stderr() -> Callable[[], None] | None:
    """Send what Ray's driver prints for the cluster (the raylet's warnings such as "N PYTHON
    worker processes have been started", and worker output when ``log_to_driver``) to
    ``sys.stderr`` instead of ``sys.stdout``; call it after ``import ray``, before ``ray.init``.
    Returns the function that undoes it, or None (nothing changed) where the internals are
    missing.

    Replaces ``ray._private.worker.print_to_stdstream(data, ignore_prefix)`` by a function that
    calls ``ray._private.worker.print_worker_logs(data, sys.stderr, ignore_prefix)`` (checked on
    Ray 2.60.0). Why: these lines are printed on stdout directly, not through a logger, and
    ``log_to_driver=False`` does not stop the raylet's warnings; no public setting routes them."""
    import ray._private.worker as rw

    original = getattr(rw, "print_to_stdstream", None)
    if original is None or not hasattr(rw, "print_worker_logs"):
        return None

    def to_stderr(data: dict, ignore_prefix: bool) -> None:
        import sys

        rw.print_worker_logs(data, sys.stderr, ignore_prefix)

    rw.print_to_stdstream = to_stderr

    def undo() -> None:
        rw.print_to_stdstream = original

    return undo


def temp_dir_option(temp_dir: str) -> dict[str, Any]:
    """The ``ray.init`` keyword that gives a local Ray its own root temp dir: ``{"_temp_dir": temp_dir}``.

    ``_temp_dir`` is one of ``ray.init``'s hidden options ("unstable and may change without
    notice"; checked on Ray 2.60.0). Why: the public ``ray.init`` has no temp-dir parameter (only
    ``ray start --temp-dir`` has), and a sweep's Ray must not share ``/tmp/ray`` (and its
    ``ray_current_cluster``) with another cluster on the machine."""
    return {"_temp_dir": str(temp_dir)}


def local_node() -> tuple[str | None, list[int]]:
    """``(session dir, pids)`` of the Ray node that ``ray.init`` started in this process: the
    processes it started (GCS, raylet, dashboard, monitors, a reaper); ``(None, [])`` when this
    process started none (it joined a cluster) or the internals are missing.

    Reads ``ray._private.worker._global_node`` (a ``ray._private.node.Node``): its
    ``get_session_dir_path()`` and ``all_processes`` (``{process type: [ProcessInfo]}``, each
    with the ``subprocess.Popen`` as ``.process``; checked on Ray 2.60.0). Why: the public API
    names neither the session dir nor the processes of a local Ray, and a driver killed outright
    leaves some of them running (:mod:`tune.tidy` stops them by pid)."""
    import ray._private.worker as rw

    node = getattr(rw, "_global_node", None)
    procs = getattr(node, "all_processes", None)
    if node is None or not procs:
        return None, []
    pids = [int(info.process.pid) for infos in procs.values() for info in infos
            if getattr(getattr(info, "process", None), "pid", None)]
    try:
        session = str(node.get_session_dir_path())
    except Exception:  # noqa: BLE001 - no session dir: nothing to record
        return None, []
    return session, pids


def data_parallel_trainer(train_loop_per_worker: Callable[..., Any], *, train_loop_config: dict[str, Any],
                          scaling_config: Any, run_config: Any) -> Any:
    """A Ray Train (v2) run of ``train_loop_per_worker`` without a backend: no
    ``torch.distributed`` process group, hence no rendezvous store.

    Uses ``ray.train.v2.api.data_parallel_trainer.DataParallelTrainer`` (a DeveloperAPI, the base
    class of ``ray.train.torch.TorchTrainer`` in Train v2; checked on Ray 2.60.0) with its default
    ``backend_config``. Why: the public ``TorchTrainer`` always sets up a process group, whose
    ``TCPStore`` listens on every interface (torch offers no way to bind it to loopback); one
    worker needs none. ``ray.train.DataParallelTrainer`` is Train v1, which takes neither v2's
    ``RunConfig`` nor its ``FailureConfig(controller_failure_limit=...)``."""
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    return DataParallelTrainer(train_loop_per_worker, train_loop_config=train_loop_config,
                               scaling_config=scaling_config, run_config=run_config)


def allow_loopback_join() -> None:
    """In this process only: let ``ray start --address=...`` join a node to a cluster on this
    machine, with 127.0.0.1 as the node's address (several nodes on one machine, loopback only).

    Sets ``ray._private.ray_constants.ENABLE_RAY_CLUSTER = True`` and replaces
    ``ray._private.services.resolve_ip_for_localhost(host)`` by the identity (checked on Ray
    2.60.0). Why: the public switch is the environment variable ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``,
    which the node's processes inherit: with it at 1 every server of the node listens on all
    interfaces and the node advertises the machine's address; with it at 0 ``ray start`` refuses
    the join. Patched here, the command-line process alone is told; its children keep 0."""
    import ray._private.ray_constants as ray_constants
    import ray._private.services as services

    ray_constants.ENABLE_RAY_CLUSTER = True
    services.resolve_ip_for_localhost = lambda host: host  # type: ignore[assignment]


def ray_cli(argv: Sequence[str]) -> None:
    """Run Ray's command line (``ray <argv>``) in this process, so that what
    :func:`allow_loopback_join` changed applies to it.

    Calls ``ray.scripts.scripts.main()`` with ``sys.argv = ["ray", *argv]`` (the function behind
    the ``ray`` executable; checked on Ray 2.60.0). Why: the public interface is the ``ray``
    executable, a new process that would not see the patches."""
    import sys

    import ray.scripts.scripts as scripts

    sys.argv = ["ray", *argv]
    scripts.main()
