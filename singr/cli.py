"""The ``singr`` command line: one subcommand per pipeline stage (nnU-Net style).

    singr synth       write a synthetic BraTS-like data set (BraTS 2020 layout)
    singr preprocess  read, check and normalise cases; fill the SiNG distance cache
    singr train       train a model from a config (resumes from last.pt)
    singr evaluate    segment a split and write per-case metrics and a summary
    singr predict     segment one case (folder or modality files) into a label-map NIfTI
    singr serve       HTTP inference endpoint on Ray Serve (needs the `serve` extra; serve/)
    singr report      comparison report (tables, charts, overlays) of a grid sweep, from MLflow
    singr tune        hyperparameter sweep on Ray (needs the `tune` extra; same as python -m tune)

Every subcommand takes ``--config`` and trailing ``key=value`` overrides where relevant,
and ``--help``. Bad input ends with one line naming the case/file/field and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .errors import SingrInputError


def _add_config(p: argparse.ArgumentParser, default: str | None = "synthetic.yaml") -> None:
    p.add_argument("--config", "-c", default=default,
                   help=f"YAML config (a path, or a name under configs/; default {default})")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides in dotted form, e.g. train.epochs=5 sing.lam=0.7")


def _cfg(args: argparse.Namespace):
    from .config import load_config

    return load_config(args.config, args.overrides)


def cmd_synth(args: argparse.Namespace) -> int:
    from .data.synth import synthesize_dataset

    cfg = _cfg(args)
    s = cfg["synth"]
    out = Path(args.out or cfg["data"]["root"])
    n = args.n_cases or int(s["n_cases"])
    shape = tuple(args.shape or s["shape"])
    seed = int(s["seed"] if args.seed is None else args.seed)
    paths = synthesize_dataset(out, n_cases=n, shape=shape, seed=seed, progress=not args.quiet)
    print(f"[singr] {len(paths)} synthetic cases ({'x'.join(map(str, shape))}) in {out}")
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from .engine.data import discover, prepare, run_paths, split_cases

    cfg = _cfg(args)
    paths = run_paths(cfg)
    cases = discover(cfg)
    split = split_cases(cfg, cases, paths)
    lams = args.lam or [cfg["sing"]["lam"]]
    counts = prepare(cfg, cases, paths, lams=lams, progress=not args.quiet)
    print(f"[singr] preprocessed {counts['cases']} cases into {paths.cache_dir} "
          f"(distance maps computed: {counts['maps_computed']}, from cache: {counts['maps_cached']}); "
          f"split {', '.join(f'{k} {len(v)}' for k, v in split.items())} in {paths.split_file}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .engine.train import fit

    cfg = _cfg(args)
    res = fit(cfg, progress=not args.quiet, resume=not args.no_resume)
    print(f"[singr] best validation mean Dice {res['best_metric']:.4f} at epoch {res['best_epoch']}; "
          f"checkpoint {res['best_checkpoint']}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .engine.evaluate import evaluate
    from .engine.data import run_paths

    cfg = _cfg(args) if args.config else None
    ckpt = args.checkpoint
    if ckpt is None:
        if cfg is None:
            raise SingrInputError("give --checkpoint or --config (whose output_dir holds checkpoints/best.pt)")
        ckpt = str(run_paths(cfg).checkpoints / "best.pt")
    res = evaluate(ckpt, cfg, split=args.split, out_dir=args.out, save_predictions=args.save_predictions,
                   device=args.device, progress=not args.quiet, overlays=args.overlays)
    s = res["summary"]
    print(f"[singr] {res['n_cases']} {args.split} cases: mean Dice {s['Dice_mean']['mean']:.4f} "
          f"± {s['Dice_mean']['se']:.4f}, HD95 {s['HD95_mean']['mean']:.2f} mm; results in {res['out_dir']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .data.readers import find_case_folder_files, load_case, load_case_from_files
    from .engine.evaluate import Predictor
    from .io import write_nifti

    if bool(args.case) == bool(args.files):
        raise SingrInputError("give either --case DIR or --files MODALITY=PATH ... (one of them)")
    if args.case:
        case = load_case(find_case_folder_files(Path(args.case)), check=True)
    else:
        files = {}
        for item in args.files:
            if "=" in item:
                k, v = item.split("=", 1)
                files[k] = Path(v)
            else:
                files = [Path(f) for f in args.files]  # type: ignore[assignment]
                break
        case = load_case_from_files(files)
    pred = Predictor(args.checkpoint, args.device)
    p = pred.predict(case.image, args.label_convention, case=case.case_id)
    out = Path(args.out)
    if out.suffix not in (".gz", ".nii"):
        out = out / f"{case.case_id}_seg.nii.gz"
    write_nifti(out, p.labels, case.affine, case.header)
    msg = f"[singr] label map {out}"
    if args.signed:
        import numpy as np

        sp = out.with_name(out.name.replace("_seg", "").replace(".nii.gz", "").replace(".nii", "") + "_signed.nii.gz")
        write_nifti(sp, np.moveaxis(p.signed, 0, -1), case.affine, case.header)
        msg += f", signed maps {sp} (channels {', '.join(p.region_names)})"
    if args.png:
        from .viz import overlay_png

        png = out.with_name(out.name.replace(".nii.gz", "").replace(".nii", "") + ".png")
        overlay_png(png, case.image, p.regions, p.region_names, p.signed, title=case.case_id)
        msg += f", picture {png}"
    vox_ml = float(abs(__import__("numpy").linalg.det(case.affine[:3, :3]))) / 1000.0
    vols = {n: round(float(r.sum()) * vox_ml, 3) for n, r in zip(p.region_names, p.regions)}
    print(msg + f"; volumes (ml): {json.dumps(vols)}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    # Ray lives in the optional `tune` package; import it here, never at module import time.
    try:
        from tune.cli import run
    except ImportError as e:
        raise SingrInputError(f"`singr tune` needs the tune extra (pip install -e '.[tune]'): {e}") from e
    return run(args.config, args.overrides, resume=not args.no_resume, progress=not args.quiet)


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    from .tracking_uri import resolve_tracking_uri, sqlite_path

    uri = resolve_tracking_uri(args.tracking_uri)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise SingrInputError(f"no MLflow store at {db}; pass --tracking-uri or run "
                              "from the folder of the sweep's mlflow.db")
    out = args.out or str(Path("reports") / (args.sweep or args.experiment))
    res = write_report(uri, args.experiment, out, sweep=args.sweep, overlay_cases=args.overlay_cases,
                       log_to_mlflow=not args.no_log, device=args.device)
    h = res["summary"].get("headline") or {}
    if h:
        d, hd = h["paired_Dice_difference"], h["paired_HD95_difference"]

        def pm(v: tuple, digits: int) -> str:
            return f"{v[0]:+.{digits}f}" + (f" ± {v[1]:.{digits}f}" if v[2] > 1 else "")

        print(f"[report] {h['highlight']} - {h['baseline']} over {d[2]} seeds: Dice {pm(d, 4)}, "
              f"HD95 {pm(hd, 2)} mm")
    for f in res["figures"]:
        print(f"[report] figure: {f}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from serve.launch import run  # lazily: Ray is imported only here
    except ImportError as e:
        raise SingrInputError(f"the HTTP endpoint needs the serve extras ({e}); "
                              "install them with pip install -e '.[serve]'") from None
    return run(model=args.model, host=args.host, port=args.port, config=args.serve_config,
               tracking_uri=args.tracking_uri, replicas=args.replicas,
               max_ongoing_requests=args.max_ongoing_requests, num_gpus=args.num_gpus, num_cpus=args.num_cpus,
               address=args.address)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="singr", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write a synthetic BraTS-like data set", description=
                       "Write synthetic BraTS-like cases in the BraTS 2020 layout (4 modalities + seg, .nii.gz).")
    _add_config(p)
    p.add_argument("--out", help="output folder (default: data.root of the config)")
    p.add_argument("--n-cases", type=int, help="number of cases (default: synth.n_cases)")
    p.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"), help="volume shape (default: synth.shape)")
    p.add_argument("--seed", type=int, help="random seed (default: synth.seed)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("preprocess", help="check and normalise cases, fill the SiNG distance cache",
                       description="Read every case of data.root, check it, z-score it and cache the SiNG "
                       "distances for sing.lam (or each --lam), so that training reads only arrays.")
    _add_config(p)
    p.add_argument("--lam", type=float, nargs="+", help="lambda values to cache (default: sing.lam)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("train", help="train a model", description="Train with the config's loss, model and "
                       "schedule; validates every train.val_every epochs; keeps best.pt and last.pt under "
                       "<output_dir>/checkpoints and resumes from last.pt.")
    _add_config(p)
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if last.pt exists")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="segment a split and compute Dice, IoU, HD95",
                       description="Segment the cases of a split and write metrics_<split>.csv and "
                       "summary_<split>.json/.md (default folder <output_dir>/eval).")
    _add_config(p, default=None)
    p.add_argument("--checkpoint", help="checkpoint (default: <output_dir>/checkpoints/best.pt of --config)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="which split (default test)")
    p.add_argument("--out", help="output folder")
    p.add_argument("--save-predictions", action="store_true", help="also write each label map as NIfTI")
    p.add_argument("--overlays", type=int, default=3, help="overlay pictures of the first N cases (default 3)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="segment one case into a label-map NIfTI",
                       description="Segment one case: a BraTS case folder (2020 or 2023 names) or modality "
                       "files (flair=... t1=... t1ce=... t2=..., BraTS 2023 names too, or one 4-D NIfTI). "
                       "Writes a label map in the input's geometry (affine and header kept).")
    p.add_argument("--checkpoint", required=True, help="a singr checkpoint (best.pt)")
    p.add_argument("--case", help="case folder")
    p.add_argument("--files", nargs="+", metavar="MODALITY=PATH", help="modality files, or one 4-D NIfTI")
    p.add_argument("--out", required=True, help="output .nii.gz path, or a folder")
    p.add_argument("--signed", action="store_true", help="also write the predicted signed maps (4-D NIfTI)")
    p.add_argument("--png", action="store_true", help="also write an overlay picture (slice through the tumour)")
    p.add_argument("--label-convention", choices=["brats2020", "brats2023", "binary"],
                   help="labels to write (default: the training data's)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("tune", help="hyperparameter sweep on Ray (maps -> Tune/Optuna/ASHA -> MLflow)",
                       description="Same as `python -m tune`: SiNG maps for tune.lam_grid with Ray Data, an "
                       "Optuna + ASHA sweep of Ray Train trials, MLflow tracking, best model registered. "
                       "Uses RAY_ADDRESS when set, else a local Ray on 127.0.0.1; rerun to resume.")
    _add_config(p)
    p.add_argument("--no-resume", action="store_true", help="refuse to continue an existing sweep of the same name")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("report", help="Markdown report + figures of a comparison grid, from its MLflow runs",
                       description="Read the newest grid sweep (tune.mode: grid, e.g. configs/ablation-synthetic.yaml) "
                       "of an MLflow experiment and write report.md (Dice and HD95 per region, mean ± SE over seeds), "
                       "bar charts and case overlays; the files are also logged to the sweep's MLflow run.")
    p.add_argument("--experiment", "-e", required=True, help="MLflow experiment name (mlflow.experiment of the config)")
    p.add_argument("--sweep", help="sweep name (tune.name); default: the newest grid sweep of the experiment")
    p.add_argument("--tracking-uri", help="MLflow store; default $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db")
    p.add_argument("--out", "-o", help="output folder (default reports/<sweep or experiment>)")
    p.add_argument("--overlay-cases", type=int, default=None, help="cases in the overlay figure "
                   "(default experiment.overlay_cases; 0: none)")
    p.add_argument("--device", default="cpu", help="device for the overlay predictions (cpu | cuda | auto)")
    p.add_argument("--no-log", action="store_true", help="do not log the report to the sweep's MLflow run")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("serve", help="start the HTTP inference endpoint (Ray Serve)",
                       description="Start the HTTP endpoint (POST /v1/segment, GET /v1/health, GET /v1/model; "
                       "API docs at /docs) in a Ray instance of its own; Ctrl-C stops it. Defaults come from "
                       "serve/config.yaml.")
    p.add_argument("--model", help="checkpoint path, or MLflow registry model models:/<name>@<alias> or "
                   "<name>@<alias> (default: the config's, models:/singr@champion)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--config", dest="serve_config", help="Serve config file (default serve/config.yaml)")
    p.add_argument("--replicas", type=int, help="number of replicas (default: the config's)")
    p.add_argument("--max-ongoing-requests", type=int, help="per replica (default: the config's)")
    p.add_argument("--num-gpus", type=float, help="GPUs per replica (default: the config's, 0)")
    p.add_argument("--num-cpus", type=float, help="CPUs per replica (default: the config's, 1)")
    p.add_argument("--address", default="local",
                   help="Ray address: 'local' starts a Ray instance of its own (default); 'auto' joins a running one")
    p.set_defaults(func=cmd_serve)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SingrInputError as e:
        print(f"singr {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
