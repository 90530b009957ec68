"""`singr prepare` without brainles-preprocessing: the inputs it takes (NIfTI folder, files, DICOM
series each on its own grid), the interpreter it looks for and the one-line errors, and that a
failed run leaves nothing behind. The run itself, on the real case: test_prepare_real.py."""
from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from singr.cli import main
from singr.data import prepare as prep
from singr.errors import SingrInputError
from singr.io.dicom_write import Study, write_dicom_series

NAMES = {"t2f": "flair", "t1n": "t1", "t1c": "t1ce", "t2w": "t2"}


def _folder(tmp: Path, names=("t2f", "t1n", "t1c", "t2w"), shape=(12, 10, 8)) -> Path:
    rng = np.random.default_rng(0)
    tmp.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):  # each on its own grid, as a scanner's series are
        aff = np.diag([1.0 + 0.1 * i, 1.0, 2.0, 1.0])
        aff[:3, 3] = [i, -i, 3]
        nib.save(nib.Nifti1Image(rng.random(shape).astype(np.float32) + 1, aff), str(tmp / f"{n}.nii.gz"))
    return tmp


def test_inputs_from_a_folder_files_and_their_errors(tmp_path):
    case = _folder(tmp_path / "raw")
    inputs, naming = prep.gather_inputs(case=case, tmp=tmp_path)
    assert naming == "brats2023" and inputs == {NAMES[n]: case / f"{n}.nii.gz" for n in NAMES}
    files = {m: case / f"{n}.nii.gz" for n, m in NAMES.items()}
    assert prep.gather_inputs(files=files, tmp=tmp_path) == ({m: Path(p) for m, p in files.items()}, "brats2020")
    with pytest.raises(SingrInputError, match="either --case DIR"):
        prep.gather_inputs(case=case, files=files, tmp=tmp_path)
    with pytest.raises(SingrInputError, match=r"missing modalities \['t2'\]"):
        prep.gather_inputs(files={k: v for k, v in files.items() if k != "t2"}, tmp=tmp_path)
    with pytest.raises(SingrInputError, match="unexpected modality 'dwi'"):
        prep.gather_inputs(files={**files, "dwi": files["t1"]}, tmp=tmp_path)
    with pytest.raises(SingrInputError, match="t1: no such file"):
        prep.gather_inputs(files={**files, "t1": tmp_path / "nope.nii.gz"}, tmp=tmp_path)
    with pytest.raises(SingrInputError, match="--dicom-map applies to DICOM input"):
        prep.gather_inputs(case=case, dicom_map=["t1ce=3"], tmp=tmp_path)
    (case / "t2w.nii.gz").unlink()
    with pytest.raises(SingrInputError, match=r"missing modalities \['t2w'\]"):
        prep.gather_inputs(case=case, tmp=tmp_path)


def test_dicom_series_become_one_nifti_each_on_their_own_grids(tmp_path):
    study, dicom, vols = Study(), tmp_path / "study", {}
    descriptions = {"flair": "FLAIR AX", "t1": "T1 MPRAGE pre", "t1ce": "AX T1 POST GD", "t2": "T2 TSE"}
    rng = np.random.default_rng(1)
    for i, (mod, desc) in enumerate(descriptions.items()):
        shape = (10 + 2 * i, 9, 6 + i)  # different sizes and voxel sizes: a raw study
        aff = np.diag([0.9, 0.9, 3.0 + i, 1.0])
        aff[:3, 3] = [-5.0, 4.0 * i, 10.0]
        vols[mod] = (np.round(rng.random(shape) * 400 + 50).astype(np.float32), aff)
        write_dicom_series(vols[mod][0], aff, dicom / f"{i + 1}", description=desc, series_number=i + 1, study=study,
                           contrast_agent="GADOLINIUM" if mod == "t1ce" else None)
    said: list[str] = []
    inputs, naming = prep.gather_inputs(case=dicom, tmp=tmp_path / "nii", progress=said.append)
    assert naming == "brats2023" and set(inputs) == set(descriptions)
    for mod, (arr, aff) in vols.items():
        img = nib.load(str(inputs[mod]))
        np.testing.assert_allclose(np.asarray(img.dataobj), arr, atol=0.5)
        np.testing.assert_allclose(img.affine, aff, atol=1e-4)
    assert any("t1ce: series 3 'AX T1 POST GD', 14x9x8 voxels of 0.9x0.9x5 mm" in s for s in said), said


