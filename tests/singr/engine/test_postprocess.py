"""Post-processing rules (singr.engine.postprocess): apply, (de)serialisation, fitting on small synthetic cases."""
from __future__ import annotations

import json

import numpy as np
import pytest

from singr.engine.postprocess import PostprocessRules

BRATS = ("TC", "WT", "ET")
SHAPE = (24, 24, 24)
SPACING = (1.0, 1.0, 1.0)


def _box(lo: tuple[int, int, int], size: int | tuple[int, int, int]) -> np.ndarray:
    sizes = (size,) * 3 if isinstance(size, int) else size
    m = np.zeros(SHAPE, dtype=bool)
    m[tuple(slice(a, a + s) for a, s in zip(lo, sizes))] = True
    return m


def _brats(wt: np.ndarray, tc: np.ndarray, et: np.ndarray) -> np.ndarray:
    """[TC, WT, ET] with the nesting ET in TC in WT enforced."""
    tc, et = tc | et, et
    return np.stack([tc, wt | tc, et])


def _is_nested(regions: np.ndarray) -> bool:
    tc, wt, et = regions
    return bool(np.all(et <= tc) and np.all(tc <= wt))


# --- apply ---------------------------------------------------------------------------------------


def test_default_rules_are_a_noop_copy():
    rules = PostprocessRules()
    assert rules.is_noop
    regions = _brats(_box((2, 2, 2), 8), _box((4, 4, 4), 4), _box((5, 5, 5), 2))
    out = rules.apply(regions, BRATS)
    assert out is not regions and np.array_equal(out, regions) and out.dtype == bool


def test_small_components_are_removed_per_region():
    big, blob = _box((2, 2, 2), 6), _box((18, 18, 18), 2)  # 216 and 8 voxels
    out = PostprocessRules({"FG": 9}).apply((big | blob)[None], ["FG"])
    assert np.array_equal(out[0], big)
    assert np.array_equal(PostprocessRules({"FG": 8}).apply((big | blob)[None], ["FG"])[0], big | blob)


def test_diagonal_neighbours_are_one_component():
    m = np.zeros(SHAPE, dtype=bool)
    m[3, 3, 3] = m[4, 4, 4] = True  # 26-connected: one component of 2 voxels
    assert PostprocessRules({"FG": 2}).apply(m[None], ["FG"]).sum() == 2
    assert PostprocessRules({"FG": 3}).apply(m[None], ["FG"]).sum() == 0


def test_apply_leaves_the_input_unchanged_and_keeps_the_nesting():
    rng = np.random.default_rng(0)
    for _ in range(5):
        wt = rng.random(SHAPE) < 0.15
        tc = wt & (rng.random(SHAPE) < 0.5)
        et = tc & (rng.random(SHAPE) < 0.5)
        regions = _brats(wt, tc, et)
        before = regions.copy()
        rules = PostprocessRules({"WT": 30, "TC": 5, "ET": 3}, et_min_voxels=int(rng.integers(1, 400)))
        out = rules.apply(regions, BRATS)
        assert np.array_equal(regions, before)
        assert _is_nested(out)
        assert np.all(out <= regions)  # nested input: ET relabelled as necrosis is already in TC and WT


def test_removal_cascades_into_nested_regions():
    wt_blob = _box((18, 18, 18), 3)  # 27-voxel WT component holding TC and ET
    regions = _brats(_box((2, 2, 2), 8) | wt_blob, _box((4, 4, 4), 4) | _box((18, 18, 18), 2),
                     _box((5, 5, 5), 2) | _box((19, 19, 19), 1))
    out = PostprocessRules({"WT": 28}).apply(regions, BRATS)
    assert not out[:, 18:, 18:, 18:].any()
    assert np.array_equal(out[:, :12, :12, :12], regions[:, :12, :12, :12])
    # a TC removal takes the ET inside it, but leaves WT
    out = PostprocessRules({"TC": 9}).apply(regions, BRATS)
    assert out[1, 18:, 18:, 18:].sum() == 27 and not out[[0, 2], 18:, 18:, 18:].any()


