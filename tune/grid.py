"""The comparison grid of an ``experiment:`` config section (paper Tables 1-3, Figure 3).

``expand_variants`` turns the section into the full list of runs' variants: the listed
variants (Table 3, on ``model.name``), then, for every extra architecture in
``experiment.architectures``, the baseline and highlight variants with that ``model.name``
(named ``<arch>-<variant>``); with ``experiment.axis`` every one of those at every level
(named ``<variant>-<level>``, the level's ``set`` after the variant's). ``variant_config``
gives the config of one variant and seed.

A variant (or level) may read another data folder (``data.root``): :func:`tune.plan.make_plan`
makes its paths absolute and gives each data folder its own preprocessing cache and split
file, and :func:`data_key` groups the variants by the data they read (one map stage each).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from singr.config import SingrConfig, apply_overrides, validate_config

from .config import ServiceConfig

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
    base: str = ""                 # the name before crossing with the axis ("" = name)
    level: str = ""                # the axis level's name ("" without an axis)
    x: float | None = None         # the axis level's value

    @property
    def stem(self) -> str:
        """The variant's name without the axis level (what baseline / highlight name)."""
        return self.base or self.name


def is_grid(cfg: ServiceConfig) -> bool:
    return cfg.tune.mode == "grid"


def expand_variants(cfg: ServiceConfig) -> list[Variant]:
    """All variants of ``cfg.experiment`` in report order (see the module docstring)."""
    e = cfg.experiment
    if e is None:
        return []
    base_model = cfg.model.name
    listed: list[Variant] = []
    archs = [a for a in e.architectures if a != base_model]
    for spec in e.variants:
        sets = tuple(spec.set)
        model = next((s.split("=", 1)[1].strip() for s in sets if s.split("=", 1)[0].strip() == "model.name"),
                     base_model)
        role = "baseline" if spec.name == e.baseline else "highlight" if spec.name == e.highlight else ""
        groups = (TABLE, ARCHITECTURES) if role and archs else (TABLE,)
        listed.append(Variant(spec.name, str(spec.label or spec.name), sets, model, groups, role))
    out = list(listed)
    pair = [v for v in listed if v.role == "baseline"] + [v for v in listed if v.role == "highlight"]
    for arch in archs:
        for v in pair:
            out.append(Variant(f"{arch}-{v.name}", f"{arch}: {v.label}", (*v.set, f"model.name={arch}"), arch,
                               (ARCHITECTURES,), v.role))
    if e.axis is None:
        return out
    crossed = []
    for lv in e.axis.levels:
        for v in out:
            sets = (*v.set, *lv.set)
            model = next((s.split("=", 1)[1].strip() for s in reversed(sets)
                          if s.split("=", 1)[0].strip() == "model.name"), base_model)
            crossed.append(Variant(f"{v.name}-{lv.name}", v.label, sets, model, v.groups, v.role,
                                   base=v.name, level=lv.name, x=float(lv.value)))
    return crossed


def variant_by_name(cfg: ServiceConfig, name: str) -> Variant:
    variants = expand_variants(cfg)
    for v in variants:
        if v.name == name:
            return v
    raise KeyError(f"unknown variant {name!r}; the experiment has {', '.join(v.name for v in variants)}")


def data_key(cfg: ServiceConfig) -> tuple[str, str, str]:
    """What a run's data is: (data.root, data.cache_dir, data.split_file)."""
    d = cfg.data
    return str(d.root), str(d.cache_dir or ""), str(d.split_file or "")


def variant_config(cfg: ServiceConfig, name: str, seed: int | None = None) -> ServiceConfig:
    """``cfg`` with variant ``name``'s settings applied (and ``train.seed = seed``).

    The method's sections are validated again; the service sections, checked with the
    config, are carried over as they are (re-checking the experiment here would validate
    every variant again for each one).
    """
    v = variant_by_name(cfg, name)
    data = cfg.to_dict()
    for k in ("tune", "experiment", "mlflow"):
        data.pop(k)
    sets = list(v.set) + ([f"train.seed={int(seed)}"] if seed is not None else [])
    core = validate_config(apply_overrides(data, sets), SingrConfig, f"variant {name!r}")
    out = ServiceConfig.model_construct(**{k: getattr(core, k) for k in SingrConfig.core_sections()},
                                        tune=cfg.tune, experiment=cfg.experiment, mlflow=cfg.mlflow,
                                        source=cfg.source)
    return out
