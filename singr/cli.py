"""The ``singr`` command: one subcommand per stage of the pipeline (nnU-Net style).

    singr synth       write a synthetic BraTS-like data set (BraTS 2020 layout)
    singr preprocess  read, check and normalise cases; fill the SiNG distance cache
    singr train       train a model from a config (resumes from last.safetensors; --fold k)
    singr evaluate    segment a split and write per-case metrics (voxel and lesion-wise) and a summary
    singr postprocess fit a model's post-processing rules on validation cases; write them with the model
    singr predict     segment one case (folder or modality files) into a label-map NIfTI
    singr config      print the resolved config (--show) or its JSON Schema (--schema)
    singr convert     rewrite a singr 0.1 checkpoint (.pt pickle) in the safe format
    singr export      the networks as TorchScript or ONNX, checked against PyTorch
    singr tune        hyperparameter sweep on Ray (the tune extra; same as python -m tune)
    singr report      comparison report of a grid sweep, from MLflow (the tune extra)
    singr serve       HTTP inference endpoint on Ray Serve (the serve extra)

Every subcommand has --help; those that read a config take --config (a path, or the name
of a shipped config such as synthetic.yaml) and trailing key=value overrides. Bad input
ends with one line naming the case, file or key, and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import SingrInputError


def _add_config(p: argparse.ArgumentParser, default: str | None = "synthetic.yaml") -> None:
    p.add_argument("--config", "-c", default=default,
                   help=f"YAML config: a path, or the name of a shipped config (default {default})")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides in dotted form, e.g. train.epochs=5 sing.lam=0.7")


def _cfg(args: argparse.Namespace) -> Any:
    from .config import load_config

    return load_config(args.config, args.overrides)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time mirroring over the 3 axes (default: the model's infer.tta)")
    p.add_argument("--postprocess", action=argparse.BooleanOptionalAction, default=None,
                   help="apply the model's post-processing rules (default: infer.postprocess of --config where "
                   "the command takes one, else of the model)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a singr 0.1 checkpoint (.pt, a torch pickle that can run code when loaded)")


def _add_model_source(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--model`` (alias ``--checkpoint``): checkpoint file(s), a model folder or a registry URI;
    ``default`` says what the command uses without it (None: the option is required)."""
    p.add_argument("--model", "--checkpoint", nargs="+", dest="model", required=default is None,
                   help="checkpoint file(s) (several: an ensemble), a model folder, or models:/<name>@<alias>"
                   + (f" (default: {default})" if default else ""))


def _is_registry(source: Sequence[str]) -> bool:
    src = list(source)
    return len(src) == 1 and (src[0].startswith("models:/") or ("@" in src[0] and not Path(src[0]).exists()))


def _model_files(source: Sequence[str], args: argparse.Namespace) -> list[str]:
    """Local paths of a model: the files or folder given, or a registry model downloaded."""
    src = list(source)
    if _is_registry(src):
        try:
            from tune.registry import download_model
        except ImportError as e:
            raise SingrInputError(f"a registry model needs MLflow (the tune extra: pip install 'singr[tune]'): "
                                  f"{e}") from None
        local, _ = download_model(src[0], getattr(args, "tracking_uri", None))
        src = [str(local)]
    return src


def _load_model(source: Sequence[str], args: argparse.Namespace, cfg: Any = None, **settings: Any) -> Any:
    """A Predictor from checkpoint files, a model folder, or an MLflow registry URI. Mirroring and
    post-processing: the command line's --tta/--postprocess, else ``cfg.infer`` (when the command
    was given a config), else the model's own config; ``settings`` override all of them."""
    from .engine.bundle import load_predictor

    src = _model_files(source, args)
    tta, post = args.tta, args.postprocess
    if cfg is not None:
        tta = cfg.infer.tta if tta is None else tta
        post = cfg.infer.postprocess if post is None else post
    chosen = {"tta": tta, "postprocess": post, **settings}
    return load_predictor(src[0] if len(src) == 1 else src, args.device, trust=args.trust_checkpoint, **chosen)