def test_small_et_is_relabelled_as_necrosis():
    wt, tc, et = _box((2, 2, 2), 10), _box((4, 4, 4), 5), _box((5, 5, 5), 2)  # ET: 8 voxels
    regions = _brats(wt, tc, et)
    out = PostprocessRules(et_min_voxels=9).apply(regions, BRATS)
    assert not out[2].any()
    assert np.array_equal(out[0], regions[0]) and np.array_equal(out[1], regions[1])  # kept in TC (and WT)
    assert np.array_equal(PostprocessRules(et_min_voxels=8).apply(regions, BRATS), regions)  # 8 is not < 8


def test_region_order_is_read_from_the_names():
    wt, tc, et = _box((2, 2, 2), 10), _box((4, 4, 4), 5), _box((5, 5, 5), 2)
    regions = np.stack([wt, et | tc, et])  # order WT, TC, ET
    out = PostprocessRules(et_min_voxels=9).apply(regions, ["WT", "TC", "ET"])
    assert not out[2].any() and np.array_equal(out[1], regions[1])


def test_apply_rejects_rules_that_do_not_fit_the_regions():
    fg = _box((2, 2, 2), 4)[None]
    with pytest.raises(ValueError, match="'TC'.*not among region_names"):
        PostprocessRules({"TC": 5}).apply(fg, ["FG"])
    with pytest.raises(ValueError, match="et_min_voxels needs the regions TC, WT and ET"):
        PostprocessRules(et_min_voxels=5).apply(fg, ["FG"])
    with pytest.raises(ValueError, match=r"regions must be shaped \(R, X, Y, Z\)"):
        PostprocessRules({"FG": 5}).apply(fg[0], ["FG"])
    with pytest.raises(ValueError, match="2 region_names"):
        PostprocessRules({"FG": 5}).apply(fg, ["FG", "X"])


# --- (de)serialisation ---------------------------------------------------------------------------


def test_to_dict_from_dict_round_trip_through_json():
    rules = PostprocessRules({"TC": 0, "WT": 50, "ET": 10}, et_min_voxels=200)
    data = json.loads(json.dumps(rules.to_dict()))
    assert data == {"min_component_voxels": {"TC": 0, "WT": 50, "ET": 10}, "et_min_voxels": 200}
    again = PostprocessRules.from_dict(data)
    assert again == rules and again.to_dict() == rules.to_dict()
    assert not again.is_noop and PostprocessRules.from_dict({}).is_noop
    assert PostprocessRules({"TC": 0, "WT": 0}).is_noop


def test_describe_is_plain_json():
    d = PostprocessRules({"WT": 50, "TC": 0}, et_min_voxels=200).describe()
    assert json.loads(json.dumps(d)) == d
    assert d["is_noop"] is False and d["et_min_voxels"] == 200
    assert len(d["steps"]) == 2 and "50 voxels" in d["steps"][0] and "necrosis" in d["steps"][1]
    assert PostprocessRules().describe()["steps"] == ["none"]


@pytest.mark.parametrize("data, field", [
    ([1, 2], "must be a dict"),
    ({"min_size": 3}, "min_size"),
    ({"min_component_voxels": [50]}, "min_component_voxels must be a mapping"),
    ({"min_component_voxels": {"TC": -1}}, r"min_component_voxels\['TC'\]"),
    ({"min_component_voxels": {"TC": 2.5}}, r"min_component_voxels\['TC'\]"),
    ({"min_component_voxels": {"TC": True}}, r"min_component_voxels\['TC'\]"),
    ({"min_component_voxels": {3: 10}}, "min_component_voxels keys"),
    ({"et_min_voxels": "200"}, "et_min_voxels"),
    ({"et_min_voxels": -5}, "et_min_voxels"),
])
def test_bad_dicts_are_rejected_naming_the_field(data, field):
    with pytest.raises(ValueError, match=field):
        PostprocessRules.from_dict(data)


# --- fit -----------------------------------------------------------------------------------------


def _fg_case(gt: np.ndarray, pred: np.ndarray):
    return pred[None], gt[None], SPACING


