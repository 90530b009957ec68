"""The nnU-Net raw format: ``dataset.json``, ``imagesTr/<case>_<XXXX>.nii.gz`` (one file per
channel) and ``labelsTr/<case>.nii.gz``, what many users already have on disk.

Channels are mapped onto the canonical modalities when ``channel_names`` names BraTS
scans (in any order); the label convention (and a remapping of values) is read from the
``labels`` entry, in nnU-Net v2 form (``{"name": value}`` or region lists) or v1 form
(``{"value": "name"}``).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from ...errors import SingrInputError
from ...regions import CONVENTIONS
from .base import MODALITIES, NII_EXTS, CaseFiles, LoadedCase, canonical_modality, load_nifti_case


def nnunet_labels(labels: Mapping[str, Any], path: Path) -> tuple[str | None, dict[int, int] | None]:
    """Label convention and value remapping implied by a dataset.json "labels" entry.

    Returns (convention or None when it cannot tell, remap or None for identity).
    Accepts nnU-Net v2 ({"name": value or [values]}) and v1 ({"value": "name"}).
    """
    if labels and all(str(k).strip().lstrip("-").isdigit() for k in labels) and \
            all(isinstance(v, str) for v in labels.values()):
        labels = {v: int(k) for k, v in labels.items()}  # v1 -> v2
    plain: dict[str, int] = {}
    regions: dict[str, set[int]] = {}
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            regions[name] = {int(v) for v in value}
        else:
            try:
                plain[name] = int(value)
            except (TypeError, ValueError):
                raise SingrInputError(f"label {name!r} has value {value!r}; expected an integer or a list",
                                      path=path) from None
    fg_plain = {n: v for n, v in plain.items() if v != 0}
    if regions:
        # Region-based (e.g. nnU-Net Dataset137: whole tumor [1,2,3], tumor core [2,3], enhancing [3]).
        all_sets = list(regions.values()) + [{v} for v in fg_plain.values()]
        sets = sorted({frozenset(s) for s in all_sets}, key=len, reverse=True)
        if len(sets) == 3 and sets[2] < sets[1] < sets[0] and len(sets[2]) == 1 \
                and len(sets[1] - sets[2]) == 1 and len(sets[0] - sets[1]) == 1:
            et = next(iter(sets[2]))
            ncr = next(iter(sets[1] - sets[2]))
            ed = next(iter(sets[0] - sets[1]))
            return _brats_remap(ncr, ed, et)
        return None, None
    if len(fg_plain) == 1:
        (value,) = fg_plain.values()
        return "binary", (None if value == 1 else {value: 1})
    roles: dict[str, int] = {}
    for name, value in fg_plain.items():
        key = re.sub(r"[^a-z]", "", name.lower())
        if key.startswith("non") or "necro" in key or key in ("ncr", "net", "ncrnet", "core") :
            role = "ncr"
        elif "edema" in key or "oedema" in key or key in ("ed", "peritumoral"):
            role = "ed"
        elif "enhanc" in key or key == "et":
            role = "et"
        else:
            return None, None
        if role in roles:
            return None, None
        roles[role] = value
    if set(roles) == {"ncr", "ed", "et"}:
        return _brats_remap(roles["ncr"], roles["ed"], roles["et"])
    return None, None


def _brats_remap(ncr: int, ed: int, et: int) -> tuple[str, dict[int, int] | None]:
    if (ncr, ed) == (1, 2) and et in (3, 4):
        return ("brats2023" if et == 3 else "brats2020"), None
    return "brats2023", {ncr: 1, ed: 2, et: 3}


def nnunet_cases(root: Path, label_convention: str, modalities: Sequence[str] | None) -> list[CaseFiles]:
    meta_path = root / "dataset.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise SingrInputError(f"cannot read dataset.json ({err})", path=meta_path) from err
    channels = meta.get("channel_names", meta.get("modality"))
    if not isinstance(channels, dict) or not channels:
        raise SingrInputError('expected a "channel_names" entry such as {"0": "FLAIR"}', path=meta_path)
    ending = str(meta.get("file_ending", ".nii.gz"))
    if ending not in NII_EXTS:
        raise SingrInputError(f"file_ending {ending!r} is not supported; expected .nii.gz or .nii", path=meta_path)
    try:
        indices = sorted(int(k) for k in channels)
    except ValueError:
        raise SingrInputError(f"channel_names keys must be integers, got {list(channels)}", path=meta_path) from None
    raw = [str(channels[str(i)]) for i in indices]
    canon = [canonical_modality(n) for n in raw]
    names = [c if c is not None else n for c, n in zip(canon, raw)]
    if len(set(names)) != len(names):
        names = [f"{n}_{i}" for n, i in zip(names, indices)]
    order = list(range(len(indices)))
    if all(c is not None for c in canon) and len(set(canon)) == len(canon):
        order.sort(key=lambda j: MODALITIES.index(canon[j]))
    if modalities is not None:
        wanted = []
        for m in modalities:
            c = canonical_modality(m) or m
            match = [j for j in order if names[j] == c or raw[j] == m]
            if not match:
                raise SingrInputError(f"modality {m!r} not among the channels {raw}", path=meta_path)
            wanted.append(match[0])
        order = [j for j in order if j in wanted]
    if label_convention == "auto":
        convention, remap = nnunet_labels(meta.get("labels", {}) or {}, meta_path)
        if convention is None:
            raise SingrInputError(
                f"cannot tell the label convention from the labels {meta.get('labels')}; expected BraTS "
                "classes (necrosis, edema, enhancing) or {background: 0, <name>: 1}; "
                f"set label_convention to one of {', '.join(CONVENTIONS)}", path=meta_path)
    else:
        convention, remap = label_convention, None
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise SingrInputError("no imagesTr folder beside dataset.json", path=root)
    pattern = re.compile(r"^(?P<id>.+)_(?P<ch>\d{4})" + re.escape(ending) + "$")
    ids = sorted({found.group("id") for p in images_dir.iterdir() if (found := pattern.match(p.name))})
    cases = []
    for case_id in ids:
        images = {names[j]: images_dir / f"{case_id}_{indices[j]:04d}{ending}" for j in order}
        label = labels_dir / f"{case_id}{ending}"
        cases.append(CaseFiles(case_id=case_id, images=images, label=label if label.is_file() else None,
                               layout="nnunet", label_convention=convention, label_map=remap, folder=root))
    return cases


class NnunetReader:
    layout = "nnunet"
    pattern = "dataset.json, imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz"

    def detect(self, root: Path) -> int:
        return 1 if (root / "dataset.json").is_file() else 0

    def discover(self, root: Path, label_convention: str, modalities: Sequence[str] | None,
                 spacing: tuple[float, float, float] | None = None) -> list[CaseFiles]:
        if not (root / "dataset.json").is_file():
            raise SingrInputError("nnunet layout needs a dataset.json", path=root)
        return nnunet_cases(root, label_convention, modalities)

    def load(self, case: CaseFiles, check: bool = True) -> LoadedCase:
        images = [(m, Path(p)) for m, p in case.images.items()]
        return load_nifti_case(case.case_id, images, Path(case.label) if case.label is not None else None,
                               layout="nnunet", label_convention=case.label_convention, label_map=case.label_map,
                               check=check)


NNUNET = NnunetReader()
