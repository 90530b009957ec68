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
