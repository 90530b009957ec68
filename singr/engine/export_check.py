"""Checking an export: run an exported file on CPU and compare it with PyTorch.

:func:`load_exported` loads a file written by :mod:`singr.engine.export` (``torch.jit.load``
or an onnxruntime CPU session) as a function image -> logits; :func:`check_export` returns
its largest absolute difference from the PyTorch network's logits on a sample (accepted up
to :data:`CHECK_TOLERANCE`), made by :func:`random_sample` (a random normalised input) or
:func:`case_sample` (a crop around the brain of a case folder). :func:`read_sidecar` reads
the JSON sidecar beside an exported file (:func:`sidecar_path`). The export verifies what
it writes with the same runner (:func:`reproduces`).
"""
from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ..errors import SingrInputError

__all__ = ["EXPORT_FORMATS", "CHECK_TOLERANCE", "check_format", "sidecar_path", "read_sidecar", "quiet",
           "load_exported", "torch_logits", "reproduces", "check_export", "random_sample", "case_sample"]

EXPORT_FORMATS: tuple[str, ...] = ("torchscript", "onnx")
CHECK_TOLERANCE = 1e-4
"""Largest accepted absolute difference between an export's logits and PyTorch's."""


def check_format(fmt: str) -> str:
    """``fmt`` when it is one of :data:`EXPORT_FORMATS`, else a SingrInputError naming them."""
    if fmt not in EXPORT_FORMATS:
        raise SingrInputError(f"unknown export format {fmt!r} (--format); expected one of {', '.join(EXPORT_FORMATS)}")
    return fmt


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar of an exported file: ``<file>.json``."""
    p = Path(path)
    return p.with_name(p.name + ".json")


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The sidecar of an exported file, parsed; a clear error when it is missing or unreadable."""
    sc = sidecar_path(path)
    try:
        data = json.loads(sc.read_text())
    except FileNotFoundError:
        raise SingrInputError("the export's sidecar is missing; expected the JSON written by singr export",
                              path=sc) from None
    except ValueError as e:
        raise SingrInputError(f"unreadable sidecar ({e})", path=sc) from e
    if not isinstance(data, dict):
        raise SingrInputError("the sidecar is not a JSON object", path=sc)
    return data


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' and loaders' deprecation and tracer warnings (every export is verified instead)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _runner(path: Path, fmt: str) -> Callable[[np.ndarray], np.ndarray]:
    """A function image (B, C, x, y, z) float32 -> logits, running the exported file on CPU."""
    if fmt == "torchscript":
        try:
            with quiet():
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:  # noqa: BLE001 - RuntimeError / ValueError for foreign files
            raise SingrInputError(f"cannot load as TorchScript ({type(e).__name__}: {e})", path=path) from e
        module.eval()

        def run_ts(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).float().numpy()

        return run_ts
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise SingrInputError(f"running an ONNX export needs onnxruntime (pip install onnxruntime): {e}") from None
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise SingrInputError(f"cannot load as ONNX ({type(e).__name__}: {e})", path=path) from e
    name = session.get_inputs()[0].name

    def run_onnx(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0])

    return run_onnx


def load_exported(path: str | Path, fmt: str) -> Callable[[np.ndarray], np.ndarray]:
    """The exported network at ``path`` as a function ``(B, C, x, y, z) float32 -> logits``, on CPU."""
    path = Path(path)
    check_format(fmt)
    if not path.is_file():
        raise SingrInputError(f"exported {fmt} file not found", path=path)
    return _runner(path, fmt)


def torch_logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """The PyTorch network's logits on ``x`` (float32, inference mode), as numpy."""
    with torch.inference_mode():
        return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).float().numpy()


def reproduces(run: Callable[[np.ndarray], np.ndarray], model: torch.nn.Module, x: np.ndarray) -> float | None:
    """Max abs difference of ``run`` vs PyTorch on ``x``; None when either fails or the shapes differ,
    or when the difference is far beyond rounding (an export specialised to another size)."""
    try:
        ref = torch_logits(model, x)
        got = run(x)
    except Exception:  # noqa: BLE001 - a size the network or the export cannot take
        return None
    if got.shape != ref.shape:
        return None
    diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    return diff if diff <= 1e-3 * max(1.0, float(np.max(np.abs(ref)))) else None


def check_export(path: Path, fmt: str, checkpoint: Path, sample: np.ndarray, *, trust: bool = False) -> float:
    """Max abs difference between the exported network's logits and PyTorch's (the checkpoint's
    network in eval mode, float32, CPU) on ``sample`` (1, C, x, y, z), normalised like the
    model's input. ``path`` is loaded with ``torch.jit.load`` or an onnxruntime CPU session."""
    from .checkpoint import load_checkpoint, model_from_checkpoint

    x = np.asarray(sample, dtype=np.float32)
    ckpt = load_checkpoint(checkpoint, map_location="cpu", trust=trust)
    c = ckpt.meta.in_channels
    if x.ndim != 5 or x.shape[1] != c:
        raise SingrInputError(f"the check sample has shape {tuple(x.shape)}; expected (batch, {c}, x, y, z)",
                              path=checkpoint)
    run = load_exported(path, fmt)
    model = model_from_checkpoint(ckpt, "cpu").float().eval()
    try:
        ref = torch_logits(model, x)
    except Exception as e:  # noqa: BLE001 - a size the network cannot take
        raise SingrInputError(f"the PyTorch network fails on an input of shape {tuple(x.shape)} "
                              f"({type(e).__name__}: {str(e)[:300]})", path=checkpoint) from e
    try:
        got = run(x)
    except Exception as e:  # noqa: BLE001 - a size the export does not take
        raise SingrInputError(f"the exported network failed on an input of shape {tuple(x.shape)} "
                              f"({type(e).__name__}: {str(e)[:300]})", path=path) from e
    if got.shape != ref.shape:
        raise SingrInputError(f"the exported network returned shape {got.shape}; PyTorch returns {ref.shape}",
                              path=path)
    return float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))


def random_sample(in_channels: int, size: Sequence[int], seed: int = 0) -> np.ndarray:
    """A random normalised input (1, C, x, y, z): standard normal, z-scored per channel."""
    from ..preprocess import normalize_image

    img = np.random.default_rng(seed).standard_normal((int(in_channels), *map(int, size)), dtype=np.float32)
    return normalize_image(img)[None]


def case_sample(case_dir: str | Path, size: Sequence[int], modalities: Sequence[str] = (),
                in_channels: int | None = None) -> np.ndarray:
    """A crop (1, C, x, y, z) of a case folder: read (``find_case_folder_files`` + ``load_case``),
    the model's ``modalities`` selected in order, normalised (:func:`normalize_image`), and cut to
    ``size`` around the centre of the brain's bounding box (:func:`singr.geometry.crop_around_brain`)."""
    from ..data.readers import canonical_modality, find_case_folder_files, load_case
    from ..geometry import crop_around_brain
    from ..preprocess import normalize_image

    case = load_case(find_case_folder_files(Path(case_dir)), check=True)
    img = case.image
    have = [canonical_modality(m) or m for m in case.modalities]
    want = [canonical_modality(m) or m for m in modalities]
    if want and all(m in have for m in want):
        img = img[[have.index(m) for m in want]]
    n = int(in_channels) if in_channels is not None else img.shape[0]
    if img.shape[0] != n:
        raise SingrInputError(f"the case has modalities {list(case.modalities)}; the model expects {n} channels "
                              f"({', '.join(modalities) or 'unnamed'})", case=case.case_id, path=case_dir)
    return crop_around_brain(normalize_image(img), size)[None]
