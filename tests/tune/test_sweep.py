"""The tuning service (tune/) on the smoke config, CPU only, on a local Ray.

Ray is started by the code under test (``python -m tune`` starts and shuts down its own
local Ray; the job-submission test starts one head node with ``ray start`` and stops its
processes by pid). Nothing else may run Ray as this user while these tests run: they use
the whole 2-CPU machine and share Ray's token, ``~/.ray/auth_token``.
"""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from tune.devcluster import ensure_auth_token
from tune.devcluster.procs import descendants
from tune.nodes import free_ports

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
BIN = Path(PY).parent

pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "MLFLOW_TRACKING_URI"}
    env.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1",
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"})
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def smoke_root(smoke_data) -> Path:
    """The smoke data set (6 cases, 32^3) of configs/smoke.yaml: the session's (tests/tune/conftest.py),
    read-only (every run here puts its cache under its own folder)."""
    return smoke_data


def _overrides(work: Path, data: Path, name: str, **more: object) -> list[str]:
    o = {"data.root": str(data), "data.cache_dir": str(work / "cache"), "output_dir": str(work / "out"),
         "tune.storage_path": str(work / "ray"), "tune.name": name,
         "mlflow.tracking_uri": f"sqlite:///{work / 'mlflow.db'}", "mlflow.registered_model": "singr-test",
         "tune.max_concurrent": 1}
    o.update(more)
    return [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in o.items()]


