"""Shared by the tuning service's tests: the environment a sweep subprocess runs in, the
smoke data set, and the overrides that put a sweep's files under a test's folder."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

PY = sys.executable
BIN = Path(PY).parent


def tune_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "MLFLOW_TRACKING_URI"}
    env.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"})
    env.update(extra)
    return env


def sweep_overrides(work: Path, data: Path, name: str, **more: object) -> list[str]:
    o: dict[str, object] = {"data.root": str(data), "data.cache_dir": str(work / "cache"),
                            "output_dir": str(work / "out"), "tune.storage_path": str(work / "ray"), "tune.name": name,
                            "mlflow.tracking_uri": f"sqlite:///{work / 'mlflow.db'}",
                            "mlflow.registered_model": "singr-test", "tune.max_concurrent": 1}
    o.update(more)
    return [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in o.items()]


def sweep_summary(work: Path, name: str) -> dict:
    return json.loads((work / "ray" / name / "results" / "summary.json").read_text())


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory) -> Path:
    """The smoke data set (6 cases, 32^3) of configs/smoke.yaml."""
    from singr.data.synth import synthesize_dataset

    root = tmp_path_factory.mktemp("smoke_data") / "data"
    synthesize_dataset(root, n_cases=6, shape=(32, 32, 32), seed=0, progress=False)
    return root
