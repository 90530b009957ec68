"""The sweep never hangs and stops early on bad input: it talks only to its own Ray, whatever
else runs on the machine or is named in /tmp/ray; every wait is bounded; bad labels and an
unwritable MLflow store are one line and exit 2 before any training; everything listens on
127.0.0.1 only. Each of these hung, leaked or printed a traceback in singr 0.1."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.tune.conftest import BIN, PY, sweep_overrides, sweep_summary, tune_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
CURRENT = Path("/tmp/ray/ray_current_cluster")


# --------------------------------------------------------------------------- helpers


def _run_sweep(work: Path, data: Path, name: str, watch_sockets: bool = False, env_extra=None,
               timeout: float = 900, **more) -> dict:
    """Run a smoke sweep to its end; returns its exit code, output, wall time and (optionally)
    the listening sockets its processes held while it ran. A sweep still running after
    ``timeout`` s is stopped with everything it started (code None; its output so far returned)."""
    from tune.devcluster import descendants, listening_sockets, stop_processes

    cmd = [PY, "-m", "tune", "-c", "smoke.yaml", "-q", *sweep_overrides(work, data, name, **more)]
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=work, env=tune_env(**(env_extra or {})), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen: list[tuple[str, int, int]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.extend(listening_sockets(descendants([proc.pid])))
            time.sleep(2.0)

    t = threading.Thread(target=watch, daemon=True)
    if watch_sockets:
        t.start()
    try:
        out, err = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        stop_processes(descendants([proc.pid]))
        out, err = proc.communicate()
        code = None
        err += f"\n[test] the sweep was still running after {timeout:.0f} s and was stopped"
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
    return {"code": code, "out": out, "err": err, "wall": time.time() - t0, "sockets": seen}


@pytest.fixture
def other_cluster():
    """A second Ray cluster on this machine (`ray start --head`, its own temp dir), named by
    /tmp/ray/ray_current_cluster; stopped by PID afterwards. The file is restored."""
    from tune.devcluster import ensure_auth_token, find_processes, stop_processes
    from tune.nodes import free_ports

    saved = CURRENT.read_bytes() if CURRENT.exists() else None
    tmp = Path(f"/tmp/rt_{uuid.uuid4().hex[:6]}")
    port, dashboard, client = free_ports(3)
    env = tune_env()
    ensure_auth_token(BIN / "ray", env)  # a fresh machine has none, and `ray start` makes none
    cmd = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
           f"--port={port}", f"--dashboard-port={dashboard}", "--num-cpus=1", f"--temp-dir={tmp}",
           f"--ray-client-server-port={client}", "--disable-usage-stats"]
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, p.stdout + p.stderr
        CURRENT.parent.mkdir(parents=True, exist_ok=True)
        CURRENT.write_text(f"127.0.0.1:{port}")  # what `ray start` leaves for "the" cluster
        yield f"127.0.0.1:{port}"
    finally:
        stop_processes(find_processes([str(tmp), f"--address=127.0.0.1:{port}"]))
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
        if saved is None:
            CURRENT.unlink(missing_ok=True)
        else:
            CURRENT.write_bytes(saved)


# --------------------------------------------------------------------------- the sweep's own Ray


def test_stale_current_cluster_file(tmp_path, smoke_data):
    """/tmp/ray/ray_current_cluster names a cluster that has stopped: three trials one after
    another still run (their placement groups are freed) and the sweep ends."""
    saved = CURRENT.read_bytes() if CURRENT.exists() else None
    try:
        CURRENT.parent.mkdir(parents=True, exist_ok=True)
        CURRENT.write_text("127.0.0.1:1")
        r = _run_sweep(tmp_path, smoke_data, "stale", **{"tune.num_samples": 3, "train.epochs": 1})
    finally:
        if saved is None:
            CURRENT.unlink(missing_ok=True)
        else:
            CURRENT.write_bytes(saved)
    assert r["code"] == 0, r["out"][-3000:] + r["err"][-3000:]
    s = sweep_summary(tmp_path, "stale")
    assert s["n_trials"] == 3 and s["n_errors"] == 0 and s["placement_groups_left"] == 0
    print(f"\n[hardening] stale ray_current_cluster: 3 trials in {r['wall']:.0f} s")


def test_another_cluster_running_and_loopback_only(tmp_path, smoke_data, other_cluster):
    """Another Ray cluster runs (and is named as "the" cluster): the sweep uses its own, ends,
    and every socket its processes listen on is bound to 127.0.0.1."""
    r = _run_sweep(tmp_path, smoke_data, "other", watch_sockets=True, **{"tune.num_samples": 3, "train.epochs": 1})
    assert r["code"] == 0, r["out"][-3000:] + r["err"][-3000:]
    s = sweep_summary(tmp_path, "other")
    assert s["n_trials"] == 3 and s["n_errors"] == 0 and s["placement_groups_left"] == 0
    ports = {(a, p) for a, p, _ in r["sockets"]}
    assert len(ports) >= 5, ports  # GCS, raylet, dashboard, agents ...
    wide = sorted((a, p) for a, p in ports if a not in ("127.0.0.1", "::ffff:127.0.0.1"))
    assert not wide, f"listening beyond loopback: {wide}"
    assert other_cluster.split(":")[1] not in r["out"]  # never talked about the other one
    print(f"\n[hardening] another cluster running: 3 trials in {r['wall']:.0f} s; {len(ports)} listening "
          "sockets, all on 127.0.0.1")


def test_a_loopback_cluster_from_a_default_environment(tmp_path, smoke_data, other_cluster):
    """A head listening on 127.0.0.1 only, named by RAY_ADDRESS from an environment without
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (Ray's default on Linux): Ray alone rewrote the address to
    the machine's and retried for ever (a user's sweep waited 10 minutes in silence); the sweep
    finishes on that cluster, and says that its workers run at Ray's default nice 15."""
    r = _run_sweep(tmp_path, smoke_data, "loopback", timeout=600,
                   env_extra={"RAY_ADDRESS": other_cluster, "RAY_AUTH_MODE": "token",
                              "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"},
                   **{"tune.num_samples": 2, "train.epochs": 1})
    assert r["code"] == 0, r["out"][-3000:] + r["err"][-3000:]
    s = sweep_summary(tmp_path, "loopback")
    assert s["n_trials"] == 2 and s["n_errors"] == 0
    assert 'cluster {"CPU": 1.0}' in r["out"]  # the other cluster's one CPU, not a local Ray's two
    assert "this cluster's Ray workers run at nice 15" in r["out"]
    print(f"\n[hardening] loopback-only cluster from a default environment: 2 trials in {r['wall']:.0f} s")


