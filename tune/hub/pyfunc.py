"""The MLflow pyfunc of a singr model (one checkpoint or an ensemble bundle), and what it is
logged with so that it loads outside this environment.

The model's artifact ``model`` is a singr model folder (``singr-model.json`` and its
``*.safetensors`` members; :mod:`singr.engine.bundle`). ``predict`` takes one
*un-normalised* image ``(C, D, H, W)`` float32 as a numpy array (C = the model's channels,
in its modality order) and returns its label map ``(D, H, W)`` uint8 in the training data's
convention (the same Predictor as everywhere else). Through ``mlflow.pyfunc.load_model``
the :func:`signature` holds it to that (a float32 tensor ``(C, -1, -1, -1)``); the
unwrapped model (``unwrap_python_model().predict(None, [img, ...])``) also takes a list and
batches images of one shape.

Logged with it (:mod:`tune.hub.publish`): a small :func:`input_example`, and requirements that
resolve anywhere: the project's wheel, built from this source tree (:func:`build_wheel`) and
logged as the artifact ``wheel``, named by the requirement line ``artifacts/<wheel file>``
(MLflow installs requirements from inside the model's folder), plus torch, MONAI,
safetensors, numpy and nibabel pinned to the versions here (:func:`pip_requirements`). Where
no wheel can be built (an installed singr without its source tree), the ``singr`` and
``tune`` packages go into the model's ``code/`` instead and every dependency of singr is
listed (:func:`fallback_requirements`).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.pyfunc import PythonModel

__all__ = ["SingrModel", "WHEEL_ARTIFACT", "PINNED", "signature", "input_example", "pinned_requirements",
           "pip_requirements", "fallback_requirements", "project_source", "build_wheel", "package_dirs"]

WHEEL_ARTIFACT = "wheel"
PINNED = ("torch", "monai", "safetensors", "numpy", "nibabel")
"""Pinned to this environment's versions in every logged model's requirements."""
_SOURCE_ITEMS = ("pyproject.toml", "README.md", "singr", "tune", "serve", "configs")


class SingrModel(PythonModel):
    """The pyfunc: ``predict(context, image (C, D, H, W) float32 | [images])`` -> label map(s). No type
    hints on ``predict`` (MLflow would read them as a schema, and warns once at import that there are
    none): the schema is the explicit :func:`signature`."""

    def load_context(self, context):  # noqa: ANN001
        from singr.engine.bundle import load_predictor

        self.predictor = load_predictor(context.artifacts["model"], device="auto")

    def predict(self, context, model_input, params=None):  # noqa: ANN001
        images = model_input if isinstance(model_input, list) else [model_input]
        out = [p.labels for p in self.predictor.predict_batch([np.asarray(im, dtype=np.float32) for im in images])]
        return out if isinstance(model_input, list) else out[0]


# --------------------------------------------------------------------------- signature and example
def signature(in_channels: int) -> Any:
    """Input: a float32 tensor (C, D, H, W) with any D, H, W; output: a uint8 label map (D, H, W)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (int(in_channels), -1, -1, -1),
                                                    name=None)]),
                          outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1))]))


def input_example(in_channels: int, size: int = 8) -> np.ndarray:
    """A small un-normalised image (C, size, size, size) float32: a ball of "brain" (whole numbers,
    a different level per channel, brighter core) in a zero background. Small on purpose: MLflow
    stores it as JSON with the model."""
    ax = np.arange(size, dtype=np.float32) - (size - 1) / 2
    r2 = ax[:, None, None] ** 2 + ax[None, :, None] ** 2 + ax[None, None, :] ** 2
    brain = (r2 <= (size / 2 - 0.5) ** 2).astype(np.float32)
    core = (r2 <= (size / 5) ** 2).astype(np.float32)
    return np.stack([brain * (100 + 20 * c) + core * 50 * (c % 2 + 1) for c in range(int(in_channels))]
                    ).astype(np.float32)


# --------------------------------------------------------------------------- requirements
def _public(version: str) -> str:
    """The public part of a version: ``2.13.0+cpu`` -> ``2.13.0`` (``==2.13.0`` matches any local build)."""
    return version.split("+", 1)[0]


def pinned_requirements() -> list[str]:
    """``torch==X``, ``monai==X``, ... for :data:`PINNED` as installed here."""
    from importlib.metadata import version

    return [f"{d}=={_public(version(d))}" for d in PINNED]


def pip_requirements(wheel: Path) -> list[str]:
    """The requirement lines of a model logged with ``wheel`` as its artifact :data:`WHEEL_ARTIFACT`
    (MLflow stores it as ``artifacts/<file name>`` and installs from the model's folder), then
    :func:`pinned_requirements`. MLflow adds its own ``mlflow==`` line."""
    return [f"artifacts/{Path(wheel).name}", *pinned_requirements()]


