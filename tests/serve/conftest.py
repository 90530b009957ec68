"""Shared by the endpoint's tests: a smoke model trained once per session, in-process."""
from __future__ import annotations

from pathlib import Path

import pytest


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
    files = {m: (case / f"{case.name}_{m}.nii.gz").read_bytes() for m in ("flair", "t1", "t1ce", "t2")}
    return {"checkpoint": Path(res.best_checkpoint), "case_dir": case, "files": files, "work": work}