def _default_model(cfg: Any, fold: int | None, command: str) -> list[str]:
    """``<output_dir>/checkpoints/best.safetensors`` of ``cfg`` (of fold ``fold``)."""
    from .engine.pipeline import run_paths
    from .engine.trainer import BEST

    if cfg is None:
        raise SingrInputError(f"`singr {command}`: give --model (a checkpoint, model folder or registry URI) or "
                              f"--config (whose output_dir holds checkpoints/{BEST})")
    return [str(run_paths(fold_config(cfg, fold)).checkpoints / BEST)]


def cmd_synth(args: argparse.Namespace) -> int:
    from .data.synth import synthesize_dataset

    cfg = _cfg(args)
    s = cfg.synth
    out = Path(args.out or cfg.data.root)
    n = args.n_cases or int(s.n_cases)
    shape = tuple(args.shape or s.shape)
    seed = int(s.seed if args.seed is None else args.seed)
    amb = float(s.ambiguity if args.ambiguity is None else args.ambiguity)
    if args.example:
        from .data.synth import write_example_case

        folder = write_example_case(args.example, shape=shape, seed=seed, ambiguity=amb,
                                    brain_box=_brain_box(shape, s.brain_box), dtype=s.dtype)
        print(f"[singr] example case (held out from the data set of seed {seed}; BraTS 2023 file names and labels) "
              f"in {folder}: {', '.join(sorted(f.name for f in folder.iterdir()))}")
        return 0
    box = _brain_box(shape, s.brain_box)
    paths = synthesize_dataset(out, n_cases=n, shape=shape, seed=seed, progress=not args.quiet, ambiguity=amb,
                               brain_box=box, dtype=s.dtype)
    where = f", brain box {'x'.join(map(str, box))}" if box else ""
    print(f"[singr] {len(paths)} synthetic cases ({'x'.join(map(str, shape))}{where}, ambiguity {amb:g}, "
          f"{s.dtype}) in {out}")
    return 0


def _brain_box(shape: tuple[int, ...], box: list[int] | None) -> tuple[int, ...] | None:
    """The config's brain box, or None when ``--shape`` made the volume smaller than it on some axis."""
    if box is None or any(b > s for b, s in zip(box, shape)):
        return None
    return tuple(box)


def cmd_preprocess(args: argparse.Namespace) -> int:
    from .engine.pipeline import discover, prepare, run_paths, split_cases

    cfg = _cfg(args)
    paths = run_paths(cfg)
    cases = discover(cfg)
    split = split_cases(cfg, cases, paths)
    lams = args.lam or [cfg.sing.lam]
    counts = prepare(cfg, cases, paths, lams=lams, progress=not args.quiet)
    sizes = ", ".join(f"{k} {len(split[k])}" for k in ("train", "val", "test"))
    print(f"[singr] preprocessed {counts['cases']} cases into {paths.cache_dir} "
          f"(distance maps computed: {counts['maps_computed']}, from cache: {counts['maps_cached']}); "
          f"split {sizes} in {paths.split_file}")
    return 0


def fold_config(cfg: Any, fold: int | None) -> Any:
    """The config of fold ``fold``: output in ``<output_dir>/fold_<k>``, the split file shared."""
    if fold is None:
        return cfg
    from .config import with_values
    from .engine.pipeline import run_paths

    if not cfg.data.folds:
        raise SingrInputError("--fold needs data.folds (the number of folds, e.g. data.folds=5)")
    if not 0 <= fold < int(cfg.data.folds):
        raise SingrInputError(f"--fold {fold} is out of range; data.folds = {cfg.data.folds} gives folds "
                              f"0..{int(cfg.data.folds) - 1}")
    split = run_paths(cfg).split_file
    return with_values(cfg, {"output_dir": str(Path(cfg.output_dir) / f"fold_{fold}"), "data.split_file": str(split)})


