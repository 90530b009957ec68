"""DICOM in (series found, told apart, checked, read onto the NIfTI grid) and DICOM SEG out.

The real-looking data: the real BraTS case (../shared/data/brats-case, path from
SINGR_BRATS_CASE) written as four MR series of one study by ``singr.io.dicom_write``, cropped to
120 x 120 x 40 around the tumour for speed, and once at full size. The bad-series cases are
small synthetic series edited file by file.
"""
from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pydicom
import pytest

from singr.data.readers import discover_cases, load_case, load_case_from_files
from singr.data.readers.dicom import is_dicom_input, read_dicom_case
from singr.data.readers.dicom_modality import assign_series, classify_series, modality_of, parse_dicom_map
from singr.errors import SingrInputError
from singr.io.dicom_seg import SEGMENT_CODES, read_dicom_seg, write_dicom_seg
from singr.io.dicom_series import find_series, series_geometry
from singr.io.dicom_write import Study, write_dicom_case, write_dicom_series
from singr.preprocess import prepare_case
from singr.regions import labels_to_regions

DEFAULT = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "brats-case"
CROP = (slice(60, 180), slice(60, 180), slice(50, 90))
MODS = ["flair", "t1", "t1ce", "t2"]


def _root() -> Path:
    root = Path(os.environ.get("SINGR_BRATS_CASE", DEFAULT))
    if not (root / "seg.nii.gz").exists():
        if os.environ.get("CI"):
            pytest.fail(f"real BraTS case not found at {root} (set SINGR_BRATS_CASE)")
        pytest.skip(f"real BraTS case not found at {root}")
    return root


@pytest.fixture(scope="module")
def real_case():
    root = _root()
    return load_case_from_files({m: root / f"{m}.nii.gz" for m in ("t1n", "t1c", "t2w", "t2f")},
                                label=root / "seg.nii.gz", case_id="brats-case")


def crop(case):
    """The case cropped to CROP: image, label, affine (origin moved to the crop's corner)."""
    aff = case.affine.copy()
    aff[:3, 3] = aff[:3, :3] @ [s.start for s in CROP] + aff[:3, 3]
    return case.image[(slice(None),) + CROP].copy(), case.label[CROP].copy(), aff


@pytest.fixture(scope="module")
def crop_dicom(real_case, tmp_path_factory):
    """The cropped real case as four DICOM series of one study: (folder, image, label, affine)."""
    image, label, aff = crop(real_case)
    folder = tmp_path_factory.mktemp("dicom") / "crop-case"
    write_dicom_case(image, aff, real_case.modalities, folder)
    return folder, image, label, aff


def small_case(folder: Path, *, shape=(12, 10, 6), affine=None, descriptions=None, study=None):
    """Four small synthetic series (integer intensities) of one study in ``folder``."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 500, size=(4,) + shape).astype(np.float32)
    aff = np.diag([-1.0, -1.0, 2.0, 1.0]) if affine is None else affine
    files = write_dicom_case(image, aff, MODS, folder, descriptions=descriptions, study=study)
    return image, aff, files


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# --------------------------------------------------------------------------- reading


@pytest.mark.realdata
def test_round_trip_of_the_real_case_cropped(crop_dicom, real_case):
    folder, image, _, aff = crop_dicom
    assert is_dicom_input(folder)
    case, dicom = read_dicom_case(folder)
    assert case.modalities == MODS and case.case_id == "crop-case"
    np.testing.assert_array_equal(case.image, image)  # voxel for voxel, every modality
    np.testing.assert_allclose(case.affine, aff, atol=1e-4)
    assert case.spacing == pytest.approx((1.0, 1.0, 1.0))
    assert nib.aff2axcodes(case.affine) == nib.aff2axcodes(real_case.affine) == ("L", "P", "S")
    assert {m: s.description for m, s in dicom.series.items()} == {
        "flair": "FLAIR AX", "t1": "T1 MPRAGE pre", "t1ce": "AX T1 POST GD", "t2": "T2 TSE"}
    assert dicom.reference == "t1ce" and case.label_convention == "brats2023"
    # the NIfTI header written for the case keeps the geometry
    assert tuple(case.header.get_zooms()) == pytest.approx((1.0, 1.0, 1.0))
    np.testing.assert_allclose(case.header.get_best_affine(), aff, atol=1e-4)


@pytest.mark.realdata
def test_geometry_is_what_simpleitk_and_gdcm_give(crop_dicom, tmp_path):
    """The affine and voxel order equal SimpleITK's own NIfTI export of the series, read by nibabel,
    and the slice order equals GDCM's (GetGDCMSeriesFileNames)."""
    import SimpleITK as sitk

    folder, image, _, _ = crop_dicom
    series = find_series(folder)
    t1ce = next(s for s in series if s.description == "AX T1 POST GD")
    geo = series_geometry(t1ce)
    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(t1ce.files[0].parent), t1ce.uid)
    assert [Path(n).name for n in names] == [f.name for f in geo.files(t1ce)]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    sitk.WriteImage(reader.Execute(), str(tmp_path / "itk.nii.gz"))
    ref = nib.load(str(tmp_path / "itk.nii.gz"))
    np.testing.assert_allclose(geo.affine, ref.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(ref.dataobj), image[2])


