"""Checkpoints in a format that cannot carry code: one safetensors file per model.

A checkpoint holds the network's weights and everything needed to use it without the
training config at hand (the resolved config, architecture, channel counts, region names,
modalities, label convention, SiNG settings, loss), and, for resuming, the optimizer state,
the epoch and the RNG state. Tensors are stored as safetensors tensors
(``model.<name>``, ``optim.<param>.<name>``, ``rng.torch``); everything else is JSON in the
file's metadata (``singr``). Loading such a file parses JSON and copies numbers: it never
runs code, whoever made the file. The model's metadata is a :class:`~singr.engine.meta.ModelMeta`
in memory and its :meth:`~singr.engine.meta.ModelMeta.to_dict` JSON object (``meta``) on disk;
this module is the one place that converts between the two.

Checkpoints of singr 0.1 (``best.pt``, a torch pickle) can run arbitrary code when loaded;
:func:`load_checkpoint` refuses them unless ``trust=True`` (``--trust-checkpoint`` on the
command line), for files the user made. Files are written atomically.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import SingrInputError
from ..io import atomic_path
from .meta import ModelMeta

__all__ = ["Checkpoint", "ModelMeta", "save_checkpoint", "load_checkpoint", "is_safetensors", "model_from_checkpoint",
           "CHECKPOINT_SUFFIX", "FORMAT_VERSION"]

CHECKPOINT_SUFFIX = ".safetensors"
FORMAT_VERSION = 2
_META_KEY = "singr"


@dataclass
class Checkpoint:
    """What a checkpoint file holds (see the module docstring)."""

    model_state: dict[str, torch.Tensor]
    meta: ModelMeta
    config: dict[str, Any]
    epoch: int = -1
    best_metric: float = -1.0
    metrics: dict[str, Any] = field(default_factory=dict)
    optimizer_state: dict[str, Any] | None = None
    rng_state: torch.Tensor | None = None


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer ``state_dict`` -> (tensors ``optim.<param>.<name>``, JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {"param_groups": state.get("param_groups", []), "state": {}}
    for pid, slots in (state.get("state") or {}).items():
        entry: dict[str, Any] = {}
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{name}"] = value.detach().cpu().contiguous()
                entry[name] = {"tensor": f"optim.{pid}.{name}"}
            else:
                entry[name] = value
        plain["state"][str(pid)] = entry
    return tensors, plain


def _unflatten_optimizer(plain: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for pid, slots in (plain.get("state") or {}).items():
        state[int(pid)] = {name: (tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v)
                           for name, v in slots.items()}
    return {"state": state, "param_groups": plain.get("param_groups", [])}


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``path`` (safetensors), atomically."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in ckpt.model_state.items()}
    extra: dict[str, Any] = {"format": FORMAT_VERSION, "meta": ckpt.meta.to_dict(), "config": ckpt.config,
                             "epoch": int(ckpt.epoch), "best_metric": float(ckpt.best_metric),
                             "metrics": ckpt.metrics}
    if ckpt.optimizer_state is not None:
        opt_tensors, plain = _flatten_optimizer(ckpt.optimizer_state)
        tensors.update(opt_tensors)
        extra["optimizer"] = plain
    if ckpt.rng_state is not None:
        tensors["rng.torch"] = ckpt.rng_state.detach().cpu().contiguous()
    header = {_META_KEY: json.dumps(extra, default=float)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return Path(path)


def is_safetensors(path: str | Path) -> bool:
    """True when ``path`` starts like a safetensors file (8-byte header length, then JSON)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n < (1 << 30) and head[8:9] == b"{"


_PICKLE_STARTS = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")  # torch.save: zip, or pickle 2-5