@pytest.mark.timeout(1500)
def test_soak_under_cpu_load(tmp_path, smoke_data):
    """The sweep while another process keeps both cores busy: it finishes (one sweep of 2 trials:
    two sweeps in a row, as this test once ran, added 2 minutes to CI and nothing the first did not show).
    The burner shares the test's session (so the kernel's per-session CPU groups, where they
    are on, do not shield the sweep from it): it competes with the sweep's Ray workers
    process against process. At Ray's default worker nice value (15) epochs ran 20-27x slower
    and one sweep took 1197 s instead of 100 s; the sweep's own Ray now runs them at
    tune.worker_niceness (0). A sweep that has not ended after 600 s fails the test, with
    its output."""
    burner = subprocess.Popen([PY, "-c", "import multiprocessing as m\n"
                               "def spin():\n    while True: pass\n"
                               "ps=[m.Process(target=spin) for _ in range(2)]\n[p.start() for p in ps]\n"
                               "[p.join() for p in ps]"], process_group=0)
    walls = []
    try:
        for i in range(1):
            (tmp_path / f"r{i}").mkdir()
            r = _run_sweep(tmp_path / f"r{i}", smoke_data, f"soak{i}", timeout=600,
                           **{"tune.num_samples": 2, "train.epochs": 1})
            assert r["code"] == 0, r["out"][-3000:] + r["err"][-3000:]
            walls.append(r["wall"])
    finally:
        os.killpg(burner.pid, signal.SIGKILL)
        burner.wait()
    print(f"\n[hardening] soak: {len(walls)} sweeps beside 2 CPU-bound processes at the same priority, "
          f"wall times {[round(w) for w in walls]} s")


