"""``singr prepare``: raw scans into BraTS-space input, with brainles-preprocessing.

A scanner's four MR series are not what a SiNGR model was trained on: each has its own grid
and orientation, the skull is there, the voxels are not 1 mm. BraTS input is the four
co-registered, registered to the SRI-24 atlas (240 x 240 x 155 at 1 mm) and skull-stripped
with one mask. brainles-preprocessing (the BraTS organisers' pipeline) does that; this module
wraps it:

1. **Inputs**: a case folder of NIfTI files named by modality (either BraTS naming), four
   ``MODALITY=PATH`` files, or a folder or zip of DICOM series. DICOM series are named by
   the rule of :mod:`singr.data.readers.dicom_modality` (``--dicom-map`` decides where it
   cannot) and each is written as its own NIfTI on its own grid (a raw study's series do not
   share one; that is what co-registration is for).
2. **The run**: brainles-preprocessing pins numpy < 2.4, so it runs in its own interpreter
   (``scripts/setup_prepare.sh`` makes ``.venv-prepare``; ``--python`` or
   ``$SINGR_PREPARE_PYTHON`` name another) through :mod:`singr.data.prepare_worker`; its
   progress is streamed. Steps: rigid co-registration of every modality to the center (t1c),
   rigid registration of the center to the atlas and the others through it (then re-registered
   to the center in atlas space), brain extraction on the center, its mask applied to all.
   The atlas and the brain-extraction weights are downloaded at first use (see the worker):
   offline, ``--atlas PATH`` and ``--brain-extraction none`` are what runs.
3. **Output**: ``OUT/<modality>.nii.gz`` for the four (BraTS 2023 names unless the input used
   2020 names, or ``--naming``), ``OUT/prepare.log`` (brainles' own log, DEBUG level) and
   ``OUT/transforms/`` (the ANTs matrices of every step, to map results back to the scanner's
   space), and with brain extraction ``OUT/brain_mask.nii.gz`` (the center's). Written into a
   temporary folder beside ``OUT`` and renamed at the end: never half there (a failed run leaves
   ``OUT.prepare-failed.log`` only; ``OUT`` may not hold an input, so ``--overwrite`` never
   deletes one). Then the input check of :mod:`singr.data.input_check` runs on the result, so
   the command ends by saying whether ``singr predict`` will take it.

A label file in the input (``seg.nii.gz``) is not carried over: brainles moves images only.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..errors import SingrInputError
from .prepare_worker import ATLASES, ERROR
from .readers.base import BRATS2023_NAMES, MODALITIES, canonical_modality, given_modalities, modality_list

__all__ = ["PrepareResult", "find_prepare_python", "gather_inputs", "prepare_case", "WORKER", "ATLAS_NAMES",
           "BRAIN_EXTRACTORS"]

WORKER = Path(__file__).with_name("prepare_worker.py")
ATLAS_NAMES = tuple(ATLASES)
"""The atlases brainles-preprocessing fetches by name (``brats_sri24``: the BraTS space)."""
BRAIN_EXTRACTORS = ("hd-bet", "synthstrip", "none")
ENV_PYTHON = "SINGR_PREPARE_PYTHON"
_LOGURU = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \| (?P<level>\w+)\s*\| [^-]+ - (?P<msg>.*)$")
_QUIET = re.compile(r"^(Skipping optional N4 bias correction for|Logging console logs|Received center)")
_WHERE = re.compile(r"\.? ?(Output saved to|to) \S*(\.partial-|None)\S*$")  # brainles' temporary folders


@dataclass
class PrepareResult:
    """What :func:`prepare_case` wrote and what the input check says of it."""

    out: Path
    files: dict[str, Path]               # modality (as named in OUT) -> its NIfTI
    findings: list[str]                  # the input check's findings (empty: looks like BraTS-space input)
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    seconds: float


def find_prepare_python(explicit: str | None = None, *, root: Path | None = None) -> str:
    """The interpreter that has brainles-preprocessing: ``explicit``, else ``$SINGR_PREPARE_PYTHON``,
    else the environment ``scripts/setup_prepare.sh`` made (``$SINGR_PREPARE_VENV``, else
    ``.venv-prepare`` of the repository or of ``root``, or of the current folder), else this one
    if it has the package. An environment whose set-up did not finish (no stamp) is an error."""
    root = root or Path(__file__).resolve().parents[2]
    for given, what in ((explicit, "--python"), (os.environ.get(ENV_PYTHON), f"${ENV_PYTHON}")):
        if given:
            if not (Path(given).is_file() and os.access(given, os.X_OK)):
                raise SingrInputError(f"{what}: no Python interpreter at {given}; expected the python of an "
                                      "environment with brainles-preprocessing (bash scripts/setup_prepare.sh "
                                      "makes one)")
            return str(given)
    venvs = [Path(os.environ["SINGR_PREPARE_VENV"])] if os.environ.get("SINGR_PREPARE_VENV") else []
    for venv in venvs + [root / ".venv-prepare", Path.cwd() / ".venv-prepare"]:
        py = venv / "bin" / "python"
        if py.is_file():
            if not (venv / ".singr-stamp").is_file():
                raise SingrInputError(f"{venv}: its set-up did not finish (no .singr-stamp); run "
                                      "`bash scripts/setup_prepare.sh` again")
            return str(py)
    if importlib.util.find_spec("brainles_preprocessing") is not None:
        return sys.executable
    raise SingrInputError(
        "singr prepare runs brainles-preprocessing, which is not installed: it pins numpy < 2.4 and so lives in an "
        f"environment of its own; run `bash scripts/setup_prepare.sh` (makes {root / '.venv-prepare'}) or pass "
        "--python PATH to an interpreter that has it")


def _check_out(out: Path, inputs: Mapping[str, Path], overwrite: bool) -> Path:
    """``out`` resolved, and safe to write (and with ``overwrite``, to delete): a new or empty folder,
    never one that holds an input or the current folder."""
    out = out.expanduser().resolve()
    if not out.name or out == out.parent:
        raise SingrInputError("--out names no folder; expected a new folder for the prepared case", path=out)
    here = Path.cwd().resolve()
    if out == here or out in here.parents:
        raise SingrInputError("--out is the current folder or one above it; expected a new folder", path=out)
    for m, p in inputs.items():
        rp = Path(p).resolve()
        if rp == out or out in rp.parents:
            raise SingrInputError(f"--out holds the input {m} ({p}); expected a folder of its own", path=out)
    if out.exists() and not out.is_dir():
        raise SingrInputError("--out exists and is a file; expected a folder", path=out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SingrInputError("the output folder exists and is not empty; expected a new folder (or pass "
                              "--overwrite)", path=out)
    return out


def _nifti_inputs(case: Path | None, files: Mapping[str, str | Path] | None) -> tuple[dict[str, Path], str]:
    from .readers.files import find_case_folder_files

    if case is not None:
        found = find_case_folder_files(case)
        return {m: Path(p) for m, p in found.images.items()}, found.naming or "brats2020"
    files = dict(files or {})
    out = {m: Path(p) for m, p in given_modalities(files, MODALITIES, case_id="input").items()}
    for key, path in files.items():
        if not Path(path).is_file():
            raise SingrInputError(f"{key}: no such file", path=path)
    naming = "brats2023" if all(k.strip().lower() in BRATS2023_NAMES for k in files) else "brats2020"
    return out, naming


def _dicom_inputs(path: Path, mapping: Sequence[str] | None, tmp: Path,
                  progress: Callable[[str], None]) -> dict[str, Path]:
    """Each modality's series as its own NIfTI (its own grid) in ``tmp``."""
    from ..io.dicom_series import check_same_study, open_dicom, read_series, series_geometry
    from ..io.nifti import write_nifti
    from .readers.dicom import nifti_header
    from .readers.dicom_modality import assign_series, parse_dicom_map

    out: dict[str, Path] = {}
    with open_dicom(path) as series:
        if not series:
            raise SingrInputError("no DICOM image series found; expected one MR series per modality", path=path)
        chosen = assign_series(series, parse_dicom_map(mapping), MODALITIES, where=str(path))
        check_same_study(list(chosen.values()), list(chosen))
        for m, s in chosen.items():
            try:
                arr, geo = read_series(s, series_geometry(s))
            except SingrInputError as err:
                raise SingrInputError(f"{m}: {err.reason}", path=err.path) from None
            out[m] = write_nifti(tmp / f"{m}.nii.gz", arr.astype("float32"), geo.affine,
                                 nifti_header(geo.affine, geo.shape, geo.spacing))
            progress(f"DICOM {m}: {s.name}, {'x'.join(map(str, geo.shape))} voxels of "
                     f"{'x'.join(f'{v:.3g}' for v in geo.spacing)} mm")
    return out


