"""What a checkpoint says about its model: :class:`ModelMeta`, one typed record instead of a dict.

A checkpoint stores it as the JSON object ``meta`` (in the safetensors header's ``singr``
entry; in singr 0.1's ``.pt`` pickles, the dict ``meta``). :meth:`ModelMeta.from_dict` reads
either, :meth:`ModelMeta.to_dict` writes that object back exactly as it was stored: the keys
in the order the trainer writes them (or the file had them), keys the file lacked left out,
unknown keys kept in :attr:`ModelMeta.extra` and written back. A checkpoint written from a
``ModelMeta`` is byte for byte the file written from the dict it replaces.

:class:`MemberInfo` is what an ensemble's :class:`~singr.engine.infer.Predictor` says about
each member checkpoint (``members`` in ``/v1/model``, in evaluation summaries).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import SingrInputError

__all__ = ["ModelMeta", "MemberInfo", "META_KEYS", "REQUIRED_META_KEYS"]

#: the keys a checkpoint's ``meta`` holds, in the order the trainer writes them
META_KEYS = ("in_channels", "out_channels", "region_names", "label_convention", "modalities", "model", "loss",
             "regression", "lam", "delta", "gamma", "spacing", "fold", "n_train", "n_val", "n_test")
#: the keys without which a checkpoint's network cannot be built or used
REQUIRED_META_KEYS = ("in_channels", "out_channels", "region_names")


@dataclass(frozen=True)
class ModelMeta:
    """A checkpoint's metadata: what the network takes and gives, what it was trained on and how.

    Every field but the first three may be missing from an older checkpoint (singr 0.1 wrote
    no ``fold``/``n_*``; hand-made checkpoints may lack more): it is None then (``modalities``:
    empty), and callers fall back to the config where they need a value.
    """

    # The network's interface (required): input channels (one per modality), output channels
    # (one per region) and the regions' names in output order (("TC", "WT", "ET") for BraTS).
    in_channels: int
    out_channels: int
    region_names: tuple[str, ...]

    # The data it was trained on: the label convention of its labels ("brats2020",
    # "brats2023", "binary"), the modalities in input-channel order (empty when unknown) and
    # the voxel spacing in mm the cases were resampled to.
    label_convention: str | None = None
    modalities: tuple[str, ...] = ()

    # How it was trained: architecture (config ``model.name``), loss (``loss.name``), whether
    # the outputs are regressed signed maps (tanh; SiNGR) rather than hard-label logits
    # (sigmoid), SiNG's lambda and delta (``sing.lam``, ``sing.delta``) and the loss's gamma.
    model: str | None = None
    loss: str | None = None
    regression: bool | None = None
    lam: float | None = None
    delta: float | None = None
    gamma: float | None = None
    spacing: tuple[float, ...] | None = None

    # The split it saw: the cross-validation fold (None when trained without folds) and the
    # number of training, validation and test cases.
    fold: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None

    # Round trip: keys this singr does not know (kept and written back as they were), and the
    # keys of the dict this was read from, in their order (empty when built in code: then
    # every field is written, in META_KEYS order). A key the source lacked is written only
    # once it holds a value other than its default.
    extra: dict[str, Any] = field(default_factory=dict, hash=False)
    source_keys: tuple[str, ...] = field(default=(), repr=False, compare=False)

    # ------------------------------------------------------------------ reading

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str | Path | None = None) -> "ModelMeta":
        """The metadata in ``d``, a checkpoint's stored ``meta``; ``source`` (the file) names
        the checkpoint in errors. Raises :class:`SingrInputError` for a ``d`` that is not a
        mapping, lacks a required key or holds a value of the wrong kind."""
        if not isinstance(d, Mapping):
            raise SingrInputError(f"checkpoint metadata is a {type(d).__name__}, not a JSON object; "
                                  "not a singr model checkpoint", path=source)
        for key in REQUIRED_META_KEYS:
            if key not in d or d[key] is None:
                raise SingrInputError(f"checkpoint metadata lacks {key!r}; not a singr model checkpoint",
                                      path=source)

        def get(key: str, conv: Callable[[Any], Any]) -> Any:
            value = d.get(key)
            if value is None:
                return None
            try:
                return conv(value)
            except (TypeError, ValueError) as e:
                raise SingrInputError(f"checkpoint metadata has a bad {key!r}: {value!r} ({e})", path=source) from e

        def strings(v: Any) -> tuple[str, ...]:
            if isinstance(v, str):
                raise TypeError("expected a list of names")
            return tuple(str(x) for x in v)

        def floats(v: Any) -> tuple[float, ...]:
            return tuple(float(x) for x in v)

        return cls(in_channels=get("in_channels", int), out_channels=get("out_channels", int),
                   region_names=get("region_names", strings), label_convention=get("label_convention", str),
                   modalities=get("modalities", strings) or (), model=get("model", str), loss=get("loss", str),
                   regression=get("regression", bool), lam=get("lam", float), delta=get("delta", float),
                   gamma=get("gamma", float), spacing=get("spacing", floats), fold=get("fold", int),
                   n_train=get("n_train", int), n_val=get("n_val", int), n_test=get("n_test", int),
                   extra={k: v for k, v in d.items() if k not in META_KEYS}, source_keys=tuple(str(k) for k in d))

    # ------------------------------------------------------------------ writing

    def _json(self, key: str) -> Any:
        value = getattr(self, key)
        return list(value) if isinstance(value, tuple) else value

    def to_dict(self) -> dict[str, Any]:
        """The JSON object a checkpoint stores (module docstring): ``from_dict(d).to_dict() == d``."""
        defaults = {f.name: f.default for f in fields(self)}
        values = {k: self._json(k) for k in META_KEYS}
        out: dict[str, Any] = {}
        for key in self.source_keys:  # the stored order
            if key in values:
                out[key] = values[key]
            elif key in self.extra:
                out[key] = self.extra[key]
        for key in META_KEYS:  # fields set in code, or set since
            if key not in out and (not self.source_keys or getattr(self, key) != defaults[key]):
                out[key] = values[key]
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out


@dataclass(frozen=True)
class MemberInfo:
    """One member checkpoint of a predictor: its file name (no folder) and the settings it was
    trained with (None where its metadata lacks them)."""

    file: str
    lam: float | None = None
    delta: float | None = None
    gamma: float | None = None
    model: str | None = None
    fold: int | None = None

    @classmethod
    def of(cls, path: str | Path, meta: ModelMeta) -> "MemberInfo":
        """The member stored in ``path`` with metadata ``meta``."""
        return cls(file=Path(path).name, lam=meta.lam, delta=meta.delta, gamma=meta.gamma, model=meta.model,
                   fold=meta.fold)

    def to_dict(self) -> dict[str, Any]:
        """As JSON: ``{"file", "lam", "delta", "gamma", "model", "fold"}``."""
        return {"file": self.file, "lam": self.lam, "delta": self.delta, "gamma": self.gamma, "model": self.model,
                "fold": self.fold}
