"""The data and configuration stages: ``singr synth``, ``singr prepare``, ``singr preprocess``, ``singr config``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..plugins import missing, plugins
from .options import add_config, config_of

SCHEMA_GROUP = "singr.config_schemas"
_PREPARE_HELP = """Raw scans (a scanner's series, with skull, on their own grids) into BraTS-space input: the
four modalities co-registered to the center (t1c), registered to the SRI-24 atlas (240 x 240 x 155
at 1 mm) and skull-stripped with one mask, by brainles-preprocessing (ANTs, HD-BET).

Needs `bash scripts/setup_prepare.sh` once (brainles-preprocessing in .venv-prepare: it pins
numpy < 2.4). Downloaded at first use, so the first run needs the internet:
  - the atlas (--atlas brats_sri24 and the other names): Zenodo record 15236131;
  - HD-BET's weights (--brain-extraction hd-bet): zenodo.org/record/2540695, 5 files;
  - SynthStrip's weights (--brain-extraction synthstrip): Zenodo record 16535633.
Offline, --atlas PATH (an atlas image you have) or --atlas none, and --brain-extraction none
(skull-stripped input) run without them. Co-registration needs nothing.

Writes OUT/<modality>.nii.gz, OUT/prepare.log, OUT/transforms/ (and OUT/brain_mask.nii.gz with
brain extraction), then runs singr predict's input check on the result (exit status 1 when it
finds something). HD-BET's default mode runs 5 networks with mirroring: minutes on a CPU."""


def cmd_synth(args: argparse.Namespace) -> int:
    from ..data.synth import synthesize_dataset

    cfg = config_of(args)
    s = cfg.synth
    out = Path(args.out or cfg.data.root)
    n = args.n_cases or int(s.n_cases)
    shape = tuple(args.shape or s.shape)
    seed = int(s.seed if args.seed is None else args.seed)
    amb = float(s.ambiguity if args.ambiguity is None else args.ambiguity)
    if args.example:
        from ..data.synth import write_example_case

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


def cmd_prepare(args: argparse.Namespace) -> int:
    import tempfile

    from ..data.prepare import gather_inputs, prepare_case
    from ..errors import SingrInputError

    files = None
    if args.files:
        files = {}
        for item in args.files:
            if "=" not in item:
                raise SingrInputError(f"--files {item!r}: expected MODALITY=PATH (t1c=scan/t1c.nii.gz)")
            k, v = item.split("=", 1)
            files[k] = v

    def say(msg: str) -> None:
        if not args.quiet:
            print(f"[prepare] {msg}", flush=True)

    atlas = None if args.atlas.lower() == "none" else args.atlas
    with tempfile.TemporaryDirectory(prefix="singr-prepare-dicom-") as tmp:
        inputs, naming = gather_inputs(case=args.case, files=files, dicom_map=args.dicom_map, tmp=Path(tmp),
                                       progress=say)
        res = prepare_case(inputs, args.out, atlas=atlas, brain_extraction=args.brain_extraction,
                           center=args.center, naming=args.naming or naming, python=args.python, gpu=args.gpu,
                           overwrite=args.overwrite, download=not args.no_download, progress=say)
    print(f"[singr] prepared case in {res.out} ({res.seconds:.0f} s): {', '.join(p.name for p in res.files.values())}, "
          f"{'x'.join(map(str, res.shape))} voxels of {'x'.join(f'{s:g}' for s in res.spacing)} mm; prepare.log and "
          "transforms/ beside them")
    if res.findings:
        print("[singr] it does not look like BraTS-space input yet (singr predict refuses it without --force):\n  - "
              + "\n  - ".join(res.findings))
        return 1
    print("[singr] it looks like BraTS-space input: singr predict --case " + str(res.out))
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from ..engine.pipeline import discover, prepare, run_paths, split_cases

    cfg = config_of(args)
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


