"""The training stages: ``singr train``, ``singr evaluate``, ``singr postprocess``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..engine.pipeline import fold_config
from ..engine.source import is_remote
from ..errors import SingrInputError
from .options import add_config, add_model_options, add_model_source, config_of, default_model, load_model, model_files


def cmd_train(args: argparse.Namespace) -> int:
    from ..engine.trainer import fit

    cfg = fold_config(config_of(args), args.fold)
    res = fit(cfg, progress=not args.quiet, resume=not args.no_resume, fold=args.fold,
              trust_checkpoint=args.trust_checkpoint)
    print(f"[singr] best validation mean Dice {res.best_metric:.4f} at epoch {res.best_epoch}; "
          f"checkpoint {res.best_checkpoint}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..engine.evaluate import evaluate

    cfg = config_of(args) if args.config else None
    pred = load_model(args.model or default_model(cfg, args.fold, "evaluate"), args, cfg)
    if cfg is None:
        cfg = pred.configs[0]
    res = evaluate(pred, cfg, split=args.split, out_dir=args.out, save_predictions=args.save_predictions,
                   progress=not args.quiet, overlays=args.overlays, fold=args.fold, lesion=not args.no_lesion)
    s = res["summary"]
    n = res["n_cases"]
    se = f" ± {s['Dice_mean']['se']:.4f}" if n > 1 else ""
    lesion = (f"; lesion-wise Dice {s['LesionDice_mean']['mean']:.4f}, HD95 {s['LesionHD95_mean']['mean']:.2f} mm"
              if "LesionDice_mean" in s else "")
    print(f"[singr] {n} {args.split} case{'s' if n != 1 else ''}: mean Dice {s['Dice_mean']['mean']:.4f}{se}, "
          f"HD95 {s['HD95_mean']['mean']:.2f} mm{lesion}; results in {res['out_dir']}")
    return 0


def cmd_postprocess(args: argparse.Namespace) -> int:
    """Fit post-processing rules on a split (segmented without rules) and write them with the
    model: a new bundle in --out, or in place into the model folder given."""
    from ..engine.bundle import BUNDLE_FILE, read_bundle, write_bundle, write_rules
    from ..engine.evaluate import fit_postprocess

    cfg = config_of(args) if args.config else None
    source = args.model or default_model(cfg, args.fold, "postprocess")
    if not args.out and (is_remote(source) or len(source) != 1 or not Path(source[0]).is_dir()):
        raise SingrInputError("give --out FOLDER: rules are written in place only into a model folder (a bundle "
                              f"with {BUNDLE_FILE}, or a folder of checkpoints), not into checkpoint files or a "
                              "registry model")
    files = model_files(source, args)
    pred = load_model(files, args, cfg, postprocess=False)
    if cfg is None:
        cfg = pred.configs[0]
    rules, report = fit_postprocess(pred, cfg, split=args.split, fold=args.fold, progress=not args.quiet)
    fitted = {"postprocess_fit": {k: report[k] for k in ("split", "fold", "n_cases", "dice_before", "dice_after")}}
    if args.out:
        members, rec = read_bundle(files[0]) if len(files) == 1 else ([Path(f) for f in files], {"info": {}})
        names = [m.name for m in members]
        folder = write_bundle(args.out, members, postprocess=rules.to_dict(),
                              info={**(rec.get("info") or {}), **fitted},
                              names=names if len(set(names)) == len(names) else None)
    else:
        folder = write_rules(files[0], rules.to_dict(), fitted)
    fold = f" of fold {args.fold}" if args.fold is not None else ""
    print(f"[singr] post-processing fitted on {report['n_cases']} {args.split} case"
          f"{'s' if report['n_cases'] != 1 else ''}{fold} (segmented without rules"
          f"{', with mirroring' if pred.settings.tta else ''}); mean Dice per region, before -> after:")
    before, after = report["dice_before"], report["dice_after"]
    for name in list(pred.region_names) + ["mean"]:
        print(f"[singr]   {name}: {before[name]:.4f} -> {after[name]:.4f}")
    print("[singr] rules kept: " + ("; ".join(report["rules"]["steps"]) if not rules.is_noop else
                                    "none (no rule raised the validation Dice)"))
    print(f"[singr] model with these rules: {folder} ({BUNDLE_FILE})")
    return 0


def register(sub: Any) -> None:
    """Add train, evaluate and postprocess to the subcommands ``sub``."""
    p = sub.add_parser("train", help="train a model", description="Train with the config's loss, model and "
                       "schedule; validates every train.val_every epochs; keeps best.safetensors and last.safetensors "
                       "under <output_dir>/checkpoints and resumes from last.safetensors.")
    add_config(p)
    p.add_argument("--fold", type=int, help="train fold K of data.folds (output in <output_dir>/fold_K)")
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if a last checkpoint exists")
    p.add_argument("--trust-checkpoint", action="store_true", help="resume from a singr 0.1 .pt checkpoint")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="segment a split and compute Dice, IoU, HD95",
                       description="Segment the cases of a split and write metrics_<split>.csv and "
                       "summary_<split>.json/.md (default folder <output_dir>/eval).")
    add_config(p, default=None)
    add_model_source(p, "<output_dir>/checkpoints/best.safetensors of --config")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="which split (default test)")
    p.add_argument("--fold", type=int, help="with data.folds: the fold whose split (and model) to use")
    p.add_argument("--out", help="output folder")
    p.add_argument("--save-predictions", action="store_true", help="also write each label map as NIfTI")
    p.add_argument("--no-lesion", action="store_true", help="leave out the BraTS 2023 lesion-wise Dice and HD95 "
                   "(LesionDice_<region>, LesionHD95_<region>): connected components and one HD95 per lesion")
    p.add_argument("--overlays", type=int, default=3, help="overlay pictures of the first N cases (default 3)")
    p.add_argument("--tracking-uri", help="MLflow store for a registry model (default $MLFLOW_TRACKING_URI, "
                   "else sqlite:///mlflow.db)")
    add_model_options(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("postprocess", help="fit post-processing rules on validation cases, store them with the model",
                       description="Segment the cases of a split (default val; with data.folds, --fold picks the "
                       "fold's) without post-processing, fit the rules (per region: remove connected components "
                       "under a size; ET relabelled as necrosis under a volume), each kept only if it raises the "
                       "mean Dice, and write a model folder (singr-model.json + checkpoints) holding them: --out, "
                       "or in place when --model is a model folder. Prints Dice before -> after per region.")
    add_config(p, default=None)
    add_model_source(p, "<output_dir>/checkpoints/best.safetensors of --config, of --fold")
    p.add_argument("--split", default="val", choices=["train", "val", "test"], help="cases to fit on (default val)")
    p.add_argument("--fold", type=int, help="with data.folds: the fold whose validation cases (and model) to use")
    p.add_argument("--out", help="model folder to write (default: the --model folder, in place)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="segment with test-time mirroring (default: infer.tta); fit the rules for the setting "
                   "the model will be used with")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--tracking-uri", help="MLflow store for a registry model")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a singr 0.1 checkpoint (.pt, a torch pickle that can run code when loaded)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_postprocess, postprocess=False)
