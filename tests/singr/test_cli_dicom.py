"""`singr predict` on DICOM series: the real case (cropped) written as four MR series of one
study goes through the CLI; the DICOM SEG it writes reads back equal, voxel for voxel, to the
label map the same command writes from the NIfTI files."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from singr.cli import main
from singr.data.readers import load_case_from_files
from singr.data.readers.dicom import read_dicom_case
from singr.io.dicom_seg import read_dicom_seg
from singr.io.dicom_write import Study, write_dicom_case, write_dicom_series

pytestmark = [pytest.mark.slow, pytest.mark.realdata]
DEFAULT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "brats-case"
CROP = (slice(60, 180), slice(60, 180), slice(50, 90))


def run(args, cwd):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return main(args)
    finally:
        os.chdir(old)


def test_predict_dicom_case_to_dicom_seg(tmp_path, capsys):
    root = Path(os.environ.get("SINGR_BRATS_CASE", DEFAULT))
    if not (root / "seg.nii.gz").exists():
        if os.environ.get("CI"):
            pytest.fail(f"real BraTS case not found at {root} (set SINGR_BRATS_CASE)")
        pytest.skip(f"real BraTS case not found at {root}")
    assert run(["synth", "-c", "smoke.yaml", "-q"], tmp_path) == 0
    assert run(["train", "-c", "smoke.yaml", "-q"], tmp_path) == 0
    model = str(tmp_path / "runs" / "smoke" / "checkpoints" / "best.safetensors")

    # the same cropped case as NIfTI files and as DICOM series
    real = load_case_from_files({m: root / f"{m}.nii.gz" for m in ("t1n", "t1c", "t2w", "t2f")}, case_id="real")
    image = real.image[(slice(None),) + CROP]
    aff = real.affine.copy()
    aff[:3, 3] += aff[:3, :3] @ [s.start for s in CROP]
    nifti = tmp_path / "nifti-case"
    nifti.mkdir()
    for i, name in enumerate(("t2f", "t1n", "t1c", "t2w")):  # the order of real.modalities: flair, t1, t1ce, t2
        nib.save(nib.Nifti1Image(image[i], aff), str(nifti / f"{name}.nii.gz"))
    dicom = tmp_path / "dicom-case"
    study = Study()
    write_dicom_case(image, aff, real.modalities, dicom, study=study)

    base = ["predict", "--checkpoint", model, "--force", "-q"]
    assert run(base + ["--case", str(nifti), "--out", str(tmp_path / "ref.nii.gz")], tmp_path) == 0
    ref = nib.load(str(tmp_path / "ref.nii.gz"))
    ref_labels = np.asarray(ref.dataobj)
    capsys.readouterr()
    assert run(base + ["--case", str(dicom), "--format", "dicom-seg", "--out", str(tmp_path / "pred")], tmp_path) == 0
    out = capsys.readouterr().out
    assert "from DICOM flair: series 1 'FLAIR AX', t1: series 2 'T1 MPRAGE pre', t1ce: series 3 'AX T1 POST GD'" in out
    seg_path = tmp_path / "pred" / "dicom-case_seg.dcm"
    assert f"DICOM SEG {seg_path} (references series 3 'AX T1 POST GD'; segments NCR, ED, ET)" in out
    _, series = read_dicom_case(dicom)
    np.testing.assert_array_equal(read_dicom_seg(seg_path, series.datasets()), ref_labels)
    # NIfTI out of DICOM in: the same labels on the same grid
    assert run(base + ["--case", str(dicom), "--out", str(tmp_path / "d.nii.gz")], tmp_path) == 0
    d = nib.load(str(tmp_path / "d.nii.gz"))
    np.testing.assert_array_equal(np.asarray(d.dataobj), ref_labels)
    np.testing.assert_allclose(d.affine, ref.affine, atol=1e-4)
    print(f"DICOM SEG of {int((ref_labels > 0).sum())} tumour voxels matches the NIfTI answer")

    # a zip of the series, with the SEG named by --out
    z = tmp_path / "study.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(dicom.rglob("*.dcm")):
            zf.write(p, p.relative_to(dicom).as_posix())
    assert run(base + ["--case", str(z), "--format", "dicom-seg", "--out", str(tmp_path / "z.dcm")], tmp_path) == 0
    np.testing.assert_array_equal(read_dicom_seg(tmp_path / "z.dcm", series.datasets()), ref_labels)

    # errors: one line each, exit 2, nothing written
    capsys.readouterr()
    assert run(base + ["--case", str(nifti), "--format", "dicom-seg", "--out", str(tmp_path / "x")], tmp_path) == 2
    assert "--format dicom-seg needs DICOM input" in capsys.readouterr().err
    assert run(base + ["--case", str(nifti), "--dicom-map", "t1ce=3", "--out", str(tmp_path / "x")], tmp_path) == 2
    assert "--dicom-map applies to DICOM input" in capsys.readouterr().err
    assert run(base + ["--case", str(dicom), "--format", "dicom-seg", "--out", str(tmp_path / "x.nii.gz")],
               tmp_path) == 2
    assert "give --out a .dcm path or a folder" in capsys.readouterr().err
    write_dicom_series(image[2], aff, dicom / "7_sag", description="SAG T1 POST GD", series_number=7, study=study)
    assert run(base + ["--case", str(dicom), "--out", str(tmp_path / "x")], tmp_path) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--dicom-map" in err
    assert "t1ce claimed by 2 series (series 3 'AX T1 POST GD' and series 7 'SAG T1 POST GD')" in err
    assert not (tmp_path / "x").exists()
    assert run(base + ["--case", str(dicom), "--dicom-map", "t1ce=7", "--format", "dicom-seg", "--out",
                       str(tmp_path / "m.dcm")], tmp_path) == 0
    assert "left out: series 3 'AX T1 POST GD'" in capsys.readouterr().out
    _, series7 = read_dicom_case(dicom, ["t1ce=7"])
    np.testing.assert_array_equal(read_dicom_seg(tmp_path / "m.dcm", series7.datasets()), ref_labels)
