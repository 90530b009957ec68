"""The one inference path: a :class:`Predictor` used by ``singr predict``, ``singr evaluate``,
validation during training, the grid's evaluation, the MLflow pyfunc and the endpoint.

For an image (C, D, H, W), already z-scored or not::

    crop      = bounding box of the non-zero (brain) voxels, + a margin   (nnU-Net crops the same way)
    logits_m  = sliding_window(member m, crop, window = min(roi_size, crop rounded up), overlap, blending)
    S_hat     = mean over members m and mirrorings t of tanh(t^-1(logits_m(t(crop))))
    region_r  = S_hat_r >= 0          (tanh >= 0 for SiNGR; sigmoid >= 0.5 for hard-label models)
    labels    = regions_to_labels(rules(labels_to_regions(regions_to_labels(region))))   (rules: post-processing)
    regions   = labels_to_regions(labels)

outside the crop (and outside the brain mask) S_hat = -1. The thresholded maps of nested BraTS
regions need not nest (a voxel with S_ET >= 0 > S_TC); the label map settles it (ET within TC
within WT: a voxel is in the union of the regions above it), and the regions returned are
always the label map's (``regions == labels_to_regions(labels)``), so volumes agree with it.
Post-processing rules act on the nested regions (as they were fitted) when
``settings.postprocess`` is on. The settings (window, overlap, blending, mirroring, crop,
precision, post-processing) are an :class:`InferenceSettings`, from the config's ``infer``
section unless overridden.

Execution (what makes it cheap on a CPU without changing the labels; measured in
benchmarks/RESULTS.md, "Fast inference"): everything runs under ``torch.inference_mode``;
precision ``auto`` runs the network under bfloat16 autocast where the CPU computes bfloat16
natively (AVX512-BF16 or AMX) and in float32 elsewhere (GPUs included); in bfloat16 on a CPU the
network runs in channels-last 3-D, on a private copy of each member whose ``InstanceNorm3d``
layers compute the same function as a one-group-per-channel ``group_norm`` (it has a
channels-last kernel; ``instance_norm`` converts to contiguous and back on every call). In
float32 the network stays contiguous (channels-last 3-D float32 convolutions measured slower
there). Windows are blended in float32 whatever the network's precision.

An *ensemble* is several members (K folds, or the top-N
trials of a sweep) whose tanh maps are averaged before thresholding; post-processing rules
(:mod:`singr.engine.postprocess`) fitted on validation data then clean the regions.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..config import SingrConfig, from_stored
from ..errors import SingrInputError
from ..geometry import bounding_box
from ..preprocess import normalize_image
from ..regions import labels_to_regions, regions_to_labels
from .meta import MemberInfo, ModelMeta

__all__ = ["InferenceSettings", "Prediction", "Predictor", "clip_roi", "sliding_window", "MIRROR_AXES", "PRECISIONS",
           "channels_last_copy", "cpu_has_native_bf16", "resolve_precision", "Watch", "count_windows"]

Watch = Callable[[float], None]
"""Called with the share of a prediction's network work done (0 to 1) before and after every
network call; an exception it raises ends the prediction there (a deadline passed, the
request was cancelled). What the endpoint's jobs report as progress."""

PRECISIONS = ("auto", "float32", "bfloat16")
"""``auto``: bfloat16 on CPUs that compute it natively (see :func:`resolve_precision`), float32 elsewhere."""

MIRROR_AXES: tuple[tuple[int, ...], ...] = ((), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2))
"""The 8 mirrorings of a 3-D volume (spatial axes), as nnU-Net's test-time augmentation."""


def clip_roi(roi_size: Sequence[int], shape: Sequence[int], multiple: int = 16) -> tuple[int, ...]:
    """The window clipped to the volume, rounded up to what the network accepts (MONAI pads
    a volume smaller than the window, so rounding up is safe); at least two cells of
    ``multiple`` so that the deepest level keeps two voxels."""
    out = []
    for r, s in zip(roi_size, shape):
        w = min(int(r), int(math.ceil(int(s) / multiple) * multiple))
        out.append(max(w, min(2 * multiple, int(r))))
    return tuple(out)