def gather_inputs(*, case: str | Path | None = None, files: Mapping[str, str | Path] | None = None,
                  dicom_map: Sequence[str] | None = None, tmp: Path,
                  progress: Callable[[str], None] = print) -> tuple[dict[str, Path], str]:
    """``({canonical modality: NIfTI path}, naming)`` of a case folder (NIfTI or DICOM), a DICOM
    zip, or ``files``; DICOM series are converted into ``tmp``."""
    if (case is None) == (files is None):
        raise SingrInputError("give either --case DIR (NIfTI or DICOM, or a zip of DICOM series) or "
                              "--files MODALITY=PATH ... (one of them)")
    if case is not None:
        from .readers.dicom import is_dicom_input

        case = Path(case)
        if not case.exists():
            raise SingrInputError("case folder does not exist", case=case.name, path=case)
        if is_dicom_input(case):
            return _dicom_inputs(case, dicom_map, tmp, progress), "brats2023"
    if dicom_map:
        raise SingrInputError("--dicom-map applies to DICOM input (a folder or zip of DICOM series given to --case)")
    return _nifti_inputs(Path(case) if case is not None else None, files)


def _stream(cmd: list[str], log: Path, progress: Callable[[str], None]) -> tuple[int, str | None, list[str]]:
    """Run the worker; its loguru INFO lines go to ``progress``; ``(status, refusal line, last lines)``."""
    refusal: str | None = None
    tail: list[str] = []
    with open(log, "w") as keep:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"})
        assert proc.stdout is not None
        for line in proc.stdout:
            keep.write(line)
            line = line.rstrip()
            tail = (tail + [line])[-20:]
            if line.startswith(ERROR):
                refusal = line[len(ERROR):]
                continue
            m = _LOGURU.match(line)
            msg = m["msg"].strip(" =-") if m else ""
            if m and m["level"] in ("INFO", "WARNING", "ERROR") and msg and not _QUIET.match(msg):
                progress(_WHERE.sub("", msg))
        status = proc.wait()
    return status, refusal, tail


