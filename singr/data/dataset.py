"""Training patches: a random crop from the preprocessed arrays (read by window), then MONAI
augmentation (docs/method.md 1.4) on ``{"image": (C, p, p, p), "target": (R, p, p, p)}``:

    flips on the three axes (each with ``flip_prob``),
    RandScaleIntensity(factors=scale), RandShiftIntensity(offsets=shift) on the image.

The crop is taken before these, straight from the stored arrays (only the chunks the crop
touches are decompressed): reading the crop instead of the whole volume is what keeps a
BraTS-size sample cheap (MONAI's
RandSpatialCropd would load the whole 240 x 240 x 155 x 4 array first). The SiNG target is
built from the cached distances inside the crop only, for the run's delta.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import SingrInputError
from ..preprocess import PreparedCase, load_prepared
from ..sing import DistanceCache, SingSettings, sing_from_distances

__all__ = ["train_augmentation", "random_window", "pad_to", "PatchDataset"]


def train_augmentation(flip_prob: float, intensity_prob: float, intensity_scale: float,
                       intensity_shift: float) -> Any:
    from monai.transforms import Compose, EnsureTyped, RandFlipd, RandScaleIntensityd, RandShiftIntensityd

    keys = ["image", "target"]
    return Compose([
        EnsureTyped(keys=keys, track_meta=False),
        RandFlipd(keys=keys, prob=flip_prob, spatial_axis=0),
        RandFlipd(keys=keys, prob=flip_prob, spatial_axis=1),
        RandFlipd(keys=keys, prob=flip_prob, spatial_axis=2),
        RandScaleIntensityd(keys="image", factors=intensity_scale, prob=intensity_prob),
        RandShiftIntensityd(keys="image", offsets=intensity_shift, prob=intensity_prob),
    ])


def random_window(shape: Sequence[int], patch: Sequence[int], rng: np.random.Generator) -> tuple[slice, ...]:
    """A uniformly random crop of ``patch`` (clipped to ``shape``) inside ``shape``."""
    out = []
    for s, p in zip(shape, patch):
        p = min(int(p), int(s))
        start = int(rng.integers(0, s - p + 1))
        out.append(slice(start, start + p))
    return tuple(out)


def pad_to(arr: np.ndarray, patch: Sequence[int], value: float) -> np.ndarray:
    """Pad the spatial axes of ``arr`` (C, ...) at their end up to ``patch`` with ``value``."""
    pads = [(0, 0)] + [(0, max(0, int(p) - s)) for p, s in zip(patch, arr.shape[1:])]
    if any(b for _, b in pads):
        return np.pad(arr, pads, mode="constant", constant_values=value)
    return arr


class PatchDataset(torch.utils.data.Dataset):
    """``num_samples`` random patches from randomly chosen cases.

    Each item: ``{"image": (C, p, p, p) float32, "target": (R, p, p, p) float32}``; the
    target is the SiNG map for (lambda, delta) built from the distance cache inside the
    crop only, or the binary regions for a hard-label loss. Volumes smaller than the patch
    are padded (image 0, SiNG target -1, binary target 0). Sample ``i`` of epoch ``e`` is a
    function of (seed, e, i) only, whatever the worker that draws it.
    """

    def __init__(self, cache_dir: str | Path, case_ids: Sequence[str], patch_size: Sequence[int],
                 num_samples: int, regression: bool, settings: SingSettings, delta: float,
                 augment: Any, seed: int = 0, in_memory: bool = False):
        if not case_ids:
            raise SingrInputError("no training cases: the split's train list is empty")
        self.cache_dir = Path(cache_dir)
        self.case_ids = list(case_ids)
        self.patch = tuple(int(p) for p in patch_size)
        self.num_samples = int(num_samples)
        self.regression = regression
        self.settings = settings
        self.delta = float(delta)
        self.seed = int(seed)
        self.in_memory = in_memory
        self.epoch = 0
        self._cases: dict[str, PreparedCase] = {}
        self._dist: dict[tuple[str, str], Any] = {}
        self.augment = augment
        if in_memory:
            for cid in self.case_ids:
                self._case(cid)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def _case(self, cid: str) -> PreparedCase:
        if cid in self._cases:
            return self._cases[cid]
        prep = load_prepared(self.cache_dir, cid, mmap=not self.in_memory)
        if prep.regions is None:
            raise SingrInputError("training case has no label", case=cid)
        self._cases[cid] = prep
        return prep

    def _distances(self, prep: PreparedCase, r: int) -> Any:
        key = (prep.case_id, prep.region_names[r])
        if key not in self._dist:
            assert prep.regions is not None
            cache = DistanceCache(self.cache_dir)
            image = prep.image if isinstance(prep.image, np.ndarray) else prep.image[...]  # a lazy array: whole
            self._dist[key] = cache.get_or_compute(prep.case_id, prep.region_names[r], np.asarray(prep.regions[r]),
                                                   image, self.settings, prep.spacing)
        return self._dist[key]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        cid = self.case_ids[int(rng.integers(len(self.case_ids)))]
        prep = self._case(cid)
        win = random_window(prep.image.shape[1:], self.patch, rng)
        image = np.asarray(prep.image[(slice(None),) + win], dtype=np.float32)
        if self.regression:
            target = np.stack([sing_from_distances(self._distances(prep, r), self.delta, win)
                               for r in range(len(prep.region_names))])
            fill = -1.0
        else:
            assert prep.regions is not None
            target = np.asarray(prep.regions[(slice(None),) + win], dtype=np.float32)
            fill = 0.0
        image, target = pad_to(image, self.patch, 0.0), pad_to(target, self.patch, fill)
        self.augment.set_random_state(seed=int(rng.integers(2**31 - 1)))
        out = self.augment({"image": image, "target": target})
        return {"image": torch.as_tensor(out["image"]).float(), "target": torch.as_tensor(out["target"]).float()}
