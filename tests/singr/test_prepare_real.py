"""`singr prepare` on the real case with brainles-preprocessing (in .venv-prepare, made by
scripts/setup_prepare.sh): as far as this offline machine allows.

* A misaligned copy: the real case at 2 mm (so that the 7 ANTs registrations take about 40 s on
  2 cores), each modality, the center too, turned and shifted by its own rigid motion. Before,
  singr's input check finds that the modalities do not share one brain mask. The "atlas" is the
  real case's own T1 at 2 mm (it is in the BraTS SRI-24 space; the SRI-24 atlas itself is a
  download). `singr prepare --atlas T1 --brain-extraction none` co-registers the modalities to
  t1c, registers t1c to the atlas and brings all four back: each correlates with the original
  at r >= 0.85 (about 0.92-0.95; the misaligned copies: 0.16-0.47), the input check's one
  remaining finding is the 2 mm voxel size, and the transforms and brainles' log are kept.
* The steps that need downloads (the SRI-24 atlas from Zenodo, HD-BET's weights) are refused
  with --no-download in one line that names both, their sources and the options that avoid them.
* The worker against brainles' own layout, in .venv-prepare: a downloaded record is found in its
  newest ``<record>_v<x.y.z>`` folder and brainles' later fetch of it is answered from there
  (no request); --gpu without CUDA is refused; without --gpu no CUDA device is visible.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from singr.cli import main
from singr.data.input_check import check_input, profile_input
from singr.data.readers import load_case_from_files

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT.parent / "shared" / "data" / "brats-case"
MODS = ("t1c", "t1n", "t2w", "t2f")
pytestmark = [pytest.mark.slow, pytest.mark.realdata, pytest.mark.timeout(900)]


def _need(msg: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def case() -> Path:
    root = Path(os.environ.get("SINGR_BRATS_CASE", DEFAULT))
    if not (root / "seg.nii.gz").exists():
        _need(f"real BraTS case not found at {root} (set SINGR_BRATS_CASE)")
    return root


@pytest.fixture(scope="module")
def prepare_python() -> str:
    """.venv-prepare's interpreter, set up by the script the README names (a stamp skips a second run)."""
    r = subprocess.run(["bash", str(ROOT / "scripts" / "setup_prepare.sh")], capture_output=True, text=True,
                       timeout=900)
    if r.returncode != 0:
        _need(f"scripts/setup_prepare.sh failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return str(ROOT / ".venv-prepare" / "bin" / "python")


def _resample(img, step: float):
    import SimpleITK as sitk

    size = [int(round(s / step)) for s in img.GetSize()]
    return sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear, img.GetOrigin(), [step] * 3,
                         img.GetDirection(), 0.0, sitk.sitkFloat32)


@pytest.fixture(scope="module")
def misaligned(case, tmp_path_factory) -> dict:
    """The case at 2 mm (``ref``), its misaligned copy (``mis``) and the stand-in atlas."""
    import SimpleITK as sitk

    work = tmp_path_factory.mktemp("prepare-real")
    ref, mis = work / "ref", work / "mis"
    ref.mkdir()
    mis.mkdir()
    for k, name in enumerate(MODS):
        img = _resample(sitk.ReadImage(str(case / f"{name}.nii.gz"), sitk.sitkFloat32), 2.0)
        sitk.WriteImage(img, str(ref / f"{name}.nii.gz"))
        t = sitk.Euler3DTransform()
        t.SetCenter(img.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in img.GetSize()]))
        t.SetRotation(*np.deg2rad([6 * k - 10, 5, 3 - 4 * k]))  # up to 10 degrees about each axis
        t.SetTranslation((4 * k - 3, -5, 3))  # and up to 9 mm
        sitk.WriteImage(sitk.Resample(img, img, t, sitk.sitkLinear, 0.0), str(mis / f"{name}.nii.gz"))
    return {"ref": ref, "mis": mis, "atlas": ref / "t1n.nii.gz", "work": work}


def _corr(a: Path, b: Path) -> float:
    import nibabel as nib

    x, y = (np.asarray(nib.load(str(p)).dataobj, dtype=np.float64) for p in (a, b))
    m = (x != 0) | (y != 0)
    return float(np.corrcoef(x[m], y[m])[0, 1])


def _findings(folder: Path) -> list[str]:
    c = load_case_from_files({m: folder / f"{m}.nii.gz" for m in MODS})
    return check_input(profile_input(c.image, c.spacing), c.modalities, model_spacing=(1.0, 1.0, 1.0))


