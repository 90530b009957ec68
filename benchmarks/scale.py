"""At BraTS size: how each stage's cost grows with the number of full-size cases.

    .venv/bin/python benchmarks/scale.py --n 10 30 [100] [--work DIR] [--tiny] [--out FILE]

Synthetic BraTS-size cases (``configs/synthetic-brats-size.yaml``: 240 x 240 x 155, int16)
are added up to each N in turn, in one work folder (kept with ``--work``: a later run with a
larger N only adds cases). Per N, for the cases added since the previous N:

* synth: seconds per case (one core), input bytes per case;
* preprocess (``singr preprocess``'s path: read, z-score, crop, compact cache, the SiNG
  distances of lambda 0.5): seconds per case, cache bytes per case;
* maps through Ray Data (``tune.maps.compute_maps``, the sweep's map stage) for the two other
  lambdas of the paper's grid (0.25, 0.75): seconds per case and lambda (its regions' maps,
  wall time with the pool's actors in parallel), the map actors' peak RSS;

and over all N cases:

* training patches per second at the paper's 128^3 crop with SiNG targets and augmentation,
  read through a DataLoader with 0 (in-process), 1 and 2 workers (a page cache as warm as the
  preceding stages left it), and the training process' RSS after them;
* the driver's peak RSS.

Once (it does not depend on N): validation of one case, the paper's unet3d (brats.yaml) with
its 128^3 sliding window on this CPU. Then each stage's per-case cost is compared across N
(what should stay flat must stay flat) and extrapolated to BraTS 2021 (1,251 cases, 3
lambdas) on a stated cluster: 4 nodes of 8 CPUs and 1 GPU. Writes ``scale.json`` in the work
folder and the section "At BraTS size" of RESULTS.md (``--out``; kept by ``run.py``).
``--tiny`` runs every stage on small cases (what the tests check).
"""
from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sections  # noqa: E402 - benchmarks/sections.py, beside this file

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## At BraTS size (`benchmarks/scale.py`)"
BRATS_2021 = 1251
CLUSTER = {"nodes": 4, "cpus_per_node": 8, "gpus_per_node": 1}
# published 3-D U-Net training rates on BraTS (patches/s the loader must feed one GPU)
GPU_NEEDS = {"V100": 5.5, "A100 (AMP)": 9.5}
LAMS_RAY = (0.25, 0.75)


def _config(tiny: bool, work: Path) -> Any:
    from tune.config import load_service_config

    over = [f"data.root={work / 'data'}", f"data.cache_dir={work / 'cache'}", f"output_dir={work / 'out'}",
            f"tune.storage_path={work / 'ray'}", "sing.lam=0.5", "tune.map_cpus=1"]
    if tiny:
        over += ["synth.brain_box=[30,36,26]", "synth.shape=[48,48,32]", "train.patch_size=[32,32,32]",
                 "infer.roi_size=[32,32,32]", "model.features=[4,4,8,8,16,4]"]
    return load_service_config("synthetic-brats-size.yaml", over)


def _bytes(paths: list[Path]) -> int:
    return sum(f.stat().st_size for p in paths for f in (p.rglob("*") if p.is_dir() else [p]) if f.is_file())


class _RaySampler:
    """Peak RSS (MiB) of the Ray worker processes below this one while it runs."""

    def __init__(self) -> None:
        import psutil

        self.me = psutil.Process()
        self.peak = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            for p in self.me.children(recursive=True):
                try:
                    if "ray::" in " ".join(p.cmdline()[:1]):
                        self.peak = max(self.peak, p.memory_info().rss / 2**20)
                except Exception:  # noqa: BLE001 - a process that ended meanwhile
                    pass

    def __enter__(self) -> "_RaySampler":
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join(timeout=2)


def _patch_rates(cfg: Any, cache: Path, ids: list[str], samples: int) -> dict[str, Any]:
    """Patches/s through a DataLoader with 0, 1 and 2 workers (128^3, SiNG targets, PatchAugment)."""
    import psutil
    import torch

    from singr.data.dataset import PatchDataset, train_augmentation
    from singr.engine.pipeline import sing_settings

    torch.set_num_threads(1)
    a = cfg.augment
    out: dict[str, Any] = {}
    for workers in (0, 1, 2):
        ds = PatchDataset(cache, ids, cfg.train.patch_size, samples, True, sing_settings(cfg), float(cfg.sing.delta),
                          train_augmentation(a.flip_prob, a.intensity_prob, a.intensity_scale, a.intensity_shift),
                          seed=workers)
        loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=workers, shuffle=False)
        it = iter(loader)
        next(it)  # workers started, first case opened
        t = time.perf_counter()
        n = sum(1 for _ in it)
        out[f"workers_{workers}"] = n / (time.perf_counter() - t)
        del it, loader
    out["rss_mib"] = psutil.Process().memory_info().rss / 2**20
    return out


