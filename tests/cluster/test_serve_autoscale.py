"""The endpoint autoscales on the local multi-node cluster (tune.devcluster: a head without CPUs,
two 1-CPU worker nodes, on 127.0.0.1), started as a user starts it: `singr serve --address
<cluster> --config <file> --min-replicas 1 --max-replicas 2`, the config giving the
autoscaling block's target and (short) delays.

Six clients post a small synthetic case over and over: the deployment's RUNNING replicas must
reach 2 while they do, and fall back to 1 once they stop; both within bounded waits. The
replica counts are read from Serve's status by a driver of their own (a subprocess polling
``serve.status()``). The figures (time to scale up and down, requests answered, non-200
answers) are printed (`-s` shows them); none is asserted as a speed. Every process the
cluster started is stopped by PID afterwards, and checked gone."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(900)]
PY = sys.executable
BIN = Path(PY).parent
REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = "SingrSegmenter"

_POLL = """
import json, sys, time
import ray
from ray import serve
ray.init(address=sys.argv[1], log_to_driver=False)
while True:
    try:
        app = serve.status().applications.get("singr")
        dep = app.deployments.get(sys.argv[2]) if app else None
        states = {getattr(k, "value", str(k)): int(v) for k, v in (dep.replica_states.items() if dep else [])}
    except Exception as e:  # the controller between states: say so, keep polling
        states = {"error": repr(e)[:160]}
    print(json.dumps({"t": time.time(), **states}), flush=True)
    time.sleep(0.5)
