"""Losses against hand computation on tiny tensors (values and gradients)."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from singr.errors import SingrInputError
from singr.losses import (
    LOSSES,
    DiceBCELoss,
    FocalL1DaggerLoss,
    FocalL1Loss,
    L1Loss,
    L2Loss,
    ProductLoss,
    build_loss,
    is_regression_loss,
)

# four voxels: same sign, opposite sign, exact, and the 0/0 voxel
S4 = [0.5, -0.5, 0.8, 0.0]
Z4 = [0.3, 0.2, 0.8, 0.0]


def _t(values, requires_grad=False):
    """(1, 1, N) float64 tensor."""
    return torch.tensor(values, dtype=torch.float64).reshape(1, 1, -1).requires_grad_(requires_grad)


def _logits(z_values, requires_grad=True):
    return _t([math.atanh(z) for z in z_values], requires_grad)


def _focal_terms(s_values, z_values, gamma, eps=0.0):
    """Per-voxel weight and term of Eq. 6, in plain Python."""
    ws, terms = [], []
    for s, z in zip(s_values, z_values):
        diff = abs(s - z)
        exponent = gamma if s * z >= 0 else 0.0
        denom = max(abs(s), abs(z)) + eps
        w = 0.0 if denom == 0 else diff ** exponent / denom
        ws.append(w)
        terms.append(diff * w)
    return ws, terms


# ---------------------------------------------------------------- Focal-L1 (Eq. 6)

def test_focal_l1_value_by_hand():
    # v1: |.5-.3|=.2, same sign, w=.2/.5=.4 -> .08 ; v2: opposite, w=1/.5=2, |.7|*2=1.4 ; v3, v4: 0
    loss = FocalL1Loss(gamma=1.0)(_logits(Z4), _t(S4))
    assert loss.item() == pytest.approx((0.08 + 1.4) / 4, abs=1e-12)
    loss2 = FocalL1Loss(gamma=2.0)(_logits(Z4), _t(S4))
    assert loss2.item() == pytest.approx((0.2 ** 3 / 0.5 + 1.4) / 4, abs=1e-12)


def test_focal_l1_matches_python_reference_on_random_values():
    g = torch.Generator().manual_seed(0)
    s = (torch.rand(2, 3, 5, generator=g, dtype=torch.float64) * 2 - 1)
    z = (torch.rand(2, 3, 5, generator=g, dtype=torch.float64) * 1.8 - 0.9)
    for gamma, eps in [(1.0, 0.0), (0.5, 1e-3), (2.0, 0.0)]:
        _, terms = _focal_terms(s.flatten().tolist(), z.flatten().tolist(), gamma, eps)
        loss = FocalL1Loss(gamma=gamma, eps=eps)(torch.atanh(z), s)
        assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-10)


def test_focal_l1_gradient_uses_detached_weight():
    logits = _logits(Z4)
    FocalL1Loss(gamma=1.0)(logits, _t(S4)).backward()
    ws, _ = _focal_terms(S4, Z4, 1.0)
    n = len(S4)
    # dL/dlogit = sign(Z - S) * w * (1 - Z^2) / N, w held constant
    expected = [math.copysign(1.0, z - s) * w * (1 - z * z) / n if z != s else 0.0
                for s, z, w in zip(S4, Z4, ws)]
    assert logits.grad.flatten().tolist() == pytest.approx(expected, abs=1e-12)

    # the same loss with w NOT detached has a different gradient (same-sign voxel 0 differs)
    logits_nd = _logits(Z4)
    z = torch.tanh(logits_nd)
    s = _t(S4)
    diff = (s - z).abs()
    exponent = torch.where(s * z >= 0, torch.ones_like(z), torch.zeros_like(z))
    denom = torch.maximum(s.abs(), z.abs())
    w = torch.where(denom > 0, diff.pow(exponent) / torch.where(denom > 0, denom, torch.ones_like(denom)),
                    torch.zeros_like(z))
    (diff * w).mean().backward()
    assert not torch.allclose(logits_nd.grad, logits.grad)
    # same value though
    assert (diff * w).mean().item() == pytest.approx(FocalL1Loss()(_logits(Z4), s).item(), abs=1e-12)


def test_focal_l1_zero_over_zero_is_finite():
    logits = torch.zeros(1, 2, 3, dtype=torch.float32, requires_grad=True)
    target = torch.zeros(1, 2, 3)
    loss = FocalL1Loss(gamma=1.0, eps=0.0)(logits, target)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(logits.grad).all() and (logits.grad == 0).all()
    # gamma = 0 too (0 ** 0 = 1, but the denominator is 0)
    logits.grad = None
    loss = FocalL1Loss(gamma=0.0, eps=0.0)(logits, target)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()
    # S = 0 next to a non-zero Z: finite, |Z| * |Z| / |Z|
    lg = _logits([0.0, 0.1, -0.1])
    loss = FocalL1Loss()(lg, _t([0.0, 0.0, 0.0]))
    loss.backward()
    assert loss.item() == pytest.approx((0.1 + 0.1) / 3, abs=1e-12)
    assert torch.isfinite(lg.grad).all()


def test_focal_l1_gamma_zero_is_l1_weighted_by_inverse_max():
    logits = _logits(Z4)
    s = _t(S4)
    loss = FocalL1Loss(gamma=0.0)(logits, s)
    expected = [abs(a - b) / max(abs(a), abs(b)) if max(abs(a), abs(b)) > 0 else 0.0 for a, b in zip(S4, Z4)]
    assert loss.item() == pytest.approx(sum(expected) / 4, abs=1e-12)


def test_focal_l1_eps_in_denominator():
    loss = FocalL1Loss(gamma=1.0, eps=0.1)(_logits(Z4), _t(S4))
    _, terms = _focal_terms(S4, Z4, 1.0, eps=0.1)
    assert loss.item() == pytest.approx(sum(terms) / 4, abs=1e-12)


def test_focal_l1_half_precision_input_and_large_logits():
    logits = torch.tensor([[[30.0, -30.0, 0.5]]], dtype=torch.bfloat16, requires_grad=True)
    target = torch.tensor([[[1.0, 1.0, 0.5]]])
    loss = FocalL1Loss()(logits, target)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad.float()).all()


@pytest.mark.parametrize("kwargs", [{"gamma": -1.0}, {"eps": -1e-3}, {"gamma": float("nan")}, {"gamma": "a"}])
def test_focal_l1_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="FocalL1Loss"):
        FocalL1Loss(**kwargs)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\(2, 1, 4\)"):
        FocalL1Loss()(torch.zeros(2, 3, 4), torch.zeros(2, 1, 4))
    with pytest.raises(ValueError, match="at least 2"):
        L1Loss()(torch.zeros(4), torch.zeros(4))


# ---------------------------------------------------------------- ablation losses

def test_focal_l1_dagger_value_and_gradient():
    logits = _logits(Z4)
    loss = FocalL1DaggerLoss(gamma=1.0)(logits, _t(S4))
    diffs = [abs(s - z) for s, z in zip(S4, Z4)]
    assert loss.item() == pytest.approx(sum(d ** 2 for d in diffs) / 4, abs=1e-12)
    loss.backward()
    # w = |S - Z| detached -> dL/dlogit = sign(Z - S) |S - Z| (1 - Z^2) / N
    expected = [math.copysign(d, z - s) * (1 - z * z) / 4 if d else 0.0 for s, z, d in zip(S4, Z4, diffs)]
    assert logits.grad.flatten().tolist() == pytest.approx(expected, abs=1e-12)
    # gamma = 0 is plain L1
    assert FocalL1DaggerLoss(gamma=0.0)(_logits(Z4), _t(S4)).item() == pytest.approx(sum(diffs) / 4)


def test_l1_and_l2():
    l1 = L1Loss()(_logits(Z4), _t(S4)).item()
    l2 = L2Loss()(_logits(Z4), _t(S4)).item()
    assert l1 == pytest.approx(sum(abs(s - z) for s, z in zip(S4, Z4)) / 4, abs=1e-12)
    assert l2 == pytest.approx(sum((s - z) ** 2 for s, z in zip(S4, Z4)) / 4, abs=1e-12)


def test_product_loss_voxel_mode_by_hand():
    s, z = [0.5, -0.5, 0.0], [0.5, 0.5, 0.0]
    # ratios: .25/.75 = 1/3 ; -.25/(-.25+.25+.25) = -1 ; 0/0 -> 0  => L_product = -(1/3 - 1)/3 = 2/9
    # L1 = (0 + 1 + 0)/3
    logits = _logits(z)
    loss = ProductLoss()(logits, _t(s))
    assert loss.item() == pytest.approx(2 / 9 + 1 / 3, abs=1e-12)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert ProductLoss(l1_weight=0.0)(_logits(z), _t(s)).item() == pytest.approx(2 / 9, abs=1e-12)
    assert ProductLoss(l1_weight=2.0)(_logits(z), _t(s)).item() == pytest.approx(2 / 9 + 2 / 3, abs=1e-12)
    # perfect prediction: ratio 1/3 everywhere -> -1/3
    assert ProductLoss()(_logits([0.4, -0.7]), _t([0.4, -0.7])).item() == pytest.approx(-1 / 3, abs=1e-12)


def test_product_loss_voxel_gradient_by_hand():
    s, z = [0.6, -0.3], [0.2, 0.4]
    logits = _logits(z)
    ProductLoss(l1_weight=0.0)(logits, _t(s)).backward()
    # d/dZ [-(SZ)/(SZ+S^2+Z^2)] = -S (S^2 - Z^2) / D^2
    expected = [-a * (a * a - b * b) / (a * b + a * a + b * b) ** 2 * (1 - b * b) / 2 for a, b in zip(s, z)]
    assert logits.grad.flatten().tolist() == pytest.approx(expected, abs=1e-12)


def test_product_loss_image_mode():
    s = torch.tensor([[[0.5, -0.5]], [[0.2, 0.2]]], dtype=torch.float64)  # (B=2, R=1, N=2)
    z = torch.tensor([[[0.5, 0.5]], [[0.1, 0.3]]], dtype=torch.float64)
    loss = ProductLoss(mode="image", l1_weight=0.0, smooth=0.0)(torch.atanh(z), s)
    r0 = 0.0 / (0.75 + 0.25)
    num1 = 0.02 + 0.06
    r1 = num1 / (num1 + 0.08 + 0.10)
    assert loss.item() == pytest.approx(-(r0 + r1) / 2, abs=1e-12)
    zero = ProductLoss(mode="image", smooth=0.0)(torch.zeros(1, 1, 3, requires_grad=True), torch.zeros(1, 1, 3))
    assert torch.isfinite(zero) and zero.item() == 0.0
    with pytest.raises(ValueError, match="mode"):
        ProductLoss(mode="global")


# ---------------------------------------------------------------- Dice + BCE

def test_dice_bce_perfect_prediction_is_small_and_bce_matches_torch():
    target = torch.zeros(2, 3, 4, 4, 4)
    target[:, :, 1:3, 1:3, 1:3] = 1
    logits = torch.where(target > 0, 20.0, -20.0)
    assert DiceBCELoss()(logits, target).item() < 1e-4
    # an empty channel: sigmoid(-20) * 64 voxels against smooth 1e-5 leaves a small Dice loss
    target[1, 2] = 0
    logits = torch.where(target > 0, 20.0, -20.0)
    assert DiceBCELoss()(logits, target).item() < 0.01

    from monai.losses import DiceLoss

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, 4, generator=g)
    loss = DiceBCELoss()(logits, target)
    dice = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)(logits, target)
    assert (loss - dice).item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, target).item(), rel=1e-5)
    # Dice part by hand: one Dice per (batch item, channel), averaged
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(2, 3, 4))
    d = 1 - (2 * inter + 1e-5) / (p.sum(dim=(2, 3, 4)) + target.sum(dim=(2, 3, 4)) + 1e-5)
    assert dice.item() == pytest.approx(d.mean().item(), rel=1e-5)


def test_dice_bce_rejects_non_binary_target():
    with pytest.raises(SingrInputError, match="0 and 1"):
        DiceBCELoss()(torch.zeros(1, 1, 3), torch.tensor([[[0.0, 0.5, -1.0]]]))


# ---------------------------------------------------------------- registry

def test_registry_and_build_loss():
    assert set(LOSSES) == {"focal_l1", "focal_l1_dagger", "l1", "l2", "product", "dice_bce"}
    loss = build_loss("focal_l1", gamma=2.0, eps=0.01)
    assert isinstance(loss, FocalL1Loss) and loss.gamma == 2.0 and loss.eps == 0.01
    assert isinstance(build_loss("product", l1_weight=0.5, mode="image"), ProductLoss)
    for name in LOSSES:
        build_loss(name)
    assert all(is_regression_loss(n) for n in LOSSES if n != "dice_bce")
    assert not is_regression_loss("dice_bce")


def test_build_loss_errors():
    with pytest.raises(ValueError, match="focal_l1, focal_l1_dagger, l1, l2, product, dice_bce"):
        build_loss("focal")
    with pytest.raises(ValueError, match=r"'focal_l1'.*delta"):
        build_loss("focal_l1", delta=0.5)
    with pytest.raises(ValueError, match=r"'l1'.*gamma"):
        build_loss("l1", gamma=1.0)
    with pytest.raises(ValueError, match="gamma"):
        build_loss("focal_l1_dagger", gamma=-2)
    with pytest.raises(ValueError, match="valid names"):
        is_regression_loss("nope")
