"""The sweep's own Ray, and the checks made before it starts.

:class:`RaySession` connects to ``RAY_ADDRESS`` (a cluster, as inside ``ray job submit``)
or starts a local Ray that belongs to this sweep alone:

* on 127.0.0.1 only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set before Ray is first
  imported; the dashboard binds to 127.0.0.1), with a temp dir of its own, so that nothing
  it starts reads ``/tmp/ray/ray_current_cluster`` or another cluster's files;
* with its address passed explicitly to every process it starts: the job's runtime
  environment carries ``RAY_ADDRESS`` and ``RAY_API_SERVER_ADDRESS`` (the dashboard of this
  Ray), which Ray Train's placement-group cleaner and the state API use instead of looking
  for "the" cluster on the machine;
* with its workers at ``worker_niceness`` (Ray's own default, 15, lets every normal-priority
  process on the machine take the CPU first: beside two CPU-bound processes training epochs
  ran 20-27x slower); on an existing cluster the nodes' ``ray start`` decides, and the session
  says so once when the cluster's workers run niced;
* with Ray's own logs sent to ``<sweep>/logs/ray.log`` unless ``verbose``;
* stopped on exit, on Ctrl-C and on SIGTERM (only what it started); a driver killed outright
  cannot stop it, so :meth:`RaySession.node_processes` names its processes for the
  sweep's parent run, and :mod:`tune.tidy` stops what is left of them later.
"""
from __future__ import annotations

import os
import signal
import socket
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Callable
from urllib.parse import urlparse

from singr.errors import SingrInputError

from .hub.store import sqlite_path
from .nodes import NICENESS_ENV, free_port
from .raycompat import gcs_answers, local_node, route_driver_prints_to_stderr, speaks_grpc, temp_dir_option

__all__ = ["RaySession", "check_address", "check_tracking_store"]


def check_address(address: str, timeout: float = 3.0) -> None:
    """A clear error unless ``address`` (host:port, ray://host:port, http://...) is a Ray
    cluster: the port must accept TCP *and* answer as Ray's GCS (or Ray Client / dashboard)."""
    if address in ("auto", "local", ""):
        return
    u = urlparse(address if "://" in address else f"tcp://{address}")
    host, port = u.hostname, u.port
    if not host or not port:
        raise SingrInputError(f"RAY_ADDRESS={address!r} is not of the form host:port (or ray://host:port)")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise SingrInputError(f"the Ray cluster at RAY_ADDRESS={address!r} does not answer "
                              f"({e.strerror or type(e).__name__} after {timeout:g} s); start it "
                              "(`ray start --head ...`) or unset RAY_ADDRESS to run on a local Ray") from e
    if u.scheme in ("http", "https"):
        _check_http(f"{u.scheme}://{host}:{port}/api/version", address, timeout)
        return
    wrong = (f"RAY_ADDRESS={address!r} accepts connections but does not answer as a Ray cluster within "
             f"{timeout:g} s; check the port (the head's --port, 6379 by default; ray://host:10001 for Ray Client; "
             "http://host:8265 is the dashboard, for `ray job submit`)")
    if not speaks_grpc(host, port, timeout):  # every Ray cluster address is a gRPC server
        raise SingrInputError(wrong)
    if u.scheme == "ray":
        return  # Ray Client: a gRPC server; ray.init reports a wrong one quickly
    if not gcs_answers(f"{host}:{port}", timeout):
        raise SingrInputError(wrong)


def _check_http(url: str, what: str, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read(256)
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            return  # it answers; authentication is the client's next step
        raise SingrInputError(f"{what} answered HTTP {e.code} at {url}") from None
    except OSError as e:
        raise SingrInputError(f"{what} does not answer at {url} ({e})") from None


def check_tracking_store(uri: str, experiment: str, timeout: float = 5.0) -> None:
    """A clear error, before any work, when the MLflow store cannot be written: a sqlite file
    in a folder that does not exist or is read-only, or a tracking server that does not answer."""
    db = sqlite_path(uri)
    if db is not None:
        folder = db.parent
        if not folder.is_dir():
            raise SingrInputError(f"the MLflow store's folder does not exist (tracking URI {uri})", path=folder)
        if db.exists():
            import sqlite3

            try:  # a write, rolled back: the real test (permission bits say nothing to root)
                con = sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=timeout)
                try:
                    con.execute("BEGIN IMMEDIATE")
                    con.execute("CREATE TABLE singr_write_probe (x)")
                    con.rollback()
                finally:
                    con.close()
            except sqlite3.Error as e:
                raise SingrInputError(f"the MLflow store cannot be written ({e}; tracking URI {uri}); point "
                                      "mlflow.tracking_uri at a writable store", path=db) from None
            return
        probe = folder / f".singr-write-test-{os.getpid()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise SingrInputError(f"cannot create the MLflow store: its folder is not writable ({e.strerror}; "
                                  f"tracking URI {uri})", path=folder) from None
        return
    u = urlparse(uri)
    if u.scheme in ("http", "https"):
        base = uri.rstrip("/")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=timeout) as r:
                r.read(64)
        except OSError as e:
            raise SingrInputError(f"the MLflow tracking server at {uri} does not answer ({e}); start it "
                                  "(`mlflow server ...`) or set mlflow.tracking_uri / $MLFLOW_TRACKING_URI") from None


def _own_niceness() -> int:
    """The nice value of the calling process (run as a Ray task: a worker's)."""
    return os.nice(0)


