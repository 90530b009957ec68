"""Post-processing rules fitted on validation cases (after nnU-Net v2's
``nnunetv2/postprocessing/remove_connected_components.py``: a rule is kept only if it raises Dice).

Two kinds of rule act on predicted region masks shaped (R, X, Y, Z):

* per region, ``min_component_voxels[name] = m``: remove the 26-connected components of fewer than
  ``m`` voxels (0 = off). With regions TC/WT/ET a removal cascades into the nested regions
  (voxels removed from WT leave TC and ET, those removed from TC leave ET), so ET within TC within WT holds;
* ``et_min_voxels = v`` (BraTS practice): when the whole predicted ET has fewer than ``v`` voxels
  (after the component rules), it is relabelled necrosis: removed from ET, kept in TC and WT (0 = off).

:meth:`PostprocessRules.fit` picks them on validation cases; :meth:`~PostprocessRules.apply` uses them.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..metrics import dice

__all__ = [
    "PostprocessRules",
    "DEFAULT_COMPONENT_CANDIDATES",
    "DEFAULT_ET_CANDIDATES",
    "MIN_DICE_GAIN",
]

BRATS_NAMES = ("TC", "WT", "ET")
DEFAULT_COMPONENT_CANDIDATES: tuple[int, ...] = (10, 20, 50, 100, 200, 500, 1000)
"""Minimum component sizes (voxels) tried per region by :meth:`PostprocessRules.fit`."""
DEFAULT_ET_CANDIDATES: tuple[int, ...] = (50, 100, 200, 300, 500, 750, 1000)
"""Whole-ET volumes (voxels) tried for ``et_min_voxels`` by :meth:`PostprocessRules.fit`."""
MIN_DICE_GAIN: float = 1e-6
"""A rule is kept only when it raises the validation score by more than this (ties keep the rule off)."""

Case = tuple[np.ndarray, np.ndarray, Sequence[float] | float]
Components = list[tuple[np.ndarray, np.ndarray] | None]  # per region: (labels, sizes by label), None: not needed


def _count(value: object, name: str) -> int:
    """``value`` as a non-negative int, or a ValueError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer (voxels; 0 = off), got {value!r}")
    return int(value)


def _candidates(values: Sequence[int], name: str) -> list[int]:
    out = sorted({_count(v, f"{name}[{i}]") for i, v in enumerate(values)} - {0})
    if not out:
        raise ValueError(f"{name} must hold at least one positive size in voxels, got {list(values)!r}")
    return out


def _names(region_names: Sequence[str], n_channels: int | None = None) -> list[str]:
    if isinstance(region_names, str):
        raise ValueError(f"region_names must be a sequence of names such as ('TC', 'WT', 'ET'), got {region_names!r}")
    names = list(region_names)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"region_names must be non-empty strings, got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"region_names must be unique, got {names}")
    if n_channels is not None and len(names) != n_channels:
        raise ValueError(f"got {len(names)} region_names {names} for {n_channels} region channels")
    return names


