"""Using a trained model: ``singr predict``, ``singr export``, ``singr convert``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import SingrInputError
from .options import add_model_options, add_model_source, load_model


def _output_path(out: Path, case_id: str, fmt: str = "nifti") -> Path:
    """``--out`` as a file: itself when it names one (``.nii[.gz]``, or ``.dcm`` for a DICOM
    SEG), else ``<out>/<case>_seg.nii.gz`` (``<out>/<case>_seg.dcm``) inside a folder."""
    name = out.name.lower()
    if fmt == "dicom-seg":
        if name.endswith((".nii", ".nii.gz")):
            raise SingrInputError("--format dicom-seg writes a DICOM file: give --out a .dcm path or a folder",
                                  path=out)
        return out if name.endswith(".dcm") else out / f"{case_id}_seg.dcm"
    if name.endswith(".dcm"):
        raise SingrInputError("--out ends with .dcm: pass --format dicom-seg for a DICOM SEG (default: NIfTI "
                              ".nii.gz)", path=out)
    return out if name.endswith((".nii", ".nii.gz")) else out / f"{case_id}_seg.nii.gz"


def _stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii", ".dcm"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _read_case(args: argparse.Namespace) -> tuple[Any, Any]:
    """The case of ``--case`` (NIfTI folder, or DICOM folder or zip) or ``--files``, and the DICOM
    series it came from (None for NIfTI)."""
    from ..data.readers import find_case_folder_files, load_case, load_case_from_files

    if bool(args.case) == bool(args.files):
        raise SingrInputError("give either --case DIR or --files MODALITY=PATH ... (one of them)")
    if args.case:
        from ..data.readers.dicom import is_dicom_input

        if is_dicom_input(args.case):
            from ..data.readers.dicom import read_dicom_case

            return read_dicom_case(Path(args.case), args.dicom_map)
    if args.dicom_map:
        raise SingrInputError("--dicom-map applies to DICOM input (a folder or zip of DICOM series given to --case)")
    if args.format == "dicom-seg":
        if args.case and not Path(args.case).exists():
            raise SingrInputError("case folder does not exist", case=Path(args.case).name, path=args.case)
        raise SingrInputError("--format dicom-seg needs DICOM input (a folder or zip of DICOM series given to "
                              "--case): a SEG references the series it segments", path=args.case or None)
    if args.case:
        return load_case(find_case_folder_files(Path(args.case)), check=True), None
    files: Any = {}
    for item in args.files:
        if "=" not in item:
            files = [Path(f) for f in args.files]
            break
        k, v = item.split("=", 1)
        files[k] = Path(v)
    return load_case_from_files(files), None


def cmd_predict(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from ..io import voxel_ml, write_nifti

    t0 = time.time()
    case, dicom = _read_case(args)
    out = _output_path(Path(args.out), case.case_id, args.format)
    what = ""
    if dicom is not None:
        what = " from DICOM " + ", ".join(f"{m}: {dicom.series[m].name}" for m in case.modalities)
        if dicom.ignored:
            what += f" (left out: {', '.join(dicom.ignored)})"
    print(f"[singr] read {case.case_id}: {len(case.modalities)} modalities, shape "
          f"{'x'.join(map(str, case.image.shape[1:]))}{what} ({time.time() - t0:.1f} s)", flush=True)
    pred = load_model(args.model, args)
    from ..data.input_check import check_input, check_prediction, profile_input

    profile = profile_input(case.image, case.spacing)
    findings = check_input(profile, case.modalities, pred.meta.spacing if pred.meta is not None else None)
    if findings and not args.force:
        raise SingrInputError("the input does not look like BraTS-space input (co-registered, skull-stripped, the "
                              f"model's voxel size): {'; '.join(findings)}; pass --force to segment it anyway",
                              case=case.case_id)
    for f in findings:
        print(f"[singr] warning ({case.case_id}): {f} (--force: segmenting anyway)", file=sys.stderr, flush=True)
    conv = args.label_convention or case.label_convention
    members = len(pred.members) * (8 if pred.settings.tta else 1)
    post = " and post-processing rules" if pred.applies_postprocess else ""
    print(f"[singr] segmenting with {len(pred.members)} model(s){' and mirroring' if pred.settings.tta else ''}"
          f"{post} ({members} sliding-window pass{'es' if members > 1 else ''})", flush=True)
    p = pred.predict(case.image, conv, case=case.case_id, progress=not args.quiet)
    for w in check_prediction(p.region_names, p.regions, profile):
        print(f"[singr] warning ({case.case_id}): {w}", file=sys.stderr, flush=True)
    et = {"brats2020": "ET = 4", "brats2023": "ET = 3", "binary": "one region"}.get(p.label_convention, "")
    if dicom is not None and args.format == "dicom-seg":
        from ..io.dicom_seg import segment_classes, write_dicom_seg

        further = [h for m in case.modalities if m != dicom.reference for h in dicom.datasets(m)]
        write_dicom_seg(p.labels, dicom.datasets(), out, label_convention=p.label_convention, further_sources=further,
                        affine=case.affine)
        msg = (f"[singr] DICOM SEG {out} (references {dicom.series[dicom.reference].name}; segments "
               f"{', '.join(n for n, _ in segment_classes(p.label_convention))})")
    else:
        write_nifti(out, p.labels, case.affine, case.header)
        msg = f"[singr] label map {out} ({p.label_convention} labels: {et})"
    if args.signed:
        sp = out.with_name(_stem(out).replace("_seg", "") + "_signed.nii.gz")
        write_nifti(sp, np.moveaxis(p.signed, 0, -1), case.affine, case.header)
        msg += f"; signed maps {sp} (channels {', '.join(p.region_names)})"
    if args.png:
        from ..viz import overlay_png

        png = out.with_name(_stem(out) + ".png")
        overlay_png(png, case.image, p.regions, p.region_names, p.signed, title=case.case_id)
        msg += f"; picture {png}"
    vox = voxel_ml(case.affine)
    vols = {n: round(float(r.sum()) * vox, 3) for n, r in zip(p.region_names, p.regions)}
    print(msg + f"; volumes (ml): {json.dumps(vols)}; {time.time() - t0:.1f} s")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from ..engine.checkpoint import load_checkpoint, save_checkpoint

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
    from ..engine.export import export_model, resolve_model_files
    from ..engine.export_check import EXPORT_FORMATS, case_sample, check_export, random_sample, read_sidecar

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


def register(sub: Any) -> None:
    """Add predict, export and convert to the subcommands ``sub``."""
    p = sub.add_parser("predict", help="segment one case into a label-map NIfTI (or a DICOM SEG)",
                       description="Segment one case: a case folder (BraTS 2020 or 2023 names, or plain names "
                       "t2f.nii.gz, t1n.nii.gz ...), a folder or zip of DICOM MR series (one per modality, on one "
                       "grid; told apart by their series descriptions, or by --dicom-map) or modality files "
                       "(t2f=... t1n=... or flair=... t1=...; or one 4-D NIfTI). Writes a label map in the input's "
                       "geometry, in the input's label convention (BraTS 2023 files and DICOM -> ET = 3) unless "
                       "--label-convention says otherwise; for DICOM input, --format dicom-seg writes a DICOM SEG "
                       "that references the series.")
    add_model_source(p)
    p.add_argument("--case", help="case folder (NIfTI files, or DICOM series), or a .zip of DICOM series")
    p.add_argument("--files", nargs="+", metavar="MODALITY=PATH", help="modality files, or one 4-D NIfTI")
    p.add_argument("--dicom-map", nargs="+", metavar="MODALITY=SERIES", help="DICOM input: which series is which "
                   "modality (SeriesNumber, SeriesInstanceUID or SeriesDescription), e.g. t1ce=7 flair=3, for series "
                   "the naming rule cannot tell apart")
    p.add_argument("--out", required=True, help="output .nii.gz path (.dcm with --format dicom-seg), or a folder "
                   "(<case>_seg.nii.gz or <case>_seg.dcm in it)")
    p.add_argument("--format", choices=["nifti", "dicom-seg"], default="nifti", help="the label map as NIfTI "
                   "(default), or as a DICOM Segmentation referencing the input series (DICOM input only)")
    p.add_argument("--signed", action="store_true", help="also write the predicted signed maps (4-D NIfTI)")
    p.add_argument("--png", action="store_true", help="also write an overlay picture (the slice with most tumour)")
    p.add_argument("--label-convention", choices=["brats2020", "brats2023", "binary"],
                   help="labels to write (default: the input's naming; BraTS 2023 files get ET = 3)")
    p.add_argument("--tracking-uri", help="MLflow store for a registry model")
    add_model_options(p)
    p.add_argument("--force", action="store_true", help="segment input that does not look like BraTS-space input "
                   "(not skull-stripped, modalities not co-registered, another voxel size): warn instead of refusing")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a model's networks as TorchScript or ONNX (+ a JSON sidecar)",
                       description="Write each member network of a model as a standalone TorchScript or ONNX file "
                       "(image (batch, C, x, y, z) float32 -> raw logits; dynamic batch and spatial sizes where the "
                       "network allows: unet3d, unetpp, segresnet; fixed for unetr and swinunetr) and beside it "
                       "<file>.json: modality order, normalisation, regions, threshold, sliding window, lambda/delta/"
                       "gamma, the checkpoint's sha256. Then compares each export with PyTorch (exit 2 above "
                       "--tolerance).")
    add_model_source(p)
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

    p = sub.add_parser("convert", help="rewrite a singr 0.1 .pt checkpoint as safetensors",
                       description="Read a checkpoint of singr 0.1 (a torch pickle; --trust-checkpoint confirms you "
                       "made it) and write it in the safe format (safetensors, metadata as JSON).")
    p.add_argument("checkpoint", help="the .pt file")
    p.add_argument("out", help="the .safetensors file to write")
    p.add_argument("--trust-checkpoint", action="store_true", help="confirm the .pt file is yours")
    p.set_defaults(func=cmd_convert)
