"""Readers for every layout and the bad-input checks (singr.data.readers, singr.io)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from singr.data import (
    CaseFiles,
    detect_layout,
    discover_cases,
    find_case_folder_files,
    load_case,
    load_case_from_files,
)
from singr.errors import SingrInputError
from singr.io import atomic_write, read_nifti, write_nifti

SHAPE = (8, 9, 10)
B20 = ("flair", "t1", "t1ce", "t2")
B23 = ("t2f", "t1n", "t1c", "t2w")


def _label(values=(0, 1, 2, 4)) -> np.ndarray:
    lab = np.zeros(SHAPE, dtype=np.uint8)
    for i, v in enumerate(values):
        lab[i] = v
    return lab


def make_brats2020(root: Path, write_nii, case="BraTS20_Training_001", ext=".nii.gz", label=True,
                   mods=B20, label_values=(0, 1, 2, 4)) -> Path:
    folder = root / case
    for c, m in enumerate(mods):
        write_nii(folder / f"{case}_{m}{ext}", np.full(SHAPE, c + 1, dtype=np.float32) + np.arange(10))
    if label:
        write_nii(folder / f"{case}_seg{ext}", _label(label_values))
    return folder


def make_brats2023(root: Path, write_nii, case="BraTS-GLI-00000-000") -> Path:
    folder = root / case
    for c, m in enumerate(B23):
        # store t2f etc. with a marker value = canonical index + 1
        write_nii(folder / f"{case}-{m}.nii.gz", np.full(SHAPE, c + 1, dtype=np.int16))
    write_nii(folder / f"{case}-seg.nii.gz", _label((0, 1, 2, 3)))
    return folder


# --------------------------------------------------------------------------- io

def test_read_write_nifti_roundtrip(tmp_path, write_nii):
    arr = np.random.default_rng(0).random(SHAPE).astype(np.float64)
    aff = np.diag([1.0, 2.0, 3.0, 1.0])
    src = write_nii(tmp_path / "a.nii", arr, aff)
    data, affine, header = read_nifti(src)
    assert data.dtype == np.float32 and data.shape == SHAPE
    assert np.allclose(affine, aff)
    out = write_nifti(tmp_path / "b.nii.gz", data, affine, header)
    back, aff2, hdr2 = read_nifti(out)
    assert np.array_equal(back, data) and np.allclose(aff2, aff)
    assert hdr2.get_data_dtype() == np.float32
    lab = write_nifti(tmp_path / "c.nii.gz", np.ones(SHAPE, dtype=np.int64), aff)
    assert read_nifti(lab)[0].dtype == np.int32
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_read_nifti_drops_trailing_singleton(tmp_path, write_nii):
    p = write_nii(tmp_path / "x.nii.gz", np.zeros(SHAPE + (1,), dtype=np.int16))
    data, _, _ = read_nifti(p)
    assert data.shape == SHAPE and data.dtype == np.int16


def test_atomic_write_removes_temp_on_error(tmp_path):
    target = tmp_path / "out.txt"

    def boom(tmp: Path):
        tmp.write_text("half")
        raise RuntimeError("fail")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert list(tmp_path.iterdir()) == []
    atomic_write(target, lambda tmp: tmp.write_text("ok"))
    assert target.read_text() == "ok" and list(tmp_path.iterdir()) == [target]


def test_read_nifti_garbage(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"this is not a nifti file at all" * 10)
    with pytest.raises(SingrInputError, match=r"case c1: .*bad\.nii\.gz: cannot read"):
        read_nifti(bad, case="c1")


# --------------------------------------------------------------------------- BraTS 2020

@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_brats2020(tmp_path, write_nii, ext):
    make_brats2020(tmp_path, write_nii, "BraTS20_Training_002", ext=ext)
    make_brats2020(tmp_path, write_nii, "BraTS20_Training_001", ext=ext)
    (tmp_path / "name_mapping.csv").write_text("x")
    assert detect_layout(tmp_path) == "brats2020"
    cases = discover_cases(tmp_path)
    assert [c.case_id for c in cases] == ["BraTS20_Training_001", "BraTS20_Training_002"]
    assert list(cases[0].images) == list(B20) and cases[0].layout == "brats2020"
    lc = load_case(cases[0])
    assert lc.image.shape == (4,) + SHAPE and lc.image.dtype == np.float32
    assert lc.label.dtype == np.uint8 and set(np.unique(lc.label)) == {0, 1, 2, 4}
    assert lc.label_convention == "brats2020" and lc.modalities == list(B20)
    assert lc.spacing == (1.0, 1.0, 1.0) and lc.affine.shape == (4, 4)
    assert [lc.image[c, 0, 0, 0] for c in range(4)] == [1, 2, 3, 4]


def test_brats2020_nested_and_segm_fallback_and_no_label(tmp_path, write_nii):
    data = tmp_path / "BraTS2020_TrainingData" / "MICCAI_BraTS2020_TrainingData"
    f = make_brats2020(data, write_nii, "BraTS20_Training_355", ext=".nii", label=False)
    write_nii(f / "W39_1998.09.19_Segm.nii", _label())
    make_brats2020(data, write_nii, "BraTS20_Training_356", ext=".nii", label=False)
    cases = discover_cases(tmp_path / "BraTS2020_TrainingData")
    assert cases[0].label.name == "W39_1998.09.19_Segm.nii"
    assert cases[1].label is None
    lc = load_case(cases[1])
    assert lc.label is None and lc.label_convention == "brats2020"


def test_brats2020_modality_subset(tmp_path, write_nii):
    make_brats2020(tmp_path, write_nii)
    (case,) = discover_cases(tmp_path, modalities=["t1c", "flair"])
    assert list(case.images) == ["flair", "t1ce"]
    assert load_case(case).image.shape == (2,) + SHAPE


# --------------------------------------------------------------------------- BraTS 2023

def test_brats2023(tmp_path, write_nii):
    make_brats2023(tmp_path, write_nii, "BraTS-GLI-00001-000")
    make_brats2023(tmp_path, write_nii, "BraTS-MEN-00002-001")
    assert detect_layout(tmp_path) == "brats2023"
    cases = discover_cases(tmp_path)
    assert [c.case_id for c in cases] == ["BraTS-GLI-00001-000", "BraTS-MEN-00002-001"]
    assert cases[0].images["flair"].name == "BraTS-GLI-00001-000-t2f.nii.gz"
    lc = load_case(cases[1])
    assert lc.label_convention == "brats2023" and set(np.unique(lc.label)) == {0, 1, 2, 3}
    assert [lc.image[c, 0, 0, 0] for c in range(4)] == [1, 2, 3, 4]


def test_brats2023_label_without_et_falls_back(tmp_path, write_nii):
    f = make_brats2023(tmp_path, write_nii)
    write_nii(f / f"{f.name}-seg.nii.gz", _label((0, 1, 2)))
    assert load_case(discover_cases(tmp_path)[0]).label_convention == "brats2023"


def test_find_case_folder_files(tmp_path, write_nii):
    f20 = make_brats2020(tmp_path, write_nii)
    f23 = make_brats2023(tmp_path, write_nii)
    assert find_case_folder_files(f20).layout == "brats2020"
    c23 = find_case_folder_files(f23)
    assert c23.layout == "brats2023" and list(c23.images) == list(B20)
    empty = tmp_path / "empty_case"
    empty.mkdir()
    with pytest.raises(SingrInputError, match="case empty_case: .*no MR files in the case folder"):
        find_case_folder_files(empty)


def test_case_folder_with_plain_modality_names(tmp_path, write_nii):
    """``t1c.nii.gz`` ... (as the shipped example and ../shared/data/brats-case name them)."""
    folder = tmp_path / "patient7"
    for c, m in enumerate(B23):
        write_nii(folder / f"{m}.nii.gz", np.full(SHAPE, c + 1, dtype=np.float32))
    write_nii(folder / "seg.nii.gz", _label((0, 1, 2, 3)))
    cf = find_case_folder_files(folder)
    assert cf.naming == "brats2023" and cf.label is not None
    lc = load_case(cf)
    assert [lc.image[c, 0, 0, 0] for c in range(4)] == [1, 2, 3, 4]
    assert lc.label_convention == "brats2023" and lc.label is not None
    (folder / "t2w.nii.gz").unlink()
    with pytest.raises(SingrInputError, match=r"missing modalities \['t2w'\] in the case folder"):
        find_case_folder_files(folder)
    # without a label, the naming decides the convention written back (ET = 3 for BraTS 2023 names)
    write_nii(folder / "t2w.nii.gz", np.full(SHAPE, 4, dtype=np.float32))
    (folder / "seg.nii.gz").unlink()
    assert load_case(find_case_folder_files(folder)).label_convention == "brats2023"


def write_raw_sform(path: Path, array: np.ndarray, srow: np.ndarray) -> Path:
    """A NIfTI whose header holds ``srow`` (3 x 4) as its sform, written as it is (nibabel
    would refuse to build such an image from an affine)."""
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape(array.shape)
    hdr.set_data_dtype(array.dtype)
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = srow[0], srow[1], srow[2]
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, None, header=hdr), str(path))
    return path


@pytest.mark.parametrize("srow,needle", [
    (np.zeros((3, 4)), "singular"),
    (np.array([[1.0, 0, 0, 0], [0, np.nan, 0, 0], [0, 0, 1.0, 0]]), "NaN or inf"),
])
def test_degenerate_affine_is_refused(tmp_path, srow, needle):
    folder = tmp_path / "case"
    for m in B20:
        write_raw_sform(folder / f"{m}.nii.gz", np.ones(SHAPE, dtype=np.float32), srow)
    with pytest.raises(SingrInputError, match=f"{needle}.*expected a valid voxel-to-world matrix"):
        load_case(find_case_folder_files(folder))


# --------------------------------------------------------------------------- LGG

def make_lgg(root: Path, case="TCGA_CS_4941_19960909", n=10, masks=True) -> Path:
    import tifffile

    folder = root / case
    folder.mkdir(parents=True)
    for k in range(1, n + 1):
        rgb = np.zeros((6, 7, 3), dtype=np.uint8)
        rgb[..., 0], rgb[..., 1], rgb[..., 2] = 100 + k, k, 200 + k  # FLAIR channel holds k
        tifffile.imwrite(folder / f"{case}_{k}.tif", rgb)
        if masks:
            mask = np.zeros((6, 7), dtype=np.uint8)
            mask[k % 6, 1] = 255
            tifffile.imwrite(folder / f"{case}_{k}_mask.tif", mask)
    return folder


def test_lgg(tmp_path):
    make_lgg(tmp_path)
    make_lgg(tmp_path, "TCGA_CS_4942_19970222", n=3)
    (tmp_path / "data.csv").write_text("x")
    assert detect_layout(tmp_path) == "lgg"
    cases = discover_cases(tmp_path)
    assert [c.case_id for c in cases] == ["TCGA_CS_4941_19960909", "TCGA_CS_4942_19970222"]
    lc = load_case(cases[0])
    assert lc.image.shape == (1, 6, 7, 10) and lc.modalities == ["flair"]
    assert lc.image[0, 0, 0].tolist() == list(range(1, 11))  # integer order, not 1, 10, 2, ...
    assert lc.label.dtype == np.uint8 and set(np.unique(lc.label)) == {0, 1}
    assert lc.label[10 % 6, 1, 9] == 1 and lc.label_convention == "binary"
    assert lc.spacing == (1.0, 1.0, 1.0)
    (c3,) = [c for c in discover_cases(tmp_path, modalities=["pre", "flair", "post"], spacing=(1, 1, 3))
             if c.case_id.endswith("4942_19970222")]
    lc3 = load_case(c3)
    assert lc3.image.shape == (3, 6, 7, 3) and lc3.image[:, 0, 0, 2].tolist() == [103, 3, 203]
    assert lc3.spacing == (1.0, 1.0, 3.0) and lc3.affine[2, 2] == 3.0


def test_lgg_missing_mask_slice(tmp_path):
    f = make_lgg(tmp_path, n=4)
    (f / f"{f.name}_3_mask.tif").unlink()
    with pytest.raises(SingrInputError, match=rf"case {f.name}: .*_3_mask\.tif: missing mask slice"):
        load_case(discover_cases(tmp_path)[0])


# --------------------------------------------------------------------------- nnU-Net

def make_nnunet(root: Path, write_nii, channels, labels, cases=("BRATS_001", "BRATS_002"), label_values=(0, 1, 2, 3)):
    (root / "dataset.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(
        {"channel_names": channels, "labels": labels, "numTraining": len(cases), "file_ending": ".nii.gz"}))
    for case in cases:
        for k in channels:
            write_nii(root / "imagesTr" / f"{case}_{int(k):04d}.nii.gz", np.full(SHAPE, int(k) + 10, np.float32))
        write_nii(root / "labelsTr" / f"{case}.nii.gz", _label(label_values))


def test_nnunet_brats_reordered_and_remapped(tmp_path, write_nii):
    # nnU-Net Dataset137 style: channels T1, T1ce, T2, FLAIR; region labels; 1=ED, 2=NCR, 3=ET.
    make_nnunet(tmp_path, write_nii, {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"},
                {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3})
    assert detect_layout(tmp_path) == "nnunet"
    cases = discover_cases(tmp_path)
    assert [c.case_id for c in cases] == ["BRATS_001", "BRATS_002"]
    assert list(cases[0].images) == list(B20)
    lc = load_case(cases[0])
    assert [lc.image[c, 0, 0, 0] for c in range(4)] == [13, 10, 11, 12]  # flair, t1, t1ce, t2
    assert lc.label_convention == "brats2023"
    assert lc.label[1, 0, 0] == 2 and lc.label[2, 0, 0] == 1 and lc.label[3, 0, 0] == 3  # ED 1->2, NCR 2->1


def test_nnunet_binary_and_unknown_channels(tmp_path, write_nii):
    make_nnunet(tmp_path, write_nii, {"0": "CT", "1": "PET"}, {"background": 0, "lesion": 1},
                cases=("x_1",), label_values=(0, 1))
    (case,) = discover_cases(tmp_path, layout="nnunet")
    assert list(case.images) == ["CT", "PET"] and case.label_convention == "binary"
    lc = load_case(case)
    assert lc.image.shape == (2,) + SHAPE and lc.label.max() == 1


def test_nnunet_unknown_labels_need_convention(tmp_path, write_nii):
    make_nnunet(tmp_path, write_nii, {"0": "FLAIR"}, {"background": 0, "a": 1, "b": 2}, cases=("x_1",),
                label_values=(0, 1, 2))
    with pytest.raises(SingrInputError, match="dataset.json: cannot tell the label convention"):
        discover_cases(tmp_path)
    (case,) = discover_cases(tmp_path, label_convention="brats2020")
    assert load_case(case).label_convention == "brats2020"


# --------------------------------------------------------------------------- load_case_from_files

def test_load_case_from_files(tmp_path, write_nii):
    f23 = make_brats2023(tmp_path, write_nii)
    files = {m: f23 / f"{f23.name}-{m}.nii.gz" for m in reversed(B23)}
    lc = load_case_from_files(files, case_id="p1", label=f23 / f"{f23.name}-seg.nii.gz", label_convention="auto")
    assert [lc.image[c, 0, 0, 0] for c in range(4)] == [1, 2, 3, 4] and lc.label_convention == "brats2023"
    lc2 = load_case_from_files([files[m] for m in B23])
    assert np.array_equal(lc2.image, lc.image) and lc2.label is None
    with pytest.raises(SingrInputError, match=r"case p1: missing modalities \['t2w'\]; expected"):
        load_case_from_files({k: v for k, v in files.items() if k != "t2w"}, case_id="p1")
    with pytest.raises(SingrInputError, match="unexpected modality 'dwi'"):
        load_case_from_files({**files, "dwi": files["t2w"]}, case_id="p1")


def test_load_case_from_4d_file(tmp_path, write_nii):
    arr = np.stack([np.full(SHAPE, c, np.float32) for c in range(4)], axis=-1)
    p = write_nii(tmp_path / "all.nii.gz", arr)
    lc = load_case_from_files(p)
    assert lc.image.shape == (4,) + SHAPE and lc.image[:, 0, 0, 0].tolist() == [0, 1, 2, 3]
    with pytest.raises(SingrInputError, match="4-D with 4 channels"):
        load_case_from_files(write_nii(tmp_path / "three.nii.gz", arr[..., :3]))


# --------------------------------------------------------------------------- bad inputs

def _case_dir(tmp_path, write_nii):
    return make_brats2020(tmp_path, write_nii)


def _only(tmp_path) -> CaseFiles:
    (case,) = discover_cases(tmp_path)
    return case


def test_missing_modality(tmp_path, write_nii):
    f = _case_dir(tmp_path, write_nii)
    (f / f"{f.name}_t1ce.nii.gz").unlink()
    with pytest.raises(SingrInputError, match=rf"case {f.name}: .*_t1ce\.nii\.gz: missing t1ce image: "
                                              rf"expected file {f.name}_t1ce\.nii\.gz"):
        load_case(_only(tmp_path))


def test_missing_modality_is_named_as_the_2023_case_names_it(tmp_path, write_nii):
    f = make_brats2023(tmp_path, write_nii)
    (f / f"{f.name}-t1c.nii.gz").unlink()
    with pytest.raises(SingrInputError) as e:
        load_case(discover_cases(tmp_path)[0])
    msg = str(e.value)
    assert "t1c" in msg and f"{f.name}-t1c.nii.gz" in msg and "t1ce" not in msg, msg


def test_shape_mismatch(tmp_path, write_nii):
    f = _case_dir(tmp_path, write_nii)
    write_nii(f / f"{f.name}_t2.nii.gz", np.zeros((8, 9, 11), np.float32))
    with pytest.raises(SingrInputError, match=rf"case {f.name}: .*_t2\.nii\.gz: t2 image has shape \(8, 9, 11\)"):
        load_case(_only(tmp_path))


def test_label_shape_mismatch(tmp_path, write_nii):
    f = _case_dir(tmp_path, write_nii)
    write_nii(f / f"{f.name}_seg.nii.gz", np.zeros((8, 9, 9), np.uint8))
    with pytest.raises(SingrInputError, match=rf"case {f.name}: .*_seg\.nii\.gz: label has shape"):
        load_case(_only(tmp_path))


def test_affine_mismatch(tmp_path, write_nii):
    f = _case_dir(tmp_path, write_nii)
    write_nii(f / f"{f.name}_t1.nii.gz", np.zeros(SHAPE, np.float32), np.diag([1.0, 1.0, 1.5, 1.0]))
    with pytest.raises(SingrInputError, match=rf"case {f.name}: .*_t1\.nii\.gz: t1 image affine differs"):
        load_case(_only(tmp_path))
    assert load_case(_only(tmp_path), check=False).image.shape == (4,) + SHAPE


def test_unknown_label_value(tmp_path, write_nii):
    f = _case_dir(tmp_path, write_nii)
    write_nii(f / f"{f.name}_seg.nii.gz", _label((0, 1, 2, 4, 7)))
    with pytest.raises(SingrInputError, match=rf"case {f.name}: .*_seg\.nii\.gz: unexpected label values \[7\]"):
        load_case(_only(tmp_path))


def test_both_3_and_4_labels(tmp_path, write_nii):
    f = _case_dir(tmp_path, write_nii)
    write_nii(f / f"{f.name}_seg.nii.gz", _label((0, 3, 4)))
    with pytest.raises(SingrInputError, match=rf"case {f.name}: .*_seg\.nii\.gz: label map holds both 3 and 4"):
        load_case(_only(tmp_path))


def test_nan_voxels(tmp_path, write_nii):
    f = _case_dir(tmp_path, write_nii)
    arr = np.ones(SHAPE, np.float32)
    arr[0, 0, :3] = np.nan
    arr[1, 1, 1] = np.inf
    write_nii(f / f"{f.name}_flair.nii.gz", arr)
    with pytest.raises(SingrInputError, match=rf"case {f.name}: .*_flair\.nii\.gz: flair image: 4 non-finite "
                                              r"voxels \(3 NaN, 1 inf\)"):
        load_case(_only(tmp_path))


def test_2d_array(tmp_path, write_nii):
    f = _case_dir(tmp_path, write_nii)
    write_nii(f / f"{f.name}_flair.nii.gz", np.ones((8, 9), np.float32))
    with pytest.raises(SingrInputError, match=rf"case {f.name}: .*_flair\.nii\.gz: flair image: expected a 3-D "
                                              r"volume, got a 2-D array"):
        load_case(_only(tmp_path))


def test_unreadable_file(tmp_path, write_nii):
    f = _case_dir(tmp_path, write_nii)
    (f / f"{f.name}_t2.nii.gz").write_bytes(b"\x00garbage\xff" * 50)
    with pytest.raises(SingrInputError, match=rf"case {f.name}: .*_t2\.nii\.gz: cannot read as NIfTI"):
        load_case(_only(tmp_path))


def test_truncated_file(tmp_path, write_nii):
    f = _case_dir(tmp_path, write_nii)
    p = f / f"{f.name}_t2.nii"
    (f / f"{f.name}_t2.nii.gz").unlink()
    write_nii(p, np.ones(SHAPE, np.float32))
    p.write_bytes(p.read_bytes()[:400])
    with pytest.raises(SingrInputError, match=rf"case {f.name}: .*_t2\.nii: cannot read"):
        load_case(_only(tmp_path))


def test_empty_root(tmp_path):
    with pytest.raises(SingrInputError, match=re.escape(f"no cases found under {tmp_path}: expected one of")):
        discover_cases(tmp_path)
    with pytest.raises(SingrInputError, match="no cases found"):
        discover_cases(tmp_path, layout="brats2020")
    with pytest.raises(SingrInputError, match="data folder does not exist"):
        discover_cases(tmp_path / "nope")
    with pytest.raises(SingrInputError, match="unknown layout"):
        discover_cases(tmp_path, layout="brats2019")