# --------------------------------------------------------------------------- bounded waits


def test_watchdog_ends_a_sweep_without_progress(tmp_path, smoke_data):
    r = _run_sweep(tmp_path, smoke_data, "stall", **{"tune.num_samples": 1, "tune.stall_timeout_s": 3})
    assert r["code"] == 3, r["out"][-3000:] + r["err"][-3000:]
    assert "the watchdog ended the sweep: no trial reported for 3 s" in r["out"]
    assert sweep_summary(tmp_path, "stall")["stalled"] is True


def test_worker_group_start_up_is_retried_a_bounded_number_of_times(tmp_path, smoke_data):
    """Ray Train workers that can never be placed (3 CPUs each on a 2-CPU machine): the trial errors
    after its start-up retries and the sweep ends, instead of retrying forever."""
    r = _run_sweep(tmp_path, smoke_data, "noroom", env_extra={"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "5"},
                   timeout=300, **{"tune.num_samples": 1, "tune.cpus_per_worker": 3, "tune.start_retries": 1,
                                   "tune.trial_runner": "train"})
    # retrying for ever would run into the 300-s bound: code None, "still running after 300 s" in err
    assert r["code"] == 2 and "no trial finished with a checkpoint" in r["err"], r["out"][-2000:] + r["err"][-2000:]


def test_an_inline_trial_that_fits_no_node_is_refused_before_the_maps(tmp_path, smoke_data):
    """The same request for the default runner (a one-worker trial trains in its own process): Tune would
    leave it pending for ever (it only warns), so the sweep refuses it up front, naming the key."""
    r = _run_sweep(tmp_path, smoke_data, "noroom-inline", timeout=300,
                   **{"tune.num_samples": 1, "tune.cpus_per_worker": 3})
    assert r["code"] == 2, r["out"][-2000:] + r["err"][-2000:]
    assert "tune.cpus_per_worker = 3" in r["err"] and "largest node of this cluster has 2 CPU(s)" in r["err"], r["err"]
    assert "SiNG maps" not in r["out"]  # refused before any work


# --------------------------------------------------------------------------- bad input, one line


def test_unknown_label_value_is_one_line(tmp_path, smoke_data):
    import shutil

    import nibabel as nib

    data = tmp_path / "data"
    shutil.copytree(smoke_data, data, ignore=shutil.ignore_patterns(".singr_cache"))
    case = sorted(data.iterdir())[2]
    seg = case / f"{case.name}_seg.nii.gz"
    img = nib.load(str(seg))
    lab = np.asarray(img.dataobj).copy()
    lab[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(lab, img.affine), str(seg))
    p = subprocess.run([PY, "-m", "tune", "-c", "smoke.yaml", "-q", *sweep_overrides(tmp_path, data, "badlab")],
                       cwd=tmp_path, env=tune_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "unexpected label values [7]" in lines[0] and case.name in lines[0], p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    assert not (tmp_path / "mlflow.db").exists()  # stopped before any run was opened


def test_unwritable_mlflow_store_is_one_line_before_any_work(tmp_path, smoke_data):
    import sqlite3

    db = tmp_path / "mlflow.db"
    con = sqlite3.connect(db)
    con.execute("create table t (x)")
    con.commit()
    con.close()
    subprocess.run(["chattr", "+i", str(db)], check=True)  # read-only, even for root
    try:
        p = subprocess.run([PY, "-m", "tune", "-c", "smoke.yaml", "-q", *sweep_overrides(tmp_path, smoke_data, "ro")],
                           cwd=tmp_path, env=tune_env(), capture_output=True, text=True, timeout=300)
    finally:
        subprocess.run(["chattr", "-i", str(db)], check=False)
    assert p.returncode == 2 and "MLflow store cannot be written" in p.stderr and str(db) in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "cache").exists() and not (tmp_path / "ray").exists()
