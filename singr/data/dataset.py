"""Training patches: a random crop from the preprocessed arrays (read by window), then
augmentation (docs/method.md 1.4) of the image (C, p, p, p) and target (R, p, p, p):

    flips on the three axes (each with ``flip_prob``), the same for image and target;
    x * (1 + f), f ~ U(-scale, scale), then x + o, o ~ U(-shift, shift), on the image
    (each with ``intensity_prob``): MONAI's RandScaleIntensity and RandShiftIntensity.

The crop is taken before these, straight from the stored arrays (only the chunks the crop
touches are decompressed): reading the crop instead of the whole volume is what keeps a
BraTS-size sample cheap (MONAI's
RandSpatialCropd would load the whole 240 x 240 x 155 x 4 array first). The SiNG target is
built from the cached distances inside the crop only, for the run's delta.

:class:`PatchAugment` does what MONAI's Compose of three RandFlipd, RandScaleIntensityd and
RandShiftIntensityd does (:func:`monai_augmentation`, kept as the reference), in place and
with one copy for all flips: on a 128^3 patch of the real case with SiNG targets, one core,
MONAI's spends 50 ms of a 93 ms sample (profiled), and whole samples come 1.8-2.5x as fast
with ours (``benchmarks/bench_cache.py``, the augmentation table in benchmarks/RESULTS.md).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import SingrInputError
from ..preprocess import PreparedCase, load_prepared
from ..sing import DistanceCache, SingSettings, sing_from_distances

__all__ = ["train_augmentation", "monai_augmentation", "PatchAugment", "MonaiAugment", "random_window",
           "foreground_window", "pad_to", "PatchDataset"]

FG_SAMPLE = 20000  # at most this many foreground voxels kept per case for foreground-centred crops


class PatchAugment:
    """Padding, flips and intensity augmentation of one training patch, drawn from ``rng``.

    ``(image, target, rng, patch, fills) -> (image, target)``: new C-contiguous float32 arrays
    (never views of the inputs, which may be a cached case), padded at the end of each spatial
    axis up to ``patch`` with ``fills`` (image, target), then each spatial axis flipped with
    probability ``flip_prob`` (image and target alike); padding and flips cost one copy
    together. Then, each with probability ``intensity_prob``, ``image *= 1 + f`` with
    f ~ U(-scale, scale) and ``image += o`` with o ~ U(-shift, shift), in place. The same
    distribution as :func:`monai_augmentation` after :func:`pad_to`; the draws come from
    ``rng``, so a sample is a function of the generator's seed alone.
    """

    def __init__(self, flip_prob: float, intensity_prob: float, intensity_scale: float, intensity_shift: float):
        for name, v in (("flip_prob", flip_prob), ("intensity_prob", intensity_prob)):
            if not 0.0 <= float(v) <= 1.0:
                raise SingrInputError(f"augment.{name} = {v}; expected a probability in [0, 1]")
        for name, v in (("intensity_scale", intensity_scale), ("intensity_shift", intensity_shift)):
            if float(v) < 0:
                raise SingrInputError(f"augment.{name} = {v}; expected >= 0")
        self.flip_prob, self.intensity_prob = float(flip_prob), float(intensity_prob)
        self.scale, self.shift = float(intensity_scale), float(intensity_shift)

    def __call__(self, image: np.ndarray, target: np.ndarray, rng: np.random.Generator,
                 patch: Sequence[int] | None = None, fills: tuple[float, float] = (0.0, 0.0)
                 ) -> tuple[np.ndarray, np.ndarray]:
        axes = tuple(a for a in (1, 2, 3) if rng.random() < self.flip_prob)
        image = _place(image, axes, patch, fills[0])
        target = _place(target, axes, patch, fills[1])
        if rng.random() < self.intensity_prob:
            image *= np.float32(1.0 + rng.uniform(-self.scale, self.scale))
        if rng.random() < self.intensity_prob:
            image += np.float32(rng.uniform(-self.shift, self.shift))
        return image, target


def _place(src: np.ndarray, axes: tuple[int, ...], patch: Sequence[int] | None, fill: float) -> np.ndarray:
    """``src`` (C, d, h, w) padded at the end up to ``patch`` with ``fill``, then flipped on
    ``axes``, as a new float32 array: one allocation, one copy (a padded axis that flips has its
    padding at the start)."""
    spatial = tuple(src.shape[1:])
    want = spatial if patch is None else tuple(max(int(p), s) for p, s in zip(patch, spatial))
    shape = (src.shape[0],) + want
    out = np.empty(shape, np.float32) if want == spatial else np.full(shape, fill, np.float32)
    dst = tuple(slice(w - s, w) if a + 1 in axes else slice(0, s) for a, (s, w) in enumerate(zip(spatial, want)))
    out[(slice(None),) + dst] = np.flip(src, axes) if axes else src
    return out


def train_augmentation(flip_prob: float, intensity_prob: float, intensity_scale: float,
                       intensity_shift: float) -> PatchAugment:
    """The training patches' augmentation (:class:`PatchAugment`)."""
    return PatchAugment(flip_prob, intensity_prob, intensity_scale, intensity_shift)