@pytest.mark.realdata
def test_full_real_case_and_its_seg(real_case, tmp_path):
    """The whole real case (240 x 240 x 155, 620 slices) through DICOM and back; its label map
    through a DICOM SEG and back, voxel for voxel."""
    folder = tmp_path / "full"
    write_dicom_case(real_case.image, real_case.affine, real_case.modalities, folder)
    case, dicom = read_dicom_case(folder)
    np.testing.assert_array_equal(case.image, real_case.image)
    np.testing.assert_allclose(case.affine, real_case.affine, atol=1e-4)
    seg = write_dicom_seg(real_case.label, dicom.datasets(), tmp_path / "seg.dcm", label_convention="brats2023",
                          affine=case.affine)
    np.testing.assert_array_equal(read_dicom_seg(seg, dicom.datasets()), real_case.label)


@pytest.mark.realdata
def test_zip_and_non_image_files(crop_dicom, tmp_path):
    """A zip reads as the folder does; SEG objects and non-DICOM files among the series are left out."""
    folder, image, label, _ = crop_dicom
    work = tmp_path / "case"
    shutil.copytree(folder, work)
    (work / "README.txt").write_text("not DICOM")
    _, dicom = read_dicom_case(work)
    write_dicom_seg(label, dicom.datasets(), work / "extra" / "old_seg.dcm", label_convention="brats2023")
    z = tmp_path / "case.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(work.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(work).as_posix())
    assert is_dicom_input(z)
    case, dicom = read_dicom_case(z)
    assert case.case_id == "case" and len(find_series(work)) == 4
    np.testing.assert_array_equal(case.image, image)
    assert dicom.datasets()[0].get("PixelData") is None  # headers only: the temporary files are gone


def test_other_series_are_left_out_and_a_map_chooses(tmp_path):
    study = Study()
    image, aff, _ = small_case(tmp_path / "c", study=study)
    extra = tmp_path / "c" / "9_dwi"
    write_dicom_series(image[0], aff, extra, description="AX DWI b1000", series_number=9, study=study)
    write_dicom_series(image[2], aff, tmp_path / "c" / "8_sag", description="SAG T1 POST GD", series_number=8,
                       study=study)
    with pytest.raises(SingrInputError) as err:
        read_dicom_case(tmp_path / "c")
    msg = one_line(err)
    assert "t1ce claimed by 2 series (series 3 'AX T1 POST GD' and series 8 'SAG T1 POST GD')" in msg
    assert "series 9 'AX DWI b1000' -> ? (another kind of series)" in msg and "--dicom-map" in msg
    for sel in ("8", "SAG T1 POST GD"):
        case, dicom = read_dicom_case(tmp_path / "c", [f"t1c={sel}"])
        assert dicom.series["t1ce"].number == 8 and sorted(dicom.ignored) == sorted(
            ["series 3 'AX T1 POST GD'", "series 9 'AX DWI b1000'"])
        np.testing.assert_array_equal(case.image, image)


# --------------------------------------------------------------------------- naming rule

