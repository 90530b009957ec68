"""Every Ray internal that tune/raycompat.py relies on still exists with the signature it uses.

Fast, and no Ray cluster is started: run this first after a Ray upgrade. A failure names the
installed Ray version, the internal that changed and the function of tune/raycompat.py to update
(all of them were checked on Ray ``tune.raycompat.CHECKED_ON``)."""
from __future__ import annotations

import http.server
import inspect
import threading
from pathlib import Path
from typing import Any, Callable

import pytest
import ray

from tune import raycompat
from tune.nodes import free_port


def where(what: str, fn: str) -> str:
    """The failure message: the installed Ray, what changed, and the raycompat function to update."""
    return (f"ray {ray.__version__} (raycompat checked on {raycompat.CHECKED_ON}): {what}; "
            f"tune/raycompat.py:{fn} needs updating")


def params(f: Callable[..., Any]) -> list[str]:
    return [p for p in inspect.signature(f).parameters if p != "self"]


def source(obj: Any) -> str:
    return inspect.getsource(inspect.unwrap(obj))


# ------------------------------------------------------------------ gcs_answers: ray._raylet.GcsClient
def test_gcs_client_takes_an_address_and_lists_kv_keys():
    import ray._raylet as raylet

    msg = where("ray._raylet.GcsClient is gone", "gcs_answers")
    assert hasattr(raylet, "GcsClient"), msg
    # a wrong type is refused before any connection, naming the keyword: `address=` is still the parameter
    with pytest.raises(TypeError, match="address"):
        raylet.GcsClient(address=None)
    # GcsClient hands its methods on to InnerGcsClient (Cython: the signature is read there)
    inner = getattr(raylet, "InnerGcsClient", None)
    assert inner is not None and hasattr(inner, "internal_kv_keys"), \
        where("ray._raylet.GcsClient.internal_kv_keys is gone", "gcs_answers")
    assert params(inner.internal_kv_keys)[:3] == ["prefix", "namespace", "timeout"], \
        where(f"ray._raylet.GcsClient.internal_kv_keys is now {inspect.signature(inner.internal_kv_keys)}",
              "gcs_answers")


# ------------------------------------------------------------------ speaks_grpc: Ray's servers are gRPC
def test_ray_gcs_is_a_grpc_service():
    try:
        import ray.core.generated.gcs_service_pb2_grpc as gcs_grpc
    except ImportError:
        pytest.fail(where("ray.core.generated.gcs_service_pb2_grpc (the GCS's gRPC service) is gone", "speaks_grpc"))
    assert hasattr(gcs_grpc, "InternalKVGcsServiceStub"), \
        where("the GCS has no gRPC InternalKVGcsService", "speaks_grpc")