def _validation_seconds(cfg: Any, cache: Path, case_id: str) -> float:
    import torch

    from singr.engine.trainer import validate
    from singr.models import model_from_config

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model = model_from_config(cfg, 4, 3).eval()
    t = time.perf_counter()
    validate(model, cfg, cache, [case_id], torch.device("cpu"))
    return time.perf_counter() - t


def run_scale(ns: list[int], work: Path, tiny: bool = False) -> dict[str, Any]:
    """Every stage at every N (module docstring); returns what ``scale.json`` holds."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from threadpoolctl import threadpool_limits

    from singr.data.synth import synthesize_dataset
    from singr.engine.pipeline import discover, prepare, run_paths
    from tune.maps import compute_maps
    from tune.plan import make_plan

    cfg = _config(tiny, work)
    s = cfg.synth
    data, cache = Path(cfg.data.root), Path(cfg.data.cache_dir)
    rows: list[dict[str, Any]] = []
    ray.init(address="local", num_cpus=max(1, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    try:
        done = 0
        for n in sorted(ns):
            row: dict[str, Any] = {"n": n, "new": n - done}
            print(f"[scale] N = {n}: {n - done} new case(s)", flush=True)
            t = time.perf_counter()
            with threadpool_limits(1):
                folders = synthesize_dataset(data, n_cases=n, shape=tuple(s.shape), seed=int(s.seed), progress=False,
                                             brain_box=s.brain_box, dtype=str(s.dtype))
            row["synth_s_per_case"] = (time.perf_counter() - t) / max(1, n - done)
            new = folders[done:n]
            row["input_bytes_per_case"] = _bytes(new) / max(1, len(new))
            cases = {c.case_id: c for c in discover(cfg)}
            ids = [f.name for f in folders[:n]]
            t = time.perf_counter()
            prepare(cfg, [cases[f.name] for f in new], run_paths(cfg), progress=False)
            row["preprocess_s_per_case"] = (time.perf_counter() - t) / max(1, len(new))
            row["cache_bytes_per_case"] = _bytes([cache / f.name for f in new]) / max(1, len(new))
            plan = make_plan(cfg.model_copy(update={"tune": cfg.tune.model_copy(update={"lam_grid": list(LAMS_RAY)})}))
            t = time.perf_counter()
            with _RaySampler() as rs:
                got = compute_maps(plan, ids, progress=False)
            # one case at one lambda = its regions' maps (3 for BraTS)
            row["map_s_per_case_lambda"] = (time.perf_counter() - t) / max(1, len(new) * len(LAMS_RAY))
            row["maps_computed"], row["maps_cached"], row["map_actors"] = (got["maps_computed"], got["maps_cached"],
                                                                           got["actors"])
            row["map_actor_peak_rss_mib"] = rs.peak
            lam_bytes = _bytes([p for f in new for p in (cache / f.name).glob("*lam0.25*")])
            row["lambda_bytes_per_case"] = lam_bytes / max(1, len(new))
            row["patches"] = _patch_rates(cfg, cache, ids, 6 if tiny else 24)
            row["driver_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            rows.append(row)
            print(f"[scale] {json.dumps(row)}", flush=True)
            done = n
        val_s = _validation_seconds(cfg, cache, ids[0])
    finally:
        ray.shutdown()
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "tiny": tiny, "shape": list(s.shape),
            "brain_box": list(s.brain_box or s.shape), "cpus": os.cpu_count(), "rows": rows,
            "validation_s_per_case": val_s, "growth": growth(rows), "brats2021": extrapolate(rows, val_s)}


def growth(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per-case cost at the largest N over the smallest (1.0: linear in N, as it should be)."""
    if len(rows) < 2:
        return {}
    a, b = rows[0], rows[-1]
    keys = ("synth_s_per_case", "preprocess_s_per_case", "map_s_per_case_lambda", "cache_bytes_per_case")
    out = {k: b[k] / a[k] for k in keys if a.get(k)}
    out["patches_per_s_workers_0"] = b["patches"]["workers_0"] / a["patches"]["workers_0"]
    out["driver_peak_rss"] = b["driver_peak_rss_mib"] / a["driver_peak_rss_mib"]
    if a.get("map_actor_peak_rss_mib"):
        out["map_actor_peak_rss"] = b["map_actor_peak_rss_mib"] / a["map_actor_peak_rss_mib"]
    return out


