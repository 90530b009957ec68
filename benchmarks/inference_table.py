"""Issue 12's results table on the synthetic test split: single model, + test-time mirroring,
+ post-processing, fold ensemble; voxel and BraTS 2023 lesion-wise Dice/HD95, seconds per case.

    nice -n 5 .venv/bin/python benchmarks/inference_table.py [--work DIR] [--out reports/inference]
        [--folds 3] [--n-cases 30] [--epochs 24] [--iters 16] [--patch 32] [KEY=VALUE ...]

What it does, all in this process, on the CPU:

1. ``singr synth``: ``--n-cases`` synthetic BraTS-like cases (configs/synthetic.yaml, 64x64x48) in
   ``<work>/data``; the split (seed 0, 64/16/20) holds the test cases out, and ``data.folds=K``
   cuts train + val into K folds. K = 3 (not nnU-Net's 5) keeps the run to about 10 minutes
   on 2 shared cores.
2. Trains the K fold models (:func:`singr.engine.trainer.fit` on ``singr train --fold k``'s
   config) with a short schedule (``--epochs`` x ``--iters`` batches of 2 patches of ``--patch``^3;
   configs/synthetic.yaml's sweep schedule is 12 x 16 at 32^3); each fold keeps its best
   checkpoint by validation Dice. A fold already trained in ``--work`` is resumed, not redone.
3. Fits post-processing rules on fold 0's validation cases, segmented by the fold-0 model with
   mirroring (:func:`singr.engine.evaluate.fit_postprocess`): the rules the "+ post-processing"
   rows apply, the ensemble's included (its members trained on every other validation case).
4. Evaluates on the common test split (:func:`singr.engine.evaluate.evaluate`, float32, the
   config's window): single model (fold 0); + mirroring; + post-processing; the fold ensemble
   (tanh maps averaged), + mirroring, + post-processing; and each fold model alone. Seconds per
   case time ``Predictor.predict_prepared`` alone (one untimed warm-up case first).
5. Compares ``infer.precision: auto`` (bfloat16 where the CPU computes it natively) with float32
   on the same test cases: label agreement and time.

Writes ``<out>/report.md`` and ``<out>/summary.json`` (every number of the report).
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REGIONS = ("TC", "WT", "ET")
METRICS = (("Dice", "Dice"), ("HD95", "HD95 (mm)"), ("LesionDice", "lesion-wise Dice"),
           ("LesionHD95", "lesion-wise HD95 (mm)"))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", help="working folder (data, fold runs, evaluations); default: a temporary folder")
    ap.add_argument("--out", default=str(ROOT / "reports" / "inference"), help="report folder")
    ap.add_argument("--folds", type=int, default=3, help="K folds (default 3: time on 2 cores)")
    ap.add_argument("--n-cases", type=int, default=30, help="synthetic cases (default 30: 6 test cases)")
    ap.add_argument("--epochs", type=int, default=24, help="epochs per fold (default 24)")
    ap.add_argument("--iters", type=int, default=16, help="batches per epoch (default 16)")
    ap.add_argument("--patch", type=int, default=32, help="training patch edge (default 32)")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="more config overrides")
    return ap.parse_args(argv)


def base_config(work: Path, args: argparse.Namespace) -> tuple[Any, list[str]]:
    """configs/synthetic.yaml with the run's folders, folds and schedule (and the overrides used)."""
    from singr.config import load_config

    overrides = [f"data.root={work / 'data'}", f"output_dir={work / 'run'}", f"data.folds={args.folds}",
                 f"synth.n_cases={args.n_cases}", f"train.epochs={args.epochs}", f"train.iters_per_epoch={args.iters}",
                 f"train.patch_size=[{args.patch},{args.patch},{args.patch}]", "train.val_every=2",
                 "infer.precision=float32", "infer.tta=false", *args.overrides]
    return load_config("synthetic.yaml", overrides), overrides