def _regions(arr: np.ndarray, name: str) -> np.ndarray:
    """(R, X, Y, Z) bool view of ``arr`` (bool or 0/1 numbers), without copying bool input."""
    arr = np.asarray(arr)
    if arr.ndim != 4:
        raise ValueError(f"{name} must be shaped (R, X, Y, Z), got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "biuf" or (arr.size and not np.isin(arr, (0, 1)).all()):
        raise ValueError(f"{name} must be a bool (or 0/1) array, got dtype {arr.dtype}")
    return arr.astype(bool)


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """26-connected components of a 3-D mask: (labels, voxel count per label; label 0 = background)."""
    from skimage.measure import label

    labels = label(mask, connectivity=3, background=0)
    sizes = np.bincount(labels.ravel())
    return labels.astype(np.min_scalar_type(sizes.size - 1), copy=False), sizes  # uint8/16 when few: memory


def _small(comp: tuple[np.ndarray, np.ndarray], min_voxels: int) -> np.ndarray:
    """Voxels of the components with fewer than ``min_voxels`` voxels."""
    labels, sizes = comp
    drop = sizes < min_voxels
    drop[0] = False
    return drop[labels]


def _nested(names: Sequence[str]) -> bool:
    return set(names) == set(BRATS_NAMES) and len(names) == 3


@dataclass(frozen=True)
class PostprocessRules:
    """Minimum connected-component size per region and the ET-to-necrosis volume (voxels; 0 = off).

    Attributes:
        min_component_voxels: ``{region name: m}``; components of fewer than ``m`` voxels are removed.
        et_min_voxels: a predicted ET of fewer voxels than this becomes necrosis (needs TC/WT/ET).
    """

    min_component_voxels: Mapping[str, int] = field(default_factory=dict)
    et_min_voxels: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.min_component_voxels, Mapping):
            raise ValueError("min_component_voxels must be a mapping {region name: voxels}, got "
                             f"{type(self.min_component_voxels).__name__}")
        sizes: dict[str, int] = {}
        for name, value in self.min_component_voxels.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"min_component_voxels keys must be region names, got {name!r}")
            sizes[name] = _count(value, f"min_component_voxels[{name!r}]")
        object.__setattr__(self, "min_component_voxels", sizes)
        object.__setattr__(self, "et_min_voxels", _count(self.et_min_voxels, "et_min_voxels"))

    @property
    def is_noop(self) -> bool:
        """True when no rule is on: :meth:`apply` returns an unchanged copy."""
        return self.et_min_voxels == 0 and not any(self.min_component_voxels.values())

    def to_dict(self) -> dict[str, Any]:
        """``{"min_component_voxels": {name: int}, "et_min_voxels": int}`` (JSON-able; :meth:`from_dict` reads it)."""
        return {"min_component_voxels": dict(self.min_component_voxels), "et_min_voxels": self.et_min_voxels}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PostprocessRules:
        """Rules from :meth:`to_dict` output; unknown or ill-typed fields raise a ValueError naming them."""
        if not isinstance(data, Mapping):
            raise ValueError(f"post-processing rules must be a dict, got {type(data).__name__}")
        unknown = sorted(set(data) - {"min_component_voxels", "et_min_voxels"}, key=str)
        if unknown:
            raise ValueError(f"unknown post-processing field(s) {unknown}; expected min_component_voxels, "
                             "et_min_voxels")
        return cls(min_component_voxels=data.get("min_component_voxels", {}),
                   et_min_voxels=data.get("et_min_voxels", 0))

    def describe(self) -> dict[str, Any]:
        """Plain JSON-able summary: the rules, ``is_noop`` and one sentence per active rule."""
        steps = [f"{name}: remove connected components (26-connectivity) of fewer than {m} voxels"
                 for name, m in self.min_component_voxels.items() if m]
        if self.et_min_voxels:
            steps.append(f"ET: relabel as necrosis (kept in TC) when the predicted ET has fewer than "
                         f"{self.et_min_voxels} voxels")
        return {**self.to_dict(), "is_noop": self.is_noop, "steps": steps or ["none"]}

    def check(self, region_names: Sequence[str]) -> list[str]:
        """The region names as a list, after checking that every rule can act on them."""
        names = _names(region_names)
        unknown = [n for n in self.min_component_voxels if n not in names]
        if unknown:
            raise ValueError(f"min_component_voxels names region(s) {unknown} not among region_names {names}")
        if self.et_min_voxels and not _nested(names):
            raise ValueError(f"et_min_voxels needs the regions TC, WT and ET, got region_names {names}")
        return names

    def apply(self, regions: np.ndarray, region_names: Sequence[str]) -> np.ndarray:
        """A new bool (R, X, Y, Z) array with the rules applied to ``regions``; the input is not changed.

        If the input has ET within TC within WT, so has the output.
        """
        regions = _regions(regions, "regions")
        names = self.check(region_names)
        _names(names, regions.shape[0])
        comps: Components | None = None
        if any(self.min_component_voxels.values()):
            comps = [_components(regions[r]) if self.min_component_voxels.get(n, 0) else None
                     for r, n in enumerate(names)]
        return self._apply(regions, names, comps)

    def _apply(self, regions: np.ndarray, names: list[str], comps: Components | None) -> np.ndarray:
        """:meth:`apply` on checked input, with the components of each ruled region given."""
        out = regions.copy()
        removed = {}
        for r, name in enumerate(names):
            m, comp = self.min_component_voxels.get(name, 0), comps[r] if comps else None
            if m and comp is not None:
                removed[name] = _small(comp, m)
                out[r] &= ~removed[name]
        if _nested(names):
            tc, wt, et = (names.index(n) for n in BRATS_NAMES)
            if "WT" in removed:  # removal cascades into the nested regions
                out[tc] &= ~removed["WT"]
                out[et] &= ~removed["WT"]
            if "TC" in removed:
                out[et] &= ~removed["TC"]
            n_et = int(out[et].sum())
            if 0 < n_et < self.et_min_voxels:  # ET -> necrosis: leaves ET, stays in TC and WT
                out[tc] |= out[et]
                out[wt] |= out[et]
                out[et] = False
        return out

    @classmethod
    def fit(cls, cases: Sequence[Case], region_names: Sequence[str],
            candidates: Sequence[int] = DEFAULT_COMPONENT_CANDIDATES, *,
            et_candidates: Sequence[int] | None = DEFAULT_ET_CANDIDATES,
            min_gain: float = MIN_DICE_GAIN) -> tuple[PostprocessRules, dict[str, Any]]:
        """Fit the rules on validation cases ``[(pred_regions, gt_regions, spacing), ...]``.

        Greedy, one rule at a time (WT, TC, ET for BraTS regions, else the given order), then
        ``et_min_voxels``: each candidate is scored by ``score = mean over cases of the mean Dice over
        regions`` with the rules chosen so far applied (so a removal that cascades into nested regions
        is judged on them too); the best candidate (the smallest on ties) is kept only when
        ``score - score_without > min_gain``, else the rule stays 0. ``et_candidates=None`` (or
        regions other than TC/WT/ET) leaves ``et_min_voxels`` at 0. Dice does not depend on
        ``spacing``; it is checked only.

        Returns:
            ``(rules, report)``: report has ``n_cases``, ``dice_before`` / ``dice_after``
            (``{region: mean Dice, "mean": ..}``) and ``scores`` (``{rule: {candidate: score}}``),
            all JSON-able.
        """
        names = _names(region_names)
        sizes = _candidates(candidates, "candidates")
        et_sizes = _candidates(et_candidates, "et_candidates") if et_candidates is not None else []
        if not (isinstance(min_gain, numbers.Real) and math.isfinite(min_gain) and min_gain >= 0):
            raise ValueError(f"min_gain must be a finite number >= 0, got {min_gain!r}")
        data = _prepare(cases, names)
        order = [n for n in ("WT", "TC", "ET") if n in names] if _nested(names) else names
        rules = cls({n: 0 for n in names})
        scores: dict[str, dict[str, float]] = {}
        for name in order:
            rules, scores[f"min_component_voxels[{name}]"] = _fit_one(
                rules, data, names, sizes, min_gain,
                lambda r, v, n=name: cls({**r.min_component_voxels, n: v}, r.et_min_voxels))
        if et_sizes and _nested(names):
            rules, scores["et_min_voxels"] = _fit_one(
                rules, data, names, et_sizes, min_gain, lambda r, v: cls(r.min_component_voxels, v))
        report = {
            "n_cases": len(data),
            "dice_before": _region_dice(cls(), data, names),
            "dice_after": _region_dice(rules, data, names),
            "scores": scores,
        }
        return rules, report


