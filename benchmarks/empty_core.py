"""Why do briefly trained SiNGR models leave small tumour cores empty? (issue 21 item 5's lead)

    .venv/bin/python benchmarks/empty_core.py runs/wide-fov/wide-fov runs/wide-fov/wide-fov-lr --name wide-fov-grid

Reads finished grid sweeps on one data set and split (``python -m tune -c configs/wide-fov.yaml
tune.mode=grid``: variants that change crop sampling, delta, training length, learning rate; the
same seeds; each run evaluated on the test split) and answers, per variant:

* its test Dice against the baseline variant (``--baseline``), paired per test case and seed
  (two-way bootstrap CI, :func:`tune.report.analysis.compare`): is the baseline measurably not the best?
* how many test case-runs have their tumour core (TC) empty in the prediction while the truth has
  one (BraTS's empty-mask HD95 of 373 mm), with the mean test Dice and TC Dice;
* whether the threshold at 0 is the cause: every run's best checkpoint segments the test cases
  again and the tumour core of S-hat (max of its TC and ET channels: the label map nests ET within
  TC) is thresholded at 0 and below (``--thresholds``): if the empty
  cores had S-hat just under 0 inside the true core, a lower threshold would recover them without
  costing Dice elsewhere; the largest S-hat inside each empty core is reported.

Writes ``<name>.md`` and ``.json`` to ``--out``.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

EMPTY_HD95 = 373.13  # singr.metrics.EMPTY_HD95_MM


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks; both empty: 1 (BraTS)."""
    s = int(pred.sum()) + int(truth.sum())
    return 1.0 if s == 0 else 2.0 * float(np.logical_and(pred, truth).sum()) / s


def threshold_check(trial: Path, thresholds: list[float]) -> dict[str, Any]:
    """Segment the run's test cases with its best checkpoint; TC Dice and empty-core count per threshold,
    and the largest S-hat of the TC channel inside each true core the prediction at 0 leaves empty."""
    from singr.config import load_config
    from singr.engine.bundle import load_predictor
    from singr.engine.pipeline import run_paths
    from singr.preprocess import load_prepared

    cfg = load_config(str(trial / "config.yaml"))
    paths = run_paths(cfg)
    test = json.loads(Path(paths.split_file).read_text())["test"]
    import torch

    torch.set_num_threads(1)  # benchmarks share the machine with sweeps
    pred = load_predictor(trial / "checkpoints" / "best.safetensors", "cpu", postprocess=False)
    names = list(pred.region_names)
    tc, et = names.index("TC"), names.index("ET")
    out: dict[str, Any] = {"dice": {str(t): [] for t in thresholds}, "empty": {str(t): 0 for t in thresholds},
                           "max_shat_in_empty_core": []}
    for cid in test:
        prep = load_prepared(paths.cache_dir, cid)
        truth = np.asarray(prep.regions)[tc].astype(bool)
        maps = pred.signed_maps_batch([np.asarray(prep.image, dtype=np.float32)])[0]
        shat = np.maximum(maps[tc], maps[et])  # the label map nests ET within TC: TC = TC | ET
        for t in thresholds:
            p = shat >= t
            out["dice"][str(t)].append(dice(p, truth))
            out["empty"][str(t)] += int(truth.any() and not p.any())
        if truth.any() and not (shat >= 0).any():
            out["max_shat_in_empty_core"].append(float(shat[truth].max()))
    out["dice"] = {t: float(np.mean(v)) for t, v in out["dice"].items()}
    return out


def analyse(sweeps: list[Path], thresholds: list[float], baseline: str,
            check: list[str] | None = None) -> dict[str, Any]:
    """Per variant of ``sweeps``: test Dice (paired against ``baseline``), empty cores, and the threshold
    check for the variants in ``check`` (None: all; each costs a test-split inference per run)."""
    from tune.report.analysis import compare

    by: dict[str, dict[str, Any]] = {}
    cases: dict[str, dict[int, dict[str, float]]] = {}  # variant -> seed -> case -> test Dice (mean of regions)
    trials = [(sweep, t) for sweep in sweeps
              for t in json.loads((sweep / "results" / "summary.json").read_text())["trials"]]
    for sweep, t in trials:
        trial = sweep / "singr_trials" / t["trial_id"]
        rows = _rows(trial / "eval" / "metrics_test.csv")
        cases.setdefault(str(t["variant"]), {})[int(t["seed"])] = {r["case"]: float(r["Dice_mean"]) for r in rows}
        v = by.setdefault(str(t["variant"]), {"runs": 0, "case_runs": 0, "empty_tc": 0, "dice": [], "dice_tc": [],
                                              "dice_wt": [], "thr": [], "sweep": sweep.name})
        v["runs"] += 1
        v["case_runs"] += len(rows)
        v["empty_tc"] += sum(abs(float(r["HD95_TC"]) - EMPTY_HD95) < 1e-3 for r in rows)
        v["dice"].append(float(np.mean([float(r["Dice_mean"]) for r in rows])))
        v["dice_tc"].append(float(np.mean([float(r["Dice_TC"]) for r in rows])))
        v["dice_wt"].append(float(np.mean([float(r["Dice_WT"]) for r in rows])))
        if check is None or str(t["variant"]) in check:
            print(f"[empty-core] {t['variant']} seed {t['seed']}: threshold check", flush=True)
            v["thr"].append(threshold_check(trial, thresholds))
    for v in by.values():
        thr = v.pop("thr")
        v["threshold"] = None if not thr else {
            str(t): {"tc_dice": float(np.mean([x["dice"][str(t)] for x in thr])),
                     "empty_tc": int(sum(x["empty"][str(t)] for x in thr))} for t in thresholds}
        shat = [s for x in thr for s in x["max_shat_in_empty_core"]]
        v["max_shat_in_empty_core"] = {"n": len(shat), "median": float(np.median(shat)) if shat else None,
                                       "max": float(np.max(shat)) if shat else None}
        v["dice_mean"], v["dice_tc_mean"] = float(np.mean(v["dice"])), float(np.mean(v["dice_tc"]))
        v["dice_wt_mean"] = float(np.mean(v["dice_wt"]))
    if baseline not in cases:
        raise SystemExit(f"baseline variant {baseline!r} not in the sweeps (variants: {', '.join(sorted(cases))})")
    for name, v in by.items():
        if name == baseline:
            continue
        seeds = sorted(set(cases[name]) & set(cases[baseline]))
        ids = sorted(set.intersection(*(set(cases[x][s]) for s in seeds for x in (name, baseline))))
        d = np.asarray([[cases[name][s][c] - cases[baseline][s][c] for c in ids] for s in seeds])
        v["vs_baseline"] = compare(d, True, (name, baseline))
    return {"sweeps": [str(s) for s in sweeps], "thresholds": thresholds, "baseline": baseline, "variants": by}