def train_folds(cfg: Any) -> list[dict[str, Any]]:
    """Train (or resume) every fold; per fold: checkpoint, best validation Dice, seconds."""
    from singr.engine.pipeline import fold_config
    from singr.engine.trainer import fit

    out = []
    for k in range(int(cfg.data.folds)):
        t0 = time.perf_counter()
        res = fit(fold_config(cfg, k), progress=False, resume=True, fold=k)
        log = list(csv.DictReader(open(Path(res.output_dir) / "log.csv")))
        out.append({"fold": k, "checkpoint": res.best_checkpoint, "best_val_Dice_mean": res.best_metric,
                    "best_epoch": res.best_epoch, "seconds_this_run": round(time.perf_counter() - t0, 1),
                    "train_seconds": round(sum(float(r["epoch_seconds"]) for r in log), 1), "epochs": len(log)})
        print(f"[table] fold {k}: best validation Dice {res.best_metric:.4f} at epoch {res.best_epoch} "
              f"({out[-1]['train_seconds']:.0f} s of training)", flush=True)
    return out


def _rows_csv(path: Path) -> list[dict[str, Any]]:
    return [{k: (v if k == "case" else float(v)) for k, v in r.items()} for r in csv.DictReader(open(path))]


def run_row(name: str, label: str, pred: Any, cfg: Any, work: Path, warm: np.ndarray) -> dict[str, Any]:
    """Evaluate ``pred`` on the test split (after one untimed warm-up case)."""
    from singr.engine.evaluate import evaluate

    pred.predict_prepared(warm)
    load = os.getloadavg()[0]
    res = evaluate(pred, cfg, split="test", out_dir=work / "eval" / name, progress=False, overlays=0)
    passes = len(pred.members) * (8 if pred.settings.tta else 1)
    row = {"name": name, "label": label, "members": len(pred.members), "tta": pred.settings.tta,
           "postprocess": res["postprocess"], "passes": passes, "seconds_per_case": res["seconds_per_case"],
           "load_avg_1min": [round(load, 2), round(os.getloadavg()[0], 2)], "n_cases": res["n_cases"],
           "summary": res["summary"], "cases": _rows_csv(work / "eval" / name / "metrics_test.csv")}
    s = res["summary"]
    print(f"[table] {label}: Dice {s['Dice_mean']['mean']:.4f}, HD95 {s['HD95_mean']['mean']:.2f} mm, "
          f"lesion-wise Dice {s['LesionDice_mean']['mean']:.4f}, HD95 {s['LesionHD95_mean']['mean']:.2f} mm; "
          f"{res['seconds_per_case']:.2f} s/case", flush=True)
    return row


def paired(rows: dict[str, dict[str, Any]], a: str, b: str, key: str) -> dict[str, float]:
    """Mean and standard error over test cases of ``b - a`` for ``key`` (same cases, paired)."""
    va = {r["case"]: r[key] for r in rows[a]["cases"]}
    d = np.array([r[key] - va[r["case"]] for r in rows[b]["cases"]])
    se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else 0.0
    return {"mean": float(d.mean()), "se": se, "n": int(d.size), "better_cases": int((d > 0).sum()),
            "worse_cases": int((d < 0).sum())}


def compare_precision(pred: Any, cfg: Any, label: str) -> dict[str, Any]:
    """``precision auto`` vs float32 on the test cases: labels, Dice between the two label maps, time."""
    from singr.engine.evaluate import segment_split
    from singr.metrics import dice

    auto = pred.with_settings(precision="auto")
    f32 = pred.with_settings(precision="float32")
    out: dict[str, Any] = {"label": label, "auto_resolves_to": auto.precision, "cases": []}
    first = next(segment_split(f32, cfg, "test"))[0].image
    auto.predict_prepared(first)
    f32.predict_prepared(first)
    for (prep, a, ta), (_, b, tb) in zip(segment_split(auto, cfg, "test"), segment_split(f32, cfg, "test")):
        out["cases"].append({"case": prep.case_id, "identical_labels": bool(np.array_equal(a.labels, b.labels)),
                             "differing_voxels": int((a.labels != b.labels).sum()),
                             "dice": {n: dice(a.regions[r], b.regions[r]) for r, n in enumerate(REGIONS)},
                             "seconds_auto": ta, "seconds_float32": tb})
    cs = out["cases"]
    out.update({"identical_cases": sum(c["identical_labels"] for c in cs), "n_cases": len(cs),
                "differing_voxels": sum(c["differing_voxels"] for c in cs),
                "min_dice": {n: min(c["dice"][n] for c in cs) for n in REGIONS},
                "seconds_auto": float(np.mean([c["seconds_auto"] for c in cs])),
                "seconds_float32": float(np.mean([c["seconds_float32"] for c in cs]))})
    print(f"[table] precision auto ({out['auto_resolves_to']}) vs float32, {label}: identical labels in "
          f"{out['identical_cases']}/{len(cs)} cases, {out['differing_voxels']} voxels differ", flush=True)
    return out