def test_speaks_grpc_tells_a_grpc_server_from_others():
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    server = grpc.server(ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        assert raycompat.speaks_grpc("127.0.0.1", port, timeout=5.0)
    finally:
        server.stop(None)

    httpd = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        assert not raycompat.speaks_grpc("127.0.0.1", httpd.server_address[1], timeout=5.0)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert not raycompat.speaks_grpc("127.0.0.1", free_port(), timeout=2.0)  # nothing listens


# ------------------------------------------------------------------ route_driver_prints_to_stderr
def test_driver_prints_go_through_print_to_stdstream():
    import ray._private.worker as rw

    fn = "route_driver_prints_to_stderr"
    assert hasattr(rw, "print_to_stdstream"), where("ray._private.worker.print_to_stdstream is gone", fn)
    assert params(rw.print_to_stdstream) == ["data", "ignore_prefix"], \
        where(f"ray._private.worker.print_to_stdstream is now {inspect.signature(rw.print_to_stdstream)}", fn)
    assert hasattr(rw, "print_worker_logs"), where("ray._private.worker.print_worker_logs is gone", fn)
    assert params(rw.print_worker_logs)[:3] == ["data", "print_file", "ignore_prefix"], \
        where(f"ray._private.worker.print_worker_logs is now {inspect.signature(rw.print_worker_logs)}", fn)
    # the raylet's warnings reach the driver through that module-level name (what the patch replaces)
    assert "print_to_stdstream(" in source(rw.listen_error_messages), \
        where("ray._private.worker.listen_error_messages no longer calls print_to_stdstream", fn)


def test_route_driver_prints_to_stderr_and_back(capsys):
    import ray._private.worker as rw

    original = rw.print_to_stdstream
    undo = raycompat.route_driver_prints_to_stderr()
    assert undo is not None, \
        where("ray._private.worker.print_to_stdstream/print_worker_logs are gone", "route_driver_prints_to_stderr")
    try:
        rw.print_to_stdstream({"lines": ["a raylet warning"], "pid": "raylet", "is_err": False}, ignore_prefix=False)
    finally:
        undo()
    out = capsys.readouterr()
    assert "a raylet warning" in out.err and "a raylet warning" not in out.out, \
        where("ray._private.worker.print_worker_logs(data, print_file, ...) no longer writes to print_file",
              "route_driver_prints_to_stderr")
    assert rw.print_to_stdstream is original


# ------------------------------------------------------------------ temp_dir_option: ray.init(_temp_dir=)
def test_ray_init_still_reads_the_hidden_temp_dir_option():
    assert '"_temp_dir"' in source(ray.init), \
        where("ray.init no longer reads its hidden option _temp_dir", "temp_dir_option")
    assert raycompat.temp_dir_option("/tmp/x") == {"_temp_dir": "/tmp/x"}


# ------------------------------------------------------------------ data_parallel_trainer: ray.train.v2
def test_v2_data_parallel_trainer_runs_without_a_backend(tmp_path):
    import ray.train

    fn = "data_parallel_trainer"
    try:
        from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
    except ImportError:
        pytest.fail(where("ray.train.v2.api.data_parallel_trainer.DataParallelTrainer is gone", fn))
    sig = inspect.signature(DataParallelTrainer.__init__)
    for name in ("train_loop_per_worker", "train_loop_config", "scaling_config", "run_config", "backend_config"):
        assert name in sig.parameters, where(f"ray.train.v2 DataParallelTrainer{sig} has no {name}", fn)
    assert sig.parameters["backend_config"].default is None, \
        where(f"ray.train.v2 DataParallelTrainer{sig}: backend_config has a default", fn)
    import ray.train.torch

    # Train v2 is what ray.train hands out (its RunConfig/FailureConfig are the ones the sweep builds)
    assert issubclass(ray.train.torch.TorchTrainer, DataParallelTrainer), \
        where("ray.train.torch.TorchTrainer is no longer a ray.train.v2 DataParallelTrainer", fn)
    trainer = raycompat.data_parallel_trainer(
        lambda config: None, train_loop_config={"x": 1}, scaling_config=ray.train.ScalingConfig(num_workers=1),
        run_config=ray.train.RunConfig(name="raycompat", storage_path=str(tmp_path)))
    assert isinstance(trainer, DataParallelTrainer)
    assert type(trainer.backend_config) is ray.train.BackendConfig, \
        where(f"the v2 DataParallelTrainer's default backend is {type(trainer.backend_config)}", fn)


# ------------------------------------------------------------------ allow_loopback_join, ray_cli: tune._ray_start
def test_ray_start_join_switches_are_still_where_they_are_patched():
    import ray._private.ray_constants as ray_constants
    import ray._private.services as services
    import ray.scripts.scripts as scripts

    fn = "allow_loopback_join"
    assert isinstance(getattr(ray_constants, "ENABLE_RAY_CLUSTER", None), bool), \
        where("ray._private.ray_constants.ENABLE_RAY_CLUSTER is gone", fn)
    assert hasattr(services, "resolve_ip_for_localhost"), \
        where("ray._private.services.resolve_ip_for_localhost is gone", fn)
    assert params(services.resolve_ip_for_localhost) == ["host"], \
        where("ray._private.services.resolve_ip_for_localhost is now "
              f"{inspect.signature(services.resolve_ip_for_localhost)}", fn)
    # `ray start` reads both through the module attributes at call time (so the patch applies)
    text = source(scripts)
    assert "ray_constants.ENABLE_RAY_CLUSTER" in text, \
        where("`ray start` no longer reads ray_constants.ENABLE_RAY_CLUSTER", fn)
    assert "services.resolve_ip_for_localhost(" in text, \
        where("`ray start` no longer calls services.resolve_ip_for_localhost", fn)


def test_ray_cli_main_runs_ray_start():
    import ray.scripts.scripts as scripts

    assert callable(getattr(scripts, "main", None)), where("ray.scripts.scripts.main is gone", "ray_cli")
    commands = getattr(getattr(scripts, "cli", None), "commands", {})
    assert "start" in commands, where("ray.scripts.scripts.cli has no `start` command", "ray_cli")


# ------------------------------------------------------------------ WORKER_NICENESS_ENV: RayConfig worker_niceness
def test_the_raylet_still_reads_worker_niceness():
    raylet = Path(ray.__file__).parent / "core" / "src" / "ray" / "raylet" / "raylet"
    assert raylet.is_file(), where(f"the raylet binary is not at {raylet}", "WORKER_NICENESS_ENV")
    assert raycompat.WORKER_NICENESS_ENV.encode() in raylet.read_bytes(), \
        where(f"the raylet no longer reads {raycompat.WORKER_NICENESS_ENV}", "WORKER_NICENESS_ENV")


# ------------------------------------------------------------------ local_node: ray._private.worker._global_node
def test_the_local_node_still_names_its_session_dir_and_processes():
    import ray._private.node as node
    import ray._private.services as services
    import ray._private.worker as rw

    fn = "local_node"
    assert hasattr(rw, "_global_node"), where("ray._private.worker._global_node is gone", fn)
    assert callable(getattr(node.Node, "get_session_dir_path", None)), \
        where("ray._private.node.Node.get_session_dir_path is gone", fn)
    assert "self.all_processes" in source(node.Node.__init__), \
        where("ray._private.node.Node no longer keeps all_processes", fn)
    assert "process" in getattr(services.ProcessInfo, "_fields", ()), \
        where("ray._private.services.ProcessInfo has no `process`", fn)
    session, pids = raycompat.local_node()  # runs whether or not this process started a Ray
    assert (session is None) == (not pids)