@dataclass(frozen=True)
class InferenceSettings:
    """How a volume is segmented (see the module docstring)."""

    roi_size: tuple[int, ...]
    overlap: float = 0.5
    sw_batch_size: int = 1
    mode: str = "gaussian"          # window blending: gaussian | constant
    multiple: int = 16              # the network's input size multiple
    fixed_roi: bool = False         # UNETR: the window is the training patch, never clipped
    tta: bool = False               # mirror over the 3 axes (8 passes) and average
    crop: bool = True               # segment the brain's bounding box only
    precision: str = "float32"      # auto | float32 | bfloat16 (autocast); see resolve_precision
    postprocess: bool = True        # apply the model's post-processing rules (when it has any)

    @classmethod
    def from_config(cls, cfg: SingrConfig, **overrides: Any) -> "InferenceSettings":
        from ..models import size_multiple

        inf = cfg.infer
        fixed = cfg.model.name == "unetr"  # UNETR has a fixed input size: its window is the patch
        s = cls(roi_size=tuple(cfg.train.patch_size if fixed else inf.roi_size), overlap=float(inf.overlap),
                sw_batch_size=int(inf.sw_batch_size), mode=str(inf.mode), multiple=size_multiple(cfg.model.name),
                fixed_roi=fixed, tta=bool(inf.tta), crop=bool(inf.crop), precision=str(inf.precision),
                postprocess=bool(inf.postprocess))
        return s.with_(**overrides)

    def with_(self, **overrides: Any) -> "InferenceSettings":
        kw = {k: v for k, v in overrides.items() if v is not None}
        if "roi_size" in kw:
            kw["roi_size"] = tuple(int(x) for x in kw["roi_size"])
        return replace(self, **kw) if kw else self


@dataclass
class Prediction:
    labels: np.ndarray          # (D, H, W) uint8, in the output label convention
    regions: np.ndarray         # (R, D, H, W) bool: labels_to_regions(labels), nested for BraTS
    signed: np.ndarray          # (R, D, H, W) float32: the averaged tanh maps (SiNGR's S-hat)
    region_names: tuple[str, ...]
    label_convention: str


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True where this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16): there oneDNN's
    bfloat16 convolutions are about twice as fast as float32 ones. Elsewhere bfloat16 is emulated
    (slower than float32), so ``auto`` keeps float32."""
    get = getattr(getattr(torch, "cpu", None), "get_capabilities", None)
    if get is not None:
        try:
            caps = get()
            return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
        except Exception:  # pragma: no cover - older torch / unusual platforms: read the flags instead
            pass
    try:  # pragma: no cover - torch without get_capabilities
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # pragma: no cover
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags  # pragma: no cover


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """The precision a setting means on ``device``: ``float32`` or ``bfloat16``. ``auto`` is
    bfloat16 on a CPU with native bfloat16 (:func:`cpu_has_native_bf16`), float32 otherwise
    (GPUs included: their float32 convolutions already use TF32). Unknown names are an error."""
    if precision not in PRECISIONS:
        raise SingrInputError(f"unknown inference precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bfloat16" if torch.device(device).type == "cpu" and cpu_has_native_bf16() else "float32"
    return precision


def _autocast(device: torch.device, precision: str) -> Any:
    if resolve_precision(precision, device) == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _ChannelsLastInstanceNorm(torch.nn.Module):
    """``InstanceNorm3d`` without running statistics, computed as ``group_norm`` with one group per
    channel: the same function (biased variance, same eps, same affine parameters, shared), but with
    a channels-last CPU kernel."""

    def __init__(self, norm: torch.nn.InstanceNorm3d):
        super().__init__()
        self.num_channels, self.eps = int(norm.num_features), float(norm.eps)
        self.weight, self.bias = norm.weight, norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.group_norm(x, self.num_channels, self.weight, self.bias, self.eps)


def _swap_instance_norms(module: torch.nn.Module) -> int:
    """Replace, in place, every plain ``InstanceNorm3d`` (no running statistics) of ``module`` by
    :class:`_ChannelsLastInstanceNorm`; returns how many were replaced."""
    n = 0
    for name, child in module.named_children():
        if type(child) is torch.nn.InstanceNorm3d and not child.track_running_stats:
            setattr(module, name, _ChannelsLastInstanceNorm(child))
            n += 1
        else:
            n += _swap_instance_norms(child)
    return n


def channels_last_copy(model: torch.nn.Module) -> torch.nn.Module:
    """An inference copy of ``model`` for the channels-last 3-D path: deep-copied (the original
    keeps its layout, modules and mode), instance norms swapped for their channels-last
    equivalent, weights in ``channels_last_3d``, in eval mode. The copy's weights are a snapshot."""
    dup = copy.deepcopy(model).eval()
    _swap_instance_norms(dup)
    return dup.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]


