"""Typed service sections of a config: ``tune``, ``experiment`` and ``mlflow``.

:class:`ServiceConfig` extends singr's :class:`~singr.config.SingrConfig` with these three
sections, typed, and with the checks that span sections (an ASHA rung must fall on a
validation epoch; every grid variant must give a valid config). The values and their
comments live in ``configs/brats.yaml`` like the rest. ``load_service_config`` is
``singr.config.load_config`` with this schema. Nothing here imports Ray or MLflow, so a
bad config is reported before any cluster work starts.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from singr.config import SingrConfig, apply_overrides, load_config, validate_config
from singr.config.schema import SELECT_METRICS, PosInt, Section, UnitFloat
from singr.errors import SingrConfigError
from singr.models import MODELS

__all__ = ["TuneSection", "AshaSection", "ControlSection", "ConfirmSection",
           "VariantSpec", "AxisLevel", "AxisSection", "ExperimentSection",
           "MlflowSection", "ServiceConfig", "load_service_config", "SLUG", "VAL_METRICS"]

SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
PosFloat = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Range = Annotated[list[float], Field(min_length=2, max_length=2)]
VAL_METRICS = ("Dice_mean", "HD95_mean", "IoU_mean", "LesionDice_mean", "LesionHD95_mean")


def _check_range(v: list[float] | None, lo: float, hi: float, lo_open: bool, hi_open: bool, text: str
                 ) -> list[float] | None:
    if v is None:
        return v
    a, b = float(v[0]), float(v[1])
    for x in (a, b):
        if (x <= lo if lo_open else x < lo) or (x >= hi if hi_open else x > hi):
            raise ValueError(f"both bounds must lie in {text}")
    if a > b:
        raise ValueError(f"low {a} is greater than high {b}")
    return [a, b]


class AshaSection(Section):
    grace_period: PosInt = Field(description="epochs every trial runs before it can be stopped; "
                                 "a multiple of train.val_every")
    reduction_factor: Annotated[float, Field(gt=1.0)] = Field(description="keep the top 1/reduction_factor at a rung")


class ControlSection(Section):
    """The control arm (issue 21): the reference setting trained with new seeds after the search."""

    seeds: Annotated[int, Field(ge=0, le=20)] = Field(
        description="runs of the reference setting (new seeds, full epochs, no early stopping); 0: no control arm")
    reference: Literal["defaults", "champion"] = Field(
        description="defaults: this config's own settings (the paper's); champion: the current @alias's settings "
        "(the defaults when there is none)")


class ConfirmSection(Section):
    """The confirmation stage (issue 21): the top settings trained again beside the control."""

    top_k: Annotated[int, Field(ge=0, le=20)] = Field(
        description="distinct best settings of the search trained again; 0: no confirmation (the best trial "
        "is registered)")
    seeds: Annotated[int, Field(ge=1, le=20)] = Field(description="new seeds per confirmed setting")
    ensemble: bool = Field(description="register the winner's seed runs as one ensemble; false: its best run")


class TuneSection(Section):
    mode: Literal["search", "grid"]
    search: Literal["optuna", "random"] = Field(
        description="search algorithm of tune.mode search: optuna (seeded TPE) or random (Ray Tune's random "
        "sampling of the same space); both under the same ASHA schedule")
    name: Optional[str]
    storage_path: str
    seed: int
    train_overrides: list[str]
    num_samples: PosInt
    max_concurrent: Optional[PosInt]
    lam_grid: Annotated[list[UnitFloat], Field(min_length=1)]
    delta: Range
    gamma: Range
    lr: Optional[Range]
    weight_decay: Optional[Range]
    fg_oversample: Optional[Range]
    start_from_defaults: bool = Field(
        description="the first trial is the config's own setting (the paper's defaults) where it lies in the "
        "search space (Ray Tune's points_to_evaluate)")
    control: ControlSection
    confirm: ConfirmSection
    models: Optional[Annotated[list[Literal[MODELS]], Field(min_length=1)]]  # type: ignore[valid-type]
    num_workers: PosInt
    trial_runner: Literal["auto", "inline", "train"] = Field(
        description="how a trial trains: inline (in the Tune trial's own process, one worker; "
        "Tune reuses the process for later trials), train (a Ray Train run: controller and worker group, "
        "DDP when num_workers > 1); auto: inline for one worker, train for more")
    cpus_per_worker: PosFloat
    gpus_per_worker: Optional[NonNegFloat]
    map_actors: Optional[PosInt]
    map_cpus: PosFloat
    map_gpus: NonNegFloat
    max_failures: Annotated[int, Field(ge=0, le=100)] = Field(
        description="worker failures a trial recovers from (bounded: -1, 'forever', is refused)")
    start_retries: Annotated[int, Field(ge=0, le=100)] = Field(
        description="worker-group start-ups a trial may retry (each waits 60 s) before it errors")
    stall_timeout_s: NonNegFloat = Field(description="end the sweep when no trial reports for this long; 0: never")
    worker_niceness: Annotated[int, Field(ge=0, le=19)] = Field(
        description="nice value of the Ray workers of the sweep's own local Ray (Ray's default is 15, which "
        "lets any normal-priority process take the CPU first); on an existing cluster the nodes' "
        "`ray start` decides (RAY_worker_niceness)")
    metric: Literal[tuple(SELECT_METRICS)] = Field(  # type: ignore[valid-type]
        description="the objective: searcher, ASHA, best trial, registered score and every run's best "
        "checkpoint (train.select_metric); HD95 metrics are minimised, the others maximised")
    refit_folds: Optional[Annotated[int, Field(ge=2)]] = Field(
        description="after the search, train the best hyperparameters on this many folds (parallel "
        "runs) and register the fold ensemble; null: no refit")
    ensemble_top_k: Optional[Annotated[int, Field(ge=2)]] = Field(
        description="register the best checkpoints of this many best trials as one ensemble; null: the best "
        "trial alone")
    postprocess: bool = Field(description="fit post-processing rules on the validation split and store them "
                              "in the registered model")
    asha: AshaSection

    def check_ensemble(self) -> None:
        """refit_folds and ensemble_top_k: one at most, in a search, top-k within the budget."""
        if self.refit_folds is not None and self.ensemble_top_k is not None:
            raise ValueError(f"tune.refit_folds = {self.refit_folds} and tune.ensemble_top_k = "
                             f"{self.ensemble_top_k} are both set; a sweep registers one model: the best "
                             "hyperparameters refitted on K folds (refit_folds) or the N best trials together "
                             "(ensemble_top_k). Set the other to null")
        if self.mode == "grid" and (self.refit_folds is not None or self.ensemble_top_k is not None):
            raise ValueError("tune.refit_folds and tune.ensemble_top_k apply to tune.mode = 'search' (a grid "
                             "registers no model); set them to null")
        if self.mode == "search" and self.ensemble_top_k is not None and self.confirm.top_k:
            raise ValueError(f"tune.ensemble_top_k = {self.ensemble_top_k} and tune.confirm.top_k = "
                             f"{self.confirm.top_k} both choose the registered model: the N best trials of the "
                             "search together, or the confirmed winner's seed runs. Set tune.confirm.top_k=0 to "
                             "keep the top-k ensemble (the control arm still runs), or ensemble_top_k to null")
        if self.ensemble_top_k is not None and self.ensemble_top_k > self.num_samples:
            raise ValueError(f"tune.ensemble_top_k = {self.ensemble_top_k} is more than the sweep's "
                             f"tune.num_samples = {self.num_samples} trials")

    @field_validator("delta")
    @classmethod
    def _delta(cls, v: list[float]) -> list[float]:
        return _check_range(v, 0.0, 1.0, False, True, "[0, 1)")  # type: ignore[return-value]

    @field_validator("gamma")
    @classmethod
    def _gamma(cls, v: list[float]) -> list[float]:
        return _check_range(v, 0.0, float("inf"), False, True, "[0, inf)")  # type: ignore[return-value]

    @field_validator("lr")
    @classmethod
    def _lr(cls, v: list[float] | None) -> list[float] | None:
        return _check_range(v, 0.0, float("inf"), True, True, "(0, inf)")

    @field_validator("weight_decay")
    @classmethod
    def _wd(cls, v: list[float] | None) -> list[float] | None:
        return _check_range(v, 0.0, float("inf"), True, True, "(0, inf) (log-uniform)")

    @field_validator("fg_oversample")
    @classmethod
    def _fg(cls, v: list[float] | None) -> list[float] | None:
        return _check_range(v, 0.0, 1.0, False, False, "[0, 1]")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not SLUG.match(v):
            raise ValueError("expected a short name of letters, digits, '_', '.' or '-' (it names a folder)")
        return v


class VariantSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    label: Optional[str] = None
    set: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not SLUG.match(v):
            raise ValueError("expected a short name of letters, digits, '_', '.' or '-' (it names folders and "
                             "MLflow params)")
        return v


class AxisLevel(VariantSpec):
    """A level of ``experiment.axis``: a variant's name, label and overrides, and its position."""

    value: float = Field(description="the level's position on the axis (x of the report's line plot)")