def write_report(out: Path, name: str, res: dict[str, Any]) -> Path:
    from singr.io import write_json, write_text

    ths = [str(t) for t in res["thresholds"]]
    lines = [f"# The grid check and the empty tumour cores: {name}", "",
             "Per variant (its runs = seeds): mean test Dice and its paired difference to the baseline per test case "
             "and seed (two-way bootstrap over seeds and cases); test case-runs with the tumour core predicted empty "
             "while the truth has one (HD95 at the 373 mm penalty), TC Dice, and the tumour core of S-hat (max of "
             "the TC and ET channels, as the label map nests them) thresholded at 0 and below ('raw': without "
             "post-processing, which the evaluated TC Dice has). 'S-hat in empty cores' is the largest predicted "
             "value inside each true core that the prediction at 0 leaves empty (median / max): near 0 means the "
             "threshold is to blame, far below 0 means the model never saw a core there.", "",
             f"| variant | runs | test Dice | − {res['baseline']} (paired; 95% CI) | WT Dice | empty TC at 0 | "
             "TC Dice | " +
             " | ".join(f"TC Dice / empty at {t} (raw)" for t in ths) + " | S-hat in empty cores (median / max) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in ths) + " | ---: |"]
    for vname, v in res["variants"].items():
        s = v["max_shat_in_empty_core"]
        shat = ("not checked" if v["threshold"] is None else "none empty" if not s["n"] else
                f"{s['median']:+.2f} / {s['max']:+.2f} (n={s['n']})")
        cells = " | ".join(f"{v['threshold'][t]['tc_dice']:.3f} / {v['threshold'][t]['empty_tc']}" if v["threshold"]
                           else "not checked" for t in ths)
        vs = v.get("vs_baseline")
        word = ("" if not vs else "better" if vs["ci_lo"] > 0 else "worse" if vs["ci_hi"] < 0
                else "no detectable difference")
        gain = "–" if not vs else f"{vs['mean']:+.3f} ({vs['ci_lo']:+.3f} to {vs['ci_hi']:+.3f}): {word}"
        wt = f"{v['dice_wt_mean']:.3f}" if "dice_wt_mean" in v else "–"
        lines.append(f"| {vname} | {v['runs']} | {v['dice_mean']:.3f} | {gain} | {wt} | {v['empty_tc']} of "
                     f"{v['case_runs']} | {v['dice_tc_mean']:.3f} | {cells} | {shat} |")
    write_text(out / f"{name}.md", "\n".join(lines) + "\n")
    write_json(out / f"{name}.json", res)
    print("\n".join(lines), flush=True)
    return out / f"{name}.md"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweeps", nargs="+", help="finished grid sweeps' folders (runs/wide-fov/wide-fov ...)")
    ap.add_argument("--out", default="reports/search")
    ap.add_argument("--name", default="wide-fov-grid", help="the report's file name (without .md)")
    ap.add_argument("--baseline", default="singr", help="the variant the others are compared with")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.0, -0.2, -0.4])
    ap.add_argument("--check", nargs="+", default=None, help="variants whose runs get the threshold check "
                    "(a test-split inference each; default: all)")
    args = ap.parse_args(argv)
    sweeps = [Path(s).resolve() for s in args.sweeps]
    for sweep in sweeps:
        if not (sweep / "results" / "summary.json").is_file():
            raise SystemExit(f"{sweep}: no results/summary.json; expected a finished grid sweep")
    ths = [0.0] + [float(t) for t in args.thresholds if float(t) != 0.0]
    write_report(Path(args.out), args.name, analyse(sweeps, ths, args.baseline, args.check))
    return 0


if __name__ == "__main__":
    sys.exit(main())
