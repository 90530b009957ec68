"""From a config to the data a training run reads: cases, split, preprocessed arrays,
and the patch dataset (random crop from memory-mapped arrays + MONAI augmentation)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..cache import DistanceCache, SingSettings
from ..errors import SingrInputError
from ..losses import is_regression_loss
from ..preprocess import PreparedCase, load_prepared, preprocess_cases
from ..sing import sing_from_distances


@dataclass
class RunPaths:
    output_dir: Path
    cache_dir: Path
    split_file: Path
    checkpoints: Path


def run_paths(cfg: dict[str, Any]) -> RunPaths:
    out = Path(cfg["output_dir"])
    data = cfg["data"]
    cache = Path(data["cache_dir"]) if data.get("cache_dir") else Path(data["root"]) / ".singr_cache"
    split = Path(data["split_file"]) if data.get("split_file") else out / "split.json"
    return RunPaths(out, cache, split, out / "checkpoints")


def sing_settings(cfg: dict[str, Any], lam: float | None = None) -> SingSettings:
    s = cfg["sing"]
    return SingSettings(lam=float(s["lam"] if lam is None else lam), iterations=int(s["iterations"]),
                        engine=str(s["engine"]), boundary_mode=str(s["boundary"]))


def discover(cfg: dict[str, Any]) -> list[Any]:
    from ..data.readers import discover_cases

    d = cfg["data"]
    root = Path(d["root"])
    if not root.is_dir():
        raise SingrInputError("data.root is not a folder (run `singr synth` for a synthetic data set, "
                              "or point data.root at your cases)", path=root)
    return discover_cases(root, layout=d["layout"], label_convention=d["label_convention"],
                          modalities=d["modalities"])


def split_cases(cfg: dict[str, Any], cases: Sequence[Any], paths: RunPaths) -> dict[str, list[str]]:
    from ..data.splits import load_or_create_split

    d = cfg["data"]
    return load_or_create_split(paths.split_file, [c.case_id for c in cases], tuple(d["split_ratios"]),
                                int(d["split_seed"]))


def prepare(cfg: dict[str, Any], cases: Sequence[Any], paths: RunPaths, lams: Sequence[float] | None = None,
            progress: bool = True) -> dict[str, int]:
    """Preprocess ``cases`` and, for a SiNG loss, fill the distance cache for each lambda."""
    from ..sing import resolve_device

    regression = is_regression_loss(cfg["loss"]["name"])
    settings = [sing_settings(cfg, lam) for lam in (lams or [cfg["sing"]["lam"]])] if regression else []
    return preprocess_cases(cases, paths.cache_dir, settings, cfg["data"]["spacing"],
                            resolve_device(cfg["sing"]["device"]), progress)


def random_window(shape: Sequence[int], patch: Sequence[int], rng: np.random.Generator) -> tuple[slice, ...]:
    """A uniformly random crop of ``patch`` (clipped to ``shape``) inside ``shape``."""
    out = []
    for s, p in zip(shape, patch):
        p = min(int(p), int(s))
        start = int(rng.integers(0, s - p + 1))
        out.append(slice(start, start + p))
    return tuple(out)


def pad_to(arr: np.ndarray, patch: Sequence[int], value: float) -> np.ndarray:
    pads = [(0, 0)] + [(0, max(0, int(p) - s)) for p, s in zip(patch, arr.shape[1:])]
    if any(b for _, b in pads):
        return np.pad(arr, pads, mode="constant", constant_values=value)
    return arr


class PatchDataset(torch.utils.data.Dataset):
    """``num_samples`` random patches from randomly chosen cases.

    Each item: ``{"image": (C, p, p, p) float32, "target": (R, p, p, p) float32}``; the
    target is the SiNG map for (lambda, delta) built from the distance cache inside the
    crop only, or the binary regions for a hard-label loss. Volumes smaller than the patch
    are padded (image 0, SiNG target -1, binary target 0).
    """

    def __init__(self, cache_dir: str | Path, case_ids: Sequence[str], patch_size: Sequence[int],
                 num_samples: int, regression: bool, settings: SingSettings, delta: float,
                 augment: dict[str, Any], seed: int = 0, in_memory: bool = False):
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
        from ..transforms import train_augmentation
        self.augment = train_augmentation(augment)
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
            cache = DistanceCache(self.cache_dir)
            mask = np.asarray(prep.regions[r])  # type: ignore[index]
            self._dist[key] = cache.get_or_compute(prep.case_id, prep.region_names[r], mask,
                                                   np.asarray(prep.image), self.settings, prep.spacing)
        return self._dist[key]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        cid = self.case_ids[int(rng.integers(len(self.case_ids)))]
        prep = self._case(cid)
        shape = prep.image.shape[1:]
        win = random_window(shape, self.patch, rng)
        image = np.asarray(prep.image[(slice(None),) + win], dtype=np.float32)
        if self.regression:
            target = np.stack([sing_from_distances(self._distances(prep, r), self.delta, win)
                               for r in range(len(prep.region_names))])
            fill = -1.0
        else:
            target = np.asarray(prep.regions[(slice(None),) + win], dtype=np.float32)  # type: ignore[index]
            fill = 0.0
        image, target = pad_to(image, self.patch, 0.0), pad_to(target, self.patch, fill)
        self.augment.set_random_state(seed=int(rng.integers(2**31 - 1)))
        out = self.augment({"image": image, "target": target})
        return {"image": torch.as_tensor(out["image"]).float(), "target": torch.as_tensor(out["target"]).float()}
