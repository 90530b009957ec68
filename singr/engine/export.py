"""Export a model's member networks for other runtimes: TorchScript or ONNX, plus a sidecar.

``singr export`` (and :func:`export_model`) writes each member of a model (one checkpoint,
or the members of an ensemble) as a standalone network that maps a float32 image
``(batch, C, x, y, z)`` to the raw logits ``(batch, R, x, y, z)``, in eval mode (no dropout):

    torchscript  ``torch.jit.script`` of the network (Python control flow kept, e.g.
                 BasicUNet's padding of odd sizes); ``torch.jit.trace`` at the window size
                 where scripting fails (SwinUNETR). Load with ``torch.jit.load``.
    onnx         ``torch.onnx.export(..., dynamo=False)`` (the TorchScript-based exporter:
                 the dynamo exporter needs the ``onnxscript`` package) with dynamic batch
                 and spatial axes; input ``image``, output ``logits``.

The spatial size is *dynamic* (any multiple of the network's size multiple: 16 for unet3d,
unetpp, unetr, 8 for segresnet, 32 for swinunetr) for unet3d, unetpp and segresnet; *fixed*
to the export window for unetr (position embeddings of the training patch) and swinunetr
(its shifted-window attention mask is computed from the input size while exporting). Every
export is run once at another batch and spatial size against PyTorch; a network that does
not reproduce it is written (and declared in the sidecar) with the fixed window size.

ONNX graphs compute instance and group norms with staged reductions (one axis at a time,
:mod:`singr.engine.staged_norms`): onnxruntime's own operators drift from PyTorch on real
images (up to 5.6e-3 at 128^3; staged: 1e-5), at the price of a slower run, ~1.7x at 128^3
(``staged_norms=False``, ``--native-norms``, keeps the native operators).

Beside each file ``<file>.json`` (:func:`singr.engine.export_check.sidecar_path`) says what a user of the raw network
needs: input channels and modality order, the normalisation (z-score per channel over the
non-zero voxels, as :func:`singr.preprocess.normalize_image`), region names, the threshold
(foreground where logit >= 0, i.e. tanh(logit) >= 0 for SiNGR's signed maps), the sliding
window the model was trained for, lambda/delta/gamma and the source checkpoint's sha256.
Ensembles: average tanh(logits) over members, then threshold at 0 (what
:class:`singr.engine.infer.Predictor` does). A bundle's post-processing rules are not part
of the export.

Loading an exported file, checking it against PyTorch and reading its sidecar:
:mod:`singr.engine.export_check`.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Sequence, TypeVar

import numpy as np
import torch

from ..errors import SingrInputError
from ..io import atomic_path, write_json
from .export_check import check_format, load_exported, quiet, reproduces, sidecar_path, torch_logits
from .meta import ModelMeta
from .staged_norms import with_staged_norms

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "export_model", "output_paths", "resolve_model_files", "file_sha256"]

SUFFIX = {"torchscript": ".torchscript", "onnx": ".onnx"}
INPUT_NAME, OUTPUT_NAME = "image", "logits"
SPATIAL_AXES = ("x", "y", "z")
FIXED_SIZE_MODELS: dict[str, str] = {
    "unetr": "UNETR's position embeddings are those of the training patch",
    "swinunetr": "SwinUNETR's shifted-window attention mask is computed from the input size when exporting",
}
_TORCHSCRIPT_SUFFIXES = (".torchscript", ".pt", ".pth", ".ts", ".jit")


# --------------------------------------------------------------------------- files and names
def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def output_paths(members: Sequence[str | Path], fmt: str, out: str | Path) -> list[Path]:
    """Where each member's export goes.

    ``out`` is a file when it has a suffix and is not an existing folder: allowed for one
    member only; ``.onnx`` for onnx, and for torchscript any suffix but ``.onnx``,
    ``.safetensors`` and ``.json``. Otherwise ``out`` is a folder and member ``m`` becomes
    ``<out>/<stem of m><.torchscript | .onnx>`` (``member_<i>_<stem>`` when stems repeat,
    as ``best`` in several fold folders).
    """
    check_format(fmt)
    out = Path(out)
    files = [Path(m) for m in members]
    if not files:
        raise SingrInputError("no model members to export")
    if out.suffix and not out.is_dir():
        suffix = out.suffix.lower()
        if len(files) > 1:
            raise SingrInputError(f"--out names a file, but the model has {len(files)} members; give a folder "
                                  "(one file per member is written in it)", path=out)
        if fmt == "onnx" and suffix != ".onnx":
            raise SingrInputError("--format onnx writes a .onnx file; expected --out ending in .onnx or a folder",
                                  path=out)
        if fmt == "torchscript" and suffix in (".onnx", ".safetensors", ".json"):
            raise SingrInputError(f"--format torchscript cannot write a {suffix} file; expected --out ending in "
                                  f"{' or '.join(_TORCHSCRIPT_SUFFIXES[:2])}, or a folder", path=out)
        paths = [out]
    else:
        stems = [m.name[: -len(m.suffix)] if m.suffix else m.name for m in files]
        if len(set(stems)) != len(stems):
            stems = [f"member_{i}_{s}" for i, s in enumerate(stems)]
        paths = [out / f"{s}{SUFFIX[fmt]}" for s in stems]
    for p, m in zip(paths, files):
        if p.exists() and p.resolve() == m.resolve():
            raise SingrInputError("--out would overwrite the model's own checkpoint", path=p)
    return paths


def resolve_model_files(source: Sequence[str | Path], tracking_uri: str | None = None) -> list[Path]:
    """The member checkpoint files of ``source``: checkpoint files (several: an ensemble), a model
    folder (:func:`singr.engine.bundle.read_bundle`), or a model in a store (``models:/<name>@<alias>``,
    downloaded by :func:`singr.engine.source.local_model`)."""
    from .bundle import read_bundle
    from .source import local_model

    src = local_model(source, tracking_uri)
    if len(src) == 1:
        return read_bundle(src[0])[0]
    files = [Path(s) for s in src]
    for f in files:
        if not f.is_file():
            raise SingrInputError("checkpoint file not found (several --model values are the checkpoint files of "
                                  "an ensemble)", path=f)
    return files


# --------------------------------------------------------------------------- export
def _roi_for(cfg: Any, roi: Sequence[int] | None, where: str) -> tuple[int, int, int]:
    """The export window: ``roi`` (checked) or the model's sliding window rounded up to the
    network's size multiple, at least two of it (UNETR: its training patch)."""
    from ..models import size_multiple
    from .infer import InferenceSettings

    name = cfg.model.name
    settings = InferenceSettings.from_config(cfg)
    mult = size_multiple(name)
    default = tuple(int(r) if settings.fixed_roi else max(2 * mult, -(-int(r) // mult) * mult)
                    for r in settings.roi_size)
    if roi is None:
        return default  # type: ignore[return-value]
    r = tuple(int(v) for v in roi)
    if len(r) != 3 or min(r) < 1:
        raise SingrInputError(f"--roi expects 3 positive sizes X Y Z, got {list(roi)}", path=where)
    if any(v % mult or v < 2 * mult for v in r) and name != "unetr":
        raise SingrInputError(f"--roi {' '.join(map(str, r))}: every size must be a multiple of {mult}, at least "
                              f"{2 * mult} (two voxels at the deepest level), for {name}", path=where)
    if name == "unetr" and r != default:
        raise SingrInputError(f"--roi {' '.join(map(str, r))}: a unetr network only takes its training patch "
                              f"{' '.join(map(str, default))}", path=where)
    return r  # type: ignore[return-value]


def _probe_shape(roi: tuple[int, int, int], mult: int) -> tuple[int, int, int]:
    """A small spatial size, unlike ``roi`` on every axis where possible, to probe dynamic axes."""
    a, b = 2 * mult, 3 * mult
    shape = (a, b, a)
    return (b, a, b) if shape == roi else shape


def _write_torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path) -> str:
    """Script (else trace) ``model`` and save it to ``path``; returns the method used."""
    method = "script"
    with quiet():
        try:
            module: Any = torch.jit.script(model)
        except Exception:  # noqa: BLE001 - unsupported Python constructs: fall back to tracing
            method = "trace"
            try:
                with torch.no_grad():
                    module = torch.jit.trace(model, example, check_trace=False)
            except Exception as e:  # noqa: BLE001
                raise SingrInputError(f"cannot export this network to TorchScript ({type(e).__name__}: {e}); "
                                      "try --format onnx", path=path) from e
        module.eval()
        with atomic_path(path) as tmp:
            torch.jit.save(module, str(tmp))
    return method


def _write_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int, dynamic_spatial: bool,
                dynamic_batch: bool) -> None:
    axes: dict[int, str] = {0: "batch"} if dynamic_batch else {}
    if dynamic_spatial:
        axes.update({2 + i: a for i, a in enumerate(SPATIAL_AXES)})
    dynamic = {INPUT_NAME: dict(axes), OUTPUT_NAME: dict(axes)} if axes else None
    with quiet(), torch.no_grad(), atomic_path(path) as tmp:
        try:
            torch.onnx.export(model, (example,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes=dynamic, opset_version=int(opset), do_constant_folding=True,
                              dynamo=False)
        except Exception as e:  # noqa: BLE001 - unsupported operators, opsets
            raise SingrInputError(f"cannot export this network to ONNX with opset {opset} "
                                  f"({type(e).__name__}: {e}); try another --opset or --format torchscript",
                                  path=path) from e


def _onnx_opset_range() -> tuple[int, int]:
    from torch.onnx import _constants

    lo = int(getattr(_constants, "ONNX_MIN_OPSET", 7))
    hi = int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))
    return max(lo, 9), hi