def test_the_interpreter_is_found_or_the_error_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.delenv(prep.ENV_PYTHON, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(prep.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SingrInputError, match=r"bash scripts/setup_prepare.sh.*--python PATH"):
        prep.find_prepare_python(root=tmp_path)
    with pytest.raises(SingrInputError, match=r"--python: no Python interpreter at .*nope"):
        prep.find_prepare_python(str(tmp_path / "nope"), root=tmp_path)
    monkeypatch.setenv(prep.ENV_PYTHON, str(tmp_path / "gone"))
    with pytest.raises(SingrInputError, match=r"\$SINGR_PREPARE_PYTHON: no Python interpreter"):
        prep.find_prepare_python(root=tmp_path)
    monkeypatch.setenv(prep.ENV_PYTHON, sys.executable)
    assert prep.find_prepare_python(root=tmp_path) == sys.executable
    monkeypatch.delenv(prep.ENV_PYTHON)
    venv = tmp_path / ".venv-prepare" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(sys.executable)
    with pytest.raises(SingrInputError, match=r"set-up did not finish .*setup_prepare.sh"):
        prep.find_prepare_python(root=tmp_path)
    (venv.parent / ".singr-stamp").write_text("torch brainles")
    assert prep.find_prepare_python(root=tmp_path) == str(venv / "python")
    other = tmp_path / "elsewhere"  # $SINGR_PREPARE_VENV, as scripts/setup_prepare.sh takes it
    (other / "bin").mkdir(parents=True)
    (other / "bin" / "python").symlink_to(sys.executable)
    (other / ".singr-stamp").write_text("x")
    monkeypatch.setenv("SINGR_PREPARE_VENV", str(other))
    assert prep.find_prepare_python(root=tmp_path) == str(other / "bin" / "python")


def test_a_failed_run_names_the_failure_and_leaves_nothing(tmp_path):
    """This interpreter has no brainles-preprocessing: the worker fails at its import."""
    inputs, _ = prep.gather_inputs(case=_folder(tmp_path / "raw"), tmp=tmp_path)
    out = tmp_path / "prepared"
    said: list[str] = []
    with pytest.raises(SingrInputError, match=r"failed \(exit status 1\): .*No module named.*prepare-failed\.log"):
        prep.prepare_case(inputs, out, atlas=None, brain_extraction="none", python=sys.executable,
                          progress=said.append)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared.prepare-failed.log", "raw"]  # no partial folder
    assert "ModuleNotFoundError" in (tmp_path / "prepared.prepare-failed.log").read_text()
    assert said and "center t1c, atlas none" in said[0]


def test_arguments_are_checked_before_anything_runs(tmp_path):
    inputs, _ = prep.gather_inputs(case=_folder(tmp_path / "raw"), tmp=tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    for kw, msg in (({"brain_extraction": "bet2"}, "--brain-extraction 'bet2'"),
                    ({"center": "dwi"}, "--center 'dwi'"),
                    ({"naming": "nnunet"}, "--naming 'nnunet'"),
                    ({"atlas": str(tmp_path / "atlas.nii.gz")}, "--atlas: no such file")):
        with pytest.raises(SingrInputError, match=msg):
            prep.prepare_case(inputs, tmp_path / "o", python=sys.executable, **kw)  # type: ignore[arg-type]
    with pytest.raises(SingrInputError, match="exists and is not empty.*--overwrite"):
        prep.prepare_case(inputs, tmp_path / "full", python=sys.executable)


def test_out_never_holds_an_input_or_the_current_folder(tmp_path, monkeypatch):
    """--overwrite deletes OUT: it may not be the case folder, a folder above it, or the working folder."""
    inputs, _ = prep.gather_inputs(case=_folder(tmp_path / "raw"), tmp=tmp_path)
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    with pytest.raises(SingrInputError, match="holds the input t1ce"):
        prep.prepare_case(inputs, tmp_path / "raw", python=sys.executable, overwrite=True)
    monkeypatch.chdir(tmp_path / "raw")
    for out, msg in ((tmp_path, "current folder or one above it"), (Path("."), "current folder"),
                     (Path("/"), "names no folder")):
        with pytest.raises(SingrInputError, match=msg):
            prep.prepare_case(inputs, out, python=sys.executable, overwrite=True)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SingrInputError, match="exists and is a file"):
        prep.prepare_case(inputs, tmp_path / "afile", python=sys.executable, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == sorted(f"{n}.nii.gz" for n in NAMES)


def test_cli_errors_are_one_line_with_status_2(tmp_path, capsys):
    case = _folder(tmp_path / "raw")
    assert main(["prepare", "--case", str(case), "--out", str(tmp_path / "o"), "--files", "t1=x"]) == 2
    assert "singr prepare: error: give either --case DIR" in capsys.readouterr().err
    assert main(["prepare", "--files", "t1", "--out", str(tmp_path / "o")]) == 2
    assert "--files 't1': expected MODALITY=PATH" in capsys.readouterr().err
    assert main(["prepare", "--case", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "case nowhere" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_the_help_names_the_workers_atlases(capsys):
    """The driver takes its atlas names from the worker (run in .venv-prepare); `--help` lists them all."""
    from singr.data import prepare_worker

    assert prep.ATLAS_NAMES == tuple(prepare_worker.ATLASES) and prep.WORKER == Path(prepare_worker.__file__)
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert [n for n in prep.ATLAS_NAMES if n not in shown] == []
