"""The preprocessed cache, format 2 (cropped to the foreground, blosc2) against format 1
(whole-volume float32 ``.npy``, uncompressed distances), on the real case: bytes per case
against the NIfTI input, preprocessing time, and training patches per second (the paper's
128^3 crop, flips and intensity augmentation, SiNG targets and hard labels) read from each.

Format 1 is rebuilt here as the previous singr wrote it, in the same run; both datasets are
:class:`singr.data.dataset.PatchDataset` (format 1's arrays handed to it memory-mapped, as it
read them), timed in interleaved rounds on the same sample indices; then the augmentation:
MONAI's transforms against :class:`~singr.data.dataset.PatchAugment`, and the whole pipeline
against the one before both changes (format 1 with MONAI's transforms). Used by ``run.py``
(section ``cache``); ``python benchmarks/bench_cache.py --case DIR`` prints the figures alone.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

MODS23 = ("t1n", "t1c", "t2w", "t2f")


def _case_folder(case_dir: Path, work: Path) -> Path:
    """The real case as a BraTS 2023 data set of one case (symlinks), for the ordinary readers."""
    cid = "BraTS-GLI-00000-000"
    folder = work / "data" / cid
    folder.mkdir(parents=True, exist_ok=True)
    for m in (*MODS23, "seg"):
        link = folder / f"{cid}-{m}.nii.gz"
        if not link.exists():
            link.symlink_to((case_dir / f"{m}.nii.gz").resolve())
    return work / "data"


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _write_format1(case: Any, root: Path, settings: Any) -> tuple[Any, dict[tuple[str, str], Any]]:
    """What singr wrote before format 2: the whole normalised volume as float32 .npy, the regions as
    uint8 .npy, distances as uncompressed .npz. Returns the case as PatchDataset read it, and its
    distances."""
    from singr.data import load_case
    from singr.preprocess import PreparedCase, normalize_image
    from singr.regions import labels_to_regions, region_names
    from singr.sing import DistanceCache
    from singr.sing.cache import _pack, mask_digest

    loaded = load_case(case)
    folder = root / case.case_id
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "image.npy", normalize_image(loaded.image))
    regions = labels_to_regions(loaded.label, loaded.label_convention)
    np.save(folder / "regions.npy", regions.astype(np.uint8))
    image = np.load(folder / "image.npy", mmap_mode="r")
    names = region_names(loaded.label_convention)
    cache = DistanceCache(root)
    dist = {}
    for name, mask in zip(names, regions):
        d = cache.get_or_compute(case.case_id, name, mask, np.asarray(image), settings, loaded.spacing)
        np.savez(cache.path(case.case_id, name, settings, loaded.spacing), **_pack(d, mask_digest(mask)))
        dist[(case.case_id, name)] = d
    prep = PreparedCase(case.case_id, image, np.load(folder / "regions.npy", mmap_mode="r").astype(bool),
                        tuple(loaded.spacing), tuple(names), loaded.label_convention, tuple(loaded.modalities))
    return prep, dist


def _datasets(cache1: Path, cache2: Path, case_id: str, prep1: Any, dist1: dict, settings: Any, patch: int,
              regression: bool, samples: int) -> tuple[Any, Any]:
    from singr.data.dataset import PatchDataset, train_augmentation

    def make(root: Path) -> Any:
        return PatchDataset(root, [case_id], (patch,) * 3, samples, regression, settings, 0.5,
                            train_augmentation(0.5, 1.0, 0.1, 0.1), seed=0)
    old, new = make(cache1), make(cache2)
    old._cases[case_id] = prep1  # format 1's memory-mapped arrays, as PatchDataset read them
    old._dist.update(dist1)
    return old, new


def _rate(ds: Any, indices: range) -> float:
    t = time.perf_counter()
    for i in indices:
        ds[i]
    return len(indices) / (time.perf_counter() - t)


def _augment_rates(cache1: Path, cache2: Path, case_id: str, prep1: Any, dist1: dict, settings: Any, patch: int,
                   samples: int, rounds: int) -> dict[str, Any]:
    """SiNG patches, interleaved rounds: format 2 with MONAI's transforms (the reference), format 2
    with :class:`~singr.data.dataset.PatchAugment` (used), and format 1 with MONAI's transforms
    (the pipeline before both changes): patches/s, and the used one's ratios to the other two."""
    from singr.data.dataset import PatchDataset, monai_augmentation, train_augmentation

    def make(root: Path, aug: Any) -> Any:
        return PatchDataset(root, [case_id], (patch,) * 3, samples, True, settings, 0.5, aug, seed=0)
    sets = {"monai": make(cache2, monai_augmentation(0.5, 1.0, 0.1, 0.1)),
            "ours": make(cache2, train_augmentation(0.5, 1.0, 0.1, 0.1)),
            "before": make(cache1, monai_augmentation(0.5, 1.0, 0.1, 0.1))}
    sets["before"]._cases[case_id] = prep1
    sets["before"]._dist.update(dist1)
    for ds in sets.values():
        _rate(ds, range(1))
    got: dict[str, list[float]] = {k: [] for k in sets}
    for r in range(rounds):
        idx = range(r * samples, (r + 1) * samples)
        for k in (list(sets) if r % 2 == 0 else list(reversed(list(sets)))):  # order alternates between rounds
            got[k].append(_rate(sets[k], idx))
    vs_monai = [o / m for o, m in zip(got["ours"], got["monai"])]
    vs_before = [o / b for o, b in zip(got["ours"], got["before"])]
    return {"monai_per_s": statistics.median(got["monai"]), "ours_per_s": statistics.median(got["ours"]),
            "before_per_s": statistics.median(got["before"]),
            "ratio": statistics.median(vs_monai), "ratio_range": [min(vs_monai), max(vs_monai)],
            "ratio_before": statistics.median(vs_before), "ratio_before_range": [min(vs_before), max(vs_before)],
            **got}  # the rounds' rates (monai, ours, before)


