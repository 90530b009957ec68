"""Typed configuration of the method and its engine (pydantic v2 models).

The models say what each key *may* be (type, range, choices); the values, and every
default from the paper, live in the YAML files (``configs/brats.yaml`` is the reference
that every config inherits from), so no field here has a default. Choice lists come from
the code that implements them (``sing.ENGINES``, ``models.MODELS``, ``losses.LOSSES``,
``readers.LAYOUTS``), never repeated by hand.

The service sections (``tune``, ``experiment``, ``mlflow``) belong to the service layer:
here they are opaque mappings, typed by :mod:`tune.config`, which extends
:class:`SingrConfig`. ``singr config --schema`` writes the JSON Schema of the whole file.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..data.readers.registry import LAYOUTS
from ..losses import LOSSES
from ..models import MODELS
from ..regions import CONVENTIONS
from ..sing import BOUNDARY_MODES, ENGINES

__all__ = ["Section", "DataConfig", "SingConfig", "ModelConfig", "LossConfig", "TrainConfig", "AugmentConfig",
           "InferConfig", "SynthConfig", "SingrConfig", "Size3", "UnitFloat", "SELECT_METRICS"]


def _lit(values: tuple[str, ...]) -> Any:
    return Literal[values]  # type: ignore[valid-type]


PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
NonNegFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
UnitFloat = Annotated[float, Field(ge=0.0, le=1.0)]
HalfOpenUnit = Annotated[float, Field(ge=0.0, lt=1.0)]
Size3 = Annotated[list[PosInt], Field(min_length=3, max_length=3)]
Device = Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$")]
SELECT_METRICS: dict[str, str] = {"val_Dice_mean": "max", "val_IoU_mean": "max", "val_HD95_mean": "min",
                                  "val_LesionDice_mean": "max", "val_LesionHD95_mean": "min"}
"""Validation metrics (mean over regions) that may pick a run's best checkpoint (``train.select_metric``)
or be a sweep's objective (``tune.metric``), each with its direction: "max" or "min"."""


