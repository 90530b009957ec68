"""Instance and group norms with staged reductions, for exact ONNX graphs.

onnxruntime's InstanceNormalization and whole-volume ReduceMean sum a window in one float32
pass and drift from PyTorch on real images (on a crop of a BraTS case: 1.6e-4 for
synthetic.yaml's unet3d at 64x64x48, 5.6e-3 for brats.yaml's at 128^3). Reducing one axis at a
time keeps the rounding at PyTorch's level (5e-6, 1e-5), at the price of a slower run (~1.7x
at 128^3). :func:`with_staged_norms` gives the copy of a network that
:func:`singr.engine.export.export_model` writes to ONNX.
"""
from __future__ import annotations

import torch

__all__ = ["with_staged_norms"]


def _staged_mean(t: torch.Tensor, first: int) -> torch.Tensor:
    """Mean over the axes ``first..`` one axis at a time (keepdim): each step sums one axis's
    length of numbers, so float32 rounding stays at PyTorch's level; one ReduceMean over a
    whole 128^3 volume in onnxruntime loses ~1e-3."""
    for d in range(t.dim() - 1, first - 1, -1):
        t = t.mean(dim=d, keepdim=True)
    return t


class _StagedInstanceNorm(torch.nn.Module):
    """InstanceNorm (no running stats) with staged reductions, for the ONNX graph."""

    def __init__(self, norm: torch.nn.modules.instancenorm._InstanceNorm):
        super().__init__()
        self.eps = float(norm.eps)
        self.weight = norm.weight if norm.affine else None
        self.bias = norm.bias if norm.affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = x - _staged_mean(x, 2)
        y = xc * torch.rsqrt(_staged_mean(xc * xc, 2) + self.eps)
        if self.weight is not None and self.bias is not None:
            shape = [1, -1] + [1] * (x.dim() - 2)
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


class _StagedGroupNorm(torch.nn.Module):
    """GroupNorm with staged reductions (SegResNet), for the ONNX graph."""

    def __init__(self, norm: torch.nn.GroupNorm):
        super().__init__()
        self.groups, self.eps = int(norm.num_groups), float(norm.eps)
        self.weight = norm.weight if norm.affine else None
        self.bias = norm.bias if norm.affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        g = x.reshape((shape[0], self.groups, shape[1] // self.groups) + tuple(shape[2:]))
        gc = g - _staged_mean(g, 2)
        y = (gc * torch.rsqrt(_staged_mean(gc * gc, 2) + self.eps)).reshape(shape)
        if self.weight is not None and self.bias is not None:
            view = [1, -1] + [1] * (x.dim() - 2)
            y = y * self.weight.view(view) + self.bias.view(view)
        return y


def with_staged_norms(model: torch.nn.Module) -> tuple[torch.nn.Module, int]:
    """A copy of ``model`` whose instance/group norms (over whole volumes) use staged reductions;
    returns (copy, number replaced). Norms that keep running statistics are left as they are."""
    import copy

    out = copy.deepcopy(model)
    n = 0
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            new: torch.nn.Module | None = None
            if isinstance(child, torch.nn.modules.instancenorm._InstanceNorm) and not child.track_running_stats:
                new = _StagedInstanceNorm(child)
            elif isinstance(child, torch.nn.GroupNorm):
                new = _StagedGroupNorm(child)
            if new is not None:
                setattr(parent, name, new)
                n += 1
    return out.eval(), n