def bench_cache(case_dir: Path, repeats: int, tiny: bool, work: Path) -> dict[str, Any]:
    """Sizes, preprocessing times and patch rates of cache formats 1 and 2 (see the module docstring)."""
    import torch

    from singr.data import discover_cases
    from singr.preprocess import load_prepared, prepare_case
    from singr.sing import DistanceCache, SingSettings

    torch.set_num_threads(1)
    data = _case_folder(case_dir, work)
    case = discover_cases(data)[0]
    settings = SingSettings(lam=0.5)
    patch, samples = (32, 4) if tiny else (128, 12)
    cache1, cache2 = work / "cache1", work / "cache2"
    t = time.perf_counter()
    prep1, dist1 = _write_format1(case, cache1, settings)
    t1 = time.perf_counter() - t
    t = time.perf_counter()
    prep2 = prepare_case(case, cache2)
    cache = DistanceCache(cache2)
    for name, mask in zip(prep2.region_names, prep2.regions):
        cache.get_or_compute(case.case_id, name, mask, prep2.image, settings, prep2.spacing)
    t2 = time.perf_counter() - t
    # the same data: format 2 pasted back is format 1
    exact_regions = bool(np.array_equal(prep2.paste(prep2.regions), np.asarray(prep1.regions)))
    image_err = float(np.abs(prep2.paste(prep2.image) - np.asarray(prep1.image)).max())
    lazy = load_prepared(cache2, case.case_id, mmap=True)
    assert lazy.image.shape == prep2.image.shape
    input_b = _bytes(data)
    size1, size2 = _bytes(cache1), _bytes(cache2)
    per_file = {p.name: p.stat().st_size for p in sorted((cache2 / case.case_id).iterdir())}
    rates: dict[str, Any] = {}
    for regression, key in ((True, "sing"), (False, "hard")):
        old, new = _datasets(cache1, cache2, case.case_id, prep1, dist1, settings, patch, regression, samples)
        for ds in (old, new):  # warm: distances loaded, first windows read
            _rate(ds, range(1))
        r_old, r_new, ratios = [], [], []
        for r in range(max(1, repeats)):
            idx = range(r * samples, (r + 1) * samples)
            if r % 2:  # order alternates between rounds
                n = _rate(new, idx)
                o = _rate(old, idx)
            else:
                o = _rate(old, idx)
                n = _rate(new, idx)
            r_new.append(n)
            r_old.append(o)
            ratios.append(n / o)
        rates[key] = {"format1_per_s": statistics.median(r_old), "format2_per_s": statistics.median(r_new),
                      "ratio": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)]}
    augment = _augment_rates(cache1, cache2, case.case_id, prep1, dist1, settings, patch, samples, max(1, repeats))
    return {"case_shape": list(prep2.full_shape or ()), "crop": [list(b) for b in prep2.crop or ()],
            "stored_shape": list(prep2.image.shape), "input_bytes": input_b, "format1_bytes": size1,
            "format2_bytes": size2, "format1_over_input": size1 / input_b, "format2_over_input": size2 / input_b,
            "format2_files": per_file, "format1_prep_s": t1, "format2_prep_s": t2, "patch": patch,
            "samples_per_round": samples, "rounds": max(1, repeats), "rates": rates, "augment": augment,
            "regions_exact": exact_regions, "image_max_abs_diff": image_err}


