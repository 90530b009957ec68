"""The project's benchmarks; writes benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/run.py [--case DIR] [--repeats N] [--out FILE] [--tiny]

Every figure is the median of ``--repeats`` runs, next to the ratio to its baseline
measured in the same run:

* SiNG maps of the 3 regions of the real case (4-channel z-scored image, lambda 0.5,
  delta 0.5): the default "fast" engine vs the reference engine (FastGeodis on the full
  volume). Time ratio, peak memory (each engine in a fresh process), agreement over the
  reference band (mean |dS|, share of voxels with |dS| > 0.05, sign agreement), and the
  time to read the case's files, the floor preprocessing is compared with.
* Training throughput: samples/s of a SiNGR step (targets built from cached distances,
  Focal-L1) vs the hard-label step (binary targets, Dice+BCE), same model, patch, batch.
* Fast inference: one full-size case through the :class:`Predictor` (crop to the brain, Gaussian
  blending, bfloat16 where the CPU has it) vs MONAI's plain ``sliding_window_inference`` over the
  whole volume (constant blending, float32), same briefly trained paper-size unet3d: time ratio,
  Dice per region between the label maps, peak memory.
* Inference: one full-size case through ``singr predict``'s in-process path vs the HTTP
  endpoint (Ray Serve on loopback), same checkpoint and window; and the sweep's map stage
  (Ray Data) with a cold and a warm cache.
* The preprocessed cache (``bench_cache.py``): format 2 (cropped to the foreground, blosc2)
  against format 1 (whole-volume float32 .npy): bytes per case against the NIfTI input,
  preprocessing time, training patches per second (SiNG targets and hard labels).
* Trial start-up (``bench_startup.py``): the sweep with every trial a Ray Train run against
  trials trained in their own reused Tune process (``tune.trial_runner``): the epochs' share
  of a trial's slot, the start-up before the first epoch by part, the sweep's wall time.
* BraTS-size synthetic cases (``bench_synth.py``): ``configs/synthetic-brats-size.yaml``'s
  generator (brain box, int16) against the whole-field-of-view float32 one, one core:
  seconds and bytes per case, brain and tumour volumes beside the real case's.

``--tiny`` runs every benchmark on small inputs (what the tests check); it does not
write the repository's RESULTS.md unless ``--out`` says so.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cache import bench_cache, cache_lines  # noqa: E402
from bench_startup import bench_startup, startup_lines  # noqa: E402
from bench_synth import bench_synth, synth_lines  # noqa: E402
from cluster_sweep import kept_section as kept_cluster_section  # noqa: E402
from gpu_check import kept_section  # noqa: E402
from scale import kept_section as kept_scale_section  # noqa: E402
from sections import kept as kept_marked  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CASE = ROOT.parent / "shared" / "data" / "brats-case"
MODS = ("t2f", "t1n", "t1c", "t2w")  # canonical order flair, t1, t1ce, t2


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def load_case(case_dir: Path, tiny: bool):
    from singr.data.readers import load_case_from_files

    c = load_case_from_files({m: case_dir / f"{m}.nii.gz" for m in MODS}, label=case_dir / "seg.nii.gz",
                             label_convention="auto", case_id=case_dir.name)
    if tiny:  # 3 mm, cropped around the tumour: same anatomy, a few seconds for every engine
        from singr.geometry import bounding_box

        img, lab = c.image[:, ::3, ::3, ::3], c.label[::3, ::3, ::3]
        box = tuple(slice(max(0, b.start - 6), b.stop + 6) for b in bounding_box(lab > 0))
        c.image, c.label, c.spacing = img[(slice(None),) + box], lab[box], (3.0, 3.0, 3.0)
    return c


# --------------------------------------------------------------------------- SiNG maps
def _maps_worker(case_dir: str, engine: str, tiny: bool) -> None:
    """Child process: compute the 3 maps once with ``engine``; print peak RSS (MiB) and time."""

    import threading

    from singr.preprocess import normalize_image
    from singr.regions import labels_to_regions
    from singr.sing import compute_distances, map_regions

    c = load_case(Path(case_dir), tiny)
    img = normalize_image(c.image)
    regions = labels_to_regions(c.label, c.label_convention)
    if engine != "none":
        compute_distances(regions[2][:8, :8, :8], img[:, :8, :8, :8], 0.5, engine=engine)  # compile / warm
    page = os.sysconf("SC_PAGE_SIZE") / 2**20

    def rss() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    base, peak, done = rss(), [rss()], threading.Event()

    def sample() -> None:  # resident memory every 5 ms while the maps are computed
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.005)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t = time.perf_counter()
    if engine != "none":
        map_regions(lambda r: compute_distances(r, img, 0.5, c.spacing, engine=engine), regions, engine)
    dt = time.perf_counter() - t
    done.set()
    th.join()
    peak[0] = max(peak[0], rss())
    print(json.dumps({"peak_mib": peak[0], "before_maps_mib": base, "extra_mib": peak[0] - base, "seconds": dt}))


def bench_maps(case_dir: Path, repeats: int, tiny: bool) -> dict[str, Any]:
    from singr.preprocess import normalize_image
    from singr.regions import labels_to_regions
    from singr.sing import compute_distances, map_regions, sing_from_distances

    read_t, c = median_time(lambda: load_case(case_dir, tiny), repeats)
    img = normalize_image(c.image)
    regions = labels_to_regions(c.label, c.label_convention)
    compute_distances(regions[2][:8, :8, :8], img[:, :8, :8, :8], 0.5, engine="fast")  # jit warm-up

    def run(engine):  # as sing_maps / preprocessing run them: regions in threads for the fast engine
        return map_regions(lambda r: compute_distances(r, img, 0.5, c.spacing, engine=engine), regions, engine)

    fast_t, fast = median_time(lambda: run("fast"), repeats)
    ref_t, ref = median_time(lambda: run("fastgeodis"), repeats)
    agree = {}
    for name, a, b in zip(("TC", "WT", "ET"), fast, ref):
        sa, sb = sing_from_distances(a, 0.5), sing_from_distances(b, 0.5)
        band = sb > -1
        d = np.abs(sa - sb)[band]
        agree[name] = {"band_voxels": int(band.sum()), "mean_abs_dS": float(d.mean()),
                       "share_gt_0.05": float((d > 0.05).mean()),
                       "sign_agreement": float((np.sign(sa) == np.sign(sb)).mean()),
                       "bitwise_equal": bool(np.array_equal(sa, sb)),
                       "crop": [s.stop - s.start for s in a.bbox] if a.bbox else None}
    prep_t, _ = median_time(lambda: (normalize_image(load_case(case_dir, tiny).image), run("fast")), repeats)
    mem = {}
    for engine in ("none", "fast", "fastgeodis"):
        cmd = [sys.executable, __file__, "--maps-worker", str(case_dir), engine] + (["--tiny"] if tiny else [])
        out = subprocess.run(cmd,
                             capture_output=True, text=True, check=True)
        mem[engine] = json.loads(out.stdout.strip().splitlines()[-1])
    return {"shape": list(c.image.shape), "spacing": list(c.spacing), "read_s": read_t, "fast_s": fast_t,
            "reference_s": ref_t, "speedup": ref_t / fast_t, "preprocess_s": prep_t,
            "preprocess_over_read": prep_t / read_t,
            "agreement": agree, "memory": mem}


# --------------------------------------------------------------------------- training step
def bench_train(repeats: int, tiny: bool, workdir: Path) -> dict[str, Any]:
    import torch

    from singr.config import load_config, with_values
    from singr.data.dataset import PatchDataset, train_augmentation
    from singr.data.synth import synthesize_dataset
    from singr.engine.pipeline import discover, prepare, run_paths, sing_settings, split_cases
    from singr.engine.trainer import loss_from_config
    from singr.models import model_from_config

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    base = "smoke.yaml" if tiny else "synthetic.yaml"
    root = workdir / "data"
    cfg = load_config(base, [f"data.root={root}", f"output_dir={workdir / 'run'}"])
    s = cfg.synth
    synthesize_dataset(root, n_cases=int(s.n_cases), shape=tuple(s.shape), seed=0, progress=False)
    paths = run_paths(cfg)
    cases = discover(cfg)
    split = split_cases(cfg, cases, paths)
    prepare(cfg, cases, paths, progress=False)
    tr = cfg.train
    a = cfg.augment
    steps = 3 if tiny else 10
    epochs: dict[str, Callable[[], int]] = {}
    parts: dict[str, dict[str, float]] = {}
    # "hard_again" is a second, identical hard-label setup: its ratio to "hard" is the noise floor
    for kind, loss_name in (("singr", "focal_l1"), ("hard", "dice_bce"), ("hard_again", "dice_bce")):
        c = with_values(cfg, {"loss.name": loss_name})
        ds = PatchDataset(paths.cache_dir, split["train"], tr.patch_size, steps * tr.batch_size,
                          loss_name != "dice_bce", sing_settings(c), 0.5,
                          train_augmentation(a.flip_prob, a.intensity_prob, a.intensity_scale, a.intensity_shift),
                          in_memory=True)
        torch.manual_seed(0)
        model = model_from_config(c, 4, 3)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        loss_fn = loss_from_config(c)
        loader = torch.utils.data.DataLoader(ds, batch_size=tr.batch_size, num_workers=0)
        if kind != "hard_again":  # what the two setups differ in, timed apart: the sample and the loss
            parts[kind] = {"data_ms": 1000 * median_time(lambda ds=ds: [ds[i] for i in range(8)], 5)[0] / 8}
            b = next(iter(loader))
            z = torch.randn_like(b["target"], requires_grad=True)

            def loss_step(z=z, b=b, loss_fn=loss_fn) -> None:
                loss_fn(z, b["target"]).backward()

            parts[kind]["loss_ms"] = 1000 * median_time(loss_step, 20)[0]

        def epoch(model=model, opt=opt, loss_fn=loss_fn, loader=loader) -> int:
            n = 0
            for b in loader:
                opt.zero_grad()
                loss = loss_fn(model(b["image"]), b["target"])
                loss.backward()
                opt.step()
                n += b["image"].shape[0]
            return n

        epoch()  # warm-up
        epochs[kind] = epoch
    # interleaved, the order reversed every round, so that drift in the machine's speed hits all alike
    order = list(epochs)
    times: dict[str, list[float]] = {k: [] for k in order}
    n = steps * tr.batch_size
    for r in range(max(repeats, 1 if tiny else 10)):
        for kind in (order if r % 2 == 0 else order[::-1]):
            t = time.perf_counter()
            epochs[kind]()
            times[kind].append(time.perf_counter() - t)
    out: dict[str, Any] = {kind: {"samples_per_s": n / statistics.median(ts), "epochs_timed": len(ts)}
                           for kind, ts in times.items()}

    def paired(kind: str) -> list[float]:  # per round: throughput of ``kind`` over hard's, timed side by side
        return sorted(h / k for h, k in zip(times["hard"], times[kind]))

    for key, kind in (("ratio_singr_over_hard", "singr"), ("noise_hard_again_over_hard", "hard_again")):
        rs = paired(kind)
        out[key], out[f"{key}_range"] = statistics.median(rs), [rs[0], rs[-1]]
    out["patch"], out["batch"], out["model"] = tr.patch_size, tr.batch_size, cfg.model.name
    out["parts"] = parts
    out["step_ms"] = 1000 * statistics.median(times["hard"]) / steps
    return out


# --------------------------------------------------------------------------- inference
def _bench_checkpoint(path: Path, tiny: bool, spacing: list[float]) -> Path:
    """A checkpoint of the synthetic config's unet3d (weights untrained: timing only), sliding
    window 128^3 (the paper's) at full size, 32^3 for --tiny."""
    import torch

    from singr.config import load_config
    from singr.engine.checkpoint import Checkpoint, save_checkpoint
    from singr.engine.meta import ModelMeta
    from singr.models import model_from_config

    roi = [32, 32, 32] if tiny else [128, 128, 128]
    cfg = load_config("smoke.yaml" if tiny else "synthetic.yaml", [f"infer.roi_size={roi}"])
    torch.manual_seed(0)
    model = model_from_config(cfg, 4, 3)
    meta = ModelMeta(in_channels=4, out_channels=3, region_names=("TC", "WT", "ET"), label_convention="brats2023",
                     modalities=("flair", "t1", "t1ce", "t2"), model=cfg.model.name, loss="focal_l1",
                     regression=True, lam=0.5, delta=0.5, gamma=1.0, spacing=tuple(spacing))
    return save_checkpoint(path, Checkpoint(model_state=model.state_dict(), meta=meta,
                                            config=cfg.to_dict(core_only=True), epoch=0))


def _case_folder(case_dir: Path, tiny: bool, workdir: Path) -> Path:
    """The case's 4 modality files (the real folder; for --tiny the 3 mm crop written out)."""
    if not tiny:
        return case_dir
    from singr.io import write_nifti

    c = load_case(case_dir, True)
    out = workdir / "tiny-case"
    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    for i, m in enumerate(MODS):
        write_nifti(out / f"{m}.nii.gz", c.image[i], aff)
    return out


def bench_infer(case_dir: Path, repeats: int, tiny: bool, workdir: Path) -> dict[str, Any]:
    """One case, end to end: in-process (what `singr predict` does with its model loaded:
    read the 4 files, segment, write the label NIfTI) vs HTTP (POST the 4 files to the Ray
    Serve endpoint on loopback, write the returned NIfTI). Same checkpoint, window, threads.
    The in-process runs come first, before Ray starts, so Ray's idle processes do not slow them."""
    import httpx
    import torch

    from serve.bench import case_files
    from singr.data.readers import load_case_from_files
    from singr.engine.bundle import load_predictor
    from singr.io import write_nifti

    threads = max(1, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    folder = _case_folder(case_dir, tiny, workdir)
    probe = load_case_from_files({m: folder / f"{m}.nii.gz" for m in MODS}, case_id=folder.name)
    ckpt = _bench_checkpoint(workdir / "bench.safetensors", tiny, list(probe.spacing))
    held = {"pred": load_predictor(ckpt, "cpu")}

    def in_process() -> int:
        c = load_case_from_files({m: folder / f"{m}.nii.gz" for m in MODS}, case_id=folder.name)
        p = held["pred"].predict(c.image, case=c.case_id)
        write_nifti(workdir / "inproc_seg.nii.gz", p.labels, c.affine, c.header)
        return int(p.regions.sum())

    in_process()  # warm-up (allocator, MONAI imports)
    t_in, vox_in = median_time(in_process, repeats)
    held.clear()  # the model's memory is freed before Ray starts
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import socket

    import ray
    from ray import serve

    from serve.app import make_app

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    ray.init(address="local", num_cpus=threads, include_dashboard=False, log_to_driver=False,
             namespace="singr-bench")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(make_app({"model": str(ckpt), "num_threads": threads, "max_batch_size": 1},
                           {"num_replicas": 1, "ray_actor_options": {"num_cpus": 1}}), name="singr", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=1800) as client:
            for _ in range(600):
                if client.get(base + "/v1/health").status_code == 200:
                    break
                time.sleep(0.5)

            def over_http() -> int:
                r = client.post(base + "/v1/segment", files=case_files(folder))  # reads the files each time
                r.raise_for_status()
                (workdir / "http_seg.nii.gz").write_bytes(r.content)
                return len(r.content)

            over_http()  # warm-up
            t_http, nbytes = median_time(over_http, repeats)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    import nibabel as nib

    a = np.asarray(nib.load(str(workdir / "inproc_seg.nii.gz")).dataobj)
    b = np.asarray(nib.load(str(workdir / "http_seg.nii.gz")).dataobj)
    return {"shape": list(probe.image.shape), "roi": [32] * 3 if tiny else [128] * 3, "threads": threads,
            "config": "smoke.yaml" if tiny else "synthetic.yaml",
            "in_process_s": t_in, "http_s": t_http, "http_over_in_process": t_http / t_in,
            "labels_equal": bool(np.array_equal(a, b)), "response_bytes": nbytes, "label_voxels": vox_in}


def bench_sweep_maps(repeats: int, tiny: bool, workdir: Path) -> dict[str, Any]:
    """The sweep's map stage (tune.maps.compute_maps: Ray Data actors, prepare + distances for
    every lambda of tune.lam_grid) on the synthetic data set: cold (empty cache, a new one per
    repeat) vs warm (the same cache again)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    from singr.data.synth import synthesize_dataset
    from singr.engine.pipeline import discover, run_paths, split_cases
    from tune.config import load_service_config
    from tune.maps import compute_maps
    from tune.plan import make_plan

    base = "smoke.yaml" if tiny else "synthetic.yaml"
    root = workdir / "sweep-data"
    s = load_service_config(base).synth
    synthesize_dataset(root, n_cases=int(s.n_cases), shape=tuple(s.shape), seed=0, progress=False)

    def plan_for(cache: Path):
        return make_plan(load_service_config(base, [f"data.root={root}", f"data.cache_dir={cache}",
                                                    f"output_dir={workdir / 'sweep-out'}",
                                                    f"tune.storage_path={workdir / 'sweep-ray'}"]))

    pc = plan_for(workdir / "c").cfg
    sp = split_cases(pc, discover(pc), run_paths(pc))
    ids = sp["train"] + sp["val"]  # what the sweep's map stage covers
    ray.init(address="local", num_cpus=max(1, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    try:
        if not tiny:  # --tiny's figures are not kept: its cold run pays the start-up instead
            compute_maps(plan_for(workdir / "warmup-cache"), ids[:2], progress=False)  # Ray Data start-up, jit
        cold_t, warm_t, cold, warm = [], [], {}, {}
        for i in range(repeats):
            plan = plan_for(workdir / f"cache-{i}")
            t = time.perf_counter()
            cold = compute_maps(plan, ids, progress=False)
            cold_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            warm = compute_maps(plan, ids, progress=False)
            warm_t.append(time.perf_counter() - t)
    finally:
        ray.shutdown()
    c, w = statistics.median(cold_t), statistics.median(warm_t)
    return {"cases": len(ids), "lam_grid": plan_for(workdir / "c").lam_grid, "actors": cold["actors"],
            "cold_s": c, "warm_s": w, "cold_over_warm": c / w, "cold_computed": cold["maps_computed"],
            "warm_computed": warm["maps_computed"], "warm_cached": warm["maps_cached"],
            "shape": list(s.shape), "config": base}


# --------------------------------------------------------------------------- fast inference
FAST_TRAIN = {"tiny": (30, 32), "full": (160, 64)}  # (Adam steps, patch edge) of the benchmark's model
# 160 steps, not 80 (2026-11-29): at 80 the network marked 26k voxels outside the brain as tumour and the default
# path's labels agreed with the plain window at Dice 0.895-0.912; at 160, 9.6k voxels and 0.917-0.945


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _trim_heap() -> None:
    """Give the C heap's free memory back to the OS (glibc), so that RSS starts from what is in use."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS then includes memory freed by an earlier run
        pass


class _PeakRss:
    """Peak resident memory (MiB) above the level at entry (after trimming the heap), sampled every
    5 ms while the block runs."""

    def __enter__(self) -> "_PeakRss":
        import threading

        _trim_heap()
        self.base = self.peak = _rss_mib()
        self._done = threading.Event()
        self._th = threading.Thread(target=self._sample, daemon=True)
        self._th.start()
        return self

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, _rss_mib())
            time.sleep(0.005)

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        self._th.join()
        self.peak = max(self.peak, _rss_mib())
        self.extra = self.peak - self.base


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    n = int(a.sum()) + int(b.sum())
    return 1.0 if n == 0 else 2.0 * int(np.logical_and(a, b).sum()) / n


def _briefly_trained_unet(cfg: Any, img: np.ndarray, regions: np.ndarray, steps: int, patch: int) -> Any:
    """The config's unet3d after ``steps`` Adam steps (lr 3e-3, Dice+BCE on the 3 regions, batch 2,
    ``patch``^3 crops: half uniformly random over the whole volume as the trainer draws them, half
    centred on a tumour voxel; seed 0) on the benchmark case itself.

    Why trained: with random weights the logits are near 0 everywhere and change from window to
    window, so that Gaussian instead of constant blending alone moves the labels by Dice 0.8: a label
    comparison then says nothing. A briefly trained network gives tumour-shaped regions with confident
    logits. It is still far from converged: how much its labels depend on where the windows fall
    (crop, blending) is larger than for a fully trained model."""
    import torch

    from singr.losses import DiceBCELoss
    from singr.models import model_from_config

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = model_from_config(cfg, 4, 3).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = DiceBCELoss()
    target = regions.astype(np.float32)
    tumour = np.argwhere(regions.any(axis=0))
    size = [min(patch, s // 16 * 16) for s in img.shape[1:]]

    def sample() -> tuple[np.ndarray, np.ndarray]:
        if len(tumour) and rng.random() < 0.5:
            c = tumour[rng.integers(len(tumour))]
        else:
            c = np.array([rng.integers(0, n) for n in img.shape[1:]])
        start = [int(np.clip(k - p // 2, 0, n - p)) for k, p, n in zip(c, size, img.shape[1:])]
        sl = (slice(None),) + tuple(slice(a, a + p) for a, p in zip(start, size))
        return img[sl], target[sl]

    for _ in range(steps):
        xs, ys = zip(*(sample() for _ in range(2)))
        opt.zero_grad()
        loss_fn(model(torch.from_numpy(np.stack(xs))), torch.from_numpy(np.stack(ys))).backward()
        opt.step()
    return model.eval()


def bench_fast_infer(case_dir: Path, repeats: int, tiny: bool, workdir: Path) -> dict[str, Any]:
    """One case, the network only (normalised image in, 3 region masks out), same model and threads:
    baseline = MONAI's plain ``sliding_window_inference`` over the whole volume (constant blending,
    float32, contiguous, overlap 0.5, the paper's 128^3 window); ours = :class:`Predictor` with the
    configs' inference settings (crop to the brain, Gaussian blending) and precision ``auto``, and
    the same in float32. Interleaved rounds (order reversed every round), medians; Dice per region
    between the label maps; peak RSS above the start of each run."""
    import torch
    from monai.inferers import sliding_window_inference

    from singr.config import load_config
    from singr.engine.bundle import load_predictor
    from singr.engine.checkpoint import Checkpoint, save_checkpoint
    from singr.engine.meta import ModelMeta
    from singr.preprocess import normalize_image
    from singr.regions import labels_to_regions

    threads = max(1, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    c = load_case(case_dir, tiny)
    img = normalize_image(c.image)
    truth = labels_to_regions(c.label, c.label_convention)
    brain = np.any(img != 0, axis=0)
    roi = [32] * 3 if tiny else [128] * 3
    config = "smoke.yaml" if tiny else "brats.yaml"  # brats.yaml: the paper's BasicUNet (32, 32, 64, 128, 256, 32)
    cfg: Any = load_config(config, [f"infer.roi_size={roi}"])
    steps, patch = FAST_TRAIN["tiny" if tiny else "full"]
    t = time.perf_counter()
    model = _briefly_trained_unet(cfg, img, truth, steps, patch)
    train_s = time.perf_counter() - t
    meta = ModelMeta(in_channels=4, out_channels=3, region_names=("TC", "WT", "ET"), label_convention="brats2023",
                     modalities=("flair", "t1", "t1ce", "t2"), model=cfg.model.name, loss="dice_bce",
                     regression=False, spacing=tuple(c.spacing))
    ckpt = save_checkpoint(workdir / "fast.safetensors", Checkpoint(model_state=model.state_dict(), meta=meta,
                                                                    config=cfg.to_dict(core_only=True), epoch=0))
    ours = load_predictor(ckpt, "cpu", precision="auto")
    net = ours.members[0]  # the same network for the baseline: float32, contiguous, eval (ours runs its own copy)
    x = torch.from_numpy(img)[None]

    def baseline() -> np.ndarray:
        with torch.inference_mode():
            out = sliding_window_inference(x, tuple(roi), 1, net, overlap=0.5, mode="constant")
        return torch.as_tensor(out)[0].numpy() >= 0

    runs: dict[str, Callable[[], np.ndarray]] = {"baseline": baseline,
                                                  "ours": lambda: ours.predict_prepared(img).regions}
    if ours.precision != "float32":
        ours32 = ours.with_settings(precision="float32")
        runs["ours_float32"] = lambda: ours32.predict_prepared(img).regions
    # the same windows and weights as the baseline (no crop, constant blending), our execution only
    exact = ours.with_settings(crop=False, mode="constant")
    runs["ours_exact"] = lambda: exact.predict_prepared(img).regions
    runs["ours"]()  # warm-up: imports, oneDNN primitives, the channels-last copy (made once per loaded model)
    with torch.inference_mode():  # warm-up of the baseline's shapes: one window
        net(x[(slice(None), slice(None)) + tuple(slice(0, min(r, n)) for r, n in zip(roi, x.shape[2:]))])
    order = list(runs)
    times: dict[str, list[float]] = {k: [] for k in order}
    peak: dict[str, float] = {k: 0.0 for k in order}
    labels: dict[str, np.ndarray] = {}
    for r in range(repeats):
        for k in (order if r % 2 == 0 else order[::-1]):
            with _PeakRss() as mem:
                t = time.perf_counter()
                labels[k] = runs[k]()
                times[k].append(time.perf_counter() - t)
            peak[k] = max(peak[k], mem.extra)
    med = {k: statistics.median(v) for k, v in times.items()}
    paired = sorted(b / o for b, o in zip(times["baseline"], times["ours"]))
    names = ("TC", "WT", "ET")
    base = labels["baseline"]
    agree: dict[str, Any] = {
        "ours_vs_baseline": {n: _dice(labels["ours"][i], base[i]) for i, n in enumerate(names)}}
    if "ours_float32" in labels:
        agree["ours_vs_ours_float32"] = {n: _dice(labels["ours"][i], labels["ours_float32"][i])
                                         for i, n in enumerate(names)}
        agree["ours_float32_vs_baseline"] = {n: _dice(labels["ours_float32"][i], base[i])
                                             for i, n in enumerate(names)}
    agree["ours_exact_vs_baseline"] = {n: _dice(labels["ours_exact"][i], base[i]) for i, n in enumerate(names)}
    # the baseline's regions inside the brain only (ours sets everything outside it to background, as nnU-Net does)
    agree["ours_vs_baseline_in_brain"] = {n: _dice(labels["ours"][i], base[i] & brain) for i, n in enumerate(names)}
    box = [[int(i.min()), int(i.max()) + 1] for i in np.nonzero(brain)]
    return {"shape": list(img.shape), "roi": roi, "threads": threads, "config": config,
            "features": list(cfg.model.features), "train_steps": steps, "train_patch": patch, "train_s": train_s,
            "settings": {"mode": ours.settings.mode, "overlap": ours.settings.overlap, "crop": ours.settings.crop,
                         "sw_batch_size": ours.settings.sw_batch_size, "tta": ours.settings.tta,
                         "precision": ours.settings.precision, "resolved_precision": ours.precision,
                         "channels_last": ours.channels_last},
            "brain_box": box, "seconds": med, "all_seconds": times,
            "speedup": med["baseline"] / med["ours"], "speedup_paired": statistics.median(paired),
            "speedup_paired_range": [paired[0], paired[-1]],
            "speedup_float32": (med["baseline"] / med["ours_float32"]) if "ours_float32" in med else None,
            "speedup_exact": med["baseline"] / med["ours_exact"],
            "min_dice_exact": min(agree["ours_exact_vs_baseline"].values()),
            "peak_rss_extra_mib": peak, "dice": agree,
            "min_dice": min(v for k, d in agree.items() if not k.endswith("_in_brain") for v in d.values()),
            "min_dice_in_brain": min(agree["ours_vs_baseline_in_brain"].values()),
            "region_voxels": {k: {n: int(v[i].sum()) for i, n in enumerate(names)} for k, v in labels.items()},
            "baseline_outside_brain_voxels": {n: int((base[i] & ~brain).sum()) for i, n in enumerate(names)},
            "baseline_dice_vs_case_labels": {n: _dice(base[i], truth[i]) for i, n in enumerate(names)}}


# --------------------------------------------------------------------------- report
def _range(t: dict[str, Any], key: str) -> str:
    r = t.get(f"{key}_range")
    return f"{r[0]:.3f}-{r[1]:.3f}" if r else "n/a"


def _fast_infer_lines(f: dict[str, Any], case: str) -> list[str]:
    """The RESULTS.md section of :func:`bench_fast_infer`."""
    st, sec, mem = f["settings"], f["seconds"], f["peak_rss_extra_mib"]
    ours = (f"crop to the brain ({'x'.join(str(b - a) for a, b in f['brain_box'])} + 2 voxels), "
            f"{st['mode']} blending, precision {st['precision']} = {st['resolved_precision']}"
            f"{', channels-last 3-D' if st['channels_last'] else ''}")
    rows = [("MONAI `sliding_window_inference`, whole volume, constant blending, float32", "baseline", 1.0),
            (f"`Predictor`, default settings: {ours}", "ours", f["speedup"])]
    if "ours_float32" in sec:
        rows.append(("`Predictor`, the same in float32 (contiguous)", "ours_float32", f["speedup_float32"]))
    if "ours_exact" in sec:
        rows.append((f"`Predictor`, same answer: the baseline's windows (no crop, constant blending), precision "
                     f"{st['resolved_precision']}{', channels-last' if st['channels_last'] else ''}", "ours_exact",
                     f["speedup_exact"]))
    lines = ["", "## Fast inference: the Predictor vs a plain sliding window", "",
             f"Case `{case}` ({'x'.join(map(str, f['shape'][1:]))} voxels, {f['shape'][0]} modalities, normalised "
             f"once, outside the timing); the network only: image in, 3 region masks (logit >= 0) out. Model: unet3d "
             f"of configs/{f['config']} (BasicUNet features {f['features']}), trained for {f['train_steps']} "
             f"Adam steps on {f.get('train_patch', '?')}^3 crops of this case (Dice+BCE; "
             f"{f['train_s']:.0f} s, not timed) so that its regions are tumour-shaped and its logits confident "
             "(random weights give logits near 0 that change from window to window: any change of blending moves "
             "their labels); the same weights in all rows. "
             f"Window {f['roi']}, overlap {st['overlap']}, sw_batch_size {st['sw_batch_size']}, {f['threads']} "
             "torch threads. Rounds interleaved, order reversed every round; median time per row.", "",
             "| inference | time (s) | speedup | peak RSS above start (MiB) |", "| --- | --- | --- | --- |"]
    # peak RSS: resident memory sampled every 5 ms during each run, above its level at the run's start
    for label, key, ratio in rows:
        sp = "1.00" if key == "baseline" else f"**{ratio:.2f}x**" if key == "ours" else f"{ratio:.2f}x"
        lines.append(f"| {label} | {sec[key]:.2f} | {sp} | {mem[key]:.0f} |")
    lo, hi = f["speedup_paired_range"]
    lines += ["", f"Per-round speedup of ours over the baseline: median {f['speedup_paired']:.2f}x "
              f"(range {lo:.2f}-{hi:.2f}).", "",
              "Agreement of the label maps (Dice per region over the whole volume; target >= 0.99):", "",
              "| comparison | TC | WT | ET |", "| --- | --- | --- | --- |"]
    names = {"ours_vs_baseline": "ours vs baseline", "ours_vs_ours_float32": "ours vs ours in float32",
             "ours_float32_vs_baseline": "ours in float32 vs baseline",
             "ours_vs_baseline_in_brain": "ours vs the baseline's regions inside the brain",
             "ours_exact_vs_baseline": "ours with the baseline's windows (no crop, constant) vs baseline"}
    for k, d in f["dice"].items():
        lines.append(f"| {names.get(k, k)} | {d['TC']:.4f} | {d['WT']:.4f} | {d['ET']:.4f} |")
    v, gt = f["region_voxels"]["baseline"], f["baseline_dice_vs_case_labels"]
    out = f["baseline_outside_brain_voxels"]
    in_brain = f"; inside the brain **{f['min_dice_in_brain']:.4f}**" if "min_dice_in_brain" in f else ""
    lines += ["", f"Lowest Dice: **{f['min_dice']:.4f}**{in_brain}. Baseline regions: TC {v['TC']}, WT {v['WT']}, "
              f"ET {v['ET']} "
              f"voxels ({out['TC'] + out['WT'] + out['ET']} outside the brain, which ours sets to background); "
              f"Dice with the case's own labels TC {gt['TC']:.2f}, WT {gt['WT']:.2f}, ET {gt['ET']:.2f} "
              "(a sanity check that the regions are not trivial, not an accuracy claim).", "",
              *([f"Same answer, faster: with the baseline's windows (`infer.crop: false`, `infer.mode: constant`) "
                 f"ours is **{f['speedup_exact']:.2f}x** faster with label Dice >= **{f['min_dice_exact']:.4f}** per "
                 "region; the defaults (crop, Gaussian) are faster still and move the labels as the table says.", ""]
                if "min_dice_exact" in f else []),
              "Reading the Dice rows: 'ours vs ours in float32' is what the execution (bfloat16, channels-last, "
              "the instance norms as group norms, paste-back) changes, with the same windows. 'ours in float32 vs "
              "baseline' is what the crop and the Gaussian blending change: other windows (fewer, placed on the "
              "brain's box, with less background in each) give other instance-norm statistics, and a briefly "
              "trained network's logits depend on them more than a converged one's."]
    return lines


def write_results(res: dict[str, Any], out: Path) -> None:

    m = res["maps"]
    lines = [
        "# Benchmarks", "",
        f"Generated by `.venv/bin/python benchmarks/run.py` on {res['date']}.", "",
        f"- machine: {res['machine']}",
        f"- versions: {res['versions']}",
        "- every time is the median of repeated runs (how many, and from which run, at the end); every ratio is "
        "against its baseline measured in the same run",
        "",
        "## SiNG maps: fast engine vs reference engine", "",
        f"Case: `{res['case']}` {'x'.join(map(str, m['shape'][1:]))} voxels, {m['shape'][0]} channels, "
        f"spacing {m['spacing']} mm; 3 regions (TC, WT, ET); lambda 0.5, delta 0.5, 4 iterations.", "",
        "| what | time (s) | ratio |", "| --- | --- | --- |",
        f"| reference engine (FastGeodis, full volume) | {m['reference_s']:.2f} | 1.00 |",
        f"| fast engine (default) | {m['fast_s']:.2f} | **{m['speedup']:.1f}x faster** |",
        f"| read the case's 5 NIfTI files | {m['read_s']:.2f} | floor |",
        f"| preprocess (read + normalise + 3 maps, fast) | {m['preprocess_s']:.2f} | "
        f"{m['preprocess_over_read']:.2f}x the read time |",
        "",
        "| region | crop (fast) | band voxels | mean abs dS | share abs dS > 0.05 | sign agreement | bitwise equal |",
        "| --- | --- | --- | --- | --- | --- | --- |"]
    for k, a in m["agreement"].items():
        lines.append(f"| {k} | {a['crop']} | {a['band_voxels']} | {a['mean_abs_dS']:.2e} | {a['share_gt_0.05']:.2%} | "
                     f"{a['sign_agreement']:.4%} | {a['bitwise_equal']} |")
    mem = m["memory"]
    lines += ["", "Memory: a fresh process reads and normalises the case, then computes the 3 maps once; resident "
              "memory is sampled every 5 ms while it does ('none' computes nothing: the sampler's own noise):", "",
              "| engine | RSS before the maps (MiB) | peak RSS during the maps (MiB) | extra for the maps (MiB) "
              "| maps time (s) |",
              "| --- | --- | --- | --- | --- |"]
    for k in ("none", "fast", "fastgeodis"):
        lines.append(f"| {k} | {mem[k]['before_maps_mib']:.0f} | {mem[k]['peak_mib']:.0f} | "
                     f"{mem[k]['extra_mib']:.0f} | "
                     f"{mem[k]['seconds']:.2f} |")
    t = res.get("train")
    if t:
        lines += ["", "## Training throughput: SiNGR step vs hard-label step", "",
                  f"Model `{t['model']}`, patch {t['patch']}, batch {t['batch']}, synthetic cases, CPU; "
                  f"{t['singr'].get('epochs_timed', '?')} timed epochs of each, interleaved (median).", "",
                  "| step | samples/s (median epoch) | ratio to hard labels (median of per-round ratios; range) |",
                  "| --- | --- | --- |",
                  f"| hard labels (Dice+BCE, binary targets) | {t['hard']['samples_per_s']:.2f} | 1.00 |",
                  f"| SiNGR (Focal-L1, targets from cached distances) | {t['singr']['samples_per_s']:.2f} | "
                  f"**{t['ratio_singr_over_hard']:.3f}** ({_range(t, 'ratio_singr_over_hard')}) |"]
        if "hard_again" in t:
            lines += [f"| hard labels again (a second, identical setup: the noise floor) | "
                      f"{t['hard_again']['samples_per_s']:.2f} | {t['noise_hard_again_over_hard']:.3f} "
                      f"({_range(t, 'noise_hard_again_over_hard')}) |", ""]
            parts = (f"; measured apart in this run, a sample takes {t['parts']['singr']['data_ms']:.1f} ms vs "
                     f"{t['parts']['hard']['data_ms']:.1f} ms and the loss forward and backward "
                     f"{t['parts']['singr']['loss_ms']:.1f} ms (Focal-L1) vs {t['parts']['hard']['loss_ms']:.1f} ms "
                     f"(Dice+BCE), in a step of {t['step_ms']:.0f} ms" if "parts" in t else "")
            lines += ["The SiNGR step differs from the hard-label step only in its target (a SiNG map built "
                      f"inside the crop from the cached distances) and its loss{parts}. Each "
                      "round times one epoch of every setup back to back (order reversed every round); the ratio "
                      "is the median over rounds of the side-by-side ratios, and the identical second setup shows "
                      "how far two equal steps read apart on this shared 2-core machine."]
    f = res.get("fast_infer")
    if f:
        lines += _fast_infer_lines(f, res["case"])
    i = res.get("infer")
    if i:
        lines += ["", "## Inference: one case in-process vs through the HTTP endpoint", "",
                  f"Case `{res['case']}` ({'x'.join(map(str, i['shape'][1:]))} voxels, {i['shape'][0]} modalities); "
                  f"unet3d of configs/{i['config']} (untrained weights: timing only), sliding window {i['roi']}, "
                  f"overlap 0.5, {i['threads']} torch threads in both. In-process is what `singr predict` does once "
                  "its model is loaded: read the 4 files, segment, write the label NIfTI. HTTP posts the same 4 files "
                  "to POST /v1/segment (Ray Serve on 127.0.0.1) and writes the returned NIfTI.", "",
                  "| path | time (s) | ratio |", "| --- | --- | --- |",
                  f"| in-process (`singr predict`) | {i['in_process_s']:.2f} | 1.00 |",
                  f"| HTTP endpoint | {i['http_s']:.2f} | **{i['http_over_in_process']:.3f}** |", "",
                  f"Label maps identical: {i['labels_equal']}."]
    sm = res.get("sweep_maps")
    if sm:
        lines += ["", "## The sweep's map stage: cold vs warm cache", "",
                  f"`tune.maps.compute_maps` (Ray Data, {sm['actors']} actors) over the {sm['cases']} train + val "
                  f"cases of configs/{sm['config']} ({'x'.join(map(str, sm['shape']))} voxels), lambda in "
                  f"{sm['lam_grid']}: read + normalise each case and its 3 regions' distances per lambda.", "",
                  "| cache | time (s) | maps computed | maps from cache | ratio |", "| --- | --- | --- | --- | --- |",
                  f"| cold (empty) | {sm['cold_s']:.2f} | {sm['cold_computed']} | 0 | 1.00 |",
                  f"| warm (second run) | {sm['warm_s']:.2f} | {sm['warm_computed']} | {sm['warm_cached']} | "
                  f"{sm['warm_s'] / sm['cold_s']:.3f} ({sm['cold_over_warm']:.1f}x faster) |"]
    if res.get("cache"):
        lines += cache_lines(res["cache"], res["case"])
    if res.get("synth"):
        lines += synth_lines(res["synth"])
    if res.get("startup"):
        lines += startup_lines(res["startup"])
    if res.get("extra"):
        lines += ["", *res["extra"]]
    lines += kept_scale_section(out)  # the scale section benchmarks/scale.py wrote (long runs, kept)
    lines += kept_cluster_section(out)  # the full-size sweep on the local cluster (benchmarks/cluster_sweep.py)
    lines += kept_marked(out, "load", "## The endpoint under load (`benchmarks/bench_load.py`)")  # bench_load.py's
    lines += kept_section(out)  # the GPU section a GPU machine wrote (benchmarks/gpu_check.py)
    out.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default=os.environ.get("SINGR_BRATS_CASE", str(DEFAULT_CASE)))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--skip-train", action="store_true", help="reuse the training figures of the last run")
    ap.add_argument("--skip-maps", action="store_true", help="reuse the SiNG map figures of the last run")
    ap.add_argument("--skip-fast-infer", action="store_true",
                    help="reuse the fast-inference figures (ours vs plain sliding window) of the last run")
    ap.add_argument("--skip-infer", action="store_true", help="reuse the inference figures of the last run")
    ap.add_argument("--skip-sweep-maps", action="store_true", help="reuse the sweep map-stage figures of the last run")
    ap.add_argument("--skip-cache", action="store_true", help="reuse the compact-cache figures of the last run")
    ap.add_argument("--skip-synth", action="store_true", help="reuse the BraTS-size synthetic-case figures")
    ap.add_argument("--skip-startup", action="store_true", help="reuse the trial start-up figures (two sweeps)")
    ap.add_argument("--maps-worker", nargs=2, metavar=("CASE", "ENGINE"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.maps_worker:
        _maps_worker(a.maps_worker[0], a.maps_worker[1], a.tiny)
        return 0
    import monai
    import torch

    case = Path(a.case)
    if not (case / "seg.nii.gz").exists():
        print(f"benchmarks: the real case is missing at {case} (set --case or SINGR_BRATS_CASE)", file=sys.stderr)
        return 2
    out = Path(a.out) if a.out else (None if a.tiny else ROOT / "benchmarks" / "RESULTS.md")
    res: dict[str, Any] = {"date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "repeats": a.repeats,
                           "case": str(case),
                           "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
                           "versions": f"python {platform.python_version()}, numpy {np.__version__}, "
                                       f"torch {torch.__version__}, "
                                       f"monai {monai.__version__}"}
    prev_p = out.with_suffix(".json") if out is not None else None
    prev = json.loads(prev_p.read_text()) if prev_p is not None and prev_p.exists() else {}
    sections = (
        ("maps", a.skip_maps, "SiNG maps", lambda d: bench_maps(case, a.repeats, a.tiny)),
        ("train", a.skip_train, "training step", lambda d: bench_train(a.repeats, a.tiny, d)),
        ("fast_infer", a.skip_fast_infer, "fast inference (ours vs plain sliding window)",
         lambda d: bench_fast_infer(case, a.repeats, a.tiny, d)),
        ("infer", a.skip_infer, "inference (in-process vs HTTP)", lambda d: bench_infer(case, a.repeats, a.tiny, d)),
        ("sweep_maps", a.skip_sweep_maps, "sweep map stage (cold vs warm cache)",
         lambda d: bench_sweep_maps(a.repeats, a.tiny, d)),
        ("cache", a.skip_cache, "compact cache (format 2 vs format 1)",
         lambda d: bench_cache(case, a.repeats, a.tiny, d)),
        ("synth", a.skip_synth, "BraTS-size synthetic cases (brain box + int16 vs whole volume float32)",
         lambda d: bench_synth(case, a.repeats, a.tiny, d)),
        ("startup", a.skip_startup, "trial start-up (Ray Train run per trial vs inline)",
         lambda d: bench_startup(1 if a.tiny else max(1, a.repeats // 3), a.tiny, d)))
    for key, skip, label, fn in sections:
        if skip and key in prev:  # reuse the last run's figures, saying from when
            res[key] = prev[key]
            res[f"{key}_date"] = prev.get(f"{key}_date", prev["date"])
            res[f"{key}_repeats"] = prev.get(f"{key}_repeats", prev["repeats"])
        elif not skip:
            print(f"[bench] {label} ...", flush=True)
            with tempfile.TemporaryDirectory() as d:
                res[key] = fn(Path(d))
            res[f"{key}_date"] = res["date"]
            res[f"{key}_repeats"] = res[key].get("rounds", a.repeats)  # a section may run fewer rounds
            print(json.dumps(res[key], indent=1), flush=True)
        if key in res:
            res.setdefault("extra", []).append(f"- {label}: run of {res[f'{key}_date']}, median of "
                                               f"{res[f'{key}_repeats']} runs")
    res["extra"] = ["Where each section's figures come from:", "", *res.get("extra", [])]
    if out is not None:
        write_results(res, out)
        out.with_suffix(".json").write_text(json.dumps({k: v for k, v in res.items() if k != "extra"}, indent=1))
        print(f"[bench] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