class Section(BaseModel):
    """A config section: unknown keys are errors; values are checked when set."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    root: str = Field(description="folder of cases")
    layout: _lit(("auto", *LAYOUTS)) = Field(description="data layout; auto: detected from the folder")  # type: ignore[valid-type]
    label_convention: _lit(("auto", *CONVENTIONS)) = Field(  # type: ignore[valid-type]
        description="label values: brats2020 (ET=4), brats2023 (ET=3), binary; auto: from the labels")
    modalities: Optional[list[str]] = Field(description="modalities to load; null: the layout's default")
    spacing: Optional[Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=3, max_length=3)]] = Field(
        description="voxel spacing (mm); null: from the NIfTI header")
    split_file: Optional[str] = Field(description="null: <output_dir>/split.json")
    split_ratios: Annotated[list[NonNegFloat], Field(min_length=3, max_length=3)] = Field(
        description="train, val, test fractions (sum 1)")
    split_seed: int
    folds: Optional[Annotated[int, Field(ge=2)]] = Field(
        description="K-fold splits of train+val (test held out); null: one split")
    cache_dir: Optional[str] = Field(
        description="preprocessed arrays and SiNG distances; null: <data.root>/.singr_cache")
    cache_in_memory: bool
    num_workers: NonNegInt

    @field_validator("split_ratios")
    @classmethod
    def _sum_to_one(cls, v: list[float]) -> list[float]:
        if abs(sum(v) - 1.0) > 1e-6:
            raise ValueError("expected three non-negative numbers (train, val, test) that sum to 1")
        return v


class SingConfig(Section):
    lam: UnitFloat = Field(description="lambda: weight of intensity vs space in the geodesic cost")
    delta: HalfOpenUnit = Field(description="margin added to |S| inside the band")
    iterations: PosInt = Field(description="raster-scan iterations")
    engine: _lit(ENGINES)  # type: ignore[valid-type]
    boundary: _lit(BOUNDARY_MODES)  # type: ignore[valid-type]
    device: Device


class ModelConfig(Section):
    name: _lit(MODELS)  # type: ignore[valid-type]
    features: Annotated[list[PosInt], Field(min_length=6, max_length=6)]
    dropout: HalfOpenUnit
    init_filters: PosInt
    feature_size: PosInt
    hidden_size: PosInt
    unetr_feature_size: PosInt


class LossConfig(Section):
    name: _lit(tuple(LOSSES))  # type: ignore[valid-type]
    gamma: NonNegFloat
    eps: NonNegFloat
    product_mode: Literal["image", "voxel"]


class TrainConfig(Section):
    seed: int
    epochs: PosInt
    iters_per_epoch: PosInt
    batch_size: PosInt
    patch_size: Size3
    lr: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    weight_decay: NonNegFloat
    fg_oversample: UnitFloat = Field(description="share of training crops centred on a random tumour voxel "
                                     "(nnU-Net's oversample_foreground_percent, 0.33 there); 0: uniform random crops")
    val_every: PosInt
    val_max_cases: Optional[PosInt] = Field(description="validate the first n cases of the split each time "
                                            "(null: all of them)")
    val_full_at_end: bool = Field(description="with val_max_cases: after the last epoch, the best checkpoint "
                                  "on the whole validation split (full_val_* metrics, its per-case rows)")
    device: Device
    amp: bool
    select_metric: _lit(tuple(SELECT_METRICS)) = Field(  # type: ignore[valid-type]
        description="validation metric that picks best.safetensors (HD95: lowest wins); a lesion-wise one "
        "makes validation compute the BraTS 2023 lesion-wise scores")


class AugmentConfig(Section):
    flip_prob: UnitFloat
    intensity_scale: NonNegFloat
    intensity_shift: NonNegFloat
    intensity_prob: UnitFloat


class InferConfig(Section):
    roi_size: Size3
    overlap: HalfOpenUnit
    sw_batch_size: PosInt
    mode: Literal["constant", "gaussian"]
    tta: bool = Field(description="test-time mirroring over the 3 axes (8 passes, signed maps averaged)")
    crop: bool
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        description="network precision; auto: bfloat16 where the CPU computes it natively, float32 elsewhere")
    postprocess: bool = Field(description="apply a model's post-processing rules (fitted by `singr postprocess`)")


class SynthConfig(Section):
    n_cases: PosInt
    shape: Annotated[list[Annotated[int, Field(ge=8)]], Field(min_length=3, max_length=3)]
    seed: int
    ambiguity: UnitFloat = Field(description="0: crisp label borders; 1: infiltrative borders, partial-volume "
                                 "edges and per-case rater variability")
    brain_box: Optional[Annotated[list[Annotated[int, Field(ge=8)]], Field(min_length=3, max_length=3)]] = Field(
        description="box (voxels) the head is generated in, pasted into zeros of `shape`; null: the whole shape")
    dtype: Literal["float32", "int16"] = Field(description="stored intensities: float32, or int16 rounded as "
                                               "BraTS distributes them")

    @model_validator(mode="after")
    def _box_inside_shape(self) -> "SynthConfig":
        if self.brain_box is not None and any(b > s for b, s in zip(self.brain_box, self.shape)):
            raise ValueError(f"brain_box {self.brain_box} must fit inside shape {self.shape}")
        return self


class SingrConfig(BaseModel):
    """A whole config file. ``source`` is the file it was loaded from (not part of the YAML)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    output_dir: str = Field(description="checkpoints, split file, logs, predictions, metrics")
    data: DataConfig
    sing: SingConfig
    model: ModelConfig
    loss: LossConfig
    train: TrainConfig
    augment: AugmentConfig
    infer: InferConfig
    synth: SynthConfig
    tune: Optional[dict[str, Any]] = Field(default=None, description="service section, typed by tune.config")
    experiment: Optional[dict[str, Any]] = Field(default=None, description="service section, typed by tune.config")
    mlflow: Optional[dict[str, Any]] = Field(default=None, description="service section, typed by tune.config")
    source: Optional[str] = Field(default=None, exclude=True, description="the file this config came from")

    def to_dict(self, *, core_only: bool = False) -> dict[str, Any]:
        """Plain data (what the YAML file would hold); ``core_only`` drops the service sections."""
        d = self.model_dump(mode="json", exclude={"source"})
        for k in ("tune", "experiment", "mlflow"):
            if core_only or d.get(k) is None:
                d.pop(k, None)
        return d

    @classmethod
    def core_sections(cls) -> tuple[str, ...]:
        return ("output_dir", "data", "sing", "model", "loss", "train", "augment", "infer", "synth")
