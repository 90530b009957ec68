"""Sliding-window inference and post-processing.

    logits = sliding_window(model, image, roi = min(roi_size, volume rounded up), overlap)
    region_r = logits_r >= 0      (tanh(logit) >= 0 for SiNGR; sigmoid(logit) >= 0.5 for baselines)
    signed map = tanh(logits)     (the regressed SiNG map; meaningful for SiNGR models)
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch


def clip_roi(roi_size: Sequence[int], shape: Sequence[int], multiple: int = 16) -> tuple[int, ...]:
    """The window clipped to the volume, rounded up to what the network accepts.

    MONAI pads a volume smaller than the window, so rounding up is safe.
    """
    return tuple(min(int(r), int(math.ceil(s / multiple) * multiple)) for r, s in zip(roi_size, shape))


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    image: np.ndarray | torch.Tensor,
    roi_size: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    mode: str = "constant",
    device: str | torch.device = "cpu",
    multiple: int = 16,
    fixed_roi: bool = False,
) -> torch.Tensor:
    """Raw network output (R, D, H, W) on the CPU for one image (C, D, H, W)."""
    from monai.inferers import sliding_window_inference

    x = torch.as_tensor(np.asarray(image, dtype=np.float32) if not torch.is_tensor(image) else image)
    x = x[None].to(device)
    roi = tuple(int(r) for r in roi_size) if fixed_roi else clip_roi(roi_size, x.shape[2:], multiple)
    was_training = model.training
    model.eval()
    try:
        out = sliding_window_inference(x, roi, sw_batch_size, model, overlap=overlap, mode=mode)
    finally:
        model.train(was_training)
    return torch.as_tensor(out)[0].float().cpu()


def logits_to_regions(logits: torch.Tensor | np.ndarray) -> np.ndarray:
    """Threshold at 0: S-hat >= 0 (SiNGR) and sigmoid >= 0.5 (hard labels) are both logit >= 0."""
    return (torch.as_tensor(logits) >= 0).numpy()


def logits_to_signed(logits: torch.Tensor | np.ndarray) -> np.ndarray:
    return torch.tanh(torch.as_tensor(logits)).numpy().astype(np.float32)
