"""The service's CUDA paths, end to end, on one machine with a GPU (``benchmarks/gpu_check.sh`` runs it).

1. the machine: GPU, CUDA, torch, Ray, whether FastGeodis was built with CUDA;
2. BraTS-size synthetic cases (``configs/gpu-check.yaml``: 8 cases of 240 x 240 x 155);
3. SiNG distances of one case, every region, on the CPU and on the GPU in this process: the
   ratio of their times and the largest difference between them (both FastGeodis' kernels);
4. the sweep as a user runs it (``python -m tune``): SiNG maps on Ray Data actors that hold a
   GPU share, two concurrent Ray Train trials on half a GPU each with AMP, registration in a
   SQLite MLflow; GPU utilisation and memory sampled with ``nvidia-smi`` while it runs; per
   trial: time to the first report, median epoch, training patches/s, the share of training
   time spent waiting for data, the share of validation;
5. the endpoint (``singr serve --num-gpus 1``) on the registered champion: one case uploaded,
   the first answer and the median of the next ones.

Writes ``gpu_check.json`` and ``gpu_check.md`` into ``--out`` and puts the table into the
GPU section of ``--results`` (``benchmarks/RESULTS.md``), between its markers. Without a GPU
it stops with a message, unless ``--cpu-dry-run``: the same steps on small cases on the CPU,
to check the script itself (RESULTS.md is then left alone).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sections  # noqa: E402 - benchmarks/sections.py, beside this file

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = sections.markers("gpu-check")
DRY_RUN = ["synth.n_cases=6", "synth.brain_box=null", "synth.shape=[64,64,48]", "model.features=[4,4,8,8,16,4]",
           "train.patch_size=[32,32,32]", "train.iters_per_epoch=4", "train.epochs=2", "train.val_every=1",
           "infer.roi_size=[32,32,32]", "tune.cpus_per_worker=0.5", "tune.map_cpus=0.5", "tune.gpus_per_worker=0",
           "data.num_workers=0", "tune.asha.grace_period=1", "tune.lam_grid=[0.5]"]


def log(msg: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> dict[str, Any]:
    """GPU, CUDA and versions; ``fastgeodis_cuda``: FastGeodis ran on a CUDA tensor."""
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                            "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1),
                    capability=f"{p.major}.{p.minor}", gpus=torch.cuda.device_count())
        try:
            import FastGeodis

            img = torch.zeros(1, 1, 8, 8, 8, device="cuda")
            FastGeodis.generalised_geodesic3d(img, torch.ones_like(img), [1.0, 1.0, 1.0], 1e10, 0.5, 1)
            info["fastgeodis_cuda"] = True
        except Exception as e:  # noqa: BLE001 - reported, and the map step says what it used
            info["fastgeodis_cuda"] = f"no: {e}"
    import ray

    info["ray"] = ray.__version__
    return info


def run(cmd: list[str], env: dict[str, str], what: str, cwd: Path) -> float:
    """Run ``cmd`` in ``cwd`` (output streamed), fail with ``what`` named; seconds taken. Not in the
    checkout: ``python -m`` puts the working folder first on sys.path, and the checkout's singr
    has no singr.configs unless installed in editable mode."""
    log(f"{what}: {' '.join(cmd)}")
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env)
    if r.returncode != 0:
        raise SystemExit(f"[gpu-check] {what} failed (exit {r.returncode})")
    return time.perf_counter() - t


def map_ratio(cfg: Any, device: str, scratch: Path) -> dict[str, Any]:
    """Distances of every region of the first case (preprocessed as the sweep does: cropped to
    its foreground) at every lambda of ``tune.lam_grid``, with the fast engine on the CPU (all
    cores) and on ``device``: seconds, their ratio, and the largest difference between the two
    SiNG maps (delta 0.5)."""
    import numpy as np
    import torch

    from singr.engine.pipeline import discover
    from singr.preprocess import prepare_case
    from singr.sing import compute_distances
    from singr.sing.definition import sing_from_distances

    case = discover(cfg)[0]
    prep = prepare_case(case, scratch)
    image, regions, spacing = np.asarray(prep.image), prep.regions, prep.spacing
    it = int(cfg.sing.iterations)
    out: dict[str, Any] = {"case": case.case_id, "shape": list(image.shape[1:]), "regions": len(prep.region_names),
                           "lambdas": list(cfg.tune.lam_grid)}
    times: dict[str, float] = {}
    maps: dict[str, list[Any]] = {}
    torch.set_num_threads(os.cpu_count() or 1)
    for dev in dict.fromkeys(("cpu", device)):
        compute_distances(regions[0], image, 0.5, spacing, it, "fast", dev)  # warm-up: compile, CUDA context
        if dev.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        ds = [compute_distances(r, image, float(lam), spacing, it, "fast", dev)
              for lam in cfg.tune.lam_grid for r in regions]
        times[dev] = time.perf_counter() - t
        maps[dev] = [sing_from_distances(d, 0.5) for d in ds]
    out["cpu_s"] = round(times["cpu"], 3)
    out[f"{device}_s"] = round(times[device], 3)
    out["speedup"] = round(times["cpu"] / times[device], 2)
    out["max_abs_diff_sing"] = float(max(np.max(np.abs(a - b)) for a, b in zip(maps["cpu"], maps[device])))
    return out


class GpuSampler:
    """``nvidia-smi`` every ``every`` s in a thread: utilisation (%) and memory used (MiB)."""

    def __init__(self, every: float = 1.0):
        self.every, self.rows = every, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self.ok = shutil.which("nvidia-smi") is not None

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
                util, mem = out.stdout.strip().splitlines()[0].split(",")
                self.rows.append((time.time(), float(util), float(mem)))
            except Exception:  # noqa: BLE001 - a missed sample is not an error
                pass

    def __enter__(self) -> "GpuSampler":
        if self.ok:
            self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()

    def summary(self, since: float | None = None, until: float | None = None) -> dict[str, Any]:
        rows = [r for r in self.rows if (since is None or r[0] >= since) and (until is None or r[0] <= until)]
        if not rows:
            return {"samples": 0}
        util = [r[1] for r in rows]
        return {"samples": len(rows), "util_mean_pct": round(statistics.mean(util), 1),
                "util_busy_share": round(sum(u >= 50 for u in util) / len(util), 3),
                "memory_max_mib": max(r[2] for r in rows)}


def serve_check(env: dict[str, str], model: str, tracking: str, case_dir: Path, num_gpus: float,
                requests: int, cwd: Path) -> dict[str, Any]:
    """``singr serve`` on ``model`` with ``num_gpus`` per replica; POST the case ``requests + 1`` times."""
    import httpx

    from serve.bench import case_files

    port = free_port()
    cmd = [sys.executable, "-m", "singr", "serve", "--model", model, "--tracking-uri", tracking, "--port", str(port),
           "--num-gpus", str(num_gpus)]
    log(f"endpoint: {' '.join(cmd)}")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=600) as c:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"[gpu-check] singr serve exited with {proc.returncode} before it was ready")
                if time.perf_counter() - t0 > 300:
                    raise SystemExit("[gpu-check] the endpoint was not ready within 300 s")
                try:
                    if c.get(url + "/v1/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(1)
            ready = time.perf_counter() - t0
            info = c.get(url + "/v1/model").json()
            files = case_files(case_dir)
            lat = []
            for _ in range(requests + 1):
                t = time.perf_counter()
                r = c.post(url + "/v1/segment", files=files, params={"output": "json"})
                if r.status_code != 200:
                    raise SystemExit(f"[gpu-check] POST /v1/segment: HTTP {r.status_code}: {r.text[:300]}")
                lat.append(time.perf_counter() - t)
            answer = r.json()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except ProcessLookupError:  # it had exited
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return {"ready_s": round(ready, 1), "first_request_s": round(lat[0], 2),
            "warm_request_s": round(statistics.median(lat[1:]), 2) if len(lat) > 1 else None,
            "requests": len(lat), "device": info.get("device") or info.get("replica", {}).get("device"),
            "volumes": {k: v for k, v in answer.items() if "volume" in k.lower()} or None}


def markdown(res: dict[str, Any]) -> str:
    m, mp, sw, sv = res["machine"], res["maps"], res["sweep"], res.get("serve")
    dev = res["device"]
    wall = f" Whole check {res['wall_s']:.0f} s." if res.get("wall_s") else ""
    lines = [f"Run {res['date']} by `bash benchmarks/gpu_check.sh` on {m.get('gpu', 'no GPU')} "
             f"({m.get('gpu_memory_gib', '?')} GiB, compute capability {m.get('capability', '?')}), "
             f"{m['cpu_count']} CPU cores; torch {m['torch']} (CUDA {m['cuda']}), Ray {m['ray']}; "
             f"FastGeodis CUDA: {m.get('fastgeodis_cuda')}. Data: {res['cases']} synthetic cases of "
             f"{'x'.join(map(str, res['shape']))} (`configs/gpu-check.yaml`).{wall}",
             "", "| step | figure |", "| --- | --- |",
             f"| SiNG distances of one case ({mp['regions']} regions x {len(mp['lambdas'])} lambdas), same process "
             f"| CPU {mp['cpu_s']} s, {dev} {mp[f'{dev}_s']} s: **{mp['speedup']}x**; largest SiNG map difference "
             f"{mp['max_abs_diff_sing']:.2g} |",
             f"| sweep maps stage (Ray Data actors with a GPU share; preprocessing included) | "
             f"{sw.get('map_seconds')} s for {sw.get('maps_computed')} maps of {sw.get('map_cases')} cases |"]
    for t in sw["trials"]:
        lines.append(f"| trial {t['trial_id']} (Ray Train, {res['trial_gpu']:g} GPU, AMP {res['amp']}) | "
                     f"first report {t.get('first_report_s')} s; epoch {t.get('epoch_s')} s; "
                     f"**{t.get('patches_per_s')} patches/s** ({res['patch']}, batch {res['batch']}); waiting for "
                     f"data {_pct(t.get('data_wait_share'))} of training time; validation "
                     f"{_pct(t.get('val_share'))} of epoch time; "
                     f"{t.get('epochs_run')} epochs |")
    g = sw.get("gpu") or {}
    if g.get("samples"):
        lines.append(f"| GPU over the whole sweep (nvidia-smi every 1 s) | mean utilisation {g['util_mean_pct']}%, "
                     f"busy (>=50%) in {_pct(g['util_busy_share'])} of samples, memory up to "
                     f"{g['memory_max_mib']:.0f} MiB |")
    reg = sw.get("registered") or {}
    champ = f"{reg.get('name')} v{reg.get('version')} @{reg.get('alias')}" if isinstance(reg, dict) else reg
    lines.append(f"| whole sweep (`python -m tune`: maps, trials, registration) | {sw['wall_s']:.0f} s; "
                 f"registered {champ} |")
    if sv:
        lines.append(f"| endpoint (`singr serve --num-gpus {res['serve_gpus']:g}`), one case | ready in "
                     f"{sv['ready_s']} s; first answer {sv['first_request_s']} s, then {sv['warm_request_s']} s "
                     f"(median of {sv['requests'] - 1}); replica device {sv.get('device')} |")
    else:
        lines.append(f"| endpoint (`singr serve --num-gpus {res['serve_gpus']:g}`) | not measured: "
                     f"{res.get('serve_missing', 'the run stopped before this step')} |")
    if res.get("notes"):
        lines += ["", *res["notes"]]
    return "\n".join(lines) + "\n"


def _pct(v: Any) -> str:
    return f"{100 * float(v):.0f}%" if isinstance(v, (int, float)) and v == v else "?"


HEADING = "## GPU check (`benchmarks/gpu_check.sh`)"


def kept_section(results: Path) -> list[str]:
    """The GPU section of ``results`` as it is (heading and marked block), as lines for a writer
    that rewrites the file (``run.py``), so that a run on the CPU does not erase it; [] if none."""
    return sections.kept(results, "gpu-check", HEADING)


def put_section(results: Path, text: str) -> None:
    """Replace the text between the GPU markers of ``results`` (or append the section), atomically."""
    sections.put(results, "gpu-check", text, HEADING)


def main() -> int:
    import importlib.util

    if importlib.util.find_spec("singr") is None:  # not installed: the checkout's sources
        sys.path.append(str(ROOT))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "gpu-check.yaml"))
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "gpu-check-work",
                    help="data, runs, Ray storage and MLflow store of the check (emptied first)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-check-out", help="gpu_check.json and .md")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    ap.add_argument("--requests", type=int, default=3, help="timed requests after the first")
    ap.add_argument("--endpoint-only", action="store_true",
                    help="only the endpoint, on a model trained here for one epoch; its figures replace the "
                    "endpoint's in --out's gpu_check.json (for an earlier run that stopped before the endpoint)")
    ap.add_argument("--cpu-dry-run", action="store_true", help="no GPU: small cases on the CPU, to test the script")
    a = ap.parse_args()
    t_all = time.perf_counter()
    info = machine()
    log(f"machine: {json.dumps(info)}")
    if not info["cuda_available"] and not a.cpu_dry_run:
        raise SystemExit("[gpu-check] no CUDA GPU visible to torch (torch.cuda.is_available() is False); "
                         "this check needs one (--cpu-dry-run tests the script on the CPU)")
    device = "cpu" if a.cpu_dry_run else "cuda"
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    a.out.mkdir(parents=True, exist_ok=True)
    tracking = f"sqlite:///{a.work / 'mlflow.db'}"
    over = [f"data.root={a.work / 'data'}", f"output_dir={a.work / 'runs'}",
            f"tune.storage_path={a.work / 'tune'}", f"mlflow.tracking_uri={tracking}"]
    if a.cpu_dry_run:
        over += DRY_RUN
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           # the checkout last: an installed singr (with its singr.configs) comes first
           "PYTHONPATH": os.pathsep.join([*filter(None, [os.environ.get("PYTHONPATH")]), str(ROOT)])}
    def save(r: dict[str, Any]) -> None:  # after every step: a check stopped half-way keeps its figures
        tmp = a.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(r, indent=1, default=str))
        tmp.replace(a.out / "gpu_check.json")

    res: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "machine": info, "device": device,
                           "trial_gpu": 0 if a.cpu_dry_run else 0.5, "amp": not a.cpu_dry_run}

    from tune.config import load_service_config
    from tune.plan import make_plan

    cfg = load_service_config(a.config, over)
    res["cases"], res["shape"] = int(cfg.synth.n_cases), list(cfg.synth.shape)
    res["patch"], res["batch"] = "x".join(map(str, cfg.train.patch_size)), int(cfg.train.batch_size)
    res["serve_gpus"] = 0.0 if a.cpu_dry_run else 1.0
    if a.endpoint_only:  # a model of one epoch on 1 case (maps on the CPU), then the endpoint
        earlier = json.loads((a.out / "gpu_check.json").read_text()) if (a.out / "gpu_check.json").exists() else None
        eo = [*over, "synth.n_cases=3", "data.split_ratios=[0.34,0.33,0.33]", "train.epochs=1",
              "train.iters_per_epoch=4", "train.val_every=1", "sing.device=cpu"]
        run([sys.executable, "-m", "singr", "synth", "-c", a.config, *eo, "--quiet"], env, "synthetic cases", a.work)
        run([sys.executable, "-m", "singr", "train", "-c", a.config, *eo, "-q"], env, "a one-epoch model", a.work)
        split = json.loads((a.work / "runs" / "split.json").read_text())
        res["serve"] = serve_check(env, str(a.work / "runs" / "checkpoints" / "last.safetensors"), tracking,
                                   a.work / "data" / split["test"][0], res["serve_gpus"], a.requests, a.work)
        res["serve"]["model"] = "a one-epoch checkpoint (--endpoint-only)"
        log(f"serve: {json.dumps(res['serve'])}")
        res = {**earlier, "serve": res["serve"]} if earlier else res
        save(res)
        if earlier and "sweep" in earlier and not a.cpu_dry_run:
            md = markdown(res)
            (a.out / "gpu_check.md").write_text(md)
            print(md, flush=True)
            put_section(a.results, md)
        return 0
    res["synth_s"] = round(run([sys.executable, "-m", "singr", "synth", "-c", a.config, *over, "--quiet"], env,
                               "synthetic cases", a.work), 1)
    log("SiNG distances, CPU against " + device)
    res["maps"] = map_ratio(cfg, device, a.work / "scratch")
    log(f"maps: {json.dumps(res['maps'])}")
    save(res)

    t_sweep = time.time()
    with GpuSampler() as gpu:
        sweep_s = run([sys.executable, "-m", "tune", "--config", a.config, *over], env, "sweep", a.work)
    summary_p = next((a.work / "tune").glob("*/results/summary.json"))
    summary = json.loads(summary_p.read_text())
    trials = summary.get("trials") or []
    keys = ("trial_id", "first_report_s", "epoch_s", "patches_per_s", "data_wait_share", "val_share", "epochs_run",
            "score")
    res["sweep"] = {"wall_s": round(sweep_s, 1), "map_seconds": summary.get("map_seconds"),
                    "maps_computed": summary.get("maps_computed"), "map_cases": sum((summary.get("map_nodes") or
                                                                                      {}).values()),
                    "registered": summary.get("registered"),
                    "trials": [{k: t.get(k) for k in keys} for t in trials],
                    "gpu": gpu.summary(since=t_sweep)}
    log(f"sweep: {json.dumps(res['sweep'])}")
    save(res)

    split = json.loads(Path(make_plan(cfg).split_file).read_text())
    case_id = split["test"][0]
    model = f"models:/{cfg.mlflow.registered_model}@{cfg.mlflow.alias}"
    res["serve"] = serve_check(env, model, tracking, a.work / "data" / case_id, res["serve_gpus"],
                               a.requests, a.work)
    log(f"serve: {json.dumps(res['serve'])}")
    res["wall_s"] = round(time.perf_counter() - t_all, 1)
    save(res)
    md = markdown(res)
    (a.out / "gpu_check.md").write_text(md)
    print(md, flush=True)
    if not a.cpu_dry_run:
        put_section(a.results, md)
        log(f"wrote the GPU section of {a.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
