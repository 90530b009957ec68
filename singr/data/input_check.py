"""Does an input look like what a SiNGR model was trained on? BraTS-space input: the modalities
co-registered and skull-stripped with one brain mask, near the model's voxel size.

A raw scanner volume, a phantom, noise or a constant volume segments into labels that mean
nothing (a 256^3 noise upload answered "whole tumour 1,450 ml"); these checks refuse it before
the network runs (``singr predict --force`` / ``?force=true`` go on, with the findings as
warnings). Every rule is scale-free, so small synthetic cases pass as BraTS cases do:

* ``foreground share``: voxels non-zero in any modality / field of view <= 0.85. Skull-stripped
  input leaves the background at exactly 0 (the real BraTS case: 0.11; synthetic cases:
  0.25-0.29); raw scans have noise everywhere (about 1.0).
* ``brain volume``: the foreground is at most 3 litres (adult brains: 1.0-1.6 l).
* ``one brain mask``: each modality's non-zero mask agrees with the union, Dice >= 0.9 (BraTS:
  0.999); lower means modalities that are not co-registered or not stripped with one mask.
* ``contrast``: every modality has signal in the foreground, with a coefficient of variation
  >= 0.02 (MR tissue: 0.2-0.45; a constant or empty channel is not a scan).
* ``voxel size``: each axis within a factor 1.5 of the model's training spacing (when the model
  records one; BraTS: 1 mm isotropic); resample first otherwise.

After a prediction, :func:`check_prediction` warns when the whole tumour fills more than
60 % of the foreground: possible on a crop around a tumour, never on a whole brain.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["InputProfile", "profile_input", "check_input", "check_prediction", "LIMITS"]

LIMITS = {"max_foreground_share": 0.85, "max_brain_ml": 3000.0, "min_mask_dice": 0.9, "min_contrast_cv": 0.02,
          "spacing_factor": 1.5, "max_tumour_share": 0.6}
"""The thresholds of the rules above."""


@dataclass(frozen=True)
class InputProfile:
    """What the checks look at, measured once per case (JSON-able through ``vars``)."""

    foreground_share: float            # voxels non-zero in any channel / all voxels
    foreground_ml: float               # their volume in millilitres
    mask_dice: tuple[float, ...]       # per channel: Dice of its non-zero mask with the union
    contrast_cv: tuple[float, ...]     # per channel: std / |mean| of its foreground values
    spacing: tuple[float, ...]         # voxel size in mm


def profile_input(image: np.ndarray, spacing: Sequence[float]) -> InputProfile:
    """The :class:`InputProfile` of ``image`` (C, D, H, W) with voxels of ``spacing`` mm."""
    image = np.asarray(image)
    masks = image != 0
    union = masks.any(axis=0)
    n = int(union.sum())
    vox_ml = float(np.prod([abs(float(s)) for s in spacing[:3]])) / 1000.0
    dice, cv = [], []
    for c in range(image.shape[0]):
        m = int(masks[c].sum())
        dice.append(round(2.0 * m / (m + n), 4) if m + n else 0.0)
        vals = image[c][union].astype(np.float64) if n else np.zeros(1)
        mean = float(vals.mean())
        cv.append(round(float(vals.std()) / abs(mean), 4) if mean else 0.0)
    return InputProfile(round(n / union.size, 4), round(n * vox_ml, 1), tuple(dice), tuple(cv),
                        tuple(round(abs(float(s)), 4) for s in spacing[:3]))


def check_input(profile: InputProfile, modalities: Sequence[str] = (),
                model_spacing: Sequence[float] | None = None) -> list[str]:
    """The findings (one sentence each, empty when the input looks like BraTS-space input) of
    the rules in the module docstring; ``modalities`` name the channels in the findings."""
    names = list(modalities) or [f"channel {i}" for i in range(len(profile.mask_dice))]
    out: list[str] = []
    if profile.foreground_share > LIMITS["max_foreground_share"]:
        out.append(f"{profile.foreground_share:.0%} of the field of view is non-zero: not skull-stripped (BraTS-space "
                   "input keeps the background at 0; run brain extraction first, e.g. singr prepare)")
    if profile.foreground_ml > LIMITS["max_brain_ml"]:
        out.append(f"the non-zero region is {profile.foreground_ml / 1000:.1f} l, larger than any brain "
                   f"(at most {LIMITS['max_brain_ml'] / 1000:.0f} l)")
    low = [f"{n} {d:.2f}" for n, d in zip(names, profile.mask_dice) if d < LIMITS["min_mask_dice"]]
    if low and profile.foreground_ml > 0:
        out.append(f"the modalities do not share one brain mask (Dice with the union: {', '.join(low)}; expected "
                   f">= {LIMITS['min_mask_dice']}): not co-registered, or not skull-stripped with one mask")
    flat = [n for n, c in zip(names, profile.contrast_cv) if c < LIMITS["min_contrast_cv"]]
    if flat:
        out.append(f"no contrast in {', '.join(flat)} (constant or empty inside the brain): not an MR scan")
    if model_spacing:
        f = LIMITS["spacing_factor"]
        off = [(s, m) for s, m in zip(profile.spacing, model_spacing) if m and not (m / f <= s <= m * f)]
        if off:
            out.append(f"voxel size {'x'.join(f'{s:g}' for s in profile.spacing)} mm, the model was trained at "
                       f"{'x'.join(f'{float(m):g}' for m in model_spacing)} mm: resample first")
    return out


def check_prediction(region_names: Sequence[str], regions: np.ndarray, profile: InputProfile) -> list[str]:
    """Warnings about a prediction: a whole tumour (``WT``, else the largest region) filling more
    than 60 % of the foreground."""
    if profile.foreground_share <= 0 or not len(regions):
        return []
    names = list(region_names)
    i = names.index("WT") if "WT" in names else int(np.argmax([r.sum() for r in regions]))
    fg_voxels = profile.foreground_share * regions[i].size
    share = float(regions[i].sum()) / fg_voxels if fg_voxels else 0.0
    if share > LIMITS["max_tumour_share"]:
        return [f"region {names[i]} fills {share:.0%} of the brain: the input may not be a brain MR scan, or not "
                "in the BraTS space"]
    return []
