"""The preprocessed cache (singr.preprocess, format version 2): each case cropped to its
foreground box and stored as blosc2 arrays. Crop and paste-back are exact, windows read from
the stored arrays equal the same windows of the full volume, and an old or corrupt cache is
rebuilt by prepare_case and refused by load_prepared, never misread."""
from __future__ import annotations

import json

import numpy as np
import pytest

from singr.data import discover_cases, load_case, synthesize_dataset
from singr.errors import SingrInputError
from singr.preprocess import PREP_VERSION, foreground_box, load_prepared, normalize_image, prepare_case
from singr.regions import labels_to_regions


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """One synthetic case (48 x 40 x 32) padded with empty background, so the crop has work to do."""
    root = tmp_path_factory.mktemp("prep_data")
    synthesize_dataset(root, n_cases=1, shape=(48, 40, 32), seed=3, progress=False)
    return discover_cases(root)[0]


def test_foreground_box():
    img = np.zeros((2, 10, 12, 14), np.float32)
    img[1, 2:5, 3, 4:9] = 1.0
    lab = np.zeros((10, 12, 14), np.uint8)
    lab[7, 6, 5] = 2  # a label outside the image's non-zero voxels still counts
    assert foreground_box(img, lab) == ((2, 8), (3, 7), (4, 9))
    assert foreground_box(img) == ((2, 5), (3, 4), (4, 9))
    assert foreground_box(np.zeros((1, 3, 4, 5))) == ((0, 3), (0, 4), (0, 5))  # nothing: the whole volume


def test_crop_is_exact_and_pastes_back(case, tmp_path):
    full = load_case(case)
    prep = prepare_case(case, tmp_path / "cache")
    box = foreground_box(full.image, full.label)
    assert prep.crop == box and prep.full_shape == full.image.shape[1:]
    assert prep.image.shape[1:] == tuple(hi - lo for lo, hi in box) and prep.image.shape[1:] != full.image.shape[1:]
    # normalising the crop is normalising the volume (every non-zero voxel is inside the crop)
    np.testing.assert_allclose(prep.paste(prep.image), normalize_image(full.image), rtol=1e-6, atol=1e-6)
    regions = labels_to_regions(full.label, full.label_convention)
    assert np.array_equal(prep.paste(prep.regions), regions)
    labels = np.arange(np.prod(prep.image.shape[1:]), dtype=np.int32).reshape(prep.image.shape[1:])
    back = prep.paste(labels, fill=-1)
    win = tuple(slice(lo, hi) for lo, hi in box)
    assert back.shape == full.image.shape[1:] and np.array_equal(back[win], labels) and (back == -1).sum() == \
        back.size - labels.size
    with pytest.raises(ValueError, match="does not fit the crop"):
        prep.paste(labels[:-1])
    # what is stored, read whole and by window, is what prepare_case returned
    again = load_prepared(tmp_path / "cache", case.case_id)
    assert np.array_equal(again.image, prep.image) and np.array_equal(again.regions, prep.regions)
    lazy = load_prepared(tmp_path / "cache", case.case_id, mmap=True)
    assert not isinstance(lazy.image, np.ndarray) and lazy.image.shape == prep.image.shape
    w = (slice(None), slice(3, 19), slice(0, 16), slice(5, 21))
    assert np.array_equal(lazy.image[w], prep.image[w])
    files = sorted(p.name for p in (tmp_path / "cache" / case.case_id).iterdir())
    assert files == ["image.b2nd", "meta.json", "regions.b2nd"]


def test_an_old_cache_is_rebuilt_never_misread(case, tmp_path):
    cache = tmp_path / "cache"
    prep = prepare_case(case, cache)
    root = cache / case.case_id
    meta = json.loads((root / "meta.json").read_text())
    # the version-1 layout: whole-volume .npy files and a meta.json without a crop
    np.save(root / "image.npy", np.zeros((4, 3, 3, 3), np.float32))
    np.save(root / "regions.npy", np.zeros((3, 3, 3, 3), np.uint8))
    old = {k: v for k, v in meta.items() if k not in ("crop", "full_shape")}
    (root / "meta.json").write_text(json.dumps({**old, "version": 1}))
    with pytest.raises(SingrInputError, match=r"older cache format \(version 1.*run preprocessing again"):
        load_prepared(cache, case.case_id)
    rebuilt = prepare_case(case, cache)
    assert json.loads((root / "meta.json").read_text())["version"] == PREP_VERSION
    assert not (root / "image.npy").exists() and not (root / "regions.npy").exists()  # the old files are gone
    assert np.array_equal(rebuilt.image, prep.image) and rebuilt.crop == prep.crop


def test_a_corrupt_array_is_rebuilt(case, tmp_path):
    cache = tmp_path / "cache"
    prep = prepare_case(case, cache)
    f = cache / case.case_id / "image.b2nd"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(SingrInputError, match="missing or corrupt"):
        load_prepared(cache, case.case_id)
    assert np.array_equal(prepare_case(case, cache).image, prep.image)
    assert load_prepared(cache, case.case_id).image.shape == prep.image.shape