NAMES = [
    ("AX T1 POST GD", "", "", "t1ce"), ("T1 MPRAGE pre", "", "", "t1"), ("FLAIR AX", "", "", "flair"),
    ("T2 TSE", "", "", "t2"), ("t2_tirm_tra_dark-fluid", "", "", "flair"), ("AX T2 FLAIR", "", "", "flair"),
    ("Ax T1 FLAIR", "", "", "t1"), ("AX T1 FLAIR POST", "", "", "t1ce"), ("T1 +C", "", "", "t1ce"),
    ("AX T1 C+", "", "", "t1ce"), ("t1_mprage_sag_p2_iso", "", "", "t1"), ("T1_MPRAGE_SAG_KM", "", "", "t1ce"),
    ("T1 ohne KM", "", "", "t1"), ("T1 nativ", "", "", "t1"), ("T1 -C", "", "", "t1"),
    ("AX T1 WO CONTRAST", "", "", "t1"), ("3DT1 GD", "", "", "t1ce"), ("Sag T1 FSPGR BRAVO", "", "", "t1"),
    ("AX T2 FSE", "", "", "t2"), ("T2W_TSE", "", "", "t2"), ("t1c", "", "", "t1ce"), ("t2f", "", "", "flair"),
    ("T2-FLAIR", "", "", "flair"), ("MPRAGE", "", "GADOVIST", "t1ce"), ("T1 MPRAGE", "", "", "t1"),
    ("Series 5", "T2_TSE_TRA", "", "t2"), ("AX T1", "T1_SE_TRA_POST", "", "t1ce"),
    # not one of the four, or ambiguous: None
    ("T1 PRE POST", "", "", None), ("AX T2* GRE", "", "", None), ("T2*", "", "", None), ("SWI", "", "", None),
    ("DWI", "", "", None), ("ADC", "", "", None), ("3-PLANE LOC", "", "", None), ("PD T2", "", "", None),
    ("T1 map", "", "", None), ("T1 T2 combined", "", "", None), ("Series 5", "", "", None), ("", "", "", None),
]


@pytest.mark.parametrize("description,protocol,agent,expected", NAMES)
def test_modality_rule(description, protocol, agent, expected):
    assert modality_of(description, protocol, contrast_agent=agent) == expected, classify_series(
        description, protocol, contrast_agent=agent)


def _fake(number, description, protocol="", agent=""):
    return SimpleNamespace(number=number, uid=f"1.2.3.{number}", description=description, protocol=protocol,
                           contrast_agent=agent, name=f"series {number} '{description}'", unsupported=None)


def test_assign_series_errors_list_every_series_and_the_way_out():
    series = [_fake(1, "FLAIR AX"), _fake(2, "T1 SE"), _fake(3, "T1 SE", agent="GADOVIST"), _fake(5, "T2 TSE"),
              _fake(6, "T1 SE")]
    with pytest.raises(SingrInputError) as err:
        assign_series(series)
    msg = one_line(err)
    assert "t1 claimed by 2 series (series 2 'T1 SE' and series 6 'T1 SE')" in msg
    assert "series 3 'T1 SE' -> t1ce (T1 with ContrastBolusAgent 'GADOVIST')" in msg
    assert "--dicom-map flair=<SeriesNumber> t1=<SeriesNumber>" in msg
    got = assign_series(series, parse_dicom_map(["t1n=2"]))
    assert {m: s.number for m, s in got.items()} == {"flair": 1, "t1": 2, "t1ce": 3, "t2": 5}
    got = assign_series(series, parse_dicom_map({"t1": "1.2.3.6"}))
    assert got["t1"].number == 6
    with pytest.raises(SingrInputError, match="no series for t2"):
        assign_series(series[:3])
    with pytest.raises(SingrInputError, match=r"--dicom-map t1=7: no series match"):
        assign_series(series, {"t1": "7"})
    with pytest.raises(SingrInputError,
                       match=r"3 series \(series 2 'T1 SE', series 3 'T1 SE', series 6 'T1 SE'\) match"):
        assign_series(series, {"t1": "T1 SE"})
    with pytest.raises(SingrInputError, match="unknown modality 'dwi'"):
        parse_dicom_map(["dwi=4"])
    with pytest.raises(SingrInputError, match="expected MODALITY=SERIES"):
        parse_dicom_map(["7"])


# --------------------------------------------------------------------------- bad series


def _edit(path: Path, **values):
    ds = pydicom.dcmread(path)
    for k, v in values.items():
        setattr(ds, k, v)
    ds.save_as(path)


def _bad(tmp_path, edit) -> str:
    folder = tmp_path / "c"
    small_case(folder)
    edit(folder / "3_t1ce")
    with pytest.raises(SingrInputError) as err:
        read_dicom_case(folder)
    msg = one_line(err)
    assert "case c: " in msg and "t1ce: series 3 'AX T1 POST GD': " in msg and "expected" in msg
    return msg


def test_missing_slice(tmp_path):
    msg = _bad(tmp_path, lambda d: (d / "IM0003.dcm").unlink())
    assert "missing slices: a gap of 4.000 mm (1 slice) between IM0002.dcm and IM0004.dcm" in msg
    assert "evenly spaced slices 2.000 mm apart" in msg


