"""Which reader reads a data folder: ``data.layout`` names one, ``auto`` asks each.

Each reader (one module per layout, in the manner of nnU-Net v2's ``imageio``) has
``detect(root) -> number of cases it recognises``, ``discover(root, label_convention,
modalities, spacing) -> [CaseFiles]`` and ``load(case, check) -> LoadedCase``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ...errors import SingrInputError
from .base import CaseFiles, LoadedCase, check_label_convention
from .brats import BRATS2020, BRATS2023
from .dicom import DICOM
from .lgg import LGG
from .nnunet import NNUNET

READERS: dict[str, Any] = {"brats2020": BRATS2020, "brats2023": BRATS2023, "lgg": LGG, "nnunet": NNUNET,
                           "dicom": DICOM}
LAYOUTS: tuple[str, ...] = tuple(READERS)


def _expected_text() -> str:
    return "expected one of: " + ", ".join(f"{k} ({r.pattern})" for k, r in READERS.items())


def detect_layout(root: str | Path) -> str:
    """The layout of a data folder (nnU-Net's dataset.json first); an error naming ``root``
    when no reader or more than one recognises its cases."""
    root = Path(root)
    if not root.is_dir():
        raise SingrInputError(f"data folder does not exist; {_expected_text()}", path=root)
    if NNUNET.detect(root):
        return "nnunet"
    counts = {k: n for k, r in READERS.items() if k != "nnunet" and (n := r.detect(root))}
    if not counts:
        raise SingrInputError(f"no cases found under {root}: {_expected_text()}", path=root)
    if len(counts) > 1:
        raise SingrInputError(f"cases of several layouts under {root}: {counts}; expected one layout "
                              "per folder (set data.layout to choose)", path=root)
    return next(iter(counts))


def discover_cases(root: str | Path, layout: str = "auto", label_convention: str = "auto",
                   modalities: Sequence[str] | None = None,
                   spacing: tuple[float, float, float] | None = None) -> list[CaseFiles]:
    """All cases under ``root``, sorted by case id; files are opened only by :func:`load_case`.

    ``layout``: one of :data:`LAYOUTS` or "auto". ``label_convention``: a convention or
    "auto" (BraTS: from the label values at load time; nnU-Net: from dataset.json; LGG:
    always "binary"). ``modalities``: a subset to load (default all); ``spacing``: LGG voxel
    spacing, default (1, 1, 1).
    """
    root = Path(root)
    check_label_convention(label_convention)
    if layout == "auto":
        layout = detect_layout(root)
    elif layout not in READERS:
        raise SingrInputError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)} or auto")
    if not root.is_dir():
        raise SingrInputError(f"data folder does not exist; {_expected_text()}", path=root)
    cases = READERS[layout].discover(root, label_convention, modalities, spacing)
    if not cases:
        raise SingrInputError(f"no cases found under {root}: {_expected_text()}", path=root)
    cases.sort(key=lambda c: c.case_id)
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise SingrInputError(f"case ids occur more than once: {dup}", path=root)
    return cases


def load_case(case: CaseFiles, *, check: bool = True) -> LoadedCase:
    """Read one case into memory with its layout's reader.

    Checks (each a :class:`SingrInputError` naming case and file): missing modality file,
    unreadable file, non-3-D array, shapes that disagree between modalities or with the
    label, and, when ``check``: affines that disagree (atol 1e-3) or are singular, NaN/inf
    voxels, label values outside the convention.
    """
    if case.layout == "files":
        from .files import load_files_case

        return load_files_case(case, check)
    if case.layout not in READERS:
        raise SingrInputError(f"unknown layout {case.layout!r} for this case; expected one of {', '.join(LAYOUTS)}",
                              case=case.case_id)
    return READERS[case.layout].load(case, check)
