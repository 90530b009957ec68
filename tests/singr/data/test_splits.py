"""Deterministic splits (singr.data.splits)."""
from __future__ import annotations

import json

import pytest

from singr.data import load_or_create_split, make_split, split_sizes
from singr.errors import SingrInputError


def _ids(n):
    return [f"case_{i:03d}" for i in range(n)]


@pytest.mark.parametrize("n,sizes", [(369, (236, 59, 74)), (110, (70, 18, 22)), (6, (4, 1, 1)),
                                     (3, (1, 1, 1)), (2, (2, 0, 0)), (1, (1, 0, 0)), (0, (0, 0, 0))])
def test_sizes(n, sizes):
    assert split_sizes(n) == sizes
    split = make_split(_ids(n))
    assert tuple(len(split[k]) for k in ("train", "val", "test")) == sizes
    assert sorted(split["train"] + split["val"] + split["test"]) == _ids(n)


def test_deterministic_and_order_free():
    ids = _ids(50)
    a = make_split(ids, seed=3)
    assert a == make_split(list(reversed(ids)), seed=3)
    assert a != make_split(ids, seed=4)


def test_bad_input():
    with pytest.raises(SingrInputError, match="sum"):
        make_split(_ids(5), ratios=(0.5, 0.5, 0.5))
    with pytest.raises(SingrInputError, match="more than once"):
        make_split(["a", "a", "b"])


def test_load_or_create(tmp_path):
    path = tmp_path / "splits" / "split.json"
    made = load_or_create_split(path, _ids(20), (0.64, 0.16, 0.20), 1)
    saved = json.loads(path.read_text())
    assert saved["seed"] == 1 and saved["train"] == made["train"]
    again = load_or_create_split(path, list(reversed(_ids(20))), (0.64, 0.16, 0.20), 1)
    assert again == made
    with pytest.warns(UserWarning, match="saved split"):
        assert load_or_create_split(path, _ids(20), (0.64, 0.16, 0.20), 2)["train"] == made["train"]
    with pytest.raises(SingrInputError, match=r"split\.json: .*not in the split: case_020.*not in the data: case_000"):
        load_or_create_split(path, _ids(21)[1:], (0.64, 0.16, 0.20), 1)
    path.write_text("{not json")
    with pytest.raises(SingrInputError, match="cannot read split file"):
        load_or_create_split(path, _ids(20), (0.64, 0.16, 0.20), 1)


def test_folds_partition_train_and_val_deterministically(tmp_path):
    from singr.data.splits import fold_split, make_folds

    ids = [f"c{i:02d}" for i in range(23)]
    folds = make_folds(ids, 5, seed=3)
    assert [len(f) for f in folds] == [5, 5, 5, 4, 4]
    assert sorted(c for f in folds for c in f) == sorted(ids)  # a partition: every case in exactly one fold
    assert make_folds(list(reversed(ids)), 5, seed=3) == folds  # order-free
    assert make_folds(ids, 5, seed=4) != folds
    with pytest.raises(SingrInputError, match="cannot make 24 folds of 23"):
        make_folds(ids, 24)
    # saved with the split, test cases never in a fold; fold k validates on fold k and trains on the rest
    path = tmp_path / "split.json"
    split = load_or_create_split(path, ids, folds=3)
    assert json.loads(path.read_text())["folds"]["3"] == split["folds"]  # saved per K
    assert sorted(c for f in split["folds"] for c in f) == sorted(split["train"] + split["val"])
    assert not set(split["test"]) & {c for f in split["folds"] for c in f}
    for k in range(3):
        fk = fold_split(split, k)
        assert fk["val"] == split["folds"][k] and not set(fk["train"]) & set(fk["val"])
        assert fk["test"] == split["test"] and sorted(fk["train"] + fk["val"]) == sorted(split["train"] + split["val"])
    assert load_or_create_split(path, ids, folds=3)["folds"] == split["folds"]  # read back, not redone
    with pytest.raises(SingrInputError, match="fold 3 does not exist"):
        fold_split(split, 3)
