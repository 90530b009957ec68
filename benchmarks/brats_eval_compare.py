"""singr's metrics against the BraTS challenges' own package (brats-evaluation 0.0.10, on panoptica).

Reference/prediction pairs are made from a labelled case (the real case by default: its
``seg.nii.gz`` as the reference, and predictions that are the reference itself, eroded, dilated,
with ET missed, with small false-positive blobs, with half the tumour cut away), written as
``BraTS-GLI-000NN.nii.gz`` (the names the package matches), evaluated by the package's own
command (``python -m brats_evaluation.evaluation --config gli``, in ``.venv-brats-eval``:
``scripts/setup_brats_eval.sh``) and by :func:`singr.metrics.case_metrics` (BraTS 2023 labels:
1 NCR, 2 ED, 3 ET, the package's gli labels 1 NETC, 2 SNFH, 3 ET), per region TC, WT, ET.

What agrees and what is defined differently (checked by :func:`check_agreement`; the numbers
are in ``reports/metrics/official.md``):

* **Dice** (global, per region): the same number (tolerance 1e-6).
* **HD95** (global): singr's is MONAI's symmetric HD95, the larger of the two directed 95th
  percentiles (as the BraTS 2021-2023 evaluation computed it); the package's (panoptica) takes the
  95th percentile of both directions' distances pooled, which is never larger. Equal when the two
  directions agree; singr's is larger where one direction has the far errors (a missed part).
  An empty prediction of a non-empty region: singr 373.13 mm (the diagonal), the package 373.
* **Lesion-wise**: singr's ``LesionDice`` / ``LesionHD95`` are the BraTS 2023 challenge's
  (lesions merged within 3 dilations, under 50 voxels ignored, false positives and misses scoring
  0 and 374 mm in the mean); the package's ``lesionwise_dsc_mean`` is panoptica's ``sq_dsc``, the
  mean Dice of the matched lesions only (false positives and misses are reported apart, as
  ``fp`` / ``fn`` counts). Equal when every lesion is matched and there is no false positive.

``python benchmarks/brats_eval_compare.py [--case DIR] [--out reports/metrics]``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REGIONS = (("TC", "tc"), ("WT", "wt"), ("ET", "et"))
DICE_TOL = 1e-6


def make_pairs(seg: np.ndarray, affine: np.ndarray, out: Path) -> dict[str, str]:
    """Reference/prediction pairs in ``out/ref`` and ``out/pred``; ``{file name: what the prediction is}``."""
    import nibabel as nib
    from scipy import ndimage

    ref = np.asarray(seg).astype(np.uint8)
    preds: dict[str, tuple[str, np.ndarray]] = {}
    preds["00001"] = ("the reference itself", ref.copy())
    p = ref.copy()
    p[~ndimage.binary_erosion(ref > 0, iterations=2)] = 0
    preds["00002"] = ("eroded by 2 voxels", p)
    p = ref.copy()
    p[ndimage.binary_dilation(ref > 0, iterations=2) & (ref == 0)] = 2
    preds["00003"] = ("oedema grown by 2 voxels", p)
    p = ref.copy()
    p[ref == 3] = 1
    preds["00004"] = ("ET missed (labelled necrosis)", p)
    p = ref.copy()
    p[20:26, 30:36, 40:46] = 3
    p[200:204, 200:204, 100:104] = 2
    preds["00005"] = ("two small false-positive blobs", p)
    p = ref.copy()
    p[:, : ref.shape[1] // 2, :] = 0
    preds["00006"] = ("half of the tumour cut away", p)
    (out / "ref").mkdir(parents=True, exist_ok=True)
    (out / "pred").mkdir(parents=True, exist_ok=True)
    what = {}
    for k, (text, arr) in preds.items():
        name = f"BraTS-GLI-{k}.nii.gz"
        nib.save(nib.Nifti1Image(arr, affine), str(out / "pred" / name))
        nib.save(nib.Nifti1Image(ref, affine), str(out / "ref" / name))
        what[name] = text
    return what


def official_python() -> Path:
    """The package's interpreter (``scripts/setup_brats_eval.sh`` makes it when missing)."""
    venv = Path(os.environ.get("BRATS_EVAL_VENV", ROOT / ".venv-brats-eval"))
    subprocess.run(["bash", str(ROOT / "scripts" / "setup_brats_eval.sh")], check=True,
                   env={**os.environ, "BRATS_EVAL_VENV": str(venv)})
    return venv / "bin" / "python"


def run_official(work: Path) -> dict[str, dict[str, Any]]:
    """``{file name: {region: panoptica's metrics}}`` from the package's own command."""
    out = work / "official.json"
    p = subprocess.run([str(official_python()), "-m", "brats_evaluation.evaluation", "--ref_path", str(work / "ref"),
                        "--pred_path", str(work / "pred"), "--config", "gli", "--summary_json", str(out)],
                       capture_output=True, text=True, timeout=1800)
    if p.returncode != 0 or not out.exists():
        raise RuntimeError(f"brats-evaluation failed ({p.returncode}): {(p.stdout + p.stderr)[-2000:]}")
    recs = json.loads(out.read_text())["metrics"]
    bad = [r for r in recs if "error" in r]
    if bad:
        raise RuntimeError(f"brats-evaluation could not evaluate {bad[0]['subject_name']}: {bad[0]['error']}")
    return {r["subject_name"]: r for r in recs}


