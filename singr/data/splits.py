"""Deterministic train / val / test splits, saved to a JSON file, and K-fold splits.

The split is made once from a seed and saved (``split.json``); later runs read it, and a
file that no longer matches the cases on disk is an error, never silently redone. With
``data.folds: K`` the train and val cases together are also cut into K folds (the test
cases stay held out), saved in the same file under ``folds.<K>``: fold k trains on the
other K - 1 folds and validates on fold k, as nnU-Net's cross-validation does.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import SingrInputError
from ..io import write_json

__all__ = ["SPLIT_KEYS", "split_sizes", "make_split", "make_folds", "load_or_create_split", "fold_split"]

SPLIT_KEYS: tuple[str, str, str] = ("train", "val", "test")


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    r = tuple(float(x) for x in ratios)
    if len(r) != 3 or any(not math.isfinite(x) or x < 0 for x in r) or abs(sum(r) - 1.0) > 1e-6:
        raise SingrInputError(f"split ratios must be three non-negative numbers (train, val, test) "
                              f"summing to 1, got {list(ratios)}")
    return r  # type: ignore[return-value]


def split_sizes(n: int, ratios: Sequence[float] = (0.64, 0.16, 0.20)) -> tuple[int, int, int]:
    """(train, val, test) sizes: val and test rounded, train the rest.

    369 -> (236, 59, 74); 110 -> (70, 18, 22). With n >= 3, a non-zero val or test ratio
    gets at least one case, and train keeps at least one.
    """
    _, r_val, r_test = _check_ratios(ratios)
    n_val = int(math.floor(r_val * n + 0.5))
    n_test = int(math.floor(r_test * n + 0.5))
    if n >= 3:
        n_val = max(n_val, 1 if r_val > 0 else 0)
        n_test = max(n_test, 1 if r_test > 0 else 0)
    while n_val + n_test > max(n - 1, 0) and n_val + n_test > 0:  # keep >= 1 training case
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n - n_val - n_test, n_val, n_test


def make_split(case_ids: Sequence[str], ratios: Sequence[float] = (0.64, 0.16, 0.20),
               seed: int = 0) -> dict[str, list[str]]:
    """Split ``case_ids`` into {"train", "val", "test"} lists (each sorted).

    Deterministic given ``seed`` and the set of ids (their order does not matter); every
    case lands in exactly one list. Duplicate ids are an error.
    """
    ids = sorted(str(c) for c in case_ids)
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise SingrInputError(f"case ids occur more than once: {dup[:10]}")
    n_train, n_val, _ = split_sizes(len(ids), ratios)
    perm = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in perm]
    return {
        "train": sorted(shuffled[:n_train]),
        "val": sorted(shuffled[n_train:n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val:]),
    }


def _names(ids: Sequence[str], limit: int = 10) -> str:
    ids = sorted(ids)
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


def make_folds(case_ids: Sequence[str], k: int, seed: int = 0) -> list[list[str]]:
    """``case_ids`` cut into ``k`` folds of near-equal size (each sorted), deterministic in
    ``seed`` and the set of ids."""
    ids = sorted(str(c) for c in case_ids)
    if k < 2 or k > len(ids):
        raise SingrInputError(f"cannot make {k} folds of {len(ids)} train+val cases; expected 2 <= folds <= "
                              f"{len(ids)}")
    perm = np.random.default_rng([int(seed), 1]).permutation(len(ids))
    return [sorted(ids[i] for i in part) for part in np.array_split(perm, k)]


def fold_split(split: dict, fold: int, path: str | Path | None = None) -> dict:
    """Train / val / test of fold ``fold`` of a split made with folds."""
    folds = split.get("folds")
    if not folds:
        raise SingrInputError("the split has no folds; set data.folds (e.g. 5) to make K-fold splits", path=path)
    if not 0 <= int(fold) < len(folds):
        raise SingrInputError(f"fold {fold} does not exist; the split has folds 0..{len(folds) - 1}", path=path)
    val = list(folds[int(fold)])
    train = sorted(c for i, f in enumerate(folds) if i != int(fold) for c in f)
    return {**split, "train": train, "val": val, "fold": int(fold)}


def load_or_create_split(path: str | Path, case_ids: Sequence[str],
                         ratios: Sequence[float] = (0.64, 0.16, 0.20), seed: int = 0,
                         folds: int | None = None) -> dict:
    """Read the split saved at ``path``, or make one and save it there (atomically).

    Returns {"seed", "ratios", "train", "val", "test"} (and "folds", the list of folds, when
    ``folds`` is given: made from train + val and added to the file the first time they are
    asked for). An existing file whose cases differ
    from ``case_ids`` is an error naming the file and the missing / extra ids (the split is
    never silently redone). An existing file made with another seed or ratios is used as
    it is, with a warning.
    """
    path = Path(path)
    ids = sorted({str(c) for c in case_ids})
    if path.exists():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise SingrInputError(f"cannot read split file ({err}); expected JSON with train/val/test lists",
                                  path=path) from err
        if not isinstance(saved, dict) or any(not isinstance(saved.get(k), list) for k in SPLIT_KEYS):
            raise SingrInputError("split file must hold lists 'train', 'val' and 'test'", path=path)
        listed = [str(c) for k in SPLIT_KEYS for c in saved[k]]
        if len(set(listed)) != len(listed):
            dup = sorted({c for c in listed if listed.count(c) > 1})
            raise SingrInputError(f"split file lists cases more than once: {_names(dup)}", path=path)
        missing = sorted(set(ids) - set(listed))
        extra = sorted(set(listed) - set(ids))
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"{len(missing)} case(s) in the data but not in the split: {_names(missing)}")
            if extra:
                parts.append(f"{len(extra)} case(s) in the split but not in the data: {_names(extra)}")
            raise SingrInputError("the saved split does not match the cases found; " + "; ".join(parts)
                                  + ". Delete the file or point to another split file to make a new split",
                                  path=path)
        if saved.get("seed") != seed or [float(x) for x in saved.get("ratios", [])] != [float(x) for x in ratios]:
            warnings.warn(f"{path}: using the saved split (seed {saved.get('seed')}, ratios {saved.get('ratios')}) "
                          f"instead of seed {seed}, ratios {list(ratios)}", stacklevel=2)
        record = saved
    else:
        record = {"seed": seed, "ratios": [float(x) for x in ratios], **make_split(ids, ratios, seed)}
        write_json(path, record)
    out = {"seed": record.get("seed"), "ratios": record.get("ratios"),
           **{k: [str(c) for c in record[k]] for k in SPLIT_KEYS}}
    if folds:
        saved_folds = (record.get("folds") or {}).get(str(int(folds)))
        if saved_folds is None:
            trainval = [str(c) for k in ("train", "val") for c in record[k]]
            saved_folds = make_folds(trainval, int(folds), int(record.get("seed") or 0))
            record = {**record, "folds": {**(record.get("folds") or {}), str(int(folds)): saved_folds}}
            write_json(path, record)
        out["folds"] = [[str(c) for c in f] for f in saved_folds]
    return out