def _schema() -> Any:
    """The schema of a whole config file: the one an installed service publishes in the entry-point
    group :data:`SCHEMA_GROUP` (the tune package's, which adds the tune, experiment and mlflow
    sections), else the core's :class:`~singr.config.SingrConfig` (with a warning when the service
    is there but its entry points are not)."""
    from ..config import SingrConfig

    for ep in plugins(SCHEMA_GROUP):
        try:
            return ep.load()
        except ImportError:
            continue
    print(f"singr config: warning: the core's schema only (service sections untyped): "
          f"{missing('the service config schema', 'tune', 'tune')}", file=sys.stderr)
    return SingrConfig


def cmd_config(args: argparse.Namespace) -> int:
    from ..config import dump_config

    if args.schema:
        schema_cls = _schema()
        text = json.dumps(schema_cls.model_json_schema(), indent=1)
        if args.out:
            from ..io import write_text

            write_text(args.out, text + "\n")
            print(f"[singr] JSON Schema written to {args.out}")
        else:
            print(text)
        return 0
    cfg = config_of(args)
    print(dump_config(cfg), end="")
    return 0


def register(sub: Any) -> None:
    """Add synth, preprocess and config to the subcommands ``sub``."""
    p = sub.add_parser("synth", help="write a synthetic BraTS-like data set", description=
                       "Write synthetic BraTS-like cases in the BraTS 2020 layout (4 modalities + seg, .nii.gz).")
    add_config(p)
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

    p = sub.add_parser("prepare", help="raw scans into BraTS-space input (brainles-preprocessing)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=_PREPARE_HELP)
    p.add_argument("--case", help="case folder (NIfTI files named by modality, or DICOM series), or a .zip of DICOM "
                   "series")
    p.add_argument("--files", nargs="+", metavar="MODALITY=PATH", help="the four modality files instead of --case")
    p.add_argument("--dicom-map", nargs="+", metavar="MODALITY=SERIES", help="DICOM input: which series is which "
                   "(SeriesNumber, SeriesInstanceUID or SeriesDescription) where the naming rule cannot tell")
    p.add_argument("--out", required=True, help="output folder (new, or --overwrite)")
    p.add_argument("--atlas", default="brats_sri24", help="brats_sri24 (the BraTS space; the default), another of "
                   "brainles' atlases (brats_sri24_skullstripped, sri24, sri24_skullstripped, brats_mni152, mni152), "
                   "a NIfTI atlas path, or none (keep the center modality's grid: the input check then flags a "
                   "voxel size that is not near 1 mm)")
    p.add_argument("--brain-extraction", default="hd-bet", choices=["hd-bet", "synthstrip", "none"],
                   help="skull stripping on the center modality (default hd-bet); none for skull-stripped input")
    p.add_argument("--center", default="t1c", help="the modality the others are registered to (default t1c, "
                   "as BraTS)")
    p.add_argument("--naming", choices=["brats2023", "brats2020"], help="output file names (default: the input's; "
                   "brats2023 for DICOM)")
    p.add_argument("--python", help="the interpreter with brainles-preprocessing (default: $SINGR_PREPARE_PYTHON, "
                   "else .venv-prepare)")
    p.add_argument("--gpu", action="store_true", help="brain extraction on the GPU (needs a CUDA build of torch in "
                   ".venv-prepare: SINGR_TORCH_SPEC=... bash scripts/setup_prepare.sh)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--no-download", action="store_true", help="never reach the internet: refuse (one line naming "
                   "the files) where the atlas or weights are not on disk yet")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("preprocess", help="check and normalise cases, fill the SiNG distance cache",
                       description="Read every case of data.root, check it, z-score it and cache the SiNG "
                       "distances for sing.lam (or each --lam), so that training reads only arrays.")
    add_config(p)
    p.add_argument("--lam", type=float, nargs="+", help="lambda values to cache (default: sing.lam)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("config", help="print the resolved config, or the JSON Schema of config files",
                       description="--show (the default) prints the config after inheritance and overrides; "
                       "--schema writes the JSON Schema of a config file (point your editor's YAML support at it).")
    add_config(p)
    p.add_argument("--show", action="store_true", help="print the resolved config (the default)")
    p.add_argument("--schema", action="store_true", help="print (or --out) the JSON Schema")
    p.add_argument("--out", help="with --schema: write it to this file")
    p.set_defaults(func=cmd_config)