WORKER_CHECK = r"""
import json, os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import prepare_worker as w
from brainles_preprocessing.utils import zenodo
tmp = Path(sys.argv[2])
zenodo.ATLASES_FOLDER, zenodo.SYNTHSTRIP_FOLDER = tmp / "atlases", tmp / "weights"
zenodo.ZenodoRecord.BASE_URL = "http://127.0.0.1:9/nowhere"  # any request fails at once
out = {}
needs = w.Needs(False)
w.resolve_atlas("brats_sri24", needs)
out["absent"] = needs.failed
for version, text in (("1.2.0", "old"), ("1.10.0", "new")):  # 1.10 is newer than 1.2
    (tmp / "atlases" / f"15236131_v{version}").mkdir(parents=True)
    (tmp / "atlases" / f"15236131_v{version}" / "brats_sri24.nii").write_text(text)
(tmp / "atlases" / "15236131_v2.0.0").mkdir()  # empty: an unfinished download
needs = w.Needs(False)
atlas = w.resolve_atlas("brats_sri24", needs)
out["atlas"], out["atlas_text"], out["atlas_failed"] = str(atlas), atlas.read_text(), needs.failed
out["fetch_atlases"] = str(zenodo.fetch_atlases())  # brainles' own call: from the local copy
(tmp / "weights" / "16535633_v1.0.0").mkdir(parents=True)
(tmp / "weights" / "16535633_v1.0.0" / "synthstrip.1.pt").write_text("w")
needs = w.Needs(False)
w.brain_extractor("synthstrip", needs)
out["synth_failed"], out["fetch_synthstrip"] = needs.failed, str(zenodo.fetch_synthstrip())
try:
    w.check_gpu(True)
except w.Refused as e:
    out["gpu"] = str(e)
w.check_gpu(False)
out["cuda_visible"] = os.environ["CUDA_VISIBLE_DEVICES"]
print(json.dumps(out))
"""


def test_the_worker_uses_brainles_layout_and_never_asks_twice(prepare_python, tmp_path):
    import json

    from singr.data.prepare import WORKER

    r = subprocess.run([prepare_python, "-W", "ignore", "-c", WORKER_CHECK, str(WORKER.parent), str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(out["absent"]) == 1 and "downloads are off" in out["absent"][0]
    newest = tmp_path / "atlases" / "15236131_v1.10.0"
    assert out["atlas"] == str(newest / "brats_sri24.nii") and out["atlas_text"] == "new"
    assert out["atlas_failed"] == [] and out["fetch_atlases"] == str(newest)
    assert out["synth_failed"] == [] and out["fetch_synthstrip"] == str(tmp_path / "weights" / "16535633_v1.0.0")
    assert out["gpu"].startswith("--gpu: no CUDA device in this environment (torch 2.13.0")
    assert out["cuda_visible"] == ""


def test_downloads_are_refused_offline_in_one_line(misaligned, prepare_python, capsys):
    out = misaligned["work"] / "refused"
    assert main(["prepare", "--case", str(misaligned["mis"]), "--out", str(out), "--python", prepare_python,
                 "--no-download"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for text in ("singr prepare: error: atlas registration needs the atlas brats_sri24.nii",
                 "Zenodo record 15236131", "--atlas PATH", "brain extraction (HD-BET) needs its network weights",
                 "https://zenodo.org/record/2540695/files/{0..4}.model", "--brain-extraction none",
                 "downloads are off (--no-download)"):
        assert text in err[0], (text, err[0])
    assert not out.exists()


def test_a_misaligned_case_comes_back_into_the_atlas_space(misaligned, prepare_python, capsys):
    mis, ref = misaligned["mis"], misaligned["ref"]
    before = _findings(mis)
    assert any("do not share one brain mask" in f for f in before), before
    corr_before = {m: _corr(ref / f"{m}.nii.gz", mis / f"{m}.nii.gz") for m in MODS}
    assert max(corr_before.values()) < 0.6, corr_before

    out = misaligned["work"] / "prepared"
    failed = misaligned["work"] / "prepared.prepare-failed.log"
    failed.write_text("an earlier run failed")  # a success removes it
    status = main(["prepare", "--case", str(mis), "--out", str(out), "--python", prepare_python,
                   "--atlas", str(misaligned["atlas"]), "--brain-extraction", "none"])
    printed = capsys.readouterr().out
    for step in ("Registering modality t2f", "Registering center modality to atlas",
                 "Applying optional atlas correction for modality t1n", "Preprocessing complete"):
        assert f"[prepare] {step}" in printed, printed
    assert ".partial-" not in printed  # temporary paths are not shown
    corr_after = {m: _corr(ref / f"{m}.nii.gz", out / f"{m}.nii.gz") for m in MODS}
    print(f"correlation with the original, before {corr_before}, after {corr_after}")
    assert min(corr_after.values()) >= 0.85, corr_after

    after = _findings(out)
    assert len(after) == 1 and after[0].startswith("voxel size 2x2x2 mm"), after  # the stand-in atlas is 2 mm
    assert status == 1 and "does not look like BraTS-space input yet" in printed and after[0] in printed
    assert (out / "prepare.log").stat().st_size > 0
    for m in MODS:
        mats = sorted(p.name for p in (out / "transforms" / m).iterdir())
        assert mats and all(p.endswith(".mat") for p in mats), (m, mats)
    assert sorted(p.name for p in (out / "transforms" / "t1n").iterdir())[0].startswith("1_M_co__t1c__t1n")
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name] and not failed.exists()
