"""Shared by the endpoint's tests: a smoke model trained once per session, in-process."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

MODS_2020 = ("flair", "t1", "t1ce", "t2")


@pytest.fixture(scope="session")
def smoke_model(tmp_path_factory) -> dict:
    """``{"checkpoint", "case_dir", "files" (flair/t1/t1ce/t2 bytes of one small case), "work"}``."""
    from singr.config import load_config
    from singr.data.synth import synthesize_dataset
    from singr.engine.trainer import fit

    work = tmp_path_factory.mktemp("serve_model")
    cfg = load_config("smoke.yaml", [f"data.root={work / 'data'}", f"output_dir={work / 'run'}"])
    synthesize_dataset(Path(cfg.data.root), n_cases=int(cfg.synth.n_cases), shape=tuple(cfg.synth.shape),
                       seed=int(cfg.synth.seed), progress=False)
    res = fit(cfg, progress=False)
    case = sorted(p for p in (work / "data").iterdir() if p.is_dir() and p.name.startswith("BraTS"))[0]
    files = {m: (case / f"{case.name}_{m}.nii.gz").read_bytes() for m in MODS_2020}
    return {"checkpoint": Path(res.best_checkpoint), "case_dir": case, "files": files, "work": work}


def trained_smoke(request: pytest.FixtureRequest) -> dict:
    """A smoke checkpoint and one small synthetic case of its data set, for the modules that serve it
    (test_endpoint.py, test_viewer.py): ``{"checkpoint", "small" (bytes), "paths", "small_dir", "work"}``.
    The session's :func:`smoke_model` (``singr synth -c smoke.yaml && singr train -c smoke.yaml``,
    in-process), unless $SINGR_SERVE_TEST_WORKDIR names a folder already trained (a developer
    shortcut: ``runs/smoke/checkpoints/best.safetensors`` and ``data/smoke`` in it)."""
    reuse = os.environ.get("SINGR_SERVE_TEST_WORKDIR")
    if reuse and (Path(reuse) / "runs" / "smoke" / "checkpoints" / "best.safetensors").is_file():
        work = Path(reuse)
        ckpt = work / "runs" / "smoke" / "checkpoints" / "best.safetensors"
        case = sorted(p for p in (work / "data" / "smoke").iterdir() if p.is_dir() and p.name.startswith("BraTS"))[0]
    else:
        model = request.getfixturevalue("smoke_model")
        work, ckpt, case = model["work"], model["checkpoint"], model["case_dir"]
    assert ckpt.is_file()
    paths = {m: case / f"{case.name}_{m}.nii.gz" for m in MODS_2020}
    return {"checkpoint": ckpt, "small": {m: p.read_bytes() for m, p in paths.items()}, "paths": paths,
            "small_dir": case, "work": work}