def prepare_case(inputs: Mapping[str, Path], out: str | Path, *, atlas: str | Path | None = "brats_sri24",
                 brain_extraction: str = "hd-bet", center: str = "t1ce", naming: str = "brats2023",
                 python: str | None = None, gpu: bool = False, overwrite: bool = False, download: bool = True,
                 progress: Callable[[str], None] = print) -> PrepareResult:
    """Run brainles-preprocessing on ``inputs`` (``{canonical modality: NIfTI}``, all four) and
    write the prepared case to ``out`` (module docstring). ``atlas``: a name of
    :data:`ATLAS_NAMES`, a NIfTI path, or None (stay in the center's space); ``brain_extraction``:
    one of :data:`BRAIN_EXTRACTORS`; ``download``: False refuses (one line) where brainles would
    download an atlas or weights first. Raises :class:`SingrInputError` with one line for anything
    the user can act on (the worker's refusals included)."""
    out = Path(out)
    if brain_extraction not in BRAIN_EXTRACTORS:
        raise SingrInputError(f"--brain-extraction {brain_extraction!r}; expected one of {list(BRAIN_EXTRACTORS)}")
    if naming not in ("brats2023", "brats2020"):
        raise SingrInputError(f"--naming {naming!r}; expected brats2023 or brats2020")
    center_c = canonical_modality(center)
    if center_c is None:
        raise SingrInputError(f"--center {center!r}; expected one of {list(BRATS2023_NAMES)}")
    if atlas is not None and str(atlas).lower() not in ATLAS_NAMES:
        atlas = Path(atlas).resolve()
        if not atlas.is_file():
            raise SingrInputError(f"--atlas: no such file; expected a NIfTI atlas image or one of "
                                  f"{list(ATLAS_NAMES)} or none", path=atlas)
    out = _check_out(out, inputs, overwrite)
    py = find_prepare_python(python)
    order = [center_c] + [m for m in MODALITIES if m != center_c]
    names = dict(zip(order, modality_list(order, naming)))
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    failed = out.parent / f"{out.name}.prepare-failed.log"
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.partial-", dir=out.parent) as tmp_s:
        tmp = Path(tmp_s)
        stage = tmp / "out"
        stage.mkdir()
        spec = {"inputs": {names[m]: str(Path(inputs[m]).resolve()) for m in order},
                "outputs": {names[m]: str(stage / f"{names[m]}.nii.gz") for m in order},
                "atlas": None if atlas is None else str(atlas), "brain_extraction": brain_extraction,
                "work": str(tmp / "work"), "log": str(stage / "prepare.log"),
                "transforms": str(stage / "transforms"), "mask": str(stage / "brain_mask.nii.gz"), "gpu": bool(gpu),
                "download": bool(download)}
        (tmp / "spec.json").write_text(json.dumps(spec, indent=2))
        progress(f"brainles-preprocessing in {py}: center {names[center_c]}, atlas "
                 f"{'none (the center modality' + chr(39) + 's space)' if atlas is None else atlas}, "
                 f"brain extraction {brain_extraction}")
        status, refusal, tail = _stream([py, str(WORKER), str(tmp / "spec.json")], tmp / "worker.out", progress)
        if refusal is not None:
            raise SingrInputError(refusal)
        if status != 0:
            last = next((t for t in reversed(tail) if t.strip()), "")
            shutil.copyfile(tmp / "worker.out", failed)
            raise SingrInputError(f"brainles-preprocessing failed (exit status {status}): {last[:300]}; its whole "
                                  f"output is in {failed}", path=out)
        missing = [n for n in names.values() if not (stage / f"{n}.nii.gz").is_file()]
        if missing:
            raise SingrInputError(f"brainles-preprocessing wrote no {missing}; expected all four modalities")
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    failed.unlink(missing_ok=True)  # an earlier run's failure is no longer the state of this folder
    files = {names[m]: out / f"{names[m]}.nii.gz" for m in order}
    findings, shape, spacing = _check(files)
    return PrepareResult(out, files, findings, shape, spacing, time.perf_counter() - t0)


def _check(files: Mapping[str, Path]) -> tuple[list[str], tuple[int, ...], tuple[float, ...]]:
    """The input check of :mod:`.input_check` on the prepared case (the BraTS 1 mm voxel size)."""
    from .input_check import check_input, profile_input
    from .readers.files import load_case_from_files

    case = load_case_from_files(dict(files))
    profile = profile_input(case.image, case.spacing)
    return (check_input(profile, case.modalities, model_spacing=(1.0, 1.0, 1.0)), tuple(case.image.shape[1:]),
            tuple(float(s) for s in case.spacing))