def run_ours(work: Path, names: list[str], spacing: tuple[float, float, float]) -> dict[str, dict[str, float]]:
    """``{file name: singr's case metrics}`` (BraTS 2023 labels, lesion-wise too)."""
    import nibabel as nib

    from singr.metrics import case_metrics
    from singr.regions import labels_to_regions, region_names

    out = {}
    for name in names:
        ref = np.asarray(nib.load(str(work / "ref" / name)).dataobj).astype(np.uint8)  # type: ignore[attr-defined]
        pred = np.asarray(nib.load(str(work / "pred" / name)).dataobj).astype(np.uint8)  # type: ignore[attr-defined]
        out[name] = case_metrics(labels_to_regions(pred, "brats2023"), labels_to_regions(ref, "brats2023"), spacing,
                                 region_names("brats2023"), lesion=True)
    return out


def rows(what: dict[str, str], ours: dict[str, dict[str, float]], official: dict[str, dict[str, Any]]
         ) -> list[dict[str, Any]]:
    """One row per pair and region: both packages' Dice, HD95 and lesion-wise numbers."""
    out = []
    for name, text in what.items():
        for region, key in REGIONS:
            o, s = official[name][key], ours[name]
            hd = o.get("global_bin_hd95")
            out.append({"case": name, "prediction": text, "region": region,
                        "dice_singr": float(s[f"Dice_{region}"]), "dice_official": float(o["global_bin_dsc"]),
                        "hd95_singr": float(s[f"HD95_{region}"]),
                        "hd95_official": math.inf if hd is None or (isinstance(hd, float) and math.isinf(hd))
                        else float(hd),
                        "lesion_dice_singr": float(s[f"LesionDice_{region}"]),
                        "lesion_dice_official": float(o["sq_dsc"]) if o.get("sq_dsc") is not None else math.nan,
                        "tp": int(o["tp"]), "fp": int(o["fp"]), "fn": int(o["fn"])})
    return out


def check_agreement(table: list[dict[str, Any]]) -> list[str]:
    """The relations of the module docstring, one line per row that breaks one ([] when all hold)."""
    bad = []
    for r in table:
        at = f"{r['case']} {r['region']} ({r['prediction']})"
        if abs(r["dice_singr"] - r["dice_official"]) > DICE_TOL:
            bad.append(f"{at}: Dice {r['dice_singr']:.6f} vs {r['dice_official']:.6f}")
        if math.isinf(r["hd95_official"]) or r["hd95_official"] >= 373:
            if not math.isclose(r["hd95_singr"], 373.13, abs_tol=0.01):
                bad.append(f"{at}: an empty region's HD95 is {r['hd95_singr']}, expected 373.13")
        elif r["hd95_singr"] + 1e-6 < r["hd95_official"]:
            bad.append(f"{at}: HD95 {r['hd95_singr']:.3f} below the pooled {r['hd95_official']:.3f}")
        if r["fp"] == 0 and r["fn"] == 0 and r["tp"] > 0 and \
                abs(r["lesion_dice_singr"] - r["lesion_dice_official"]) > 1e-3:
            bad.append(f"{at}: lesion-wise Dice {r['lesion_dice_singr']:.4f} vs sq_dsc {r['lesion_dice_official']:.4f} "
                       "with every lesion matched")
    return bad


def compare(case_dir: Path, work: Path) -> list[dict[str, Any]]:
    """Pairs from ``case_dir/seg.nii.gz``, both evaluations, the table."""
    import nibabel as nib

    img: Any = nib.load(str(case_dir / "seg.nii.gz"))
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    what = make_pairs(np.asarray(img.dataobj), img.affine, work)
    official = run_official(work)
    ours = run_ours(work, list(what), spacing)  # type: ignore[arg-type]
    return rows(what, ours, official)


def write_report(table: list[dict[str, Any]], out: Path, case_dir: Path) -> Path:
    from singr.io import write_json, write_text

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "official.json", table, indent=1, default=str)
    lines = ["# singr's metrics against the BraTS challenges' package", "",
             f"Reference: `{case_dir.name}/seg.nii.gz` (real case, 240 x 240 x 155 at 1 mm); predictions made from it "
             "(`benchmarks/brats_eval_compare.py`). Official: brats-evaluation 0.0.10 (panoptica 2.1.7), config `gli`. "
             "singr: `singr.metrics.case_metrics` (BraTS 2023 lesion-wise). How they differ, by definition: the "
             "docstring of `benchmarks/brats_eval_compare.py` and `docs/method.md`.", "",
             "| prediction | region | Dice singr / official | HD95 singr / official (mm) | lesion-wise Dice singr / "
             "official sq_dsc | official tp fp fn |", "|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['prediction']} | {r['region']} | {r['dice_singr']:.4f} / {r['dice_official']:.4f} | "
                     f"{r['hd95_singr']:.2f} / {r['hd95_official']:.2f} | {r['lesion_dice_singr']:.4f} / "
                     f"{r['lesion_dice_official']:.4f} | {r['tp']} {r['fp']} {r['fn']} |")
    bad = check_agreement(table)
    lines += ["", "Agreement checks (`check_agreement`): " + ("all hold." if not bad else "; ".join(bad))]
    return write_text(out / "official.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--case", default=os.environ.get("SINGR_BRATS_CASE", str(ROOT.parent / "shared" / "data" /
                                                                              "brats-case")))
    ap.add_argument("--out", default=str(ROOT / "reports" / "metrics"))
    args = ap.parse_args(argv)
    case_dir = Path(args.case)
    with tempfile.TemporaryDirectory(prefix="singr-brats-eval-") as tmp:
        table = compare(case_dir, Path(tmp))
    path = write_report(table, Path(args.out), case_dir)
    bad = check_agreement(table)
    print(path.read_text())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