def test_uneven_slice_spacing(tmp_path):
    msg = _bad(tmp_path, lambda d: _edit(d / "IM0004.dcm", ImagePositionPatient=[0, 0, 6.5]))
    assert "uneven slice spacing: 2.500 mm between IM0003.dcm and IM0004.dcm" in msg


def test_inconsistent_pixel_spacing(tmp_path):
    msg = _bad(tmp_path, lambda d: _edit(d / "IM0005.dcm", PixelSpacing=[1.0, 1.2]))
    assert "mixed pixel spacings (PixelSpacing): [1, 1] in IM0001.dcm but [1, 1.2] in IM0005.dcm" in msg


def test_mixed_series(tmp_path):
    """Two acquisitions in one series: slices at the same positions (a second echo)."""
    def add_echo(d: Path):
        for f in ("IM0001.dcm", "IM0002.dcm"):
            ds = pydicom.dcmread(d / f)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
            ds.EchoNumbers = 2
            ds.save_as(d / f"echo2_{f}")
    msg = _bad(tmp_path, add_echo)
    assert "4 slices share positions (e.g. " in msg and "multi-echo, repeated or mixed acquisition" in msg


def test_mixed_orientation_and_sizes(tmp_path):
    msg = _bad(tmp_path, lambda d: _edit(d / "IM0002.dcm", ImageOrientationPatient=[1, 0, 0, 0, 0, -1]))
    assert "mixed orientations (ImageOrientationPatient)" in msg and "IM0002.dcm" in msg
    shutil.rmtree(tmp_path / "c")

    def resize(d: Path):
        ds = pydicom.dcmread(d / "IM0006.dcm")
        ds.Rows, ds.Columns = 4, 4
        ds.PixelData = np.zeros((4, 4), np.uint16).tobytes()
        ds.save_as(d / "IM0006.dcm")
    msg = _bad(tmp_path, resize)
    assert "mixed image sizes (rows x columns): 10x12 in IM0001.dcm but 4x4 in IM0006.dcm" in msg


def test_series_on_different_grids(tmp_path):
    study = Study()
    image, aff, _ = small_case(tmp_path / "c", study=study)
    shutil.rmtree(tmp_path / "c" / "4_t2")
    moved = aff.copy()
    moved[:3, 3] += [0.0, 0.0, 2.0]
    write_dicom_series(image[3], moved, tmp_path / "c" / "4_t2", description="T2 TSE", series_number=4, study=study)
    with pytest.raises(SingrInputError) as err:
        read_dicom_case(tmp_path / "c")
    msg = one_line(err)
    assert "t2: series 4 'T2 TSE' lies on another grid than series 1 'FLAIR AX' (flair)" in msg
    shutil.rmtree(tmp_path / "c" / "4_t2")
    write_dicom_series(image[3][:, :, :5], aff, tmp_path / "c" / "4_t2", description="T2 TSE", series_number=4,
                       study=study)
    with pytest.raises(SingrInputError, match=r"series 4 'T2 TSE' has 12x10x5 voxels, series 1 'FLAIR AX' \(flair\) "
                       r"12x10x6; expected the series on one grid"):
        read_dicom_case(tmp_path / "c")


def test_series_of_another_patient(tmp_path):
    image, aff, _ = small_case(tmp_path / "c")
    shutil.rmtree(tmp_path / "c" / "2_t1")
    write_dicom_series(image[1], aff, tmp_path / "c" / "2_t1", description="T1 MPRAGE pre", series_number=2,
                       study=Study(patient_id="OTHER"))
    with pytest.raises(SingrInputError, match="series 2 'T1 MPRAGE pre' \\(t1\\) is of patient 'OTHER'"):
        read_dicom_case(tmp_path / "c")


def test_left_handed_affine_reads_as_the_same_image(tmp_path):
    """A NIfTI whose third axis runs against the slice normal comes back with that axis reversed,
    on the same world coordinates."""
    aff = np.diag([1.0, -1.0, 2.0, 1.0])  # RAS x flipped back: det < 0
    image, _, _ = small_case(tmp_path / "c", affine=aff)
    case, _ = read_dicom_case(tmp_path / "c")
    np.testing.assert_array_equal(case.image, image[..., ::-1])
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1, image.shape[3] - 1
    np.testing.assert_allclose(case.affine, aff @ flip, atol=1e-4)


# --------------------------------------------------------------------------- DICOM SEG


