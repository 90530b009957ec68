"""Training-patch augmentation: PatchAugment against MONAI's transforms (the reference it replaces)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from singr.data.dataset import PatchAugment, PatchDataset, monai_augmentation, pad_to
from singr.errors import SingrInputError


def _patch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(4, 6, 7, 5)).astype(np.float32), rng.uniform(-1, 1, size=(3, 6, 7, 5)).astype(np.float32)


def test_flips_equal_monais():
    image, target = _patch()
    ours_i, ours_t = PatchAugment(1.0, 0.0, 0.1, 0.1)(image.copy(), target.copy(), np.random.default_rng(0))
    ref_i, ref_t = monai_augmentation(1.0, 0.0, 0.1, 0.1)(image.copy(), target.copy(), np.random.default_rng(0))
    np.testing.assert_array_equal(ours_i, ref_i)
    np.testing.assert_array_equal(ours_t, ref_t)
    assert ours_i.flags.c_contiguous and ours_t.flags.c_contiguous and ours_i.dtype == np.float32


def test_padding_then_flips_equal_pad_to_then_monais():
    image, target = _patch(2)  # (.., 6, 7, 5) padded to 8 x 7 x 8: padding lands at the start of flipped axes
    for flip in (0.0, 1.0):
        ours_i, ours_t = PatchAugment(flip, 0.0, 0.1, 0.1)(image, target, np.random.default_rng(0), (8, 7, 8),
                                                           (0.0, -1.0))
        ref_i, ref_t = monai_augmentation(flip, 0.0, 0.1, 0.1)(image, target, np.random.default_rng(0), (8, 7, 8),
                                                               (0.0, -1.0))  # pad_to, then MONAI's flips
        np.testing.assert_array_equal(ours_i, ref_i)
        np.testing.assert_array_equal(ours_t, ref_t)
        assert ours_i.shape == (4, 8, 7, 8) and (ours_t == -1).sum() == 3 * (8 * 7 * 8 - 6 * 7 * 5)


def test_the_inputs_are_never_changed():
    image, target = _patch(3)
    keep_i, keep_t = image.copy(), target.copy()
    for flip in (0.0, 1.0):  # no flip, no padding: the output must still be a copy (a cached case is the input)
        out_i, out_t = PatchAugment(flip, 1.0, 0.5, 0.5)(image, target, np.random.default_rng(1))
        assert not np.shares_memory(out_i, image) and not np.shares_memory(out_t, target)
    np.testing.assert_array_equal(image, keep_i)
    np.testing.assert_array_equal(target, keep_t)


def test_intensity_is_scale_then_shift_of_the_drawn_values():
    image, target = _patch(1)
    rng = np.random.default_rng(7)
    got_i, got_t = PatchAugment(0.0, 1.0, 0.1, 0.2)(image.copy(), target.copy(), rng)
    draws = np.random.default_rng(7)
    for _ in range(3):  # the three flip coins (none taken with flip_prob 0)
        draws.random()
    draws.random()
    f = draws.uniform(-0.1, 0.1)
    draws.random()
    o = draws.uniform(-0.2, 0.2)
    np.testing.assert_allclose(got_i, image * np.float32(1 + f) + np.float32(o), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got_t, target)  # the target is never scaled or shifted
    assert f != 0 and o != 0


def test_each_axis_flips_with_its_probability():
    aug = PatchAugment(0.3, 0.0, 0.0, 0.0)
    x = np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2)
    counts = np.zeros(3)
    n = 3000
    rng = np.random.default_rng(0)
    for _ in range(n):
        y, _ = aug(x, x, rng)
        first = y[0, 0, 0, 0]  # x[0, a, b, c] = 4a + 2b + c: the corner tells which axes flipped
        counts += [int(first) >> 2 & 1, int(first) >> 1 & 1, int(first) & 1]
    np.testing.assert_allclose(counts / n, 0.3, atol=0.04)


def test_bad_settings_are_named():
    with pytest.raises(SingrInputError, match="augment.flip_prob = 1.5"):
        PatchAugment(1.5, 0.5, 0.1, 0.1)
    with pytest.raises(SingrInputError, match="augment.intensity_shift = -0.1"):
        PatchAugment(0.5, 0.5, 0.1, -0.1)


def test_pad_to_fills_the_end_only():
    a = np.ones((2, 3, 4, 5), np.float32)
    p = pad_to(a, (4, 4, 6), -1.0)
    assert p.shape == (2, 4, 4, 6) and (p[:, :3, :, :5] == 1).all() and (p[:, 3] == -1).all()
    assert (p[:, :, :, 5] == -1).all() and pad_to(a, (3, 4, 5), 0.0) is a


def test_dataset_patches_are_a_function_of_seed_epoch_and_index_and_leave_the_case_alone(tmp_path):
    from singr.preprocess import PreparedCase
    from singr.sing import SingSettings

    rng = np.random.default_rng(0)
    regions = np.zeros((3, 12, 12, 12), bool)
    regions[:, 3:8, 3:8, 3:8] = True
    prep = PreparedCase("c1", rng.normal(size=(4, 12, 12, 12)).astype(np.float32), regions, (1.0, 1.0, 1.0),
                        ("TC", "WT", "ET"), "brats2023")

    def make() -> PatchDataset:
        ds = PatchDataset(tmp_path, ["c1"], (12, 12, 12), 6, False, SingSettings(lam=0.5), 0.5,
                          PatchAugment(0.5, 1.0, 0.1, 0.1), seed=3)
        ds._cases["c1"] = prep
        return ds
    a, b = make(), make()
    kept = prep.image.copy()
    for i in (0, 5):
        x, y = a[i], b[i]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["target"], y["target"])
    assert not torch.equal(a[0]["image"], a[1]["image"])
    b.set_epoch(1)
    assert not torch.equal(a[0]["image"], b[0]["image"])
    np.testing.assert_array_equal(prep.image, kept)  # in-memory case: intensity changes never reach it


def _small_tumour_dataset(tmp_path, fg_oversample: float | None, regression: bool = False) -> PatchDataset:
    """A 40^3 case with a 3^3 tumour in a corner, 8^3 patches: most random crops miss it."""
    from singr.preprocess import PreparedCase
    from singr.sing import SingSettings

    rng = np.random.default_rng(1)
    regions = np.zeros((3, 40, 40, 40), bool)
    regions[1, 2:5, 33:36, 1:4] = True  # WT only: the union of the regions is what counts
    regions[2, 3, 34, 2] = True
    prep = PreparedCase("c1", rng.normal(size=(4, 40, 40, 40)).astype(np.float32), regions, (1.0, 1.0, 1.0),
                        ("TC", "WT", "ET"), "brats2023")
    extra = {} if fg_oversample is None else {"fg_oversample": fg_oversample}
    ds = PatchDataset(tmp_path, ["c1"], (8, 8, 8), 40, regression, SingSettings(lam=0.5), 0.5,
                      PatchAugment(0.5, 1.0, 0.1, 0.1), seed=5, **extra)
    ds._cases["c1"] = prep
    return ds


def test_fg_oversample_zero_draws_the_samples_of_the_default(tmp_path):
    a, b = _small_tumour_dataset(tmp_path, None), _small_tumour_dataset(tmp_path, 0.0)
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["target"], y["target"])
    assert not b._fg  # never looked for the foreground


def test_fg_oversample_one_centres_every_crop_on_the_tumour(tmp_path):
    full = _small_tumour_dataset(tmp_path, 1.0)
    none = _small_tumour_dataset(tmp_path, 0.0)
    hits = [bool(full[i]["target"].sum() > 0) for i in range(len(full))]
    assert all(hits)
    assert sum(bool(none[i]["target"].sum() > 0) for i in range(len(none))) < len(none) // 2
    assert full[0]["image"].shape == (4, 8, 8, 8) and full[0]["target"].shape == (3, 8, 8, 8)
    assert len(full._fg["c1"]) == 27  # found once, cached: the union of the regions
    again = _small_tumour_dataset(tmp_path, 1.0)
    assert torch.equal(again[3]["image"], full[3]["image"])  # still a function of (seed, epoch, index)


def test_fg_oversample_falls_back_to_random_crops_without_foreground(tmp_path):
    ds = _small_tumour_dataset(tmp_path, 1.0)
    ds._cases["c1"].regions[:] = False
    assert ds[0]["image"].shape == (4, 8, 8, 8) and len(ds._fg["c1"]) == 0


def test_foreground_window_is_centred_and_clipped_to_the_volume():
    from singr.data.dataset import foreground_window

    assert foreground_window((40, 40, 40), (8, 8, 8), (20, 20, 20)) == (slice(16, 24),) * 3
    assert foreground_window((40, 40, 40), (8, 8, 8), (1, 38, 20)) == (slice(0, 8), slice(32, 40), slice(16, 24))
    assert foreground_window((5, 40, 40), (8, 8, 8), (2, 0, 39)) == (slice(0, 5), slice(0, 8), slice(32, 40))


def test_a_bad_fg_oversample_is_named(tmp_path):
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="fg_oversample"):
            _small_tumour_dataset(tmp_path, bad)