class RaySession:
    """Context manager around the sweep's Ray (see the module docstring)."""

    def __init__(self, log_dir: str | Path | None = None, verbose: bool = False, address: str | None = None,
                 worker_niceness: int | None = 0):
        self.address = os.environ.get("RAY_ADDRESS", "") if address is None else address
        self.worker_niceness = worker_niceness
        self.log_dir = Path(log_dir) if log_dir else None
        self.verbose = verbose
        self.started = False
        self.temp_dir: str | None = None
        self.session_dir: str | None = None  # of the local Ray it started
        self._node_pids: list[int] = []
        self._old_term: Any = None
        self._saved_fd2: int | None = None
        self._saved_env: dict[str, str | None] = {}
        self._undo_prints: Callable[[], None] | None = None

    def _set_env(self, key: str, value: str) -> None:
        self._saved_env.setdefault(key, os.environ.get(key))
        os.environ[key] = value

    def __enter__(self) -> "RaySession":
        if not self.address:
            # must be in the environment before `ray` is first imported: node address 127.0.0.1
            self._set_env("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        self._set_env("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # validation metrics only when measured
        self._set_env("RAY_AIR_NEW_OUTPUT", "0")
        self._set_env("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # the sweep prints its own lines
        # a tracking server that goes away costs seconds per call, not minutes of retries
        self._set_env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"))
        self._set_env("MLFLOW_HTTP_REQUEST_TIMEOUT", os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "20"))
        self._route_logs()
        import ray

        if self._saved_fd2 is not None:
            self._quiet_driver_prints()

        try:
            if self.address:
                ray.init(address=self.address, log_to_driver=self.verbose)
                self._say_cluster_niceness()
            else:
                port = free_port()
                api = f"http://127.0.0.1:{port}"
                self.temp_dir = tempfile.mkdtemp(prefix="singr-ray-")
                if self.worker_niceness is not None:  # read by the raylet it starts, as by `ray start`
                    self._set_env(NICENESS_ENV, str(int(self.worker_niceness)))
                ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
                         log_to_driver=self.verbose, **temp_dir_option(self.temp_dir),
                         runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": api}})
                self.started = True
                self.session_dir, self._node_pids = local_node()
                gcs = ray.get_runtime_context().gcs_address
                self._set_env("RAY_ADDRESS", gcs)
                self._set_env("RAY_API_SERVER_ADDRESS", api)
        except ConnectionError as e:
            raise SingrInputError(f"cannot connect to the Ray cluster at RAY_ADDRESS={self.address!r}: {e}") from e
        self._old_term = signal.getsignal(signal.SIGTERM)

        def _term(signum: int, frame: Any) -> None:  # SIGTERM ends the sweep like Ctrl-C: Tune saves its state
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _term)
        return self

    def node_processes(self) -> list[int]:
        """The pids of the local Ray it started (none on a cluster): the processes ``ray.init``
        started and their children as they are now (the raylet's agents, which outlive a driver
        killed outright for a while). With :attr:`session_dir`, for :func:`tune.tidy.driver_tags`."""
        from . import procs

        if not self.started or not self.session_dir:
            return []
        return [*self._node_pids, *procs.children(self._node_pids)]

    def _say_cluster_niceness(self, timeout: float = 30.0) -> None:
        """On an existing cluster: one line when its workers run at a higher nice value than
        ``worker_niceness`` asks for (a zero-CPU task reads it; nothing is said if it cannot run)."""
        if self.worker_niceness is None:
            return
        import ray

        try:
            nice = int(ray.get(ray.remote(num_cpus=0)(_own_niceness).remote(), timeout=timeout))
        except Exception:  # noqa: BLE001 - a probe only; the sweep goes on without it
            return
        if nice > self.worker_niceness:
            print(f"[tune] this cluster's Ray workers run at nice {nice} (tune.worker_niceness asks for "
                  f"{self.worker_niceness}): any normal-priority process on a node takes the CPU before "
                  f"training does; start the nodes with `{NICENESS_ENV}=0 ray start ...` to change it",
                  flush=True)

    def _route_logs(self) -> None:
        """Everything written to standard error while the session runs (Ray's, MLflow's and
        Optuna's loggers, and the C++ parts of Ray, which write to file descriptor 2 directly)
        goes to ``<log_dir>/ray.log``; the sweep prints its own progress on stdout. Undone on exit."""
        if self.verbose or self.log_dir is None:
            return
        import sys

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_file = self.log_dir / "ray.log"
        print(f"[tune] Ray's own logs: {self.log_file} (--verbose shows them here)", flush=True)
        sys.stderr.flush()
        self._saved_fd2 = os.dup(2)
        fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)
        os.close(fd)

    def _quiet_driver_prints(self) -> None:
        """Ray's driver prints the raylet's warnings (e.g. "N PYTHON worker processes have been
        started") on stdout, not through a logger: send them to the log file as well."""
        self._undo_prints = route_driver_prints_to_stderr()

    def _restore_logs(self) -> None:
        import sys

        if self._undo_prints is not None:
            self._undo_prints()
            self._undo_prints = None

        if self._saved_fd2 is not None:
            sys.stderr.flush()
            os.dup2(self._saved_fd2, 2)
            os.close(self._saved_fd2)
            self._saved_fd2 = None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        import ray

        try:
            if ray.is_initialized():
                ray.shutdown()
        finally:
            if self._old_term is not None:
                signal.signal(signal.SIGTERM, self._old_term)
            self._restore_logs()
            if self.temp_dir and not self.verbose:
                import shutil

                shutil.rmtree(self.temp_dir, ignore_errors=True)
            for k, v in self._saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