def _summary(work: Path, name: str) -> dict:
    return json.loads((work / "ray" / name / "results" / "summary.json").read_text())


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("override,needle", [
    ("tune.bogus=1", "tune.bogus"),
    ("tune.delta=[0.2,1.0]", "tune.delta"),
    ("tune.lam_grid=[0.5,1.5]", "tune.lam_grid"),
    ("tune.gamma=[2.0,1.0]", "tune.gamma"),
])
def test_bad_config_stops_before_work(tmp_path, smoke_root, override, needle):
    p = subprocess.run([PY, "-m", "tune", "-c", "smoke.yaml", *_overrides(tmp_path, smoke_root, "bad"), override],
                       cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert needle in p.stderr and "error" in p.stderr
    assert not (tmp_path / "ray").exists() and not (tmp_path / "cache").exists()


def test_no_cases_and_dead_address_stop_before_work(tmp_path, smoke_root):
    empty = tmp_path / "empty"
    empty.mkdir()
    p = subprocess.run([PY, "-m", "tune", "-c", "smoke.yaml", *_overrides(tmp_path, empty, "bad")],
                       cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "no cases found" in p.stderr and str(empty) in p.stderr
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.run([PY, "-m", "tune", "-c", "smoke.yaml", *_overrides(tmp_path, smoke_root, "bad")],
                       cwd=tmp_path, env=_env(RAY_ADDRESS=f"127.0.0.1:{port}"), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2 and f"127.0.0.1:{port}" in p.stderr and "does not answer" in p.stderr
    assert not (tmp_path / "ray").exists() and not (tmp_path / "cache").exists()
    # the singr CLI reports the same way, without importing Ray at import time
    p = subprocess.run([str(BIN / "singr"), "tune", "-c", "smoke.yaml", *_overrides(tmp_path, smoke_root, "bad"),
                        "tune.delta=[0.5,0.2]"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "tune.delta" in p.stderr
    p = subprocess.run([PY, "-c", "import sys, singr.cli; print('ray' in sys.modules)"], capture_output=True,
                       text=True, env=_env())
    assert p.stdout.strip() == "False"


# --------------------------------------------------------------------------- sweep, interrupt, restore

@pytest.fixture(scope="module")
def resumed_sweep(tmp_path_factory, smoke_root):
    """A 3-trial smoke sweep interrupted (SIGINT) after its first finished trial, then restored."""
    work = tmp_path_factory.mktemp("sweep")
    name = "resume"
    cmd = [PY, "-m", "tune", "-c", "smoke.yaml", "-q", *_overrides(work, smoke_root, name, **{"tune.num_samples": 3})]
    proc = subprocess.Popen(cmd, cwd=work, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first, log1 = None, []
    try:
        deadline = time.time() + 400
        for line in proc.stdout:  # type: ignore[union-attr]
            log1.append(line)
            m = re.match(r"\[tune\] \[[#.]+\] 1/3 trial (\S+) (finished|stopped by ASHA)", line)
            if m:
                first = m.group(1)
                proc.send_signal(signal.SIGINT)
                break
            assert time.time() < deadline, "no trial finished in time:\n" + "".join(log1[-40:])
        rest, _ = proc.communicate(timeout=300)
        log1.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert first is not None, "".join(log1[-60:])
    assert proc.returncode == 130, "".join(log1[-60:])
    s1 = _summary(work, name)
    t0 = time.time()
    p2 = subprocess.run(cmd, cwd=work, env=_env(), capture_output=True, text=True, timeout=600)
    assert p2.returncode == 0, (p2.stdout + p2.stderr)[-6000:]
    return {"work": work, "name": name, "first": first, "s1": s1, "s2": _summary(work, name), "out2": p2.stdout,
            "restore_seconds": time.time() - t0}


def test_maps_computed_once(resumed_sweep):
    s1, s2 = resumed_sweep["s1"], resumed_sweep["s2"]
    # 5 train+val cases x 2 lambdas x 3 regions
    assert s1["maps_computed"] == 30 and s1["maps_cached"] == 0
    assert s2["maps_computed"] == 0 and s2["maps_cached"] == 30
    assert "computed 0, from cache 30" in resumed_sweep["out2"]


def test_restore_keeps_finished_trial_and_finishes_rest(resumed_sweep):
    s1, s2, first = resumed_sweep["s1"], resumed_sweep["s2"], resumed_sweep["first"]
    assert s1.get("interrupted") is True
    assert s2["restored"] is True and "interrupted" not in s2
    ids = [t["trial_id"] for t in s2["trials"]]
    assert len(ids) == 3 and len(set(ids)) == 3 and first in ids
    assert s2["n_errors"] == 0
    assert all(t["epochs_run"] >= 1 for t in s2["trials"])
    before = {t["trial_id"]: t for t in s1["trials"]}[first]
    after = {t["trial_id"]: t for t in s2["trials"]}[first]
    assert (after["lam"], after["delta"], after["gamma"]) == (before["lam"], before["delta"], before["gamma"])
    assert after["epochs_run"] == before["epochs_run"]
    # the finished trial did not train again: its singr log has one row per epoch it ran
    log = resumed_sweep["work"] / "ray" / resumed_sweep["name"] / "singr_trials" / first / "log.csv"
    with open(log) as f:
        assert len(list(csv.DictReader(f))) == before["epochs_run"]


def test_outputs_table_csv_png(resumed_sweep):
    s2 = resumed_sweep["s2"]
    with open(s2["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and {"lam", "delta", "gamma", "val_Dice_best", "epochs_run", "stopped_early"} <= set(rows[0])
    assert Path(s2["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = resumed_sweep["out2"]
    assert "[tune] best: lam=" in out and "mlflow ui --backend-store-uri sqlite:///" in out
    assert "stopped early" in out
    best = s2["best"]
    assert best["lam"] in (0.3, 0.7) and 0.3 <= best["delta"] <= 0.7 and 0.5 <= best["gamma"] <= 2.0
    assert best["val_Dice_best"] == max(t["val_Dice_best"] for t in s2["trials"])


def test_mlflow_runs_and_registered_model(resumed_sweep):
    from mlflow.tracking import MlflowClient

    s2 = resumed_sweep["s2"]
    uri = s2["tracking_uri"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    parent = client.get_run(s2["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep"] == resumed_sweep["name"]
    kids = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    done = [r for r in kids if r.info.status == "FINISHED"]
    trial_ids = {r.data.tags["trial_id"] for r in done}
    assert trial_ids == {t["trial_id"] for t in s2["trials"]}
    first_runs = [r for r in kids if r.data.tags.get("trial_id") == resumed_sweep["first"]]
    assert len(first_runs) == 1  # the finished trial was not logged again after the restore
    exp = client.get_experiment(parent.info.experiment_id)
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"  # the UI's ML view, not GenAI
    for r in done:
        # the trial's whole resolved config as params, the curves as metrics, none of Ray's bookkeeping
        assert {"sing.lam", "sing.delta", "loss.gamma", "train.epochs", "model.name"} <= set(r.data.params)
        assert not [k for k in r.data.metrics if k.startswith(("config/", "pid", "timestamp", "done", "time_",
                                                                 "training_iteration", "iterations"))]
        hist = client.get_metric_history(r.info.run_id, "val_Dice_mean")
        assert len(hist) >= 1 and sorted(m.step for m in hist)[0] == 1
        assert "train_loss" in r.data.metrics and "val_HD95_mean" in r.data.metrics
        # where the time went and the worker's machine, per epoch (MLflow's system-metric names)
        assert 0.0 <= r.data.metrics["data_wait_share"] <= 1.0 and r.data.metrics["patches_per_s"] > 0
        assert 0.0 <= r.data.metrics["system/cpu_utilization_percentage"] <= 100.0
        assert r.data.metrics["system/system_memory_usage_megabytes"] > 0
        assert r.data.tags.get("worker_nodes", "").startswith("0:")
        assert "config.yaml" in [a.path for a in client.list_artifacts(r.info.run_id)]
    mv = client.get_model_version_by_alias("singr-test", "champion")
    best = s2["best"]
    assert mv.tags["trial_id"] == best["trial_id"]
    assert float(mv.tags["lam"]) == best["lam"] and abs(float(mv.tags["delta"]) - best["delta"]) < 1e-9
    assert {"gamma", "model", "val_Dice_mean"} <= set(mv.tags)
    import mlflow
    import mlflow.artifacts

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # models:/ URIs resolve through the registry
    d = mlflow.artifacts.download_artifacts(artifact_uri="models:/singr-test@champion",
                                            dst_path=tempfile.mkdtemp(), tracking_uri=uri)
    pts = list(Path(d).glob("**/*.safetensors"))
    assert [p.name for p in pts] == ["best.safetensors"]
    assert (pts[0].parent / "singr-model.json").is_file()
    from singr.engine.checkpoint import load_checkpoint

    state = load_checkpoint(pts[0])
    assert state.meta.lam == best["lam"] and abs(state.meta.delta - best["delta"]) < 1e-9


# --------------------------------------------------------------------------- ray job submit


@pytest.fixture
def ray_head():
    """`ray start --head` on loopback with its own temp dir; stopped by pid (only its processes)."""
    tmp = Path(f"/tmp/rt_{uuid.uuid4().hex[:6]}")
    port, dash = free_ports(2)
    env = _env()
    ensure_auth_token(BIN / "ray", env)  # a fresh machine has none, and `ray start` makes none
    cmd = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
           f"--port={port}", f"--dashboard-port={dash}", "--num-cpus=2", "--num-gpus=0", f"--temp-dir={tmp}",
           "--include-dashboard=true", "--disable-usage-stats"]
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, p.stdout + p.stderr
        yield {"gcs": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dash}", "env": env}
    finally:
        _kill_marked(str(tmp))
        _kill_marked(f"--address=127.0.0.1:{port}")  # the Ray Client server names the GCS, not the folder
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


def _kill_marked(marker: str) -> None:
    """SIGTERM, then SIGKILL, the processes whose command line names ``marker`` (our head's temp
    dir) and everything below them (the raylet's agents name no folder)."""
    def pids() -> list[int]:
        found = set()
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) != os.getpid():
                try:
                    if marker.encode() in (d / "cmdline").read_bytes():
                        found.add(int(d.name))
                except OSError:
                    pass
        for pid in list(found):
            found.update(_descendants(pid))
        return sorted(p for p in found if _cmdline(p))  # zombies have no command line
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        for _ in range(20):
            if not pids():
                return
            time.sleep(0.5)


def test_job_submit(ray_head, tmp_path, smoke_root):
    name = "job"
    over = _overrides(tmp_path, smoke_root, name, **{"tune.num_samples": 2, "train.epochs": 1})
    env = dict(ray_head["env"], RAY_AUTH_MODE="token")
    cmd = [str(BIN / "ray"), "job", "submit", "--address", ray_head["dashboard"], "--working-dir", str(REPO),
           "--", "python", "-m", "tune", "-c", "configs/smoke.yaml", "-q", *over]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=540, cwd=tmp_path)
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "succeeded" in out, out[-6000:]
    s = _summary(tmp_path, name)
    assert s["n_trials"] == 2 and s["maps_computed"] == 30 and s["registered"]["alias"] == "champion"
    assert "[tune] registered singr-test" in out
    # the head was started by a plain `ray start`: its workers run at Ray's default nice 15, and the sweep says so
    assert "this cluster's Ray workers run at nice 15" in out, out[-3000:]


# --------------------------------------------------------------------------- DDP: 2 workers == 1 worker

def _pick_seed(iters: int, epochs: int) -> int:
    """A train.seed for which every batch of 2 of the single worker holds both training cases."""
    for seed in range(2000):
        ok = True
        for e in range(epochs):
            picks = [int(np.random.default_rng([seed * 1000, e, i]).integers(2)) for i in range(2 * iters)]
            ok &= all(picks[2 * b] != picks[2 * b + 1] for b in range(iters))
        if ok:
            return seed
    raise AssertionError("no seed")


def test_ddp_two_workers_match_one(tmp_path, smoke_root):
    """Two Train workers (DDP, gloo on CPU), batch 1 each, give the model one worker gets with batch 2."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    import torch

    from singr.config import load_config
    from singr.engine.pipeline import discover, prepare, run_paths
    from tune.trainer import build_trainer

    iters, epochs = 2, 2
    seed = _pick_seed(iters, epochs)
    ids = sorted(c.case_id for c in discover(load_config("smoke.yaml", [f"data.root={smoke_root}"])))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ids[:2], "val": ids[2:3], "test": ids[3:], "seed": 0,
                                 "ratios": [0.64, 0.16, 0.20]}))
    base = [f"data.root={smoke_root}", f"data.cache_dir={tmp_path / 'cache'}", f"data.split_file={split}",
            "augment.flip_prob=0", "augment.intensity_prob=0", "model.dropout=0", f"train.epochs={epochs}",
            f"train.seed={seed}", "train.val_every=1", "train.patch_size=[32,32,32]"]
    cfg1 = load_config("smoke.yaml", base + [f"output_dir={tmp_path / 'one'}", "train.batch_size=2",
                                             f"train.iters_per_epoch={iters}"])
    cfg2 = load_config("smoke.yaml", base + [f"output_dir={tmp_path / 'two'}", "train.batch_size=1",
                                             f"train.iters_per_epoch={2 * iters}"])
    cases = discover(cfg1)
    prepare(cfg1, [c for c in cases if c.case_id in ids[:3]], run_paths(cfg1), progress=False)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        r1 = build_trainer(cfg1, "one", tmp_path / "ray", num_workers=1, cpus_per_worker=0.5).fit()
        r2 = build_trainer(cfg2, "two", tmp_path / "ray", num_workers=2, cpus_per_worker=0.5).fit()
    finally:
        ray.shutdown()
    assert r1.error is None and r2.error is None
    from singr.engine.checkpoint import load_checkpoint

    s1 = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.safetensors")
    s2 = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.safetensors")
    assert s1.epoch == s2.epoch == epochs - 1
    # the initial weights (fit seeds with train.seed before building the model; rank 0 of DDP broadcasts its own)
    from singr.engine.trainer import seed_everything
    from singr.models import model_from_config

    seed_everything(seed)
    w0 = model_from_config(cfg1, 4, 3).state_dict()
    flat = lambda sd: torch.cat([sd[k].flatten().double() for k in sorted(sd)])  # noqa: E731
    a, b, z = flat(s1.model_state), flat(s2.model_state), flat(w0)
    moved = float((a - z).norm())
    rel = float((a - b).norm()) / moved
    print(f"DDP vs single worker: |w1 - w2| / |w1 - w0| = {rel:.3g} (|w1 - w0| = {moved:.3g})")
    # Adam steps are nearly sign(g): float noise flips only weights whose gradient is ~0, while
    # unsynchronised ranks (each on its own case) would move most weights differently (rel ~ 1)
    assert moved > 0 and rel < 0.01, rel
    assert abs(r1.metrics["val_Dice_mean"] - r2.metrics["val_Dice_mean"]) < 1e-3
    # the Ray checkpoint of the last epoch holds the singr checkpoint files
    with r2.checkpoint.as_directory() as d:
        assert {"last.safetensors", "best.safetensors"} <= {p.name for p in Path(d).iterdir()}


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``."""
    return sorted(descendants([pid]) - {pid})


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_worker_failure_resumes_from_checkpoint(tmp_path, smoke_root):
    """The Train worker process is SIGKILLed after its first epoch: Ray Train restarts it
    (FailureConfig) and it resumes from the last reported checkpoint; epoch 1 is not trained again."""
    import threading

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    from singr.config import load_config
    from singr.engine.pipeline import discover, prepare, run_paths
    from tune.trainer import build_trainer

    cfg = load_config("smoke.yaml", [f"data.root={smoke_root}", f"data.cache_dir={tmp_path / 'cache'}",
                                     f"output_dir={tmp_path / 'run'}", "train.epochs=4", "train.iters_per_epoch=4"])
    prepare(cfg, discover(cfg), run_paths(cfg), progress=False)
    log = tmp_path / "run" / "log.csv"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    result: dict = {}
    try:
        t = threading.Thread(target=lambda: result.update(res=build_trainer(
            cfg, "fail", tmp_path / "ray", num_workers=1, cpus_per_worker=0.5, max_failures=1).fit()))
        t.start()
        deadline = time.time() + 240
        snapshot = tmp_path / "ray" / "fail" / "checkpoint_manager_snapshot.json"
        while time.time() < deadline and not (snapshot.exists() and "epoch_00001" in snapshot.read_text()):
            time.sleep(0.1)  # the checkpoint of epoch 1 is registered with the Train controller
        assert snapshot.exists(), "the worker never reported a checkpoint"
        workers = [p for p in _descendants(os.getpid()) if "RayTrainWorker" in _cmdline(p)]
        assert len(workers) == 1, [_cmdline(p) for p in _descendants(os.getpid())]
        os.kill(workers[0], signal.SIGKILL)
        t.join(timeout=400)
        assert not t.is_alive()
    finally:
        ray.shutdown()
    res = result["res"]
    assert res.error is None and res.metrics["epoch"] == 4
    with open(log) as f:
        epochs = [int(r["epoch"]) for r in csv.DictReader(f)]
    assert epochs[-1] == 4 and epochs.count(1) == 1, epochs  # restarted from a checkpoint, not from scratch
    assert sorted(set(epochs)) == [1, 2, 3, 4]


def test_inline_trial_killed_resumes_from_its_tune_checkpoint(tmp_path, smoke_root):
    """The default runner trains a one-worker trial in its Tune trial process: SIGKILL that process
    after epoch 2's checkpoint is on disk; Tune retries the trial (tune.max_failures) from the latest
    checkpoint its driver had registered, so epoch 1 is not trained again, and the sweep registers a
    model as usual. (Which checkpoint the driver had registered at the kill, epoch 1's or epoch 2's,
    depends on how far behind the trial it runs: on a loaded machine epoch 2 can be trained twice.)"""
    import threading

    from tests.tune.conftest import PY, sweep_overrides, sweep_summary, tune_env

    name = "inline-kill"
    cmd = [PY, "-m", "tune", "-c", "smoke.yaml", "-q",
           *sweep_overrides(tmp_path, smoke_root, name, **{"tune.num_samples": 1, "train.epochs": 6,
                                                           "train.iters_per_epoch": 4, "tune.max_failures": 1})]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=tune_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    out: list[str] = []
    threading.Thread(target=lambda: out.extend(proc.stdout or []), daemon=True).start()
    sweep = tmp_path / "ray" / name
    saw: dict = {}
    try:
        deadline, trial_pid = time.time() + 300, None
        while time.time() < deadline and proc.poll() is None:
            kept = sorted(sweep.glob("run_trial_*/checkpoint_00000[1-9]"))  # Tune's checkpoints: epoch 2 on
            if kept:
                trials = [p for p in _descendants(proc.pid) if "ImplicitFunc" in _cmdline(p)]
                saw.update(kept=[k.name for k in kept], trials=trials)
                if len(trials) == 1:
                    trial_pid = trials[0]
                    break
            time.sleep(0.1)
        assert trial_pid is not None, f"no trial process with a checkpoint: {saw}\n{''.join(out)[-3000:]}"
        logs = list((sweep / "singr_trials").glob("*/log.csv"))
        before = [int(r["epoch"]) for r in csv.DictReader(open(logs[0]))] if logs else []
        os.kill(trial_pid, signal.SIGKILL)
        assert proc.wait(timeout=400) == 0, "".join(out)[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    epochs = [int(r["epoch"]) for r in csv.DictReader(open(logs[0]))]
    saw.update(before=before, epochs=epochs)
    assert before and max(before) < 6, saw  # killed mid-trial
    assert sorted(set(epochs)) == list(range(1, 7)) and epochs.count(1) == 1, saw  # resumed, not restarted
    assert len(epochs) < 6 + len(before), saw  # some epochs were not trained again
    s = sweep_summary(tmp_path, name)
    assert s["n_errors"] == 0 and s["trials"][0]["epochs_run"] == 6, s
    assert (sweep / "results" / "best_model").is_dir()
