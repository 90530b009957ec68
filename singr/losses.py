"""Training losses (docs/method.md 1.3).

Every loss is a ``torch.nn.Module`` whose ``forward(logits, target)`` takes the network's
RAW output ``logits`` of shape ``(B, R, ...)`` (one channel per region) and a target of the
same shape, and returns a scalar tensor.

- Regression losses (:class:`FocalL1Loss`, :class:`FocalL1DaggerLoss`, :class:`L1Loss`,
  :class:`L2Loss`, :class:`ProductLoss`) compare ``Z = tanh(logits)`` with the SiNG map
  ``S`` in ``[-1, 1]``; a voxel is foreground where ``Z >= 0``, i.e. ``logits >= 0``.
- The hard-label baseline :class:`DiceBCELoss` compares ``sigmoid(logits)`` with binary
  region masks; a voxel is foreground where ``sigmoid(logits) >= 0.5``, again ``logits >= 0``.

The arithmetic runs in float32 at least (half-precision inputs from autocast are promoted),
so that the focal weights and the ratios of the product loss stay accurate.

Use :func:`build_loss` to make a loss from its name in a config, and
:func:`is_regression_loss` to know which target (SiNG map or binary mask) a loss expects.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn
from torch.nn import functional as F

from .errors import SingrInputError

__all__ = [
    "FocalL1Loss",
    "FocalL1DaggerLoss",
    "L1Loss",
    "L2Loss",
    "ProductLoss",
    "DiceBCELoss",
    "LOSSES",
    "build_loss",
    "is_regression_loss",
]


def _check_pair(logits: torch.Tensor, target: torch.Tensor, loss_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Check shapes and return ``(logits, target)`` as floating tensors of one dtype (>= float32)."""
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            f"{loss_name}: logits and target must be torch.Tensor, got "
            f"{type(logits).__name__} and {type(target).__name__}")
    if logits.shape != target.shape:
        raise ValueError(
            f"{loss_name}: logits and target must have the same shape (B, R, ...), got "
            f"logits {tuple(logits.shape)} and target {tuple(target.shape)}")
    if logits.ndim < 2:
        raise ValueError(
            f"{loss_name}: expected tensors shaped (B, R, ...) with at least 2 dimensions, "
            f"got shape {tuple(logits.shape)}")
    dtype = torch.promote_types(logits.dtype, torch.float32) if logits.is_floating_point() else torch.float32
    return logits.to(dtype), target.to(dtype)