def _not_a_pickle(path: Path) -> str | None:
    """Why a file that is not safetensors is no torch pickle either (empty, a broken safetensors
    header, something else), or None when it starts like one. Only a real pickle earns the advice
    to pass ``--trust-checkpoint``; a broken file is called broken."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        return "empty checkpoint file (0 bytes); copy or download it again"
    if head.startswith(_PICKLE_STARTS):
        return None
    if path.suffix == CHECKPOINT_SUFFIX:
        return (f"broken safetensors checkpoint: its header is not a safetensors header (first bytes {head[:9]!r}: "
                "expected an 8-byte length, then JSON); the file is truncated or corrupt, copy or download it again")
    return f"not a checkpoint: neither safetensors nor a torch file (first bytes {head[:9]!r})"


def _load_pickle(path: Path, map_location: Any) -> Checkpoint:
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - truncated, not a torch file, ...
        raise SingrInputError(f"cannot read checkpoint ({type(e).__name__}: {e})", path=path) from e
    if not isinstance(state, dict) or "model_state" not in state or "meta" not in state:
        raise SingrInputError("not a singr checkpoint (expected keys 'model_state' and 'meta')", path=path)
    return Checkpoint(model_state=state["model_state"], meta=ModelMeta.from_dict(state["meta"], source=path),
                      config=state.get("config", {}),
                      epoch=int(state.get("epoch", -1)), best_metric=float(state.get("best_metric", -1.0)),
                      metrics=state.get("metrics", {}), optimizer_state=state.get("optimizer_state"),
                      rng_state=state.get("torch_rng"))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *, trust: bool = False) -> Checkpoint:
    """Read a checkpoint; a clear error for a missing, truncated or foreign file.

    A torch pickle (singr 0.1's ``.pt``) is refused unless ``trust`` is True: unpickling
    runs whatever code the file names.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise SingrInputError("checkpoint file not found", path=path)
    if not is_safetensors(path):
        broken = _not_a_pickle(path)
        if broken:
            raise SingrInputError(broken, path=path)
        if not trust:
            raise SingrInputError(
                "not a safetensors checkpoint: it looks like a torch pickle (singr 0.1's .pt format), and "
                "loading a pickle can run arbitrary code. Refused; if you made this file yourself, pass "
                "--trust-checkpoint (or trust_checkpoint: true) to load it, and `singr convert` to rewrite it "
                "in the safe format", path=path)
        return _load_pickle(path, map_location)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for bad files
        raise SingrInputError(f"broken safetensors checkpoint: truncated or corrupt ({type(e).__name__}: {e}); "
                              "copy or download it again", path=path) from e
    if _META_KEY not in header:
        raise SingrInputError("a safetensors file without singr metadata; expected a checkpoint written by singr",
                              path=path)
    try:
        extra = json.loads(header[_META_KEY])
    except ValueError as e:
        raise SingrInputError(f"corrupt singr metadata ({e})", path=path) from e
    if not isinstance(extra, dict) or "meta" not in extra:
        raise SingrInputError("singr metadata without 'meta'; not a singr checkpoint", path=path)
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    dev = torch.device(map_location) if isinstance(map_location, str) else map_location
    if dev.type != "cpu":
        model_state = {k: v.to(dev) for k, v in model_state.items()}
    optim = _unflatten_optimizer(extra["optimizer"], tensors) if "optimizer" in extra else None
    return Checkpoint(model_state=model_state, meta=ModelMeta.from_dict(extra["meta"], source=path),
                      config=extra.get("config", {}),
                      epoch=int(extra.get("epoch", -1)), best_metric=float(extra.get("best_metric", -1.0)),
                      metrics=extra.get("metrics", {}), optimizer_state=optim, rng_state=tensors.get("rng.torch"))


def model_from_checkpoint(ckpt: Checkpoint, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The network of ``ckpt`` with its weights, on ``device``, in eval mode."""
    from ..config import from_stored
    from ..models import model_from_config

    cfg: Any = from_stored(ckpt.config)
    model = model_from_config(cfg, ckpt.meta.in_channels, ckpt.meta.out_channels)
    try:
        model.load_state_dict(ckpt.model_state)
    except RuntimeError as e:
        raise SingrInputError(f"the checkpoint's weights do not fit its {cfg.model.name} network ({e})") from e
    return model.to(device).eval()