def _can_run_onnx() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _export_one(model: torch.nn.Module, name: str, fmt: str, path: Path, roi: tuple[int, int, int],
                in_channels: int, opset: int, *, staged_norms: bool = True) -> dict[str, Any]:
    """Write one member; returns the sidecar's ``export`` facts (method, sizes, verification).
    ``staged_norms``: the ONNX graph computes instance/group norms with staged reductions."""
    from ..models import size_multiple

    mult = size_multiple(name)
    rng = np.random.default_rng(0)
    example = torch.from_numpy(rng.standard_normal((1, in_channels) + roi, dtype=np.float32))
    want_dynamic = name not in FIXED_SIZE_MODELS
    probe = rng.standard_normal((2, in_channels) + _probe_shape(roi, mult), dtype=np.float32)
    at_roi = rng.standard_normal((2, in_channels) + roi, dtype=np.float32)
    can_run = fmt == "torchscript" or _can_run_onnx()
    t0 = time.perf_counter()
    facts: dict[str, Any] = {"format": fmt}
    net: torch.nn.Module = model
    if fmt == "torchscript":
        facts["method"] = _write_torchscript(model, example, path)
    else:
        facts["method"] = "torch.onnx.export (dynamo=False)"
        facts["opset"] = int(opset)
        net, n_norms = with_staged_norms(model) if staged_norms else (model, 0)
        facts["norms"] = (f"{n_norms} instance/group norms as staged ReduceMean ops (float32-exact in "
                          "onnxruntime)" if staged_norms else "native operators")
        _write_onnx(net, example, path, opset, dynamic_spatial=want_dynamic, dynamic_batch=True)
    dynamic_spatial, dynamic_batch, verified = want_dynamic, True, False
    diffs: list[float] = []
    shapes: list[list[int]] = []
    if can_run:
        if dynamic_spatial:
            d = reproduces(load_exported(path, fmt), model, probe)
            if d is None:  # specialised to the export size after all: write it as fixed
                dynamic_spatial = False
                if fmt == "onnx":
                    _write_onnx(net, example, path, opset, dynamic_spatial=False, dynamic_batch=True)
            else:
                diffs.append(d)
                shapes.append(list(probe.shape))
        if not dynamic_spatial:
            try:
                torch_logits(model, at_roi[:1])
            except Exception as e:  # noqa: BLE001 - the network itself cannot take this size
                raise SingrInputError(f"the {name} network does not run on an input of size {list(roi)} "
                                      f"({type(e).__name__}: {str(e)[:200]}); choose another --roi",
                                      path=path) from e
            d = reproduces(load_exported(path, fmt), model, at_roi)
            if d is None:
                dynamic_batch = False
                if fmt == "onnx":
                    _write_onnx(net, example, path, opset, dynamic_spatial=False, dynamic_batch=False)
            else:
                diffs.append(d)
                shapes.append(list(at_roi.shape))
        verified = bool(shapes)
    facts["seconds"] = round(time.perf_counter() - t0, 3)
    facts["bytes"] = path.stat().st_size
    facts["input_size"] = {
        "spatial": "dynamic" if dynamic_spatial else list(roi),
        "spatial_multiple": mult,
        "batch": "dynamic" if dynamic_batch else 1,
        "exported_at": [1, in_channels, *roi],
        "why_fixed": None if dynamic_spatial else FIXED_SIZE_MODELS.get(
            name, "the exported network did not reproduce PyTorch at another input size"),
    }
    facts["verified"] = {"done": verified, "max_abs_diff": max(diffs) if diffs else None, "shapes": shapes}
    return facts