def _check_non_negative(value: float, name: str, loss_name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{loss_name}: {name} must be a number >= 0, got {value!r}") from None
    if not value >= 0.0 or value == float("inf"):  # also rejects NaN
        raise ValueError(f"{loss_name}: {name} must be a finite number >= 0, got {value!r}")
    return value


class FocalL1Loss(nn.Module):
    """Focal-L1 loss of SiNGR (Eq. 6 of arXiv 2405.16813).

    With ``Z = tanh(logits)`` and the SiNG target ``S``::

        L   = mean_i |S_i - Z_i| * w_i
        w_i = |S_i - Z_i| ^ (gamma * 1[S_i * Z_i >= 0])  /  (max(|S_i|, |Z_i|) + eps)

    The mean runs over every voxel, channel and batch item. The weight ``w`` is detached:
    no gradient flows through it, so ``dL/dZ_i = sign(Z_i - S_i) * w_i / N``.

    Where ``Z`` has the sign of ``S`` (or either is zero) the weight is the focal term
    ``|S - Z|^gamma`` scaled by ``1 / max(|S|, |Z|)``; where the signs differ the exponent is 0
    and ``w = 1 / max(|S|, |Z|)``, so a wrong sign is never down-weighted. For ``S`` and
    ``Z`` in ``[-1, 1]`` each voxel's term is at most 1 (same sign) or 2 (opposite signs),
    since ``|S - Z| <= 2 max(|S|, |Z|)``: the loss stays bounded even near ``S = Z = 0``.

    With ``eps = 0`` a voxel with ``S_i = Z_i = 0`` would give ``0 / 0``: it contributes 0 to
    the loss and 0 to the gradient instead of NaN.

    Args:
        gamma: focal exponent, ``>= 0`` (paper: 1). ``gamma = 0`` gives a weighted L1 with
            ``w = 1 / (max(|S|, |Z|) + eps)``.
        eps: added to the denominator of ``w``, ``>= 0`` (paper: 0).
    """

    def __init__(self, gamma: float = 1.0, eps: float = 0.0) -> None:
        super().__init__()
        self.gamma = _check_non_negative(gamma, "gamma", type(self).__name__)
        self.eps = _check_non_negative(eps, "eps", type(self).__name__)

    def weight(self, z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The detached weight ``w`` of Eq. 6 for predictions ``z = tanh(logits)`` and target ``s``."""
        with torch.no_grad():
            diff = (s - z).abs()
            # |S - Z|^(gamma * 1[SZ >= 0]) as a select between a scalar power and 1 (a
            # tensor-valued exponent costs a pow per voxel; the values are the same)
            focal = diff if self.gamma == 1.0 else diff.pow(self.gamma)
            num = torch.where((s * z) >= 0, focal, torch.ones((), dtype=diff.dtype, device=diff.device))
            denom = torch.maximum(s.abs(), z.abs())
            if self.eps:
                denom = denom + self.eps
            # 0/0 (S = Z = 0, eps = 0) -> 0; torch.where picks 0 there, the nan is never used
            w = torch.where(denom > 0, num / denom, torch.zeros((), dtype=diff.dtype, device=diff.device))
        return w

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = _check_pair(logits, target, type(self).__name__)
        z = torch.tanh(logits)
        w = self.weight(z, target)
        return ((target - z).abs() * w).mean()

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, eps={self.eps}"


class FocalL1DaggerLoss(nn.Module):
    """Focal-L1-dagger ablation of SiNGR (Table 3 of arXiv 2405.16813).

    With ``Z = tanh(logits)`` and target ``S``::

        L   = mean_i |S_i - Z_i| * w_i,     w_i = |S_i - Z_i| ^ gamma   (detached)

    i.e. Eq. 6 without the sign indicator and without the ``1 / max(|S|, |Z|)`` scaling.

    Args:
        gamma: focal exponent, ``>= 0`` (default 1). ``gamma = 0`` is the plain L1 loss.
    """

    def __init__(self, gamma: float = 1.0) -> None:
        super().__init__()
        self.gamma = _check_non_negative(gamma, "gamma", type(self).__name__)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = _check_pair(logits, target, type(self).__name__)
        z = torch.tanh(logits)
        diff = (target - z).abs()
        w = diff.detach().pow(self.gamma)
        return (diff * w).mean()

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"


class L1Loss(nn.Module):
    """L1 regression loss: ``L = mean_i |S_i - tanh(logits_i)|``."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = _check_pair(logits, target, type(self).__name__)
        return F.l1_loss(torch.tanh(logits), target)


class L2Loss(nn.Module):
    """L2 (mean squared error) regression loss: ``L = mean_i (S_i - tanh(logits_i))^2``."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = _check_pair(logits, target, type(self).__name__)
        return F.mse_loss(torch.tanh(logits), target)


class ProductLoss(nn.Module):
    """Product loss of Xue et al., AAAI 2020 ("Shape-aware organ segmentation by predicting
    signed distance maps", arXiv 1912.03849), combined with L1 as in that paper.

    With ``Z = tanh(logits)`` and target ``S``::

        L = l1_weight * mean_i |S_i - Z_i|  +  L_product

    and, for ``mode="voxel"`` (default, the per-voxel form)::

        L_product = -(1/N) sum_i  S_i Z_i / (S_i Z_i + S_i^2 + Z_i^2)

    The per-voxel ratio lies in ``[-1, 1/3]``: ``1/3`` where ``Z = S``, ``-1`` where
    ``Z = -S``; it is negative exactly where the signs differ, which is what the term
    penalises. A voxel with ``S_i = Z_i = 0`` (``0/0``) contributes 0, with a zero gradient.
    The denominator is ``(S + Z/2)^2 + 3 Z^2 / 4``, zero only there.

    For ``mode="image"`` the sums run over the voxels of each batch item and channel
    first, like a soft Dice, then the ratio is averaged over batch items and channels::

        L_product = -mean_{b,r} (sum_i S_i Z_i + smooth) / (sum_i (S_i Z_i + S_i^2 + Z_i^2) + smooth)

    This is the form in the SiNGR authors' released code (and in a popular
    re-implementation of Xue et al.), with ``smooth = 1e-6``.

    The paper writes the total regression loss as ``L_1 + lambda * L_product``; here the
    product term has weight 1 and ``l1_weight`` scales the L1 term (``l1_weight = 1`` in
    both, the SiNGR code included), so ``l1_weight = 0`` gives the product term alone.

    Args:
        l1_weight: weight of the L1 term, ``>= 0`` (default 1).
        mode: ``"voxel"`` (per-voxel ratio, averaged) or ``"image"`` (ratio of sums per
            batch item and channel).
        smooth: added to numerator and denominator in ``mode="image"`` only, ``>= 0``.
    """

    MODES = ("voxel", "image")

    def __init__(self, l1_weight: float = 1.0, mode: str = "voxel", smooth: float = 1e-6) -> None:
        super().__init__()
        name = type(self).__name__
        self.l1_weight = _check_non_negative(l1_weight, "l1_weight", name)
        if mode not in self.MODES:
            raise ValueError(f"{name}: mode must be one of {', '.join(self.MODES)}, got {mode!r}")
        self.mode = mode
        self.smooth = _check_non_negative(smooth, "smooth", name)

    def product_term(self, z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """``L_product`` for predictions ``z = tanh(logits)`` and target ``s``."""
        sz = s * z
        denom = sz + s * s + z * z
        if self.mode == "image":
            dims = tuple(range(2, z.ndim))
            num = sz.sum(dim=dims) if dims else sz
            den = denom.sum(dim=dims) if dims else denom
            num, den = num + self.smooth, den + self.smooth
            safe = den > 0
            ratio = torch.where(safe, num / torch.where(safe, den, torch.ones_like(den)), torch.zeros_like(den))
            return -ratio.mean()
        safe = denom > 0
        ratio = torch.where(safe, sz / torch.where(safe, denom, torch.ones_like(denom)), torch.zeros_like(denom))
        return -ratio.mean()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = _check_pair(logits, target, type(self).__name__)
        z = torch.tanh(logits)
        loss = self.product_term(z, target)
        if self.l1_weight:
            loss = loss + self.l1_weight * (target - z).abs().mean()
        return loss

    def extra_repr(self) -> str:
        return f"l1_weight={self.l1_weight}, mode={self.mode!r}, smooth={self.smooth}"


class DiceBCELoss(nn.Module):
    """Hard-label baseline: soft Dice on ``sigmoid(logits)`` plus binary cross-entropy.

    The target holds binary region masks (values 0 and 1 only)::

        P    = sigmoid(logits)
        Dice = mean_{b,r} [1 - (2 sum_i P_i T_i + smooth_nr) / (sum_i P_i + sum_i T_i + smooth_dr)]
        BCE  = -mean_i [T_i log P_i + (1 - T_i) log(1 - P_i)]
        L    = Dice + BCE

    The Dice term is ``monai.losses.DiceLoss(sigmoid=True)`` (one Dice per batch item and
    channel, averaged); the BCE term is ``torch.nn.BCEWithLogitsLoss`` (mean over voxels).

    Args:
        smooth_nr: added to the Dice numerator, ``>= 0``.
        smooth_dr: added to the Dice denominator, ``>= 0``.
    """

    def __init__(self, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5) -> None:
        super().__init__()
        from monai.losses import DiceLoss  # imported here: monai's import is slow

        name = type(self).__name__
        self.smooth_nr = _check_non_negative(smooth_nr, "smooth_nr", name)
        self.smooth_dr = _check_non_negative(smooth_dr, "smooth_dr", name)
        self.dice = DiceLoss(sigmoid=True, smooth_nr=self.smooth_nr, smooth_dr=self.smooth_dr)
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = _check_pair(logits, target, type(self).__name__)
        if bool(((target != 0) & (target != 1)).any()):
            bad = torch.unique(target[(target != 0) & (target != 1)])[:5].tolist()
            raise SingrInputError(
                f"DiceBCELoss: target must be binary region masks with values 0 and 1, found "
                f"other values such as {bad}; a SiNG map (values in [-1, 1]) needs a regression loss")
        return self.dice(logits, target) + self.bce(logits, target)

    def extra_repr(self) -> str:
        return f"smooth_nr={self.smooth_nr}, smooth_dr={self.smooth_dr}"


LOSSES: dict[str, type[nn.Module]] = {
    "focal_l1": FocalL1Loss,
    "focal_l1_dagger": FocalL1DaggerLoss,
    "l1": L1Loss,
    "l2": L2Loss,
    "product": ProductLoss,
    "dice_bce": DiceBCELoss,
}

_HARD_LABEL_LOSSES = frozenset({"dice_bce"})


def _check_name(name: str) -> None:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(LOSSES)}")


def build_loss(name: str, **kwargs) -> nn.Module:
    """Make the loss registered as ``name`` in :data:`LOSSES` with the keyword arguments given.

    Raises ValueError for an unknown name (listing the valid ones), for a keyword the loss
    does not take (naming the loss, the key and the accepted keys) and for bad values.
    """
    _check_name(name)
    cls = LOSSES[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"loss {name!r} ({cls.__name__}) got unexpected argument(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) if accepted else 'no arguments'}")
    return cls(**kwargs)


def is_regression_loss(name: str) -> bool:
    """True when the loss ``name`` regresses the SiNG map; False for the hard-label loss
    ("dice_bce"), whose target is the binary region masks.

    Either way a voxel is foreground where ``logits >= 0`` (``tanh >= 0`` or ``sigmoid >= 0.5``).
    """
    _check_name(name)
    return name not in _HARD_LABEL_LOSSES
