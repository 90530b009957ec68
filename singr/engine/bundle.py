"""A model as the user names it: one checkpoint file, or a folder holding an ensemble.

A *bundle* is a folder with ``singr-model.json``::

    {"members": ["fold_0.safetensors", ...],      # checkpoint files beside it, averaged as an ensemble
     "postprocess": {...} | null,                 # rules fitted on validation data (engine.postprocess)
     "info": {...}}                               # free facts: where it came from (sweep, trials, folds)

A folder without that file is read as an ensemble of every ``*.safetensors`` in it
(``best.safetensors`` alone when it holds one). :func:`load_predictor` turns any of these
into the one :class:`singr.engine.infer.Predictor`; the rules are applied unless the config's
``infer.postprocess`` (or the caller) turns them off. :func:`write_rules` replaces the rules of
a model folder in place (``singr postprocess`` without ``--out``).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Sequence

from ..errors import SingrInputError
from ..io import write_json
from .checkpoint import CHECKPOINT_SUFFIX

__all__ = ["BUNDLE_FILE", "write_bundle", "write_rules", "read_bundle", "read_rules", "load_predictor"]

BUNDLE_FILE = "singr-model.json"


def write_bundle(folder: str | Path, members: Sequence[str | Path], *, postprocess: dict[str, Any] | None = None,
                 info: dict[str, Any] | None = None, names: Sequence[str] | None = None) -> Path:
    """Copy ``members`` into ``folder`` (as ``names``, default ``member_<i>.safetensors``) and
    write ``singr-model.json``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(names) if names else [f"member_{i}{CHECKPOINT_SUFFIX}" for i in range(len(members))]
    if len(names) != len(members):
        raise ValueError("one name per member")
    for src, name in zip(members, names):
        if Path(src).resolve() != (folder / name).resolve():
            shutil.copy2(src, folder / name)
    write_json(folder / BUNDLE_FILE, {"members": list(names), "postprocess": postprocess, "info": info or {}})
    return folder


def read_bundle(source: str | Path) -> tuple[list[Path], dict[str, Any]]:
    """(member files, bundle record) of a checkpoint file or a bundle folder."""
    p = Path(source)
    if p.is_file():
        return [p], {"members": [p.name], "postprocess": None, "info": {}}
    if not p.is_dir():
        raise SingrInputError("model not found: expected a checkpoint file (.safetensors) or a model folder",
                              path=p)
    if (p / BUNDLE_FILE).is_file():
        try:
            rec = json.loads((p / BUNDLE_FILE).read_text())
            members = [p / str(m) for m in rec["members"]]
        except (ValueError, KeyError, TypeError) as e:
            raise SingrInputError(f"unreadable {BUNDLE_FILE} ({e}); expected {{'members': [...]}}", path=p) from e
        missing = [m.name for m in members if not m.is_file()]
        if missing or not members:
            raise SingrInputError(f"{BUNDLE_FILE} names members that are not there: {missing or 'none listed'}",
                                  path=p)
        return members, rec
    found = sorted(p.glob(f"**/*{CHECKPOINT_SUFFIX}"))
    best = [f for f in found if f.name == "best" + CHECKPOINT_SUFFIX]
    if len(best) == 1:
        found = best
    if not found:
        raise SingrInputError(f"no checkpoint (*{CHECKPOINT_SUFFIX}) and no {BUNDLE_FILE} in the model folder",
                              path=p)
    return found, {"members": [f.name for f in found], "postprocess": None, "info": {}}


def write_rules(folder: str | Path, postprocess: dict[str, Any] | None, info: dict[str, Any] | None = None) -> Path:
    """Replace, in place, the post-processing rules of the model folder ``folder`` (a bundle, or
    a folder of checkpoints, which becomes a bundle of the same members); ``info`` is merged into
    the bundle's info. The checkpoints are not touched. Returns ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SingrInputError("rules can be written in place into a model folder only; give an output folder "
                              "for a checkpoint file", path=folder)
    members, rec = read_bundle(folder)
    names = [str(n) for n in rec["members"]] if (folder / BUNDLE_FILE).is_file() else \
        [m.relative_to(folder).as_posix() for m in members]
    write_json(folder / BUNDLE_FILE, {"members": names, "postprocess": postprocess,
                                      "info": {**(rec.get("info") or {}), **(info or {})}})
    return folder


def read_rules(rec: dict[str, Any], source: str | Path | None = None) -> Any:
    """The :class:`~singr.engine.postprocess.PostprocessRules` of a bundle record, or None; a
    malformed ``postprocess`` entry is a :class:`SingrInputError` naming the bundle."""
    if not rec.get("postprocess"):
        return None
    from .postprocess import PostprocessRules

    try:
        return PostprocessRules.from_dict(rec["postprocess"])
    except ValueError as e:
        raise SingrInputError(f"{BUNDLE_FILE}: bad post-processing rules ({e})", path=source) from e


def load_predictor(source: str | Path | Sequence[str | Path], device: str = "auto", *, trust: bool = False,
                   postprocess: bool | None = None, **overrides: Any) -> Any:
    """The :class:`Predictor` of a checkpoint, several checkpoints (an ensemble) or a bundle.

    A bundle's post-processing rules are loaded with it (``predictor.postprocess``) and applied
    when ``postprocess`` says so: None follows the model's config (``infer.postprocess``, true
    unless the model was trained with it off), False ignores the rules, True applies them.
    ``overrides`` replace inference settings (``tta``, ``roi_size``, ...)."""
    from .infer import Predictor

    if isinstance(source, (str, Path)):
        members, rec = read_bundle(source)
    else:
        members, rec = [Path(s) for s in source], {"postprocess": None, "info": {}}
    rules = read_rules(rec, source if isinstance(source, (str, Path)) else None)
    pred = Predictor.from_checkpoints(members, device, trust=trust, postprocess=rules, **overrides)
    if postprocess is not None:
        pred.settings = pred.settings.with_(postprocess=bool(postprocess))
    pred.bundle_info = dict(rec.get("info") or {})
    return pred