_T = TypeVar("_T")


def _or(value: _T | None, default: _T) -> _T:
    """``value``, or ``default`` where the checkpoint's metadata lacks it (None)."""
    return default if value is None else value


def _sidecar(ckpt: Any, cfg: Any, source: Path, sha: str, path: Path, facts: dict[str, Any], index: int,
             members: Sequence[Path], out_paths: Sequence[Path]) -> dict[str, Any]:
    from .. import __version__
    from ..data.readers import BRATS2023_NAMES, MODALITIES
    from ..losses import is_regression_loss
    from .infer import InferenceSettings

    meta: ModelMeta = ckpt.meta
    c_in, c_out = meta.in_channels, meta.out_channels
    mods = list(meta.modalities)
    regression = meta.regression if meta.regression is not None else is_regression_loss(cfg.loss.name)
    settings = InferenceSettings.from_config(cfg)
    spatial = facts["input_size"]["spatial"]
    dims: list[Any] = ["batch" if facts["input_size"]["batch"] == "dynamic" else 1]
    in_shape = dims + [c_in] + (list(SPATIAL_AXES) if spatial == "dynamic" else list(spatial))
    out_shape = dims + [c_out] + (list(SPATIAL_AXES) if spatial == "dynamic" else list(spatial))
    act = "tanh" if regression else "sigmoid"
    window: dict[str, Any] = {"roi_size": list(settings.roi_size), "overlap": float(settings.overlap),
                              "mode": settings.mode, "tta_mirroring": bool(settings.tta),
                              "crop_to_brain": bool(settings.crop),
                              "outside_brain": "background (tanh -1)" if settings.crop else None}
    if spatial != "dynamic" and list(spatial) != window["roi_size"]:
        window["note"] = f"this export takes only {list(spatial)}: use that as the window"
    return {
        "singr_export": 1,
        "file": path.name,
        "format": facts["format"],
        "export": {k: v for k, v in facts.items() if k not in ("format", "input_size")},
        "singr_version": __version__,
        "torch_version": torch.__version__,
        "source": {"checkpoint": source.name, "sha256": sha, "epoch": int(ckpt.epoch),
                   "best_metric": float(ckpt.best_metric), "fold": meta.fold},
        "model": _or(meta.model, cfg.model.name),
        "input": {
            "name": INPUT_NAME, "dtype": "float32", "shape": in_shape, "channels": c_in,
            "modalities": mods,
            "modalities_brats2023": [BRATS2023_NAMES[MODALITIES.index(m)] if m in MODALITIES else m for m in mods],
            "axes": "(batch, channel, x, y, z): the NIfTI voxel order as nibabel reads it, no reorientation",
            "spatial_size": spatial, "spatial_multiple": facts["input_size"]["spatial_multiple"],
            "batch": facts["input_size"]["batch"], "why_fixed": facts["input_size"]["why_fixed"],
            "exported_at": facts["input_size"]["exported_at"],
            "spacing_mm": list(meta.spacing) if meta.spacing is not None else None,
        },
        "normalization": {
            "method": "z-score each channel over its non-zero (brain) voxels: (v - mean) / std on voxels != 0; "
                      "zero (background) voxels stay 0",
            "per_channel": True, "nonzero_only": True,
            "same_as": "singr.preprocess.normalize_image = monai NormalizeIntensity(nonzero=True, channel_wise=True)",
        },
        "output": {
            "name": OUTPUT_NAME, "dtype": "float32", "shape": out_shape, "kind": "raw logits",
            "regions": list(meta.region_names),
            "activation": act,
            "foreground": f"logit >= 0 (i.e. {act}(logit) >= {'0' if regression else '0.5'})",
            "signed_map": "tanh(logit) is SiNGR's signed normalised geodesic map S in [-1, 1]" if regression else None,
            "label_convention": meta.label_convention,
            "regions_nested": "ET within TC within WT; labels: ET -> ET label, TC - ET -> 1 (NCR), WT - TC -> 2 (ED)"
                              if meta.region_names == ("TC", "WT", "ET") else None,
        },
        "sliding_window": window,
        "training": {"loss": _or(meta.loss, cfg.loss.name), "patch_size": list(cfg.train.patch_size),
                     "lam": _or(meta.lam, float(cfg.sing.lam)), "delta": _or(meta.delta, float(cfg.sing.delta)),
                     "gamma": _or(meta.gamma, float(cfg.loss.gamma))},
        "ensemble": None if len(members) == 1 else {
            "member": index, "members": [p.name for p in out_paths],
            "combine": "mean over members of tanh(logits), then foreground where the mean >= 0"},
    }