def _prepare(cases: Sequence[Case], names: list[str]) -> list[tuple[np.ndarray, np.ndarray, Components]]:
    """Per case: prediction and ground truth cropped to their joint bounding box, and the components
    of every predicted region (cropping changes neither components nor Dice, and saves memory)."""
    from ..metrics import _check_spacing, _joint_bbox

    if isinstance(cases, (np.ndarray, str)) or not isinstance(cases, Sequence) or not cases:
        raise ValueError("cases must be a non-empty sequence of (pred_regions, gt_regions, spacing)")
    out: list[tuple[np.ndarray, np.ndarray, Components]] = []
    for i, case in enumerate(cases):
        if not isinstance(case, (tuple, list)) or len(case) != 3:
            raise ValueError(f"cases[{i}] must be (pred_regions, gt_regions, spacing)")
        pred, gt = _regions(case[0], f"cases[{i}] pred_regions"), _regions(case[1], f"cases[{i}] gt_regions")
        if pred.shape != gt.shape:
            raise ValueError(f"cases[{i}]: pred_regions {pred.shape} and gt_regions {gt.shape} differ in shape")
        _names(names, pred.shape[0])
        _check_spacing(case[2])
        if pred.any() or gt.any():
            box = (slice(None),) + _joint_bbox(np.any(pred, axis=0), np.any(gt, axis=0), margin=0)
            pred, gt = pred[box], gt[box]
        out.append((pred, gt, [_components(pred[r]) for r in range(len(names))]))
    return out


def _region_dice(rules: PostprocessRules, data: Sequence[tuple[np.ndarray, np.ndarray, Components]],
                 names: list[str]) -> dict[str, float]:
    """Mean Dice over cases per region (and ``"mean"`` over regions) after ``rules``."""
    per_case = np.array([[dice(p, g) for p, g in zip(rules._apply(pred, names, comps), gt)]
                         for pred, gt, comps in data])
    out = {name: float(per_case[:, r].mean()) for r, name in enumerate(names)}
    out["mean"] = float(per_case.mean())
    return out


def _fit_one(rules: PostprocessRules, data: Sequence[tuple[np.ndarray, np.ndarray, Components]], names: list[str],
             candidates: list[int], min_gain: float, with_value: Any) -> tuple[PostprocessRules, dict[str, float]]:
    """Try ``with_value(rules, v)`` for each candidate ``v``; keep the best if it beats ``rules`` by ``min_gain``."""
    baseline = _region_dice(rules, data, names)["mean"]
    scores = {"0": baseline}
    best, best_score = rules, baseline
    for v in candidates:
        trial = with_value(rules, v)
        scores[str(v)] = _region_dice(trial, data, names)["mean"]
        if scores[str(v)] > best_score + (min_gain if best is rules else 0.0):
            best, best_score = trial, scores[str(v)]
    return best, scores