@pytest.mark.realdata
@pytest.mark.parametrize("convention", ["brats2023", "brats2020"])
def test_seg_round_trip(crop_dicom, tmp_path, convention):
    folder, _, label, aff = crop_dicom
    case, dicom = read_dicom_case(folder)
    if convention == "brats2020":
        label = np.where(label == 3, 4, label).astype(np.uint8)
    others = [h for m in ("flair", "t1", "t2") for h in dicom.datasets(m)]
    out = write_dicom_seg(label, dicom.datasets(), tmp_path / "seg.dcm", label_convention=convention,
                          further_sources=others, affine=aff)
    shuffled = list(reversed(dicom.datasets()))  # any order: the slice order comes from the positions
    np.testing.assert_array_equal(read_dicom_seg(out, shuffled, label_convention=convention), label)
    np.testing.assert_array_equal(read_dicom_seg(out, folder, label_convention=convention), label)  # found there
    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY" and ds.SeriesDescription
    assert {str(r.SeriesInstanceUID) for r in ds.ReferencedSeriesSequence} == {s.uid for s in dicom.series.values()}
    segs = ds.SegmentSequence
    assert [s.SegmentLabel for s in segs] == [SEGMENT_CODES[c][0] for c in ("NCR", "ED", "ET")]
    types = [s.SegmentedPropertyTypeCodeSequence[0] for s in segs]
    assert [(t.CodeValue, t.CodingSchemeDesignator) for t in types] == [
        ("6574001", "SCT"), ("79654002", "SCT"), ("C113842", "NCIt")]
    assert all(s.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003" for s in segs)
    assert segs[0].SegmentAlgorithmName == "SiNGR" and segs[0].SegmentAlgorithmType == "AUTOMATIC"
    present = sum(int((label[..., k] == v).any()) for k in range(label.shape[2]) for v in set(np.unique(label)) - {0})
    assert int(ds.NumberOfFrames) == present  # frames only where a segment is present


@pytest.mark.realdata
def test_seg_errors(crop_dicom, tmp_path):
    folder, _, label, _ = crop_dicom
    _, dicom = read_dicom_case(folder)
    with pytest.raises(SingrInputError, match="does not fit series 3 'AX T1 POST GD'"):
        write_dicom_seg(label[:, :, :10], dicom.datasets(), tmp_path / "a.dcm", label_convention="brats2023")
    with pytest.raises(SingrInputError, match=r"label values \[4\]; expected integers in \[0, 1, 2, 3\]"):
        write_dicom_seg(np.where(label == 3, 4, label), dicom.datasets(), tmp_path / "a.dcm",
                        label_convention="brats2023")
    assert not (tmp_path / "a.dcm").exists()
    out = write_dicom_seg(np.zeros_like(label), dicom.datasets(), tmp_path / "empty.dcm", label_convention="binary")
    assert not read_dicom_seg(out, dicom.datasets(), label_convention="binary").any()
    with pytest.raises(SingrInputError, match="does not reference series 4 'T2 TSE'"):
        read_dicom_seg(out, dicom.datasets("t2"))


# --------------------------------------------------------------------------- the dicom layout


@pytest.mark.realdata
def test_dicom_layout_with_nifti_and_seg_labels(crop_dicom, tmp_path):
    """A data root of DICOM case folders (``data.layout: dicom``, found by ``auto``): one case
    labelled by a NIfTI seg beside its series, one by a DICOM SEG among them."""
    folder, image, label, aff = crop_dicom
    root = tmp_path / "root"
    shutil.copytree(folder, root / "case-a")
    shutil.copytree(folder, root / "case-b")
    nib.save(nib.Nifti1Image(label, aff), str(root / "case-a" / "seg.nii.gz"))
    _, dicom = read_dicom_case(root / "case-b")
    write_dicom_seg(label, dicom.datasets(), root / "case-b" / "seg" / "labels.dcm", label_convention="brats2023")
    cases = discover_cases(root)
    assert [c.case_id for c in cases] == ["case-a", "case-b"] and {c.layout for c in cases} == {"dicom"}
    for c in cases:
        loaded = load_case(c)
        np.testing.assert_array_equal(loaded.image, image)
        np.testing.assert_array_equal(loaded.label, label)
        assert loaded.label_convention == "brats2023"
        prep = prepare_case(c, tmp_path / "cache")  # what train and evaluate read: checked, normalised, cached
        np.testing.assert_array_equal(prep.paste(prep.regions), labels_to_regions(label, "brats2023"))
        assert (tmp_path / "cache" / c.case_id / "meta.json").exists()
