"""A first run on a new machine: the defaults fit the demo, a wrong address or store fails
fast, the first figures and label maps are the right ones. The README's own commands are run by
tests/readme/test_readme.py."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def test_no_file_points_to_a_design_document_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    hits = [f for f in files if f.endswith((".py", ".md", ".yaml", ".sh", ".toml"))
            and f != "tests/test_first_run.py" and "DESIGN.md" in (REPO / f).read_text(errors="ignore")]
    assert hits == []


def test_serving_defaults_fit_the_demo():
    """`singr serve` with no arguments serves what the demo (configs/synthetic.yaml) registers."""
    from serve.launch import read_config
    from tune.config import load_service_config

    _, args, _, _ = read_config(None)
    m = load_service_config("synthetic.yaml").mlflow
    assert args["model"] == f"models:/{m.registered_model}@{m.alias}"
    demo = (REPO / "scripts" / "demo.sh").read_text()
    assert "configs/synthetic.yaml" in demo


def test_an_open_port_that_is_not_ray_is_refused_instead_of_hanging():
    """A RAY_ADDRESS whose port accepts connections but says nothing (not a Ray GCS)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            held.append(c)  # accept and stay silent

    threading.Thread(target=accept, daemon=True).start()
    try:
        p = subprocess.run([sys.executable, "-c", "from tune.session import check_address; "
                            f"check_address('127.0.0.1:{port}')"], cwd=REPO, capture_output=True, text=True,
                           timeout=90)
    finally:
        srv.close()
        for c in held:
            c.close()
    assert p.returncode != 0
    assert f"127.0.0.1:{port}" in p.stderr and "accepts connections but does not answer as a Ray cluster" in p.stderr


def test_a_finished_sweep_with_another_budget_names_a_new_sweep(tmp_path):
    from singr.errors import SingrInputError
    from tune.config import load_service_config
    from tune.plan import make_plan
    from tune.sweep import check_budget

    over = [f"tune.storage_path={tmp_path}", "tune.name=demo", f"data.root={tmp_path / 'data'}"]
    check_budget(make_plan(load_service_config("smoke.yaml", over + ["tune.num_samples=2"])), resume=True)
    with pytest.raises(SingrInputError, match=r"started with 2 trials; this command asks for 4.*tune\.name=demo-4"):
        check_budget(make_plan(load_service_config("smoke.yaml", over + ["tune.num_samples=4"])), resume=True)


def test_one_case_has_no_standard_error():
    from singr.engine.evaluate import summary_markdown

    md = summary_markdown({"Dice_TC": {"mean": 0.5, "se": 0.0, "n": 1}, "Dice_mean": {"mean": 0.5, "se": 0.0, "n": 1}},
                          ["TC"], "t")
    assert "1 case (no standard error)" in md and "±" not in md and "1 cases" not in md


def test_the_overlay_slice_is_the_one_with_most_tumour():
    from singr.viz import tumour_slice

    r = np.zeros((3, 8, 8, 10), dtype=bool)
    r[1, 2:5, 2:5, 7] = True
    r[0, 3, 3, 2] = True
    assert tumour_slice(r) == 7


@pytest.fixture(scope="module")
def untrained_model(tmp_path_factory) -> Path:
    """A smoke-size unet3d with random weights (its logits take both signs everywhere)."""
    import torch

    from singr.config import load_config
    from singr.engine.checkpoint import Checkpoint, ModelMeta, save_checkpoint
    from singr.models import model_from_config

    cfg = load_config("smoke.yaml")
    torch.manual_seed(0)
    model = model_from_config(cfg, 4, 3)
    meta = {"in_channels": 4, "out_channels": 3, "region_names": ["TC", "WT", "ET"], "label_convention": "brats2020",
            "modalities": ["flair", "t1", "t1ce", "t2"], "model": "unet3d", "loss": "focal_l1", "regression": True,
            "spacing": [1.0, 1.0, 1.0], "lam": 0.5, "delta": 0.5}
    d = tmp_path_factory.mktemp("model")
    return save_checkpoint(d / "best.safetensors", Checkpoint(model_state=model.state_dict(),
                                                              meta=ModelMeta.from_dict(meta),
                                                              config=cfg.to_dict(core_only=True), epoch=0))


def test_predict_follows_the_inputs_label_convention_and_the_brain(tmp_path, untrained_model):
    """A BraTS 2023 folder (plain names) gets ET = 3 and says so; nothing outside the brain;
    the overlay is drawn; progress and the convention are printed."""
    from singr.data.synth import write_example_case

    case = write_example_case(tmp_path / "example-case", shape=(32, 32, 32), seed=0)
    out = tmp_path / "pred"
    p = subprocess.run([str(Path(sys.executable).with_name("singr")), "predict", "--model", str(untrained_model),
                        "--case", str(case), "--out", str(out), "--png"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "brats2023 labels: ET = 3" in p.stdout and "segmenting with 1 model" in p.stdout
    seg = np.asarray(nib.load(out / "example-case_seg.nii.gz").dataobj)
    brain = np.asarray(nib.load(case / "t1n.nii.gz").dataobj) != 0
    assert set(np.unique(seg).tolist()) <= {0, 1, 2, 3} and seg.any()
    assert not seg[~brain].any()
    assert (out / "example-case_seg.png").stat().st_size > 1000
    vols = json.loads(p.stdout.split("volumes (ml): ")[1].split("; ")[0])
    assert set(vols) == {"TC", "WT", "ET"}