def window_for(settings: "InferenceSettings", shape: Sequence[int]) -> tuple[int, ...]:
    """The sliding window used on a volume of ``shape`` (D, H, W)."""
    return tuple(settings.roi_size) if settings.fixed_roi else clip_roi(settings.roi_size, shape, settings.multiple)


def count_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Windows MONAI's ``sliding_window_inference`` visits on a volume of ``shape``: per axis
    ``ceil((max(n, r) - r) / s) + 1`` with step ``s = max(int(r * (1 - overlap)), 1)`` (``s = r``
    where the window covers the axis), as in ``monai.inferers.utils._get_scan_interval``."""
    total = 1
    for n, r in zip(shape, roi):
        n = max(int(n), int(r))  # MONAI pads a volume smaller than the window
        step = int(r) if int(r) == n else max(int(int(r) * (1 - overlap)), 1)
        total *= math.ceil((n - int(r)) / step) + 1
    return total


class _Watched(torch.nn.Module):
    """``net`` with a ``tick(step)`` call before (step 0) and after (step 1) every forward pass."""

    def __init__(self, net: torch.nn.Module, tick: Callable[[int], None]):
        super().__init__()
        self.net, self.tick = net, tick

    def forward(self, x: torch.Tensor) -> Any:
        self.tick(0)
        out = self.net(x)
        self.tick(1)
        return out


def sliding_window(model: torch.nn.Module, x: torch.Tensor, settings: InferenceSettings,
                   progress: bool = False) -> torch.Tensor:
    """Raw network output (B, R, D, H, W), float32, for a batch ``x`` (B, C, D, H, W) on the
    model's device (MONAI's ``sliding_window_inference``; ``progress`` shows a bar of windows).
    The network runs under ``settings.precision`` (resolved for the device); windows are blended
    in ``x``'s dtype (float32)."""
    from monai.inferers import sliding_window_inference

    roi = window_for(settings, x.shape[2:])
    with torch.inference_mode(), _autocast(x.device, settings.precision):
        out = sliding_window_inference(x, roi, settings.sw_batch_size, model, overlap=settings.overlap,
                                       mode=settings.mode, progress=progress)
    return torch.as_tensor(out).float()