class MonaiAugment:
    """The same augmentation with MONAI's transforms (the reference :class:`PatchAugment` is
    measured and tested against), behind :class:`PatchAugment`'s call: :func:`pad_to`, then a
    Compose of EnsureTyped, RandFlipd on each axis, RandScaleIntensityd and RandShiftIntensityd
    seeded from ``rng``."""

    def __init__(self, flip_prob: float, intensity_prob: float, intensity_scale: float, intensity_shift: float):
        from monai.transforms import Compose, EnsureTyped, RandFlipd, RandScaleIntensityd, RandShiftIntensityd

        keys = ["image", "target"]
        self.compose = Compose([
            EnsureTyped(keys=keys, track_meta=False),
            RandFlipd(keys=keys, prob=flip_prob, spatial_axis=0),
            RandFlipd(keys=keys, prob=flip_prob, spatial_axis=1),
            RandFlipd(keys=keys, prob=flip_prob, spatial_axis=2),
            RandScaleIntensityd(keys="image", factors=intensity_scale, prob=intensity_prob),
            RandShiftIntensityd(keys="image", offsets=intensity_shift, prob=intensity_prob),
        ])

    def __call__(self, image: np.ndarray, target: np.ndarray, rng: np.random.Generator,
                 patch: Sequence[int] | None = None, fills: tuple[float, float] = (0.0, 0.0)
                 ) -> tuple[np.ndarray, np.ndarray]:
        if patch is not None:
            image, target = pad_to(image, patch, fills[0]), pad_to(target, patch, fills[1])
        self.compose.set_random_state(seed=int(rng.integers(2**31 - 1)))
        out = self.compose({"image": image, "target": target})
        return (torch.as_tensor(out["image"]).float().numpy(), torch.as_tensor(out["target"]).float().numpy())


def monai_augmentation(flip_prob: float, intensity_prob: float, intensity_scale: float,
                       intensity_shift: float) -> MonaiAugment:
    """The reference augmentation (:class:`MonaiAugment`)."""
    return MonaiAugment(flip_prob, intensity_prob, intensity_scale, intensity_shift)


def random_window(shape: Sequence[int], patch: Sequence[int], rng: np.random.Generator) -> tuple[slice, ...]:
    """A uniformly random crop of ``patch`` (clipped to ``shape``) inside ``shape``."""
    out = []
    for s, p in zip(shape, patch):
        p = min(int(p), int(s))
        start = int(rng.integers(0, s - p + 1))
        out.append(slice(start, start + p))
    return tuple(out)


