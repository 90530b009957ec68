"""Networks by name (MONAI). SiNGR is architecture-agnostic: every model maps
(B, C_in, D, H, W) to raw outputs (B, R, D, H, W); the losses apply tanh / sigmoid.

    unet3d     monai BasicUNet(spatial_dims=3, features, dropout)   -- the paper's "UNet3D"
    segresnet  monai SegResNet(init_filters)
    swinunetr  monai SwinUNETR(feature_size)
    unetr      monai UNETR(img_size = patch size, hidden_size, feature_size)
    unetpp     monai BasicUNetPlusPlus(features, dropout), first (full-resolution) head
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch
from torch import nn

MODELS = ("unet3d", "segresnet", "swinunetr", "unetr", "unetpp")


class _FirstOutput(nn.Module):
    """BasicUNetPlusPlus returns a list of heads; keep the first (deepest-supervised) one."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[0] if isinstance(out, (list, tuple)) else out


def size_multiple(name: str) -> int:
    """Input sizes must be divisible by this for the named network."""
    return {"unet3d": 16, "unetpp": 16, "segresnet": 8, "swinunetr": 32, "unetr": 16}[name]


def build_model(
    name: str,
    in_channels: int,
    out_channels: int,
    *,
    patch_size: Sequence[int] = (128, 128, 128),
    features: Sequence[int] = (32, 32, 64, 128, 256, 32),
    dropout: float = 0.1,
    init_filters: int = 16,
    feature_size: int = 48,
    hidden_size: int = 768,
    unetr_feature_size: int = 16,
) -> nn.Module:
    """Build a 3-D network by name; see the module docstring for what each name means."""
    from monai.networks import nets

    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
    if name == "unet3d":
        return nets.BasicUNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels,
                              features=tuple(features), dropout=dropout)
    if name == "unetpp":
        return _FirstOutput(nets.BasicUNetPlusPlus(spatial_dims=3, in_channels=in_channels,
                                                   out_channels=out_channels, features=tuple(features),
                                                   dropout=dropout))
    if name == "segresnet":
        return nets.SegResNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels,
                              init_filters=init_filters, dropout_prob=dropout or None)
    if name == "swinunetr":
        kw: dict[str, Any] = dict(in_channels=in_channels, out_channels=out_channels, feature_size=feature_size,
                                  spatial_dims=3)
        if "img_size" in inspect.signature(nets.SwinUNETR.__init__).parameters:
            kw["img_size"] = tuple(patch_size)
        return nets.SwinUNETR(**kw)
    if name == "unetr":
        return nets.UNETR(in_channels=in_channels, out_channels=out_channels, img_size=tuple(patch_size),
                          feature_size=unetr_feature_size, hidden_size=hidden_size,
                          mlp_dim=4 * hidden_size, num_heads=max(1, hidden_size // 64), dropout_rate=dropout)
    raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")


def model_from_config(cfg: Any, in_channels: int, out_channels: int) -> nn.Module:
    """The network of ``cfg.model`` (a :class:`singr.config.SingrConfig`) for the given channels."""
    m = cfg.model
    return build_model(m.name, in_channels, out_channels, patch_size=cfg.train.patch_size, features=m.features,
                       dropout=m.dropout, init_filters=m.init_filters, feature_size=m.feature_size,
                       hidden_size=m.hidden_size, unetr_feature_size=m.unetr_feature_size)