def export_model(source_files: list[Path], fmt: str, out: Path, roi: tuple[int, int, int] | None = None,
                 opset: int = 17, trust: bool = False, *, staged_norms: bool = True) -> list[Path]:
    """Export each member checkpoint of ``source_files`` to ``fmt``; returns the files written.

    ``out``: a file (one member) or a folder (see :func:`output_paths`). ``roi``: the input
    size exported at (default the model's sliding window; a multiple of the network's size
    multiple); it is also the fixed input size of networks that cannot take others.
    ``opset``: ONNX opset (9..20, the TorchScript-based exporter). ``trust``: allow singr
    0.1 pickle checkpoints. ``staged_norms`` (ONNX): write instance/group norms as staged
    reductions, exact to float32 rounding in onnxruntime (its own InstanceNormalization
    sums a whole window in one float32 pass and drifts by 1e-4..1e-2 on real images), at a
    slower run time; False keeps the native operators. Each file gets a ``<file>.json``
    sidecar (module docstring).
    Raises :class:`SingrInputError` for an unknown format, a bad ``roi``/``opset``/``out``,
    or a checkpoint that cannot be read.
    """
    from ..config import from_stored
    from .checkpoint import load_checkpoint, model_from_checkpoint

    check_format(fmt)
    if fmt == "onnx":
        lo, hi = _onnx_opset_range()
        if not lo <= int(opset) <= hi:
            raise SingrInputError(f"--opset {opset} is not supported by the ONNX exporter; expected {lo}..{hi}")
    members = [Path(s) for s in source_files]
    paths = output_paths(members, fmt, out)
    written: list[Path] = []
    for i, (src, path) in enumerate(zip(members, paths)):
        ckpt = load_checkpoint(src, map_location="cpu", trust=trust)  # refuses metadata without channel counts
        cfg: Any = from_stored(ckpt.config)
        r = _roi_for(cfg, roi, str(src))
        model = model_from_checkpoint(ckpt, "cpu").float().eval()
        facts = _export_one(model, cfg.model.name, fmt, path, r, ckpt.meta.in_channels, opset,
                            staged_norms=staged_norms)
        write_json(sidecar_path(path), _sidecar(ckpt, cfg, src, file_sha256(src), path, facts, i, members, paths))
        written.append(path)
    return written