"""


def _env(cluster_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "MLFLOW_TRACKING_URI"}
    env.update({"PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg", "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"})
    env.update(cluster_env)
    return env


def _checkpoint(work: Path) -> tuple[Path, Path]:
    """(the smoke model's checkpoint trained for one epoch, one small synthetic case folder)."""
    from singr.config import load_config
    from singr.data.synth import synthesize_dataset
    from singr.engine.trainer import fit

    cfg = load_config("smoke.yaml", [f"data.root={work / 'data'}", f"output_dir={work / 'run'}", "train.epochs=1"])
    synthesize_dataset(work / "data", n_cases=6, shape=(32, 32, 32), seed=0, progress=False)
    res = fit(cfg, progress=False)
    return Path(res.best_checkpoint), sorted((work / "data").glob("BraTS*"))[0]


class _Replicas:
    """The deployment's replica states over time, from a polling driver's output."""

    def __init__(self, proc: subprocess.Popen):
        self.rows: list[dict] = []
        self.proc = proc
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout or []:
            if line.startswith("{"):
                self.rows.append(json.loads(line))

    def running(self) -> int:
        return int(self.rows[-1].get("RUNNING", 0)) if self.rows else 0

    def wait(self, cond, timeout: float) -> float | None:
        """When ``cond(latest row)`` first held (epoch seconds), None when ``timeout`` passed first."""
        deadline = time.time() + timeout
        seen = len(self.rows)
        while time.time() < deadline:
            for row in self.rows[seen:]:
                if cond(row):
                    return row["t"]
            seen = len(self.rows)
            time.sleep(0.2)
        return None

    def history(self) -> str:
        """The distinct states seen, in order (for a failure message)."""
        out: list[str] = []
        for r in self.rows:
            s = ",".join(f"{k}={v}" for k, v in sorted(r.items()) if k != "t")
            if not out or out[-1].split("@")[0] != s:
                out.append(f"{s}@{r['t']:.0f}")
        return " -> ".join(out[-20:])


def test_replicas_grow_under_load_and_shrink_after(tmp_path_factory):
    import httpx

    from tune.devcluster import LocalCluster
    from tune.devcluster.procs import alive
    from tune.nodes import free_port

    root = tmp_path_factory.mktemp("cluster_autoscale")
    c = LocalCluster(root / "cluster", workers=2, cpus_per_worker=1.0, mlflow=False)
    pids: set[int] = set()
    serve_proc = poll = poll_log = None
    try:
        info = c.up()
        ckpt, case = _checkpoint(root / "work")
        port = free_port()
        cfg = root / "serve.yaml"
        cfg.write_text(json.dumps({
            "http_options": {"host": "127.0.0.1", "port": port},
            "applications": [{"name": "singr", "route_prefix": "/", "import_path": "serve.app:build_app",
                              "args": {"num_threads": 1, "max_uploads_per_client": 8},  # 6 clients, one address
                              "deployments": [{"name": DEPLOYMENT, "max_ongoing_requests": 8,
                                               "max_replicas_per_node": 1,
                                               "autoscaling_config": {"target_ongoing_requests": 2,
                                                                      "upscale_delay_s": 1, "downscale_delay_s": 2,
                                                                      "look_back_period_s": 12},
                                               "ray_actor_options": {"num_cpus": 0.5}}]}]}))
        serve_proc = subprocess.Popen([str(BIN / "singr"), "serve", "--config", str(cfg), "--address", info.gcs,
                                       "--model", str(ckpt), "--min-replicas", "1", "--max-replicas", "2"],
                                      env=_env(info.env()), cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        assert serve_proc.stdout is not None
        for line in serve_proc.stdout:
            lines.append(line)
            if line.startswith("[singr]") and ("ready" in line or "error" in line):
                break
        assert any("model loaded, ready" in x for x in lines), "".join(lines)
        assert any("1 to 2 replicas (autoscaling, target 2" in x for x in lines), "".join(lines)
        threading.Thread(target=serve_proc.stdout.read, daemon=True).start()  # drain its output from here on
        poll_log = open(root / "poll.err", "w")
        poll = subprocess.Popen([PY, "-c", _POLL, info.gcs, DEPLOYMENT], cwd=root, stdout=subprocess.PIPE,
                                stderr=poll_log, text=True,  # a loopback-only head: Ray must know before import
                                env=_env({**info.env(), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}))
        replicas = _Replicas(poll)
        assert replicas.wait(lambda r: r.get("RUNNING") == 1, 120), \
            f"not 1 replica at rest: {replicas.history()}; poller: {(root / 'poll.err').read_text()[-1500:]}"

        base = f"http://127.0.0.1:{port}"
        files = [(m, (f"{m}.nii.gz", (case / f"{case.name}_{m}.nii.gz").read_bytes(), "application/gzip"))
                 for m in ("flair", "t1", "t1ce", "t2")]
        codes: list[int] = []
        errors: list[str] = []
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(timeout=120) as h:
                while not stop.is_set():
                    try:
                        r = h.post(base + "/v1/segment", files=files, params={"output": "json"})
                        codes.append(r.status_code)
                        if r.status_code != 200:
                            errors.append(r.text[:200])
                    except httpx.HTTPError as e:
                        codes.append(-1)
                        errors.append(repr(e)[:200])

        t_load = time.time()
        clients = [threading.Thread(target=client, daemon=True) for _ in range(6)]
        for t in clients:
            t.start()
        t_up = replicas.wait(lambda r: r.get("RUNNING", 0) >= 2, 180)
        n_two = 0
        if t_up is not None:
            n_up = len(codes)
            time.sleep(5)  # both replicas answer for a while
            n_two = len(codes) - n_up
        stop.set()
        t_stop = time.time()
        for t in clients:
            t.join(timeout=150)
        assert t_up is not None, (f"never 2 RUNNING replicas under load ({len(codes)} requests answered): "
                                  f"{replicas.history()}")
        t_down = replicas.wait(lambda r: r.get("RUNNING") == 1 and not any(v for k, v in r.items()
                                                                        if k not in ("t", "RUNNING")), 180)
        bad = [x for x in codes if x != 200]
        print(f"\n[cluster] autoscaling 1..2 replicas (target 2 ongoing requests, delays 1 s up / 2 s down, "
              f"look-back 12 s) under 6 clients: 2 RUNNING {t_up - t_load:.1f} s after the load began; "
              f"{len(codes)} requests answered ({n_two} in the 5 s with two replicas), {len(bad)} not 200 "
              f"{sorted(set(bad))}; back to 1 replica "
              f"{'never' if t_down is None else f'{t_down - t_stop:.1f} s'} after the load stopped; "
              f"states {replicas.history()}; errors {sorted(set(errors))[:3]}")
        assert t_down is not None, f"not back to 1 replica after the load: {replicas.history()}"
        assert codes and not bad, f"{len(bad)} of {len(codes)} requests failed: {sorted(set(errors))[:5]}"
        assert httpx.post(base + "/v1/segment", files=files, params={"output": "json"}, timeout=120).status_code == 200
    finally:
        pids = c.processes() if c.info_file.exists() else set()
        for proc in (poll, serve_proc):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=30)
        if poll_log is not None:
            poll_log.close()
        left = c.down() if c.info_file.exists() else set()
        assert not left and not [p for p in pids if alive(p)], "cluster processes left behind"
