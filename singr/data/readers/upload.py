"""A case held in memory (an HTTP upload): the same checks as files on disk, plus limits.

Each file is read with :func:`singr.io.read_nifti_bytes`, which refuses a volume over
``max_voxels`` voxels (or ``max_size`` bytes) from its header, before decompressing it,
and the volumes go through the same :func:`stack_volumes` as files on disk.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ...io import check_affine, nifti_spacing, read_nifti_bytes
from .base import (
    BRATS2023_NAMES,
    MODALITIES,
    LoadedCase,
    Volume,
    canonical_modality,
    given_modalities,
    select_brats_modalities,
    split_4d,
    stack_volumes,
)


def load_case_from_bytes(files: Mapping[str, bytes] | bytes, *, case_id: str = "input",
                         names: Mapping[str, str] | None = None, modalities: Sequence[str] = MODALITIES,
                         check: bool = True, max_size: int | None = None,
                         max_voxels: int | None = None) -> LoadedCase:
    """``files``: modality name (BraTS 2020 or 2023 names) -> the bytes of a ``.nii``/``.nii.gz``
    file, or the bytes of one 4-D NIfTI (channels on the last axis in the order of
    ``modalities``). ``names`` gives each upload's name for error messages. Bytes that are
    not NIfTI or over a limit raise :class:`singr.io.NiftiBytesError`; everything else a
    :class:`singr.errors.SingrInputError` naming the upload. The label convention of the
    result follows the naming of the upload (BraTS 2023 names -> brats2023).
    """
    expected = select_brats_modalities(modalities, where="load_case_from_bytes")
    names = dict(names or {})
    if isinstance(files, (bytes, bytearray, memoryview)):
        name = names.get("4d") or "image"
        # one 4-D file holds every channel: its voxel limit is per channel
        limit = None if max_voxels is None else max_voxels * len(expected)
        arr, affine, header = read_nifti_bytes(bytes(files), name=name, case=case_id, max_size=max_size,
                                               max_voxels=limit)
        image = split_4d(arr, expected, case=case_id, path=name, check=check)
        del arr
        if check:
            check_affine(affine, case=case_id, path=name)
        return LoadedCase(case_id=case_id, image=image, label=None, affine=affine, header=header,
                          spacing=nifti_spacing(header), modalities=list(expected), label_convention="brats2020",
                          source={"layout": "upload", "images": {"4d": name}, "naming": "brats2020"})
    given = given_modalities(files, expected, case_id=case_id)
    naming = "brats2023" if files and all(str(k).strip().lower() in BRATS2023_NAMES for k in files) else "brats2020"
    keys = {canonical_modality(str(k)): k for k in files}  # canonical -> the upload's own key
    def reader(m: str) -> Callable[[], tuple[np.ndarray, np.ndarray, Any]]:
        return lambda: read_nifti_bytes(given[m], name=names.get(keys[m], keys[m]), case=case_id,
                                        max_size=max_size, max_voxels=max_voxels)

    vols = [Volume(m, names.get(keys[m], keys[m]), reader(m)) for m in expected]
    image, affine, header = stack_volumes(case_id, vols, check=check)
    return LoadedCase(case_id=case_id, image=image, label=None, affine=affine, header=header,
                      spacing=nifti_spacing(header), modalities=list(expected),
                      label_convention="brats2023" if naming == "brats2023" else "brats2020",
                      source={"layout": "upload", "images": {m: names.get(keys[m], keys[m]) for m in expected},
                              "naming": naming})