def foreground_window(shape: Sequence[int], patch: Sequence[int], center: Sequence[int]) -> tuple[slice, ...]:
    """The crop of ``patch`` (clipped to ``shape``, as :func:`random_window`'s) centred on the
    voxel ``center`` and shifted to lie inside ``shape``.

    On each axis the window is ``[start, start + p)`` with ``p = min(patch, shape)`` and
    ``start = clip(center - p // 2, 0, shape - p)``: ``center`` always lies inside it, and it
    is the exact centre unless the volume's border is in the way.
    """
    out = []
    for s, p, c in zip(shape, patch, center):
        p = min(int(p), int(s))
        start = min(max(int(c) - p // 2, 0), int(s) - p)
        out.append(slice(start, start + p))
    return tuple(out)


def pad_to(arr: np.ndarray, patch: Sequence[int], value: float) -> np.ndarray:
    """Pad the spatial axes of ``arr`` (C, ...) at their end up to ``patch`` with ``value``
    (one allocation and one copy; ``arr`` itself when nothing is missing)."""
    want = tuple(max(int(p), s) for p, s in zip(patch, arr.shape[1:]))
    if want == tuple(arr.shape[1:]):
        return arr
    out = np.full((arr.shape[0],) + want, value, dtype=arr.dtype)
    out[(slice(None),) + tuple(slice(0, s) for s in arr.shape[1:])] = arr
    return out


class PatchDataset(torch.utils.data.Dataset):
    """``num_samples`` random patches from randomly chosen cases.

    With ``fg_oversample = p > 0`` (nnU-Net's oversample_foreground_percent), each sample
    is, with probability p, a crop centred on a random foreground voxel of its case (any
    region, their union; :func:`foreground_window`) instead of a uniformly random one
    (:func:`random_window`); a case without foreground always gets a random one. The
    foreground voxels are found once per case (at most ``FG_SAMPLE`` of them kept, an evenly
    spaced subsample). With p = 0 no extra number is drawn: samples are exactly those of a
    dataset without the option.

    Each item: ``{"image": (C, p, p, p) float32, "target": (R, p, p, p) float32}``; the
    target is the SiNG map for (lambda, delta) built from the distance cache inside the
    crop only, or the binary regions for a hard-label loss. Volumes smaller than the patch
    are padded (image 0, SiNG target -1, binary target 0). Sample ``i`` of epoch ``e`` is a
    function of (seed, e, i) only, whatever the worker that draws it.
    """

    def __init__(self, cache_dir: str | Path, case_ids: Sequence[str], patch_size: Sequence[int],
                 num_samples: int, regression: bool, settings: SingSettings, delta: float,
                 augment: Any, seed: int = 0, in_memory: bool = False, fg_oversample: float = 0.0):
        if not 0.0 <= float(fg_oversample) <= 1.0:  # NaN fails too
            raise SingrInputError(f"fg_oversample = {fg_oversample}; expected a probability in [0, 1] "
                                  "(the share of crops centred on a foreground voxel)")
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
        self.fg_oversample = float(fg_oversample)
        self.epoch = 0
        self._fg: dict[str, np.ndarray] = {}  # case id -> (n, 3) foreground voxels (a subsample)
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

    def _foreground(self, prep: PreparedCase) -> np.ndarray:
        """(n, 3) int coordinates of foreground voxels (any region) of ``prep``, at most
        ``FG_SAMPLE`` evenly spaced ones of np.argwhere's order; computed once per case."""
        if prep.case_id not in self._fg:
            assert prep.regions is not None
            regions = prep.regions if isinstance(prep.regions, np.ndarray) else prep.regions[...]  # lazy: whole
            union = np.asarray(regions).any(axis=0)
            coords = np.argwhere(union)
            if len(coords) > FG_SAMPLE:
                coords = coords[np.linspace(0, len(coords) - 1, FG_SAMPLE).round().astype(np.int64)]
            self._fg[prep.case_id] = np.ascontiguousarray(coords, dtype=np.int64)
        return self._fg[prep.case_id]

    def _window(self, prep: PreparedCase, rng: np.random.Generator) -> tuple[slice, ...]:
        shape = prep.image.shape[1:]
        if self.fg_oversample > 0 and rng.random() < self.fg_oversample:
            fg = self._foreground(prep)
            if len(fg):
                return foreground_window(shape, self.patch, fg[int(rng.integers(len(fg)))])
        return random_window(shape, self.patch, rng)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        cid = self.case_ids[int(rng.integers(len(self.case_ids)))]
        prep = self._case(cid)
        win = self._window(prep, rng)
        image = np.asarray(prep.image[(slice(None),) + win], dtype=np.float32)
        if self.regression:
            target = np.stack([sing_from_distances(self._distances(prep, r), self.delta, win)
                               for r in range(len(prep.region_names))])
            fill = -1.0
        else:
            assert prep.regions is not None
            target = np.asarray(prep.regions[(slice(None),) + win], dtype=np.float32)
            fill = 0.0
        image, target = self.augment(image, target, rng, self.patch, (0.0, fill))  # pads too
        return {"image": torch.from_numpy(image), "target": torch.from_numpy(target)}