def fallback_requirements() -> list[str]:
    """Without a wheel: singr's own dependencies (from its installed metadata, no extras), with
    :data:`PINNED` pinned to the versions here."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    try:
        reqs = [Requirement(r) for r in requires("singr") or []]
    except PackageNotFoundError:
        reqs = []
    pinned = pinned_requirements()
    names = {p.split("==")[0].lower() for p in pinned}
    rest = [str(r) for r in reqs if r.name.lower() not in names
            and (r.marker is None or r.marker.evaluate({"extra": ""}))]
    return [*pinned, *rest]


# --------------------------------------------------------------------------- the wheel
def project_source() -> Path | None:
    """The source tree this ``tune`` package runs from (``pyproject.toml`` of the project ``singr``
    beside the packages), or None (an installed wheel has none)."""
    root = Path(__file__).resolve().parents[2]  # <root>/tune/hub/pyfunc.py
    try:
        text = (root / "pyproject.toml").read_text()
    except OSError:
        return None
    if 'name = "singr"' not in text or not all((root / p).exists() for p in _SOURCE_ITEMS):
        return None
    return root


def _source_files(src: Path) -> list[Path]:
    """The files a wheel is built from: :data:`_SOURCE_ITEMS`, without caches and dot-files, sorted."""
    files: list[Path] = []
    for item in _SOURCE_ITEMS:
        p = src / item
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files += [f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts
                      and not f.suffix == ".pyc" and not any(part.startswith(".") for part in f.relative_to(src).parts)]
    return sorted(files)


def source_digest(src: Path) -> str:
    """sha256 over the relative path and bytes of every file of :func:`_source_files` (16 hex digits):
    the same digest means the same wheel."""
    h = hashlib.sha256()
    for f in _source_files(src):
        h.update(str(f.relative_to(src)).encode() + b"\0")
        h.update(f.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def wheel_cache_dir() -> Path:
    """Where built wheels are kept by source digest: ``$SINGR_WHEEL_CACHE``, else
    ``$XDG_CACHE_HOME/singr/wheels`` (``~/.cache/singr/wheels``)."""
    if os.environ.get("SINGR_WHEEL_CACHE"):
        return Path(os.environ["SINGR_WHEEL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "singr" / "wheels"


def build_wheel(out_dir: str | Path, timeout_s: float = 300.0, cache: bool = True) -> tuple[Path | None, str]:
    """(the project's wheel in ``out_dir``, how) or (None, why not). A wheel built before from the
    same sources (:func:`source_digest`) is copied from :func:`wheel_cache_dir` (``cache``; a
    registration then skips ``pip wheel``'s few seconds). Otherwise the sources are copied to a
    temporary folder first (``pip wheel`` of a folder writes ``build/`` and ``*.egg-info`` into it:
    never into a checkout others work in), built there without build isolation (the build
    backend of this environment; no index needed), and the wheel is kept in the cache (written
    under a temporary name, then renamed: concurrent builds never see half a wheel)."""
    src = project_source()
    if src is None:
        return None, "no source tree beside the installed tune package (an installed singr)"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kept = None
    if cache:
        try:
            kept = wheel_cache_dir() / source_digest(src)
            hit = sorted(kept.glob("singr-*.whl"))
            if hit:
                shutil.copy2(hit[-1], out / hit[-1].name)
                return out / hit[-1].name, f"built from {src} before (same sources, digest {kept.name}; cached)"
        except OSError:
            kept = None  # an unreadable cache costs the build, not the registration
    wheel, how = _pip_wheel(src, out, timeout_s)
    if wheel is not None and kept is not None:
        try:
            kept.mkdir(parents=True, exist_ok=True)
            tmp = kept / f".{wheel.name}.{os.getpid()}.tmp"
            shutil.copy2(wheel, tmp)
            os.replace(tmp, kept / wheel.name)
            _prune(kept.parent, KEEP_WHEELS)
        except OSError:
            pass
    return wheel, how


KEEP_WHEELS = 8  # source versions whose wheel the cache keeps (the most recently built)


def _prune(cache: Path, keep: int) -> None:
    """Remove all but the ``keep`` most recently modified digest folders of ``cache``."""
    dirs = sorted((d for d in cache.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True)
    for d in dirs[keep:]:
        shutil.rmtree(d, ignore_errors=True)


def _pip_wheel(src: Path, out: Path, timeout_s: float) -> tuple[Path | None, str]:
    with tempfile.TemporaryDirectory(prefix="singr-wheel-") as tmp:
        stage = Path(tmp) / "src"
        stage.mkdir()
        for item in _SOURCE_ITEMS:
            p = src / item
            if p.is_dir():
                shutil.copytree(p, stage / item, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
            else:
                shutil.copy2(p, stage / item)
        try:
            r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                                str(stage), "-w", str(out)], capture_output=True, text=True, timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, f"pip wheel failed: {type(e).__name__}: {e}"
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, f"pip wheel exited {r.returncode}: {tail[0][:300]}"
    wheels = sorted(out.glob("singr-*.whl"))
    if not wheels:
        return None, f"pip wheel wrote no singr-*.whl into {out}"
    return wheels[-1], f"built from {src} with pip wheel"


def package_dirs() -> list[Path]:
    """The folders of the installed ``singr`` and ``tune`` packages (the fallback's ``code_paths``)."""
    import singr
    import tune

    return [Path(singr.__file__).resolve().parent, Path(tune.__file__).resolve().parent]
