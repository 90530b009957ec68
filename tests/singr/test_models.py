"""Every architecture by name maps (B, C, p, p, p) to (B, R, p, p, p)."""
from __future__ import annotations

import pytest
import torch

from singr.models import MODELS, build_model


@pytest.mark.parametrize("name", MODELS)
def test_model_shapes(name):
    n = 64 if name == "swinunetr" else 32  # SwinUNETR downsamples 32x and needs > 1 voxel at the bottom
    kw = dict(patch_size=(n, n, n), features=(4, 4, 8, 8, 16, 4), init_filters=8, feature_size=12,
              hidden_size=48, unetr_feature_size=4)
    net = build_model(name, 4, 3, **kw).eval()
    with torch.no_grad():
        y = net(torch.zeros(1, 4, n, n, n))
    assert y.shape == (1, 3, n, n, n)


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model 'vnet'"):
        build_model("vnet", 4, 3)
