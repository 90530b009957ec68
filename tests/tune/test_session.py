"""The sweep's Ray runs its workers at ``tune.worker_niceness``, and on an existing cluster
whose workers run niced (Ray's default, 15) the sweep says so once. Ray's default lets any
normal-priority process take the CPU before training (see test_hardening's soak test)."""
from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _loopback(monkeypatch):
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def test_own_ray_runs_workers_at_the_configured_niceness():
    import ray

    from tune.session import RaySession, _own_niceness

    seen = {}
    for wanted in (0, 7):
        with RaySession(address="", worker_niceness=wanted) as s:
            assert s.started
            seen[wanted] = ray.get(ray.remote(_own_niceness).remote(), timeout=120)
        assert not ray.is_initialized()
    assert seen == {0: 0, 7: 7}
    assert os.nice(0) == 0  # the driver itself is left alone


def test_a_cluster_with_niced_workers_is_named_once(capsys):
    import ray

    from tune.session import RaySession

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)  # Ray's default: 15
    try:
        RaySession(address="127.0.0.1:1", worker_niceness=0)._say_cluster_niceness()
        said = capsys.readouterr().out
        RaySession(address="127.0.0.1:1", worker_niceness=15)._say_cluster_niceness()
        quiet = capsys.readouterr().out
    finally:
        ray.shutdown()
    assert "this cluster's Ray workers run at nice 15" in said and "RAY_worker_niceness=0 ray start" in said
    assert quiet == ""