def _cell(s: dict[str, Any], key: str, digits: int) -> str:
    v = s[key]
    return f"{v['mean']:.{digits}f} ± {v['se']:.{digits}f}" if v["n"] > 1 else f"{v['mean']:.{digits}f}"


def write_report(out: Path, res: dict[str, Any]) -> None:
    from singr.io import write_json, write_text

    rows = res["rows"]
    order = [r for r in res["order"] if r in rows]
    L = ["# Inference on the synthetic test split: single model, mirroring, post-processing, fold ensemble",
         "",
         f"Generated by `nice -n 5 .venv/bin/python benchmarks/inference_table.py` on {res['date']} "
         f"({res['total_seconds'] / 60:.1f} min in all, training included).",
         "",
         f"- data: {res['n_cases']} synthetic cases of {res['shape']} voxels (configs/synthetic.yaml, "
         f"`singr synth`); split seed 0: {res['split']['trainval']} train + validation cases in "
         f"**{res['folds']} folds** (nnU-Net uses 5; 3 keep the run to about 10 minutes on 2 cores), "
         f"**{res['split']['test']} test cases** held out",
         f"- training per fold: unet3d {res['model_features']}, SiNGR (Focal-L1, lambda/delta/gamma "
         f"{res['sing']}), {res['epochs']} epochs x {res['iters']} batches of 2 patches of {res['patch']}^3 "
         f"(short: configs/synthetic.yaml's sweep runs 12 x 16), best checkpoint by validation Dice:",
         ""]
    L += ["| fold | validation cases | best validation Dice (mean of TC, WT, ET) | at epoch | training (s) |",
          "| --- | --- | --- | --- | --- |"]
    for f in res["train"]:
        L.append(f"| {f['fold']} | {f['n_val']} | {f['best_val_Dice_mean']:.4f} | {f['best_epoch']} | "
                 f"{f['train_seconds']:.0f} |")
    L += ["", f"- inference: window {res['roi_size']}, overlap 0.5, Gaussian blending, crop to the brain, "
          f"float32, {res['threads']} torch threads; seconds per case = `Predictor.predict_prepared` (sliding windows, "
          "thresholds, post-processing, label map), mean over the test cases after one warm-up case",
          f"- machine: {res['machine']}; shared with other work (1-minute load average "
          f"{res['load_range'][0]:.1f} to {res['load_range'][1]:.1f} while the rows ran), so times are indicative; "
          "passes per case are the exact cost", "",
          "## Means over the three regions", "",
          f"Mean ± standard error over the {res['split']['test']} test cases. Lesion-wise: BraTS 2023 "
          "(26-connected lesions after 3 dilations of the truth, lesions of 50 voxels or fewer left out, "
          "a missed or false-positive lesion scores Dice 0 and HD95 374 mm).", "",
          "| setting | network passes per case | Dice | HD95 (mm) | lesion-wise Dice | lesion-wise HD95 (mm) | "
          "seconds per case |",
          "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in order:
        r = rows[name]
        s = r["summary"]
        L.append(f"| {r['label']} | {r['passes']} | {_cell(s, 'Dice_mean', 4)} | {_cell(s, 'HD95_mean', 2)} | "
                 f"{_cell(s, 'LesionDice_mean', 4)} | {_cell(s, 'LesionHD95_mean', 2)} | {r['seconds_per_case']:.2f} |")
    L += ["", "## Per region", "", "| setting | " + " | ".join(f"{h} {n}" for m, h in METRICS for n in REGIONS) + " |",
          "| --- |" + " --- |" * (len(METRICS) * len(REGIONS))]
    for name in order:
        s = rows[name]["summary"]
        cells = [f"{s[f'{m}_{n}']['mean']:.{4 if 'Dice' in m else 2}f}" for m, _ in METRICS for n in REGIONS]
        L.append(f"| {rows[name]['label']} | " + " | ".join(cells) + " |")
    L += ["", "Means over the test cases (standard errors in summary.json).", "",
          "## Differences from the single model (paired over the test cases)", "",
          "| setting | Dice | lesion-wise Dice | HD95 (mm) | lesion-wise HD95 (mm) | cases better / worse (Dice) |",
          "| --- | --- | --- | --- | --- | --- |"]
    for name in order[1:]:
        if name.startswith("fold_"):
            continue
        d = res["paired"][name]
        L.append(f"| {rows[name]['label']} | {d['Dice_mean']['mean']:+.4f} ± {d['Dice_mean']['se']:.4f} | "
                 f"{d['LesionDice_mean']['mean']:+.4f} ± {d['LesionDice_mean']['se']:.4f} | "
                 f"{d['HD95_mean']['mean']:+.2f} ± {d['HD95_mean']['se']:.2f} | "
                 f"{d['LesionHD95_mean']['mean']:+.2f} ± {d['LesionHD95_mean']['se']:.2f} | "
                 f"{d['Dice_mean']['better_cases']} / {d['Dice_mean']['worse_cases']} |")
    pp = res["postprocess_fit"]
    L += ["", "## Post-processing rules", "",
          f"Fitted on fold 0's {pp['n_cases']} validation cases, segmented by the fold-0 model with mirroring "
          "(`fit_postprocess`); a rule is kept only if it raises the mean validation Dice. Rules kept: "
          + "; ".join(pp["rules"]["steps"]) + ".", "",
          "| validation Dice | " + " | ".join(REGIONS) + " | mean |", "| --- |" + " --- |" * (len(REGIONS) + 1),
          "| before | " + " | ".join(f"{pp['dice_before'][n]:.4f}" for n in (*REGIONS, "mean")) + " |",
          "| after | " + " | ".join(f"{pp['dice_after'][n]:.4f}" for n in (*REGIONS, "mean")) + " |"]
    best = max((r for r in order if r.startswith("fold_")), key=lambda r: rows[r]["summary"]["Dice_mean"]["mean"])
    L += ["", "## Ensemble vs its members", "",
          "Each fold model alone on the test split (no mirroring, no post-processing); the best member by test "
          f"Dice is {rows[best]['label']} ({rows[best]['summary']['Dice_mean']['mean']:.4f}); the fold ensemble "
          f"scores {rows['ensemble']['summary']['Dice_mean']['mean']:.4f} "
          f"(paired difference {res['paired']['ensemble_vs_best_member']['Dice_mean']['mean']:+.4f} ± "
          f"{res['paired']['ensemble_vs_best_member']['Dice_mean']['se']:.4f})."]
    prec = res["precision"]
    L += ["", "## `infer.precision: auto` vs float32", "",
          f"`auto` is {prec[0]['auto_resolves_to']} on this CPU (avx512_bf16: {res['native_bf16']}).", "",
          "| model | cases with identical labels | voxels that differ | lowest Dice between the two label maps "
          "(TC, WT, ET) | seconds per case auto / float32 |", "| --- | --- | --- | --- | --- |"]
    for p in prec:
        L.append(f"| {p['label']} | {p['identical_cases']} / {p['n_cases']} | {p['differing_voxels']} | "
                 + ", ".join(f"{p['min_dice'][n]:.4f}" for n in REGIONS)
                 + f" | {p['seconds_auto']:.2f} / {p['seconds_float32']:.2f} |")
    L += ["", "All numbers: summary.json. Command-line equivalent of a row: `singr evaluate --model <fold models or "
          "bundle> -c synthetic.yaml --tta --postprocess`; rules: `singr postprocess --model <fold 0> --fold 0 "
          "--tta --out <folder>`.", ""]
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "report.md", "\n".join(L))
    write_json(out / "summary.json", res, indent=1, default=float)


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from singr.data.synth import synthesize_dataset
    from singr.engine.bundle import load_predictor
    from singr.engine.evaluate import fit_postprocess, segment_split
    from singr.engine.infer import cpu_has_native_bf16
    from singr.engine.pipeline import discover, run_paths, split_cases

    args = parse_args(argv)
    t_start = time.perf_counter()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="singr-inference-table-"))
    cfg, overrides = base_config(work, args)
    synthesize_dataset(Path(cfg.data.root), n_cases=int(cfg.synth.n_cases), shape=tuple(cfg.synth.shape),
                       seed=int(cfg.synth.seed), progress=False)
    folds = train_folds(cfg)
    split = split_cases(cfg, discover(cfg), run_paths(cfg))
    for f in folds:
        f["n_val"] = len(split["folds"][f["fold"]])

    ckpts = [f["checkpoint"] for f in folds]
    single = load_predictor(ckpts[0], "cpu", postprocess=False, tta=False, precision="float32")
    ensemble = load_predictor(ckpts, "cpu", postprocess=False, tta=False, precision="float32")
    rules, fit_report = fit_postprocess(single.with_settings(tta=True), cfg, split="val", fold=0)
    print(f"[table] post-processing on fold 0's validation cases: mean Dice {fit_report['dice_before']['mean']:.4f} "
          f"-> {fit_report['dice_after']['mean']:.4f}; {'; '.join(fit_report['rules']['steps'])}", flush=True)
    single.postprocess = ensemble.postprocess = rules  # applied where settings.postprocess is on
    k = len(ckpts)
    plan = [("single", "single model (fold 0)", single),
            ("tta", "+ mirroring", single.with_settings(tta=True)),
            ("tta_pp", "+ mirroring + post-processing", single.with_settings(tta=True, postprocess=True)),
            ("ensemble", f"fold ensemble ({k} models)", ensemble),
            ("ensemble_tta", f"fold ensemble ({k}) + mirroring", ensemble.with_settings(tta=True)),
            ("ensemble_tta_pp", f"fold ensemble ({k}) + mirroring + post-processing",
             ensemble.with_settings(tta=True, postprocess=True))]
    plan += [(f"fold_{i}", f"fold {i} model alone", load_predictor(c, "cpu", postprocess=False, tta=False,
                                                                   precision="float32"))
             for i, c in enumerate(ckpts) if i > 0]
    warm = next(segment_split(single, cfg, "val", fold=0))[0].image
    rows: dict[str, dict[str, Any]] = {}
    for name, label, pred in plan:
        rows[name] = run_row(name, label, pred, cfg, work, warm)
    rows["fold_0"] = {**rows["single"], "name": "fold_0", "label": "fold 0 model alone"}
    keys = [f"{m}_mean" for m, _ in METRICS]
    pairs = {name: {key: paired(rows, "single", name, key) for key in keys} for name in rows if name != "single"}
    best = max((r for r in rows if r.startswith("fold_")), key=lambda r: rows[r]["summary"]["Dice_mean"]["mean"])
    pairs["ensemble_vs_best_member"] = {key: paired(rows, best, "ensemble", key) for key in keys}
    precision = [compare_precision(single, cfg, "single model (fold 0)"),
                 compare_precision(ensemble.with_settings(tta=True), cfg, f"fold ensemble ({k}) + mirroring")]
    loads = [v for r in rows.values() for v in r["load_avg_1min"]]
    res = {"date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "command": " ".join(sys.argv),
           "overrides": overrides, "work": str(work), "n_cases": int(cfg.synth.n_cases),
           "shape": "x".join(map(str, cfg.synth.shape)), "folds": int(cfg.data.folds),
           "split": {"trainval": len(split["train"]) + len(split["val"]), "test": len(split["test"]),
                     "test_cases": split["test"]},
           "model_features": list(cfg.model.features), "sing": f"{cfg.sing.lam}/{cfg.sing.delta}/{cfg.loss.gamma}",
           "epochs": args.epochs, "iters": args.iters, "patch": args.patch, "roi_size": list(cfg.infer.roi_size),
           "threads": torch.get_num_threads(), "native_bf16": cpu_has_native_bf16(),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
           "load_range": [min(loads), max(loads)], "train": folds, "postprocess_fit": fit_report,
           "rules": rules.to_dict(), "order": [n for n, _, _ in plan[:6]] + [f"fold_{i}" for i in range(k)],
           "rows": rows, "paired": pairs, "precision": precision}
    res["total_seconds"] = round(time.perf_counter() - t_start, 1)
    write_report(Path(args.out), res)
    print(f"[table] {Path(args.out) / 'report.md'} ({res['total_seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