def cache_lines(c: dict[str, Any], case: str) -> list[str]:
    """RESULTS.md's section for :func:`bench_cache`."""
    mb = 1e6
    s, h = c["rates"]["sing"], c["rates"]["hard"]
    files = ", ".join(f"`{k}` {v / mb:.1f} MB" for k, v in c["format2_files"].items())
    out = [
        "", "## Compact cache: cropped and compressed (format 2) vs whole-volume .npy (format 1)", "",
        f"Case `{case}` ({'x'.join(map(str, c['case_shape']))} voxels), one lambda (0.5), 3 regions. Format 2 "
        f"crops the case to its foreground box {c['crop']} (stored {'x'.join(map(str, c['stored_shape']))}) "
        "and stores image and regions as blosc2 (LZ4HC, shuffle; lossless), distances zip-compressed; format 1 "
        "(rebuilt in the same run) stored the whole volume as float32 .npy and distances uncompressed.", "",
        "| cache | bytes per case | x the NIfTI input | preprocess + maps (s) |", "| --- | --- | --- | --- |",
        f"| NIfTI input (5 files) | {c['input_bytes'] / mb:.1f} MB | 1.00 | |",
        f"| format 1 | {c['format1_bytes'] / mb:.1f} MB | {c['format1_over_input']:.1f} | {c['format1_prep_s']:.2f} |",
        f"| format 2 | {c['format2_bytes'] / mb:.1f} MB | **{c['format2_over_input']:.1f}** | "
        f"{c['format2_prep_s']:.2f} |", "",
        f"Format 2's files: {files}. Pasted back into the full volume, its regions equal format 1's: "
        f"{c['regions_exact']}; its image differs by at most {c['image_max_abs_diff']:.1e} (z-scored intensities).", "",
        f"Training patches per second, one core, page cache warm ({c['patch']}^3 crops with flips and intensity "
        f"augmentation, {c['samples_per_round']} samples a round, {c['rounds']} interleaved rounds, median):", "",
        "| target | format 1 (patches/s) | format 2 (patches/s) | format 2 / format 1 (range) |",
        "| --- | --- | --- | --- |",
        f"| SiNG map | {s['format1_per_s']:.2f} | {s['format2_per_s']:.2f} | **{s['ratio']:.2f}** "
        f"({s['ratio_range'][0]:.2f}-{s['ratio_range'][1]:.2f}) |",
        f"| hard labels | {h['format1_per_s']:.2f} | {h['format2_per_s']:.2f} | **{h['ratio']:.2f}** "
        f"({h['ratio_range'][0]:.2f}-{h['ratio_range'][1]:.2f}) |"]
    a = c.get("augment")
    if a:
        out += ["", "Augmentation (SiNG targets, interleaved rounds as above): MONAI's Compose of RandFlipd x 3, "
                "RandScaleIntensityd and RandShiftIntensityd against `PatchAugment` (the same draws' distribution; "
                "padding and flips in one copy, intensity in place), and the pipeline as it was before both changes "
                "(format 1, MONAI's transforms):", "",
                "| pipeline | patches/s | `PatchAugment` on format 2 is (range) |", "| --- | --- | --- |",
                f"| format 2, MONAI transforms | {a['monai_per_s']:.2f} | **{a['ratio']:.2f}x** as fast "
                f"({a['ratio_range'][0]:.2f}-{a['ratio_range'][1]:.2f}) |",
                f"| format 1, MONAI transforms (before) | {a['before_per_s']:.2f} | **{a['ratio_before']:.2f}x** as "
                f"fast ({a['ratio_before_range'][0]:.2f}-{a['ratio_before_range'][1]:.2f}) |",
                f"| format 2, `PatchAugment` (used) | {a['ours_per_s']:.2f} | 1.00 |"]
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import standalone

    sys.exit(standalone.main(__doc__, bench_cache, cache_lines))
