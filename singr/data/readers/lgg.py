"""The LGG FLAIR data set (kaggle_3m): ``TCGA_<site>_<id>_<date>/TCGA_..._<n>.tif`` RGB slices
(256 x 256 x 3: pre-contrast, FLAIR, post-contrast) and ``..._<n>_mask.tif``, stacked in
slice-number order (1, 2, ..., 10, not lexicographic) into (C, H, W, slices). The TIFFs carry
no spacing: ``data.spacing`` (default 1 mm) gives it. One binary region."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import SingrInputError
from .base import LGG_CHANNELS, CaseFiles, LoadedCase, _check_finite
from .brats import list_dirs

_IMAGE = re.compile(r"^(?P<stem>.+)_(?P<n>\d+)\.tiff?$", re.IGNORECASE)
_MASK = re.compile(r"^(?P<stem>.+)_(?P<n>\d+)_mask\.tiff?$", re.IGNORECASE)


def _read_tiff(path: Path, *, case: str) -> np.ndarray:
    import tifffile

    if not path.is_file():
        raise SingrInputError("slice file not found", case=case, path=path)
    try:
        return np.asarray(tifffile.imread(str(path)))
    except Exception as err:  # noqa: BLE001 - tifffile raises many types
        raise SingrInputError(f"cannot read as TIFF ({type(err).__name__}: {err})", case=case, path=path) from err


def select_lgg_modalities(modalities: Sequence[str] | None) -> list[str]:
    if modalities is None:
        return ["flair"]
    chosen = [str(m).lower() for m in modalities]
    bad = [m for m in chosen if m not in LGG_CHANNELS]
    if bad or not chosen or len(set(chosen)) != len(chosen):
        raise SingrInputError(f"LGG modalities must be distinct names from {list(LGG_CHANNELS)}, "
                              f"got {list(modalities)}")
    return [m for m in LGG_CHANNELS if m in chosen]


class LggReader:
    layout = "lgg"
    pattern = "<case>/<case>_<n>.tif and <case>_<n>_mask.tif"

    def is_case_dir(self, folder: Path) -> bool:
        return any(_MASK.match(p.name) or _IMAGE.match(p.name) for p in folder.glob("*.tif*"))

    def detect(self, root: Path) -> int:
        return sum(self.is_case_dir(d) for d in list_dirs(root))

    def case(self, folder: Path, modalities: list[str], spacing: tuple[float, float, float] | None) -> CaseFiles:
        case_id = folder.name
        images: dict[int, Path] = {}
        masks: dict[int, Path] = {}
        for p in folder.iterdir():
            if not p.is_file() or p.name.startswith("."):
                continue
            m = _MASK.match(p.name)
            if m:
                masks[int(m.group("n"))] = p
                continue
            m = _IMAGE.match(p.name)
            if m:
                n = int(m.group("n"))
                if n in images:
                    raise SingrInputError(f"two image slices numbered {n}: {images[n].name}, {p.name}",
                                          case=case_id, path=folder)
                images[n] = p
        if not images:
            raise SingrInputError("no image slices <name>_<n>.tif found (only masks)", case=case_id, path=folder)
        order = sorted(images)
        slices = [images[n] for n in order]
        label: list[Path] | None = None
        if masks:
            extra = sorted(set(masks) - set(images))
            if extra:
                raise SingrInputError(f"mask slices without an image slice: numbers {extra}; expected a "
                                      f"<name>_<n>.tif for every <name>_<n>_mask.tif", case=case_id, path=folder)
            label = [masks.get(n, images[n].with_name(images[n].name.rsplit(".", 1)[0] + "_mask.tif"))
                     for n in order]
        return CaseFiles(case_id=case_id, images={m: list(slices) for m in modalities}, label=label,
                         layout="lgg", label_convention="binary", spacing=spacing, folder=folder)

    def discover(self, root: Path, label_convention: str, modalities: Sequence[str] | None,
                 spacing: tuple[float, float, float] | None = None) -> list[CaseFiles]:
        if label_convention not in ("auto", "binary"):
            raise SingrInputError(f"the lgg layout has binary masks; label_convention {label_convention!r} "
                                  "does not apply (expected auto or binary)", path=root)
        mods = select_lgg_modalities(modalities)
        return [self.case(d, mods, spacing) for d in list_dirs(root) if self.is_case_dir(d)]

    def load(self, case: CaseFiles, check: bool = True) -> LoadedCase:
        cid = case.case_id
        mods = list(case.images)
        slices = case.images[mods[0]]
        if not isinstance(slices, list) or not slices:
            raise SingrInputError("expected a list of slice files for the lgg layout", case=cid, path=case.folder)
        numbers = []
        for p in slices:
            m = _IMAGE.match(Path(p).name)
            if m is None:
                raise SingrInputError("not a slice file named <name>_<n>.tif", case=cid, path=p)
            numbers.append(int(m.group("n")))
        gaps = sorted(set(range(min(numbers), max(numbers) + 1)) - set(numbers))
        if gaps:
            raise SingrInputError(f"slice numbers are not consecutive: missing {gaps}; expected slices "
                                  f"{min(numbers)}..{max(numbers)}", case=cid, path=case.folder)
        channels = [LGG_CHANNELS.index(m) for m in mods]
        first = _read_tiff(Path(slices[0]), case=cid)
        if first.ndim != 3 or first.shape[2] < 3:
            raise SingrInputError(f"expected an RGB slice of shape (H, W, 3) (pre-contrast, FLAIR, post-contrast), "
                                  f"got shape {first.shape}", case=cid, path=slices[0])
        h, w = first.shape[:2]
        image = np.empty((len(mods), h, w, len(slices)), dtype=np.float32)
        for k, p in enumerate(slices):
            arr = first if k == 0 else _read_tiff(Path(p), case=cid)
            if arr.shape != first.shape:
                raise SingrInputError(f"slice has shape {arr.shape}, expected {first.shape} like "
                                      f"{Path(slices[0]).name}", case=cid, path=p)
            image[:, :, :, k] = np.moveaxis(arr[..., channels], -1, 0)
        if check:
            _check_finite(image, case=cid, path=str(Path(slices[0]).parent), what="image")
        label = None
        if case.label is not None:
            masks = case.label if isinstance(case.label, list) else [case.label]
            if len(masks) != len(slices):
                raise SingrInputError(f"{len(masks)} mask slices for {len(slices)} image slices; expected one "
                                      "<name>_<n>_mask.tif per image slice", case=cid, path=case.folder)
            label = np.empty((h, w, len(slices)), dtype=np.uint8)
            for k, p in enumerate(masks):
                p = Path(p)
                if not p.is_file():
                    raise SingrInputError(f"missing mask slice: expected file {p.name} for image slice "
                                          f"{Path(slices[k]).name}", case=cid, path=p)
                mask = _read_tiff(p, case=cid)
                if mask.ndim == 3:
                    mask = mask[..., 0]
                if mask.shape != (h, w):
                    raise SingrInputError(f"mask has shape {mask.shape}, expected {(h, w)} like the image slices",
                                          case=cid, path=p)
                label[:, :, k] = mask > 0
        spacing = tuple(float(s) for s in (case.spacing or (1.0, 1.0, 1.0)))
        return LoadedCase(
            case_id=cid, image=image, label=label, affine=np.diag(list(spacing) + [1.0]).astype(np.float64),
            header=None, spacing=spacing, modalities=mods, label_convention="binary",
            source={"layout": "lgg", "images": [str(p) for p in slices],
                    "label": [str(p) for p in case.label] if isinstance(case.label, list) else None,
                    "channels": mods})


LGG = LggReader()