class AxisSection(BaseModel):
    """A second grid axis: every variant runs at every level (e.g. data of growing ambiguity)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="what the levels vary, e.g. ambiguity (the x axis of the report)")
    levels: Annotated[list[AxisLevel], Field(min_length=1)]


class ExperimentSection(Section):
    seeds: Annotated[list[int], Field(min_length=1)]
    variants: list[VariantSpec]
    baseline: Optional[str]
    highlight: Optional[str]
    architectures: list[Literal[MODELS]]  # type: ignore[valid-type]
    eval_split: Literal["test", "train"] = Field(description="not val: val picks each run's best checkpoint")
    overlay_cases: Annotated[int, Field(ge=0)]
    notes: Optional[str]
    axis: Optional[AxisSection] = Field(description="levels crossed with the variants: run <variant>-<level>")

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("expected a non-empty list of distinct integers")
        return v


class MlflowSection(Section):
    tracking_uri: Optional[str]
    experiment: str
    registered_model: str
    alias: str
    promote: Literal["significant", "better", "always", "never"]
    export: list[Literal["onnx", "torchscript"]] = Field(
        description="formats the registered model's members are exported to and logged with it (checked against "
        "PyTorch); []: none")
    card_test_metrics: bool = Field(
        description="evaluate the registered model on the test split in the driver for its model card")

    @field_validator("export")
    @classmethod
    def _formats_once(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"{v!r} names a format twice")
        return v


class ServiceConfig(SingrConfig):
    """A config with typed service sections (see the module docstring)."""

    tune: TuneSection  # type: ignore[assignment]
    experiment: Optional[ExperimentSection]  # type: ignore[assignment]
    mlflow: MlflowSection  # type: ignore[assignment]

    def sweep_val_every(self) -> int:
        """``train.val_every`` of the sweep's trials: after ``tune.train_overrides``."""
        val_every = int(self.train.val_every)
        for text in self.tune.train_overrides:
            key, _, value = text.partition("=")
            if key.strip() == "train.val_every":
                try:
                    val_every = int(value)
                except ValueError:
                    raise ValueError(f"tune.train_overrides: {text!r}; expected train.val_every=<epochs>") from None
        return val_every

    @model_validator(mode="after")
    def _across_sections(self) -> "ServiceConfig":
        t = self.tune
        t.check_ensemble()
        if t.trial_runner == "inline" and t.num_workers > 1:
            raise ValueError(f"tune.trial_runner = 'inline' trains one worker in the trial's process, but "
                             f"tune.num_workers = {t.num_workers}; set tune.trial_runner to train (or auto) for DDP")
        val_every = self.sweep_val_every()
        if t.mode == "search" and t.asha.grace_period % val_every:
            raise ValueError(f"tune.asha.grace_period = {t.asha.grace_period} is not a multiple of train.val_every "
                             f"= {val_every} (after tune.train_overrides); ASHA compares trials at validation "
                             "epochs only")
        if t.mode == "search" and float(t.asha.reduction_factor) != int(t.asha.reduction_factor):
            raise ValueError(f"tune.asha.reduction_factor = {t.asha.reduction_factor}; expected a whole number, so "
                             "that every rung falls on a validation epoch")
        if t.mode == "grid":
            if self.experiment is None or not self.experiment.variants:
                raise ValueError("tune.mode = 'grid' needs experiment.variants (a non-empty list)")
        if self.experiment is not None:
            self._check_experiment(self.experiment)
        return self

    def _check_experiment(self, e: ExperimentSection) -> None:
        names: list[str] = []
        base = self.to_dict()
        base.pop("experiment", None)
        for i, v in enumerate(e.variants):
            where = f"experiment.variants[{i}]"
            if v.name in names:
                raise ValueError(f"{where}.name = {v.name!r} is used twice; variant names must be unique")
            names.append(v.name)
            for text in v.set:
                if text.split("=", 1)[0].strip().split(".")[0] in ("experiment", "tune", "mlflow"):
                    raise ValueError(f"{where}.set: {text!r}; a variant may not change the experiment, tune or "
                                     "mlflow sections")
            try:
                validate_config(apply_overrides(base, v.set), SingrConfig)
            except SingrConfigError as err:
                raise ValueError(f"{where}.set (variant {v.name!r}): {err.reason}") from None
        if e.axis is not None:
            self._check_axis(e, base, names)
        for key in ("baseline", "highlight"):
            val = getattr(e, key)
            if val is not None and val not in names:
                raise ValueError(f"experiment.{key} = {val!r} is not a variant name; variants: "
                                 f"{', '.join(names) or 'none'}")
        if e.architectures:
            if not (e.baseline and e.highlight):
                raise ValueError("experiment.architectures needs experiment.baseline and experiment.highlight "
                                 "(each architecture runs both)")
            if len(set(e.architectures)) != len(e.architectures):
                raise ValueError(f"experiment.architectures = {e.architectures!r} names an architecture twice")
            made = {f"{a}-{getattr(e, k)}" for a in e.architectures for k in ("baseline", "highlight")}
            clash = sorted(made & set(names))
            if clash:
                raise ValueError(f"variant name {clash[0]!r} is also the name experiment.architectures gives an "
                                 "architecture's run; rename the variant")

    @staticmethod
    def _check_axis(e: ExperimentSection, base: dict[str, Any], names: list[str]) -> None:
        """Distinct level names and values, distinct run names; each level valid with each listed variant."""
        assert e.axis is not None
        seen: dict[str, float] = {}
        for i, lv in enumerate(e.axis.levels):
            where = f"experiment.axis.levels[{i}]"
            if lv.name in seen:
                raise ValueError(f"{where}.name = {lv.name!r} is used twice; level names must be unique")
            if lv.value in seen.values():
                raise ValueError(f"{where}.value = {lv.value:g} is used twice; level values must be distinct")
            seen[lv.name] = lv.value
        made = [f"{a}-{getattr(e, k)}" for a in e.architectures for k in ("baseline", "highlight")]
        crossed = [f"{n}-{lv.name}" for lv in e.axis.levels for n in (names or ["base"]) + made]
        twice = sorted({c for c in crossed if crossed.count(c) > 1})
        if twice:
            raise ValueError(f"experiment.axis: the run name {twice[0]!r} (<variant>-<level>) comes out twice; "
                             "rename a variant or a level")
        for i, lv in enumerate(e.axis.levels):
            where = f"experiment.axis.levels[{i}]"
            for text in lv.set:
                if text.split("=", 1)[0].strip().split(".")[0] in ("experiment", "tune", "mlflow"):
                    raise ValueError(f"{where}.set: {text!r}; a level may not change the experiment, tune or "
                                     "mlflow sections")
            for v in e.variants or [VariantSpec(name="base")]:
                try:
                    validate_config(apply_overrides(base, [*v.set, *lv.set]), SingrConfig)
                except SingrConfigError as err:
                    raise ValueError(f"{where}.set (level {lv.name!r} with variant {v.name!r}): {err.reason}"
                                     ) from None


def load_service_config(path: Any = None, overrides: Any = ()) -> ServiceConfig:
    """:func:`singr.config.load_config` with the service schema."""
    return load_config(path, overrides, schema=ServiceConfig)
