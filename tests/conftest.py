"""Shared pytest fixtures (keep small)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest


def _write_nii(path: str | Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write ``array`` as NIfTI with plain nibabel (independent of singr.io)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine, dtype=array.dtype), str(path))
    return path


@pytest.fixture
def write_nii() -> Callable[..., Path]:
    """``write_nii(path, array, affine=None) -> path``: write a NIfTI file for a test."""
    return _write_nii


@pytest.fixture(scope="session")
def synthetic_brats_root(tmp_path_factory) -> Path:
    """Three small synthetic cases (32 x 32 x 24) in the BraTS 2020 layout; read-only for tests."""
    from singr.data.synth import synthesize_dataset

    root = tmp_path_factory.mktemp("synthetic_brats")
    synthesize_dataset(root, n_cases=3, shape=(32, 32, 24), seed=0, progress=False)
    return root


@pytest.fixture(autouse=True)
def _restore_mlflow_uris():
    """MLflow's tracking and registry URIs are process-global: a test that sets them (a client of
    a server it started) must not point later tests' clients at a server that is gone."""
    env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    yield
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if "mlflow" in sys.modules:
        import mlflow.tracking._model_registry.utils as registry_utils
        import mlflow.tracking._tracking_service.utils as tracking_utils

        registry_utils._registry_uri = None
        tracking_utils._tracking_uri = None


_FIGURE_PREFIXES = ("[hardening]", "[cluster]", "[readme]", "[viewer]")
_FIGURES: list[str] = []  # the figure lines of this session's passed tests, in order


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Keep the figures slow tests print (lines starting with ``[hardening]``, ``[cluster]``,
    ``[readme]``, ``[viewer]``) so the run's summary shows them even without ``-s``."""
    if report.when == "call" and report.passed:
        lines = [ln for ln in report.capstdout.splitlines() if ln.startswith(_FIGURE_PREFIXES)]
        if lines:
            _FIGURES.extend(lines)


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if _FIGURES:
        terminalreporter.section("figures measured by the tests")
        for ln in _FIGURES:
            terminalreporter.write_line(ln)
