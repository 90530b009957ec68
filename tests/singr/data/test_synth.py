"""Synthetic BraTS-like data (singr.data.synth) through the real readers."""
from __future__ import annotations

import time

import numpy as np

from singr.data import detect_layout, discover_cases, load_case, synthesize_case, synthesize_dataset
from singr.regions import labels_to_regions


def test_case_contract_and_determinism():
    img, lab = synthesize_case((48, 48, 32), seed=5)
    assert img.shape == (4, 48, 48, 32) and img.dtype == np.float32
    assert lab.shape == (48, 48, 32) and lab.dtype == np.uint8
    assert set(np.unique(lab)) <= {0, 1, 2, 4}
    brain = img[0] > 0
    assert (img >= 0).all() and (brain == (img > 0).all(0)).all()
    assert not (lab > 0)[~brain].any()  # tumour inside the brain
    img2, lab2 = synthesize_case((48, 48, 32), seed=5)
    assert np.array_equal(img, img2) and np.array_equal(lab, lab2)
    assert not np.array_equal(lab, synthesize_case((48, 48, 32), seed=6)[1])


def test_contrasts():
    img, lab = synthesize_case((64, 64, 48), seed=1)
    flair, t1ce = img[0], img[2]
    brain = flair > 0
    healthy = brain & (lab == 0)
    assert flair[lab == 2].mean() > flair[healthy].mean()  # oedema bright on FLAIR
    if (lab == 4).any():
        assert t1ce[lab == 4].mean() > t1ce[healthy].mean()  # enhancing bright on T1ce
    if (lab == 1).any() and (lab == 4).any():
        assert t1ce[lab == 1].mean() < t1ce[lab == 4].mean()


def test_speed():
    synthesize_case((16, 16, 12), seed=0)  # warm up
    t = time.perf_counter()
    synthesize_case((96, 96, 64), seed=1)
    assert time.perf_counter() - t < 3.0  # about 0.5 s here; generous for shared CPUs


def test_regions_mostly_nonempty():
    nonempty = 0
    for s in range(10):
        _, lab = synthesize_case((32, 32, 24), seed=s)
        nonempty += bool(labels_to_regions(lab, "brats2020")[[0, 1]].reshape(2, -1).any(1).all())
    assert nonempty >= 8


def test_dataset_through_readers(synthetic_brats_root):
    root = synthetic_brats_root
    assert detect_layout(root) == "brats2020"
    cases = discover_cases(root)
    assert [c.case_id for c in cases] == [f"BraTS20_Training_{i:03d}" for i in (1, 2, 3)]
    lc = load_case(cases[0])
    assert lc.image.shape == (4, 32, 32, 24) and lc.spacing == (1.0, 1.0, 1.0)
    assert set(np.unique(lc.label)) <= {0, 1, 2, 4} and lc.label.any()
    assert lc.label_convention in ("brats2020",)  # 4 present or fallback
    img, lab = synthesize_case((32, 32, 24), seed=(0, 1))
    assert np.array_equal(lc.label, lab) and np.allclose(lc.image, img)


def test_dataset_skips_existing(tmp_path):
    folders = synthesize_dataset(tmp_path, n_cases=2, shape=(16, 16, 12), progress=False, compress=False,
                                 spacing=(1.0, 1.0, 2.0))
    f = folders[0] / "BraTS20_Training_001_flair.nii"
    mtime = f.stat().st_mtime_ns
    synthesize_dataset(tmp_path, n_cases=2, shape=(16, 16, 12), progress=False, compress=False)
    assert f.stat().st_mtime_ns == mtime
    assert load_case(discover_cases(tmp_path)[1]).spacing == (1.0, 1.0, 2.0)