def extrapolate(rows: list[dict[str, Any]], val_s: float) -> dict[str, Any]:
    """BraTS 2021 (1,251 cases, 3 lambdas) on ``CLUSTER``, from the largest N's per-case figures,
    scaled by CPU count where a stage runs one case per core."""
    r = rows[-1]
    cores = CLUSTER["nodes"] * CLUSTER["cpus_per_node"]
    here = max(1, int(r.get("map_actors") or 1))
    # this machine: wall seconds per (case, lambda) with `here` actors in parallel -> core-seconds
    core_s = r["map_s_per_case_lambda"] * here
    per_core = r["patches"]["workers_0"]
    feeding = per_core * (CLUSTER["cpus_per_node"] - 1)  # a core for the training loop itself
    return {"cases": BRATS_2021, "lambdas": 3, "cluster": CLUSTER,
            "preprocess_h": BRATS_2021 * r["preprocess_s_per_case"] / cores / 3600,
            "map_stage_h": BRATS_2021 * 3 * core_s / cores / 3600,
            "cache_gb": BRATS_2021 * (r["cache_bytes_per_case"] + 2 * r["lambda_bytes_per_case"]) / 1e9,
            "input_gb": BRATS_2021 * r["input_bytes_per_case"] / 1e9,
            "loader_patches_per_s_per_gpu": feeding, "gpu_needs": GPU_NEEDS,
            "loader_keeps_up": {k: feeding >= v for k, v in GPU_NEEDS.items()},
            "validation_s_per_case_cpu": val_s}


def scale_lines(res: dict[str, Any]) -> list[str]:
    """RESULTS.md's section."""
    mb = 1e6
    rows, b = res["rows"], res["brats2021"]
    lines = [f"Run of {res['date']} on {res['cpus']} cores: synthetic cases of {'x'.join(map(str, res['shape']))} "
             f"voxels (head in a {'x'.join(map(str, res['brain_box']))} box, int16; "
             "`configs/synthetic-brats-size.yaml`), added up to each N; per case the new cases' costs, patches "
             "over all N cases (128^3, SiNG targets, augmentation).", "",
             "| N | synth (s/case) | preprocess + lambda 0.5 (s/case) | Ray Data maps (s per case and lambda) "
             "| input (MB/case) "
             "| cache, 1 lambda (MB/case) | + per lambda (MB/case) | patches/s, 0 / 1 / 2 loader workers "
             "| map actor peak RSS (MiB) | driver peak RSS (MiB) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        p = r["patches"]
        lines.append(f"| {r['n']} | {r['synth_s_per_case']:.2f} | {r['preprocess_s_per_case']:.2f} | "
                     f"{r['map_s_per_case_lambda']:.2f} ({r['maps_computed']} region maps, {r['map_actors']} actors) | "
                     f"{r['input_bytes_per_case'] / mb:.1f} | {r['cache_bytes_per_case'] / mb:.1f} | "
                     f"{r['lambda_bytes_per_case'] / mb:.1f} | {p['workers_0']:.1f} / {p['workers_1']:.1f} / "
                     f"{p['workers_2']:.1f} | {r['map_actor_peak_rss_mib']:.0f} | {r['driver_peak_rss_mib']:.0f} |")
    g = res["growth"]
    if g:
        lines += ["", f"Growth from N = {rows[0]['n']} to N = {rows[-1]['n']} (per-case cost at the larger N over "
                  "the smaller; 1.00 is linear in N): " + ", ".join(f"{k} {v:.2f}" for k, v in g.items()) + "."]
    keeps = ", ".join(f"{k} ({v} patches/s): {'yes' if b['loader_keeps_up'][k] else 'no'}"
                      for k, v in b["gpu_needs"].items())
    c = b["cluster"]
    lines += ["", f"Validation of one case on this CPU (the paper's unet3d, 128^3 window): "
              f"{res['validation_s_per_case']:.1f} s.", "",
              f"BraTS 2021 ({b['cases']} cases, {b['lambdas']} lambdas) on {c['nodes']} nodes x {c['cpus_per_node']} "
              f"CPUs x {c['gpus_per_node']} GPU, from the largest N's per-case figures (one case per core): "
              f"preprocessing {b['preprocess_h']:.2f} h, map stage {b['map_stage_h']:.2f} h on CPUs, input "
              f"{b['input_gb']:.1f} GB, cache {b['cache_gb']:.1f} GB. The loader on 7 cores of a node gives "
              f"{b['loader_patches_per_s_per_gpu']:.0f} patches/s per GPU; keeps up with {keeps}.", ""]
    return lines


def kept_section(results: Path) -> list[str]:
    """The scale section of ``results``, for ``run.py`` to keep when it rewrites the file."""
    return sections.kept(results, "scale", HEADING)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[10, 30])
    ap.add_argument("--work", default=None, help="keep the cases and caches here (default: a temporary folder)")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--out", default=None, help="RESULTS.md to update (default: benchmarks/RESULTS.md; none "
                    "with --tiny unless given)")
    a = ap.parse_args(argv)
    if any(n < 1 for n in a.n):
        ap.error("--n: every N must be >= 1")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.work) if a.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        res = run_scale(a.n, work, a.tiny)
        (work / "scale.json").write_text(json.dumps(res, indent=1))
    out = Path(a.out) if a.out else (None if a.tiny else ROOT / "benchmarks" / "RESULTS.md")
    print("\n".join(scale_lines(res)))
    if out is not None:
        sections.put(out, "scale", "\n".join(scale_lines(res)), HEADING)
        out.with_name("scale.json").write_text(json.dumps(res, indent=1))
        print(f"[scale] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
