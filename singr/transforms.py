"""Training-time augmentation (DESIGN.md 1.4), MONAI dictionary transforms on
``{"image": (C, p, p, p), "target": (R, p, p, p)}`` patches:

    flips on the three axes (each with ``flip_prob``),
    RandScaleIntensity(factors=scale), RandShiftIntensity(offsets=shift) on the image.

The random crop itself is taken before these, by :class:`singr.engine.data.PatchDataset`,
straight from the memory-mapped preprocessed arrays: reading the crop instead of the whole
volume is what keeps a BraTS-size sample cheap (MONAI's RandSpatialCropd would load the
whole 240 x 240 x 155 x 4 array first).
"""
from __future__ import annotations

from typing import Any


def train_augmentation(augment: dict[str, Any]):
    from monai.transforms import Compose, EnsureTyped, RandFlipd, RandScaleIntensityd, RandShiftIntensityd

    keys = ["image", "target"]
    p = float(augment["flip_prob"])
    ip = float(augment["intensity_prob"])
    return Compose([
        EnsureTyped(keys=keys, track_meta=False),
        RandFlipd(keys=keys, prob=p, spatial_axis=0),
        RandFlipd(keys=keys, prob=p, spatial_axis=1),
        RandFlipd(keys=keys, prob=p, spatial_axis=2),
        RandScaleIntensityd(keys="image", factors=float(augment["intensity_scale"]), prob=ip),
        RandShiftIntensityd(keys="image", offsets=float(augment["intensity_shift"]), prob=ip),
    ])
