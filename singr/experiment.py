"""The comparison grid of an ``experiment:`` config section (paper Tables 1-3, Figure 3).

``expand_variants`` turns the section into the full list of runs' variants: the listed
variants (Table 3, on ``model.name``), then, for every extra architecture in
``experiment.architectures``, the baseline and highlight variants with that
``model.name`` (named ``<arch>-<variant>``). ``variant_config`` gives the singr config
of one variant and seed. Nothing here needs Ray or MLflow: ``tune/`` runs the grid and
:mod:`singr.report` reads it back.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from .config import apply_overrides, load_reference, validate

TABLE = "Loss and target"          # group of the listed variants
ARCHITECTURES = "Architectures"    # group of the with/without-SiNGR pairs per architecture


@dataclass(frozen=True)
class Variant:
    name: str                      # slug: Ray param value, MLflow param, folder names
    label: str                     # what tables and charts print
    set: tuple[str, ...]           # key=value overrides over the experiment's config
    model: str                     # model.name of the variant
    groups: tuple[str, ...] = field(default=(TABLE,))
    role: str = ""                 # "baseline" | "highlight" | ""


def expand_variants(cfg: dict[str, Any]) -> list[Variant]:
    """All variants of ``cfg["experiment"]`` in report order (see the module docstring)."""
    e = cfg["experiment"]
    base_model = cfg["model"]["name"]
    listed = []
    archs = [a for a in (e.get("architectures") or []) if a != base_model]
    for v in e.get("variants") or []:
        sets = tuple(v.get("set") or [])
        model = next((s.split("=", 1)[1].strip() for s in sets if s.split("=", 1)[0].strip() == "model.name"),
                     base_model)
        role = "baseline" if v["name"] == e.get("baseline") else "highlight" if v["name"] == e.get("highlight") else ""
        groups = (TABLE, ARCHITECTURES) if role and archs else (TABLE,)
        listed.append(Variant(v["name"], str(v.get("label") or v["name"]), sets, model, groups, role))
    out = list(listed)
    pair = [v for v in listed if v.role == "baseline"] + [v for v in listed if v.role == "highlight"]
    for arch in archs:
        for v in pair:
            out.append(Variant(f"{arch}-{v.name}", f"{arch}: {v.label}", (*v.set, f"model.name={arch}"), arch,
                               (ARCHITECTURES,), v.role))
    return out


def variant_by_name(cfg: dict[str, Any], name: str) -> Variant:
    for v in expand_variants(cfg):
        if v.name == name:
            return v
    known = ", ".join(v.name for v in expand_variants(cfg))
    raise KeyError(f"unknown variant {name!r}; the experiment has {known}")


def variant_config(cfg: dict[str, Any], name: str, seed: int | None = None) -> dict[str, Any]:
    """``cfg`` with variant ``name``'s settings applied (and ``train.seed = seed``), validated."""
    v = variant_by_name(cfg, name)
    ref = load_reference()
    out = apply_overrides({k: x for k, x in cfg.items() if not k.startswith("_")}, v.set, ref)
    if seed is not None:
        out["train"]["seed"] = int(seed)
    # the experiment section itself was checked with the config; re-checking it here would
    # validate every variant again for each one
    validate({k: x for k, x in out.items() if k != "experiment"}, ref, f"variant {name!r}")
    for k, x in cfg.items():
        if k.startswith("_"):
            out[k] = copy.deepcopy(x)
    return out


def is_grid(cfg: dict[str, Any]) -> bool:
    return (cfg.get("tune") or {}).get("mode") == "grid"
