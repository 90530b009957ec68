"""BraTS-size synthetic cases (``configs/synthetic-brats-size.yaml``) against the generator
filling the whole field of view with float32 intensities (what ``singr synth`` wrote at
240 x 240 x 155 before ``brain_box`` and ``dtype``), one core, in the same run: seconds per
case written (generate + NIfTI gzip), bytes per case, and how the cases compare with the real
one (brain and whole-tumour volumes). Used by ``run.py`` (section ``synth``);
``python benchmarks/bench_synth.py --case DIR`` prints the figures alone.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

FULL = {"shape": (240, 240, 155), "brain_box": (150, 185, 140)}
TINY = {"shape": (60, 60, 40), "brain_box": (38, 46, 35)}


def _one_case(out: Path, seed: int, shape: tuple[int, ...], brain_box: tuple[int, ...] | None,
              dtype: str) -> tuple[float, int, dict[str, float]]:
    """Write one case (as ``singr synth`` does); seconds, bytes, brain and WT volumes (ml at 1 mm)."""
    import nibabel as nib

    from singr.data.synth import synthesize_dataset

    t0 = time.perf_counter()
    folder = synthesize_dataset(out, n_cases=1, shape=shape, seed=seed, progress=False,
                                brain_box=brain_box, dtype=dtype)[0]
    seconds = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in folder.iterdir())
    flair = np.asarray(nib.load(str(next(folder.glob("*_flair.nii.gz")))).dataobj)
    seg = np.asarray(nib.load(str(next(folder.glob("*_seg.nii.gz")))).dataobj)
    return seconds, size, {"brain_ml": float((flair > 0).sum()) / 1000, "wt_ml": float((seg > 0).sum()) / 1000}


def _real_case(case_dir: Path) -> dict[str, float]:
    import nibabel as nib

    t1 = np.asarray(nib.load(str(case_dir / "t1n.nii.gz")).dataobj)
    seg = np.asarray(nib.load(str(case_dir / "seg.nii.gz")).dataobj)
    return {"brain_ml": float((t1 > 0).sum()) / 1000, "wt_ml": float((seg > 0).sum()) / 1000,
            "bytes": sum((case_dir / f"{m}.nii.gz").stat().st_size for m in ("t1n", "t1c", "t2w", "t2f", "seg"))}


def bench_synth(case_dir: Path, repeats: int, tiny: bool, workdir: Path) -> dict[str, Any]:
    """Per case: the whole-volume float32 generator (before) and the brain-box int16 one (now),
    interleaved on the same seeds, BLAS held to one thread (scipy's filters use one)."""
    from threadpoolctl import threadpool_limits

    geo = TINY if tiny else FULL
    shape, box = geo["shape"], geo["brain_box"]
    n = max(2, repeats)
    rows: dict[str, list[Any]] = {"before": [], "now": []}
    for i in range(n):
        order = (("before", None, "float32"), ("now", box, "int16"))
        for kind, b, dtype in (order if i % 2 == 0 else order[::-1]):
            with threadpool_limits(1):  # one core, as `singr synth` runs per case in a data-prep job
                rows[kind].append(_one_case(workdir / f"{kind}-{i}", 100 + i, shape, b, dtype))

    def med(kind: str, k: int) -> float:
        return float(statistics.median(r[k] for r in rows[kind]))

    ratios = [b[0] / a[0] for a, b in zip(rows["now"], rows["before"])]
    vols = {k: [r[2] for r in rows[k]] for k in rows}
    return {"shape": list(shape), "brain_box": list(box), "cases": n,
            "before_s": med("before", 0), "now_s": med("now", 0),
            "before_bytes": med("before", 1), "now_bytes": med("now", 1),
            "speedup": float(statistics.median(ratios)), "speedup_range": [min(ratios), max(ratios)],
            "now_brain_ml": [v["brain_ml"] for v in vols["now"]], "now_wt_ml": [v["wt_ml"] for v in vols["now"]],
            "before_brain_ml": [v["brain_ml"] for v in vols["before"]], "real": _real_case(case_dir)}


def synth_lines(s: dict[str, Any]) -> list[str]:
    """RESULTS.md's section for :func:`bench_synth`."""
    mb = 1e6
    r = s["real"]
    return [
        "", "## BraTS-size synthetic cases: brain box + int16 vs the whole field of view in float32", "",
        f"`singr synth` at {'x'.join(map(str, s['shape']))} voxels (1 mm), one core, {s['cases']} cases of each, "
        f"interleaved, seconds per case including the NIfTI gzip (median). Now: `configs/synthetic-brats-size.yaml` "
        f"(head generated in a {'x'.join(map(str, s['brain_box']))} box, zeros around it, int16 intensities); "
        "before: the same generator filling the whole field of view, float32.", "",
        "| generator | s per case | MB per case | brain (ml) | whole tumour (ml) |", "| --- | --- | --- | --- | --- |",
        f"| whole field of view, float32 (before) | {s['before_s']:.2f} | {s['before_bytes'] / mb:.1f} | "
        f"{min(s['before_brain_ml']):.0f}-{max(s['before_brain_ml']):.0f} | |",
        f"| brain box, int16 (now) | {s['now_s']:.2f} (**{s['speedup']:.2f}x faster**, "
        f"{s['speedup_range'][0]:.2f}-{s['speedup_range'][1]:.2f}) | {s['now_bytes'] / mb:.1f} | "
        f"{min(s['now_brain_ml']):.0f}-{max(s['now_brain_ml']):.0f} | "
        f"{min(s['now_wt_ml']):.0f}-{max(s['now_wt_ml']):.0f} |",
        f"| the real case (`brats-case`) | | {r['bytes'] / mb:.1f} | {r['brain_ml']:.0f} | {r['wt_ml']:.0f} |"]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import standalone

    sys.exit(standalone.main(__doc__, bench_synth, lambda res, case: synth_lines(res)))
