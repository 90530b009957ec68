"""Where computation runs: one rule for the distance engines, training and inference."""
from __future__ import annotations

from .errors import SingrInputError


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; 'cuda' without a GPU is an error."""
    import torch

    device = str(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SingrInputError(f"device {device!r} asked for, but no CUDA GPU is visible")
    if device != "cpu" and not device.startswith("cuda"):
        raise SingrInputError(f"unknown device {device!r}; expected 'auto', 'cpu' or 'cuda[:N]'")
    return device
