"""Checkpoints: one self-describing file per model.

A checkpoint holds the model's weights and everything needed to use it without the
training config at hand: the resolved config, the architecture, channel counts, region
names, modalities, label convention, the SiNG settings and the loss. Written atomically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import SingrInputError
from ..io import atomic_path


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """torch.save ``state`` to a temporary file beside ``path``, then rename it over ``path``."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise SingrInputError("checkpoint file not found", path=path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated, not a torch file, ...
        raise SingrInputError(f"cannot read checkpoint ({type(e).__name__}: {e})", path=path) from e
    if not isinstance(state, dict) or "model_state" not in state or "meta" not in state:
        raise SingrInputError("not a singr checkpoint (expected keys 'model_state' and 'meta')", path=path)
    return state


def model_from_checkpoint(state: dict[str, Any], device: str | torch.device = "cpu") -> torch.nn.Module:
    from ..models import model_from_config

    meta = state["meta"]
    model = model_from_config(state["config"], meta["in_channels"], meta["out_channels"])
    model.load_state_dict(state["model_state"])
    return model.to(device).eval()