class Predictor:
    """One model or an ensemble of members, ready to segment cases.

    ``meta``: the (first) member's :class:`~singr.engine.meta.ModelMeta` (None for a network
    in memory without one); ``member_info``: one :class:`~singr.engine.meta.MemberInfo` per
    member checkpoint (empty for networks in memory); ``bundle_info``: the ``info`` of the
    model folder it was loaded from (empty otherwise)."""

    def __init__(self, members: Sequence[torch.nn.Module], settings: InferenceSettings, meta: ModelMeta,
                 device: str | torch.device = "cpu", postprocess: Any = None, identity: dict[str, Any] | None = None,
                 configs: Sequence[SingrConfig] = (), member_info: Sequence[MemberInfo] = ()):
        if not members:
            raise SingrInputError("a predictor needs at least one model")
        self.device = torch.device(device)
        self.members = [m.to(self.device).eval() for m in members]
        self.settings = settings
        self.meta: ModelMeta | None = meta
        self.member_info: tuple[MemberInfo, ...] = tuple(member_info)
        self.bundle_info: dict[str, Any] = {}
        self.postprocess = postprocess
        self.identity = dict(identity or {})
        self.configs = list(configs)
        self._owns_members = True        # members are ours: their channels-last copies are made once
        self._fast_copies: dict[int, torch.nn.Module] = {}

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_model(cls, model: torch.nn.Module, settings: InferenceSettings, device: str | torch.device = "cpu",
                   meta: ModelMeta | None = None) -> "Predictor":
        """A predictor around a network in memory (validation during training). The network is
        left as it is (device, layout, modules, training mode): where the settings run the
        channels-last path, each prediction uses a fresh copy of its current weights."""
        pred = cls.__new__(cls)
        pred.device, pred.members, pred.settings = torch.device(device), [model], settings
        pred.meta, pred.postprocess, pred.identity, pred.configs = meta, None, {}, []
        pred.member_info, pred.bundle_info = (), {}
        pred._owns_members, pred._fast_copies = False, {}
        return pred

    @classmethod
    def from_checkpoints(cls, paths: Sequence[str | Path] | str | Path, device: str = "auto", *,
                         trust: bool = False, postprocess: Any = None, **overrides: Any) -> "Predictor":
        """Load one checkpoint, or several members of an ensemble (same regions and inputs);
        ``overrides`` replace fields of the first member's :class:`InferenceSettings`."""
        from ..device import resolve_device
        from .checkpoint import load_checkpoint, model_from_checkpoint

        files = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
        dev = torch.device(resolve_device(device))
        models: list[torch.nn.Module] = []
        metas: list[ModelMeta] = []
        cfgs: list[SingrConfig] = []
        for f in files:
            ckpt = load_checkpoint(f, map_location="cpu", trust=trust)
            models.append(model_from_checkpoint(ckpt, dev))
            metas.append(ckpt.meta)
            cfgs.append(from_stored(ckpt.config))
        ref = metas[0]
        for f, m in zip(files[1:], metas[1:]):
            for key, mine, first in (("in_channels", m.in_channels, ref.in_channels),
                                     ("region_names", list(m.region_names), list(ref.region_names)),
                                     ("label_convention", m.label_convention, ref.label_convention)):
                if mine != first:
                    raise SingrInputError(f"ensemble member has {key} {mine!r}, but the first member "
                                          f"{files[0].name} has {first!r}; members must agree", path=f)
        settings = InferenceSettings.from_config(cfgs[0], **overrides)
        return cls(models, settings, ref, dev, postprocess=postprocess, configs=cfgs,
                   member_info=[MemberInfo.of(f, m) for f, m in zip(files, metas)])

    # ------------------------------------------------------------------ inference

    @property
    def region_names(self) -> tuple[str, ...]:
        return self.meta.region_names if self.meta is not None else ()

    def check_channels(self, image: np.ndarray, case: str = "input") -> None:
        n = self.meta.in_channels if self.meta is not None else int(image.shape[0])
        if image.ndim != 4 or image.shape[0] != n:
            mods = (", ".join(self.meta.modalities) if self.meta is not None else "") or f"{n} channels"
            raise SingrInputError(f"the model expects {n} modalities ({mods}); got an image of shape {image.shape}",
                                  case=case)

    @property
    def precision(self) -> str:
        """The precision the network runs in here: ``settings.precision`` resolved for the device
        (``auto`` -> ``bfloat16`` or ``float32``)."""
        return resolve_precision(self.settings.precision, self.device)

    @property
    def channels_last(self) -> bool:
        """Whether the network runs in channels-last 3-D: on a CPU in bfloat16 only (there it is
        the fastest layout; float32 channels-last 3-D convolutions measured slower than contiguous)."""
        return self.device.type == "cpu" and self.precision == "bfloat16"

    def _runner(self, i: int, model: torch.nn.Module) -> torch.nn.Module:
        """The module that computes member ``i``: the member itself, or (channels-last path) its
        channels-last copy, made once for owned members and per call for a borrowed network."""
        if not self.channels_last:
            return model
        if not self._owns_members:
            return channels_last_copy(model)
        if i not in self._fast_copies:
            self._fast_copies[i] = channels_last_copy(model)
        return self._fast_copies[i]

    @property
    def passes(self) -> int:
        """Sliding-window passes per image: members x mirrorings (8 with ``settings.tta``)."""
        return len(self.members) * (len(MIRROR_AXES) if self.settings.tta else 1)

    def _ticker(self, x: torch.Tensor, watch: Watch) -> Callable[[int], None]:
        """A tick counting network calls over every pass of a batch ``x``, reporting the share done."""
        roi = window_for(self.settings, x.shape[2:])
        per_pass = math.ceil(count_windows(x.shape[2:], roi, self.settings.overlap) * x.shape[0]
                             / max(int(self.settings.sw_batch_size), 1))
        total = max(per_pass * self.passes, 1)
        done = [0]

        def tick(step: int) -> None:
            done[0] += step
            watch(min(done[0] / total, 1.0))

        return tick

    def _member_maps(self, x: torch.Tensor, progress: bool = False, watch: Watch | None = None) -> torch.Tensor:
        """Mean of tanh(logits) over members and mirrorings, for a batch x (B, C, d, h, w), float32.
        Every network runs in eval mode (dropout off); one that was training is training again after.
        ``watch`` (see :data:`Watch`) sees the share of network calls done, and can end the work."""
        flips = MIRROR_AXES if self.settings.tta else ((),)
        acc: torch.Tensor | None = None
        n = 0
        tick = self._ticker(x, watch) if watch is not None else None
        with torch.inference_mode():  # the in-place ops below act on sliding_window's inference tensors
            for i, model in enumerate(self.members):
                was_training = model.training
                model.eval()  # dropout off; a network in training keeps its mode afterwards
                try:
                    net = self._runner(i, model)
                    if tick is not None:
                        net = _Watched(net, tick)
                    for axes in flips:
                        dims = [a + 2 for a in axes]
                        xi = torch.flip(x, dims) if dims else x
                        y = torch.tanh_(sliding_window(net, xi, self.settings, progress))
                        if dims:
                            y = torch.flip(y, dims)
                        acc = y if acc is None else acc.add_(y)
                        n += 1
                finally:
                    model.train(was_training)
            assert acc is not None
            return acc.div_(n) if n > 1 else acc

    def signed_maps_batch(self, images: Sequence[np.ndarray], progress: bool = False,
                          watch: Watch | None = None) -> list[np.ndarray]:
        """S-hat (R, D, H, W) float32 for *normalised* images of one shape each (C, D, H, W):
        cropped to the union of their brains (+ 2 voxels), segmented together, pasted back into -1;
        with ``settings.crop``, voxels outside an image's own brain (all channels 0) are -1 too,
        and an image without a brain is -1 everywhere without running the network."""
        shape = tuple(images[0].shape)
        n_out = len(self.region_names) or None
        masks = [np.any(im != 0, axis=0) for im in images] if self.settings.crop else []
        if self.settings.crop:
            brain = masks[0].copy() if len(masks) > 1 else masks[0]
            for mk in masks[1:]:
                brain |= mk
            box = bounding_box(brain, margin=2)
            if box is None and n_out is not None:  # nothing to segment: no brain in any image
                return [np.full((n_out,) + shape[1:], -1.0, dtype=np.float32) for _ in images]
        else:
            box = None
        if box is None:
            box = tuple(slice(0, s) for s in shape[1:])
        sub = (slice(None),) + box
        crop = np.empty((len(images), shape[0]) + tuple(b.stop - b.start for b in box), dtype=np.float32)
        for i, im in enumerate(images):
            crop[i] = im[sub]  # one copy (and cast) per image
        s = self._member_maps(torch.from_numpy(crop).to(self.device), progress, watch).cpu().numpy()
        out = []
        for i in range(len(images)):
            full = np.full((s.shape[1],) + shape[1:], -1.0, dtype=np.float32)
            if self.settings.crop:  # tumour lies inside the brain: -1 outside this image's own brain
                np.copyto(full[sub], s[i], where=masks[i][box])
            else:
                full[sub] = s[i]
            out.append(full)
        return out

    @property
    def applies_postprocess(self) -> bool:
        """Whether predictions are post-processed: the model has rules and ``settings.postprocess`` is on."""
        return self.postprocess is not None and self.settings.postprocess

    def from_signed(self, signed: np.ndarray, label_convention: str | None = None) -> Prediction:
        """Threshold S-hat at 0, nest the regions through the label map, post-process (when
        :attr:`applies_postprocess`), make the label map; the regions returned are the label map's."""
        own = self.meta.label_convention if self.meta is not None else None
        conv = label_convention or own or "brats2020"
        if conv not in ("brats2020", "brats2023", "binary") or (conv == "binary") != (len(self.region_names) == 1):
            conv = own or conv
        regions = labels_to_regions(regions_to_labels(signed >= 0, conv), conv)  # ET within TC within WT
        if self.applies_postprocess:
            regions = self.postprocess.apply(regions, self.region_names)  # keeps the nesting
        labels = regions_to_labels(regions, conv)
        return Prediction(labels, labels_to_regions(labels, conv), signed.astype(np.float32, copy=False),
                          self.region_names, conv)

    def predict_prepared(self, image: np.ndarray, label_convention: str | None = None,
                         progress: bool = False, watch: Watch | None = None) -> Prediction:
        """Segment an image already normalised (a prepared case)."""
        maps = self.signed_maps_batch([np.asarray(image, dtype=np.float32)], progress, watch)
        return self.from_signed(maps[0], label_convention)

    def predict(self, image: np.ndarray, label_convention: str | None = None, case: str = "input",
                progress: bool = False, watch: Watch | None = None) -> Prediction:
        """Segment an un-normalised image (C, D, H, W), as read from disk."""
        self.check_channels(image, case)
        return self.predict_prepared(normalize_image(image), label_convention, progress, watch)

    def predict_batch(self, images: Sequence[np.ndarray], label_conventions: Sequence[str | None] | None = None,
                      watch: Watch | None = None) -> list[Prediction]:
        """Segment un-normalised images; images of one shape go through the network together
        (``watch`` sees each group's share of work in turn)."""
        convs = list(label_conventions) if label_conventions is not None else [None] * len(images)
        norm = [normalize_image(im) for im in images]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(norm):
            groups.setdefault(tuple(im.shape), []).append(i)
        out: list[Prediction | None] = [None] * len(images)
        for idx in groups.values():
            maps = self.signed_maps_batch([norm[i] for i in idx], watch=watch)
            for j, i in enumerate(idx):
                out[i] = self.from_signed(maps[j], convs[i])
        return [p for p in out if p is not None]

    def with_settings(self, **overrides: Any) -> "Predictor":
        """The same members (and rules) with other inference settings (e.g. ``tta=True`` or
        ``postprocess=False`` for one request)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.settings = self.settings.with_(**overrides)
        return new