def cmd_train(args: argparse.Namespace) -> int:
    from .engine.trainer import fit

    cfg = fold_config(_cfg(args), args.fold)
    res = fit(cfg, progress=not args.quiet, resume=not args.no_resume, fold=args.fold,
              trust_checkpoint=args.trust_checkpoint)
    print(f"[singr] best validation mean Dice {res.best_metric:.4f} at epoch {res.best_epoch}; "
          f"checkpoint {res.best_checkpoint}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .engine.evaluate import evaluate

    cfg = _cfg(args) if args.config else None
    pred = _load_model(args.model or _default_model(cfg, args.fold, "evaluate"), args, cfg)
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
    from .engine.bundle import BUNDLE_FILE, read_bundle, write_bundle, write_rules
    from .engine.evaluate import fit_postprocess

    cfg = _cfg(args) if args.config else None
    source = args.model or _default_model(cfg, args.fold, "postprocess")
    if not args.out and (_is_registry(source) or len(source) != 1 or not Path(source[0]).is_dir()):
        raise SingrInputError("give --out FOLDER: rules are written in place only into a model folder (a bundle "
                              f"with {BUNDLE_FILE}, or a folder of checkpoints), not into checkpoint files or a "
                              "registry model")
    files = _model_files(source, args)
    pred = _load_model(files, args, cfg, postprocess=False)
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


def _output_path(out: Path, case_id: str) -> Path:
    name = out.name.lower()
    return out if name.endswith((".nii", ".nii.gz")) else out / f"{case_id}_seg.nii.gz"


def cmd_predict(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from .data.readers import find_case_folder_files, load_case, load_case_from_files
    from .io import voxel_ml, write_nifti

    if bool(args.case) == bool(args.files):
        raise SingrInputError("give either --case DIR or --files MODALITY=PATH ... (one of them)")
    t0 = time.time()
    if args.case:
        case = load_case(find_case_folder_files(Path(args.case)), check=True)
    else:
        files: Any = {}
        for item in args.files:
            if "=" not in item:
                files = [Path(f) for f in args.files]
                break
            k, v = item.split("=", 1)
            files[k] = Path(v)
        case = load_case_from_files(files)
    print(f"[singr] read {case.case_id}: {len(case.modalities)} modalities, shape "
          f"{'x'.join(map(str, case.image.shape[1:]))} ({time.time() - t0:.1f} s)", flush=True)
    pred = _load_model(args.model, args)
    conv = args.label_convention or case.label_convention
    members = len(pred.members) * (8 if pred.settings.tta else 1)
    post = " and post-processing rules" if pred.applies_postprocess else ""
    print(f"[singr] segmenting with {len(pred.members)} model(s){' and mirroring' if pred.settings.tta else ''}"
          f"{post} ({members} sliding-window pass{'es' if members > 1 else ''})", flush=True)
    p = pred.predict(case.image, conv, case=case.case_id, progress=not args.quiet)
    out = _output_path(Path(args.out), case.case_id)
    write_nifti(out, p.labels, case.affine, case.header)
    et = {"brats2020": "ET = 4", "brats2023": "ET = 3", "binary": "one region"}.get(p.label_convention, "")
    msg = f"[singr] label map {out} ({p.label_convention} labels: {et})"
    if args.signed:
        sp = out.with_name(out.name.replace("_seg", "").replace(".nii.gz", "").replace(".nii", "") + "_signed.nii.gz")
        write_nifti(sp, np.moveaxis(p.signed, 0, -1), case.affine, case.header)
        msg += f"; signed maps {sp} (channels {', '.join(p.region_names)})"
    if args.png:
        from .viz import overlay_png

        png = out.with_name(out.name.replace(".nii.gz", "").replace(".nii", "") + ".png")
        overlay_png(png, case.image, p.regions, p.region_names, p.signed, title=case.case_id)
        msg += f"; picture {png}"
    vox = voxel_ml(case.affine)
    vols = {n: round(float(r.sum()) * vox, 3) for n, r in zip(p.region_names, p.regions)}
    print(msg + f"; volumes (ml): {json.dumps(vols)}; {time.time() - t0:.1f} s")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from .config import dump_config

    if args.schema:
        schema_cls: Any
        try:  # the whole file, service sections included, when the tune package is there
            from tune.config import ServiceConfig as schema_cls
        except ImportError:
            from .config import SingrConfig as schema_cls
        text = json.dumps(schema_cls.model_json_schema(), indent=1)
        if args.out:
            from .io import write_text

            write_text(args.out, text + "\n")
            print(f"[singr] JSON Schema written to {args.out}")
        else:
            print(text)
        return 0
    cfg = _cfg(args)
    print(dump_config(cfg), end="")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .engine.checkpoint import load_checkpoint, save_checkpoint

    if not args.trust_checkpoint:
        raise SingrInputError("converting reads a torch pickle, which can run code: pass --trust-checkpoint to "
                              "confirm that you made this file yourself", path=args.checkpoint)
    ckpt = load_checkpoint(args.checkpoint, trust=True)
    ckpt.config = {k: v for k, v in ckpt.config.items() if not str(k).startswith("_")}
    out = save_checkpoint(args.out, ckpt)
    print(f"[singr] wrote {out} (safetensors)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export each member network (TorchScript or ONNX, with a JSON sidecar), then compare each
    export's logits with PyTorch's on a crop of --check-case (else a random normalised input);
    exit 2 when a difference exceeds --tolerance."""
    from .engine.export import (
        EXPORT_FORMATS,
        case_sample,
        check_export,
        export_model,
        random_sample,
        read_sidecar,
        resolve_model_files,
    )

    if args.format not in EXPORT_FORMATS:
        raise SingrInputError(f"unknown export format {args.format!r} (--format); expected one of "
                              f"{', '.join(EXPORT_FORMATS)}")
    if args.check_case and not Path(args.check_case).is_dir():
        raise SingrInputError("--check-case: case folder does not exist; expected a folder with the 4 modality "
                              "files (t1n, t1c, t2w, t2f or flair, t1, t1ce, t2)", path=args.check_case)
    members = resolve_model_files(args.model, args.tracking_uri)
    roi = tuple(args.roi) if args.roi else None
    files = export_model(members, args.format, Path(args.out), roi=roi, opset=args.opset,  # type: ignore[arg-type]
                         trust=args.trust_checkpoint, staged_norms=not args.native_norms)
    worst = 0.0
    for src, f in zip(members, files):
        side = read_sidecar(f)
        exp = side["export"]
        size = [int(v) for v in side["input"]["exported_at"][2:]]  # the window exported at (--roi or the model's)
        msg = (f"[singr] {f} ({args.format} by {exp['method']}, {exp['bytes'] / 1e6:.2f} MB, {exp['seconds']:.1f} s; "
               f"input ({', '.join(map(str, side['input']['shape']))})); sidecar {f.name}.json")
        if args.no_check:
            print(msg, flush=True)
            continue
        if args.check_case:
            sample = case_sample(args.check_case, size, side["input"]["modalities"], side["input"]["channels"])
            what = f"a {'x'.join(map(str, size))} crop of {Path(args.check_case).name}"
        else:
            sample = random_sample(side["input"]["channels"], size)
            what = f"a random normalised {'x'.join(map(str, size))} input"
        diff = check_export(f, args.format, src, sample, trust=args.trust_checkpoint)
        worst = max(worst, diff)
        print(f"{msg}\n[singr]   max abs difference from PyTorch on {what}: {diff:.3g}", flush=True)
    if worst > args.tolerance:
        print(f"singr export: error: an export differs from PyTorch by {worst:.3g} > {args.tolerance:g} "
              "(--tolerance)", file=sys.stderr)
        return 2
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    try:  # Ray lives in the optional tune package: imported here, never at module import time
        from tune.cli import run
    except ImportError as e:
        raise SingrInputError(f"`singr tune` needs the tune extra (pip install 'singr[tune]'): {e}") from None
    return run(args.config, args.overrides, resume=not args.no_resume, progress=not args.quiet,
               verbose=args.verbose)


def cmd_report(args: argparse.Namespace) -> int:
    try:
        from tune.report import run_report
    except ImportError as e:
        raise SingrInputError(f"`singr report` reads MLflow and needs the tune extra "
                              f"(pip install 'singr[tune]'): {e}") from None
    return run_report(args)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from serve.launch import run  # Ray is imported only here
    except ImportError as e:
        raise SingrInputError(f"the HTTP endpoint needs the serve extra (pip install 'singr[serve]'): {e}") from None
    return run(model=args.model, host=args.host, port=args.port, config=args.serve_config,
               tracking_uri=args.tracking_uri, replicas=args.replicas,
               max_ongoing_requests=args.max_ongoing_requests, num_gpus=args.num_gpus, num_cpus=args.num_cpus,
               address=args.address, api_key=_api_key(args.api_key, args.api_key_file))


def _api_key(given: str | None, path: str | None) -> str | None:
    """The endpoint's key from ``--api-key-file`` (first line, stripped) or ``--api-key``; the latter
    is visible to every local user in ``ps``, so it is accepted with a warning. None: the
    environment's ``$SINGR_API_KEY`` or the config decides."""
    if given and path:
        raise SingrInputError("pass either --api-key or --api-key-file, not both")
    if path:
        try:
            lines = Path(path).read_text().strip().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise SingrInputError(f"cannot read the API key file ({type(e).__name__}: {e})", path=path) from None
        if not lines or not lines[0].strip():
            raise SingrInputError("the API key file is empty; expected the key on its first line", path=path)
        return lines[0].strip()
    if given:
        print("singr serve: warning: a key given with --api-key is visible to every local user (ps, /proc); "
              "prefer --api-key-file FILE or $SINGR_API_KEY", file=sys.stderr)
    return given


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = argparse.ArgumentParser(prog="singr", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"singr {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write a synthetic BraTS-like data set", description=
                       "Write synthetic BraTS-like cases in the BraTS 2020 layout (4 modalities + seg, .nii.gz).")
    _add_config(p)
    p.add_argument("--out", help="output folder (default: data.root of the config)")
    p.add_argument("--n-cases", type=int, help="number of cases (default: synth.n_cases)")
    p.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"), help="volume shape (default: synth.shape)")
    p.add_argument("--seed", type=int, help="random seed (default: synth.seed)")
    p.add_argument("--ambiguity", type=float, help="0 (crisp borders) .. 1 (infiltrative borders, rater "
                   "variability); default synth.ambiguity")
    p.add_argument("--example", metavar="DIR", help="write one held-out case into DIR instead, as a user's scan "
                   "folder (t2f, t1n, t1c, t2w, seg .nii.gz; BraTS 2023 labels): the examples' input")
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
                       "schedule; validates every train.val_every epochs; keeps best.safetensors and last.safetensors "
                       "under <output_dir>/checkpoints and resumes from last.safetensors.")
    _add_config(p)
    p.add_argument("--fold", type=int, help="train fold K of data.folds (output in <output_dir>/fold_K)")
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if a last checkpoint exists")
    p.add_argument("--trust-checkpoint", action="store_true", help="resume from a singr 0.1 .pt checkpoint")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="segment a split and compute Dice, IoU, HD95",
                       description="Segment the cases of a split and write metrics_<split>.csv and "
                       "summary_<split>.json/.md (default folder <output_dir>/eval).")
    _add_config(p, default=None)
    _add_model_source(p, "<output_dir>/checkpoints/best.safetensors of --config")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="which split (default test)")
    p.add_argument("--fold", type=int, help="with data.folds: the fold whose split (and model) to use")
    p.add_argument("--out", help="output folder")
    p.add_argument("--save-predictions", action="store_true", help="also write each label map as NIfTI")
    p.add_argument("--no-lesion", action="store_true", help="leave out the BraTS 2023 lesion-wise Dice and HD95 "
                   "(LesionDice_<region>, LesionHD95_<region>): connected components and one HD95 per lesion")
    p.add_argument("--overlays", type=int, default=3, help="overlay pictures of the first N cases (default 3)")
    p.add_argument("--tracking-uri", help="MLflow store for a registry model (default $MLFLOW_TRACKING_URI, "
                   "else sqlite:///mlflow.db)")
    _add_model_options(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("postprocess", help="fit post-processing rules on validation cases, store them with the model",
                       description="Segment the cases of a split (default val; with data.folds, --fold picks the "
                       "fold's) without post-processing, fit the rules (per region: remove connected components "
                       "under a size; ET relabelled as necrosis under a volume), each kept only if it raises the "
                       "mean Dice, and write a model folder (singr-model.json + checkpoints) holding them: --out, "
                       "or in place when --model is a model folder. Prints Dice before -> after per region.")
    _add_config(p, default=None)
    _add_model_source(p, "<output_dir>/checkpoints/best.safetensors of --config, of --fold")
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

    p = sub.add_parser("predict", help="segment one case into a label-map NIfTI",
                       description="Segment one case: a case folder (BraTS 2020 or 2023 names, or plain names "
                       "t2f.nii.gz, t1n.nii.gz ...) or modality files (t2f=... t1n=... or flair=... t1=...; or one "
                       "4-D NIfTI). Writes a label map in the input's geometry, in the input's label convention "
                       "(BraTS 2023 files -> ET = 3) unless --label-convention says otherwise.")
    _add_model_source(p)
    p.add_argument("--case", help="case folder")
    p.add_argument("--files", nargs="+", metavar="MODALITY=PATH", help="modality files, or one 4-D NIfTI")
    p.add_argument("--out", required=True, help="output .nii.gz path, or a folder")
    p.add_argument("--signed", action="store_true", help="also write the predicted signed maps (4-D NIfTI)")
    p.add_argument("--png", action="store_true", help="also write an overlay picture (the slice with most tumour)")
    p.add_argument("--label-convention", choices=["brats2020", "brats2023", "binary"],
                   help="labels to write (default: the input's naming; BraTS 2023 files get ET = 3)")
    p.add_argument("--tracking-uri", help="MLflow store for a registry model")
    _add_model_options(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("config", help="print the resolved config, or the JSON Schema of config files",
                       description="--show (the default) prints the config after inheritance and overrides; "
                       "--schema writes the JSON Schema of a config file (point your editor's YAML support at it).")
    _add_config(p)
    p.add_argument("--show", action="store_true", help="print the resolved config (the default)")
    p.add_argument("--schema", action="store_true", help="print (or --out) the JSON Schema")
    p.add_argument("--out", help="with --schema: write it to this file")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("convert", help="rewrite a singr 0.1 .pt checkpoint as safetensors",
                       description="Read a checkpoint of singr 0.1 (a torch pickle; --trust-checkpoint confirms you "
                       "made it) and write it in the safe format (safetensors, metadata as JSON).")
    p.add_argument("checkpoint", help="the .pt file")
    p.add_argument("out", help="the .safetensors file to write")
    p.add_argument("--trust-checkpoint", action="store_true", help="confirm the .pt file is yours")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("export", help="export a model's networks as TorchScript or ONNX (+ a JSON sidecar)",
                       description="Write each member network of a model as a standalone TorchScript or ONNX file "
                       "(image (batch, C, x, y, z) float32 -> raw logits; dynamic batch and spatial sizes where the "
                       "network allows: unet3d, unetpp, segresnet; fixed for unetr and swinunetr) and beside it "
                       "<file>.json: modality order, normalisation, regions, threshold, sliding window, lambda/delta/"
                       "gamma, the checkpoint's sha256. Then compares each export with PyTorch (exit 2 above "
                       "--tolerance).")
    _add_model_source(p)
    p.add_argument("--format", required=True, help="torchscript | onnx")
    p.add_argument("--out", required=True, help="output file (one member: .onnx, or .torchscript/.pt) or folder "
                   "(one <member>.onnx / <member>.torchscript per member)")
    p.add_argument("--roi", type=int, nargs=3, metavar=("X", "Y", "Z"), help="input size to export at (default: the "
                   "model's sliding window); the fixed input size of unetr/swinunetr exports")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--native-norms", action="store_true", help="ONNX: keep the native InstanceNormalization "
                   "(faster in onnxruntime, but 1e-4..1e-2 from PyTorch on real images) instead of staged reductions")
    p.add_argument("--check-case", metavar="DIR", help="check on a crop of this case folder (default: a random "
                   "normalised input)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted max abs difference from "
                   "PyTorch's logits (default 1e-4)")
    p.add_argument("--no-check", action="store_true", help="skip the comparison with PyTorch")
    p.add_argument("--tracking-uri", help="MLflow store for a registry model")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a singr 0.1 checkpoint (.pt, a torch pickle that can run code when loaded)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("tune", help="hyperparameter sweep on Ray (maps -> Tune/Optuna/ASHA -> MLflow)",
                       description="Same as `python -m tune`: SiNG maps for tune.lam_grid with Ray Data, an "
                       "Optuna + ASHA sweep of training trials (Ray Train for DDP), MLflow tracking, best model "
                       "registered. "
                       "Uses RAY_ADDRESS when set, else a local Ray on 127.0.0.1; rerun to resume.")
    _add_config(p)
    p.add_argument("--no-resume", action="store_true", help="refuse to continue an existing sweep of the same name")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.add_argument("--verbose", "-v", action="store_true", help="Ray's own logs on the terminal too")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("report", help="Markdown report + figures of a comparison grid, from its MLflow runs",
                       description="Read the newest grid sweep (tune.mode: grid) of an MLflow experiment and write "
                       "report.md (Dice and HD95 per region, mean ± SE over seeds, paired differences with "
                       "bootstrap intervals and Wilcoxon tests), charts and case overlays; also logged to MLflow.")
    p.add_argument("--experiment", "-e", required=True, help="MLflow experiment name (mlflow.experiment of the config)")
    p.add_argument("--sweep", help="sweep name (tune.name); default: the newest grid sweep of the experiment")
    p.add_argument("--tracking-uri", help="MLflow store; default $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db")
    p.add_argument("--out", "-o", help="output folder (default reports/<sweep or experiment>)")
    p.add_argument("--overlay-cases", type=int, default=None, help="cases in the overlay figure "
                   "(default experiment.overlay_cases; 0: none)")
    p.add_argument("--device", default="cpu", help="device for the overlay predictions (cpu | cuda | auto)")
    p.add_argument("--no-log", action="store_true", help="do not log the report to the sweep's MLflow run")
    p.add_argument("--notes-from", metavar="CONFIG", help="take the Notes section (experiment.notes) from this "
                   "config instead of the one the sweep stored (notes written after the run: wall time, reading)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("serve", help="start the HTTP inference endpoint (Ray Serve)",
                       description="Start the HTTP endpoint (viewer at /, POST /v1/segment, GET /v1/health, "
                       "GET /v1/model; API docs at /docs) in a Ray instance of its own; Ctrl-C or SIGTERM stops it. "
                       "Defaults come from serve/config.yaml.")
    p.add_argument("--model", help="checkpoint, model folder, or MLflow registry model models:/<name>@<alias> "
                   "(default: the config's)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--config", dest="serve_config", help="Serve config file (default: the shipped serve/config.yaml)")
    p.add_argument("--replicas", type=int, help="number of replicas (default: the config's)")
    p.add_argument("--max-ongoing-requests", type=int, help="per replica (default: the config's)")
    p.add_argument("--num-gpus", type=float, help="GPUs per replica (default: the config's, 0)")
    p.add_argument("--num-cpus", type=float, help="CPUs per replica (default: the config's, 1)")
    p.add_argument("--api-key-file", metavar="FILE", help="require the key on this file's first line in the "
                   "X-API-Key header (default $SINGR_API_KEY; a key is required when binding to a non-loopback "
                   "address)")
    p.add_argument("--api-key", help="the key itself (visible to other local users in ps: prefer --api-key-file "
                   "or $SINGR_API_KEY)")
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
