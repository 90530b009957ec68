"""Label conventions and the tumour regions derived from them (docs/method.md 1.2).

BraTS regions come in MONAI's order ``[TC, WT, ET]``:

    TC = NCR | ET,   WT = NCR | ED | ET,   ET = ET

with ``ET = 4`` in BraTS 2018-2021 ("brats2020") and ``ET = 3`` in BraTS 2023+
("brats2023"). The LGG FLAIR data set ("binary") has one region, the abnormality mask.
"""
from __future__ import annotations

import numpy as np

from .errors import SingrInputError

BRATS_REGIONS: tuple[str, ...] = ("TC", "WT", "ET")
BINARY_REGIONS: tuple[str, ...] = ("FG",)
NCR, ED = 1, 2
ET_LABEL = {"brats2020": 4, "brats2023": 3}
CONVENTIONS = ("brats2020", "brats2023", "binary")


def region_names(convention: str) -> tuple[str, ...]:
    """Names of the output channels for a label convention."""
    check_convention(convention)
    return BINARY_REGIONS if convention == "binary" else BRATS_REGIONS


def check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise SingrInputError(
            f"unknown label convention {convention!r}; expected one of {', '.join(CONVENTIONS)}")


def allowed_labels(convention: str) -> set[int]:
    check_convention(convention)
    if convention == "binary":
        return {0, 1}
    return {0, NCR, ED, ET_LABEL[convention]}


def detect_convention(label_values: set[int] | np.ndarray) -> str | None:
    """Guess the BraTS convention from the label values present.

    Returns "brats2023" when 3 occurs, "brats2020" when 4 occurs, None when neither does
    (either convention fits; callers fall back to the configured one). Both present: error.
    """
    arr = np.asarray(list(label_values) if isinstance(label_values, set) else label_values)
    values = {int(v) for v in np.unique(arr)}
    if 3 in values and 4 in values:
        raise SingrInputError("label map holds both 3 and 4; expected BraTS 2020 labels {0,1,2,4} or "
                              "BraTS 2023 labels {0,1,2,3}")
    if 3 in values:
        return "brats2023"
    if 4 in values:
        return "brats2020"
    return None


def check_labels(label: np.ndarray, convention: str, *, case: str | None = None, path: str | None = None) -> None:
    """Raise a clear error when ``label`` holds values outside the convention's set."""
    values = {int(v) for v in np.unique(label)}
    extra = values - allowed_labels(convention)
    if extra:
        raise SingrInputError(
            f"unexpected label values {sorted(extra)}; expected a subset of {sorted(allowed_labels(convention))} "
            f"({convention} convention)", case=case, path=path)


def labels_to_regions(label: np.ndarray, convention: str) -> np.ndarray:
    """Label map (D, H, W) -> bool regions (R, D, H, W): [TC, WT, ET] or [FG]."""
    check_convention(convention)
    label = np.asarray(label)
    if convention == "binary":
        return (label > 0)[None]
    et = label == ET_LABEL[convention]
    tc = (label == NCR) | et
    wt = tc | (label == ED)
    return np.stack([tc, wt, et]).astype(bool)


def regions_to_labels(regions: np.ndarray, convention: str) -> np.ndarray:
    """Bool regions (R, D, H, W) -> label map (D, H, W), uint8.

    Nesting is enforced (ET within TC within WT): ET -> ET label, TC minus ET -> 1 (NCR),
    WT minus TC -> 2 (ED).
    """
    check_convention(convention)
    regions = np.asarray(regions).astype(bool)
    if convention == "binary":
        if regions.shape[0] != 1:
            raise SingrInputError(f"binary convention expects 1 region channel, got {regions.shape[0]}")
        return regions[0].astype(np.uint8)
    if regions.shape[0] != 3:
        raise SingrInputError(f"BraTS conventions expect 3 region channels [TC, WT, ET], got {regions.shape[0]}")
    tc, wt, et = regions
    wt = wt | tc | et
    tc = tc | et
    out = np.zeros(wt.shape, dtype=np.uint8)
    out[wt] = ED
    out[tc] = NCR
    out[et] = ET_LABEL[convention]
    return out