def test_fit_keeps_a_rule_that_removes_tiny_false_positives():
    lesion, other = _box((2, 2, 2), 6), _box((3, 14, 3), 4)
    fp1, fp2 = _box((18, 18, 18), 2), _box((20, 2, 20), (1, 1, 3))  # 8 and 3 voxels
    cases = [_fg_case(lesion, lesion | fp1), _fg_case(lesion | other, lesion | other | fp2),
             _fg_case(other, other)]
    rules, report = PostprocessRules.fit(cases, ["FG"], candidates=(5, 10, 100))
    assert rules.min_component_voxels == {"FG": 10}  # removes both blobs; 100 would also remove `other` (64)
    assert report["n_cases"] == 3
    assert report["dice_after"]["FG"] == 1.0 > report["dice_before"]["FG"]
    assert report["scores"]["min_component_voxels[FG]"]["100"] < 1.0
    assert json.loads(json.dumps(report)) == report
    assert np.array_equal(rules.apply(cases[0][0], ["FG"])[0], lesion)


def test_fit_rejects_a_rule_that_would_delete_true_small_lesions():
    lesion, small = _box((2, 2, 2), 6), _box((18, 18, 18), 2)  # the 8-voxel part is a real lesion
    cases = [_fg_case(lesion | small, lesion | small), _fg_case(lesion, lesion)]
    rules, report = PostprocessRules.fit(cases, ["FG"], candidates=(5, 10, 100))
    assert rules.min_component_voxels == {"FG": 0} and rules.is_noop
    assert report["dice_after"] == report["dice_before"]
    assert report["scores"]["min_component_voxels[FG]"]["10"] < report["scores"]["min_component_voxels[FG]"]["0"]


def test_fit_keeps_nothing_when_no_candidate_changes_anything():
    lesion = _box((2, 2, 2), 6)
    rules, _ = PostprocessRules.fit([_fg_case(lesion, lesion)], ["FG"], candidates=(5,))
    assert rules.is_noop


def test_fit_chooses_the_et_relabel_volume():
    wt, tc = _box((2, 2, 2), 12), _box((4, 4, 4), 6)
    small_et, real_et = _box((5, 5, 5), 2), _box((5, 5, 5), 3)  # 8 and 27 voxels
    no_et = np.zeros(SHAPE, dtype=bool)
    cases = [
        (_brats(wt, tc, small_et), _brats(wt, tc, no_et), SPACING),   # ET predicted where there is none
        (_brats(wt, tc, real_et), _brats(wt, tc, real_et), SPACING),  # a true small ET
    ]
    rules, report = PostprocessRules.fit(cases, BRATS, candidates=(5,), et_candidates=(10, 100))
    assert rules.et_min_voxels == 10
    assert rules.min_component_voxels == {"TC": 0, "WT": 0, "ET": 0}
    assert report["dice_before"]["ET"] == pytest.approx(0.5)
    assert report["dice_after"]["ET"] == 1.0
    assert report["dice_after"]["TC"] == report["dice_before"]["TC"] == 1.0
    assert list(report["scores"]) == ["min_component_voxels[WT]", "min_component_voxels[TC]",
                                      "min_component_voxels[ET]", "et_min_voxels"]
    # without et_candidates the ET rule stays off
    rules, report = PostprocessRules.fit(cases, BRATS, candidates=(5,), et_candidates=None)
    assert rules.et_min_voxels == 0 and "et_min_voxels" not in report["scores"]


def test_fit_rejects_bad_input():
    lesion = _box((2, 2, 2), 4)
    case = _fg_case(lesion, lesion)
    with pytest.raises(ValueError, match="cases must be a non-empty sequence"):
        PostprocessRules.fit([], ["FG"])
    with pytest.raises(ValueError, match=r"cases\[0\] must be"):
        PostprocessRules.fit([(lesion[None], lesion[None])], ["FG"])
    with pytest.raises(ValueError, match="candidates must hold at least one positive size"):
        PostprocessRules.fit([case], ["FG"], candidates=(0,))
    with pytest.raises(ValueError, match=r"candidates\[1\]"):
        PostprocessRules.fit([case], ["FG"], candidates=(5, -1))
    with pytest.raises(ValueError, match="spacing"):
        PostprocessRules.fit([(lesion[None], lesion[None], (1.0, 0.0, 1.0))], ["FG"])
    with pytest.raises(ValueError, match="region_names must be unique"):
        PostprocessRules.fit([case], ["FG", "FG"])
    with pytest.raises(ValueError, match="min_gain"):
        PostprocessRules.fit([case], ["FG"], min_gain=-1.0)
