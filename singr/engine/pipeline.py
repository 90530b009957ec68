"""From a config to what a run reads: its folders, cases, split and preprocessed arrays.

The stages (nnU-Net style): discover the cases of ``data.root`` with the layout's reader,
split them (saved once, then reused), preprocess them into ``data.cache_dir`` (z-scored
image, region masks and, for a SiNG loss, the distance maps of every lambda needed).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TypeVar

from ..config import SingrConfig, with_values
from ..device import resolve_device
from ..errors import SingrInputError
from ..losses import is_regression_loss
from ..preprocess import preprocess_cases
from ..sing import SingSettings

C = TypeVar("C", bound=SingrConfig)

__all__ = ["RunPaths", "run_paths", "fold_dir", "fold_config", "sing_settings", "discover", "split_cases", "prepare"]


@dataclass
class RunPaths:
    output_dir: Path
    cache_dir: Path
    split_file: Path
    checkpoints: Path


def run_paths(cfg: SingrConfig) -> RunPaths:
    """``output_dir``, the cache (``data.cache_dir`` or ``<data.root>/.singr_cache``), the split
    file (``data.split_file`` or ``<output_dir>/split.json``) and ``<output_dir>/checkpoints``."""
    out = Path(cfg.output_dir)
    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else Path(cfg.data.root) / ".singr_cache"
    split = Path(cfg.data.split_file) if cfg.data.split_file else out / "split.json"
    return RunPaths(out, cache, split, out / "checkpoints")


def fold_dir(output_dir: str | Path, fold: int) -> Path:
    """Where fold ``fold`` of a cross-validation writes: ``<output_dir>/fold_<fold>``."""
    return Path(output_dir) / f"fold_{int(fold)}"


def fold_config(cfg: C, fold: int | None) -> C:
    """The config of fold ``fold`` of ``data.folds``: output in :func:`fold_dir`, the split file
    shared with the other folds; ``cfg`` itself when ``fold`` is None."""
    if fold is None:
        return cfg
    if not cfg.data.folds:
        raise SingrInputError("--fold needs data.folds (the number of folds, e.g. data.folds=5)")
    if not 0 <= fold < int(cfg.data.folds):
        raise SingrInputError(f"--fold {fold} is out of range; data.folds = {cfg.data.folds} gives folds "
                              f"0..{int(cfg.data.folds) - 1}")
    split = run_paths(cfg).split_file
    return with_values(cfg, {"output_dir": str(fold_dir(cfg.output_dir, fold)), "data.split_file": str(split)})


def sing_settings(cfg: SingrConfig, lam: float | None = None) -> SingSettings:
    """Everything but delta that the run's distance maps depend on (``lam`` overrides sing.lam)."""
    s = cfg.sing
    return SingSettings(lam=float(s.lam if lam is None else lam), iterations=int(s.iterations),
                        engine=str(s.engine), boundary_mode=str(s.boundary))


def discover(cfg: SingrConfig) -> list[Any]:
    """The cases of ``data.root`` (files are not opened yet)."""
    from ..data.readers import discover_cases

    root = Path(cfg.data.root)
    if not root.is_dir():
        raise SingrInputError("data.root is not a folder (run `singr synth` for a synthetic data set, "
                              "or point data.root at your cases)", path=root)
    spacing = tuple(cfg.data.spacing) if cfg.data.spacing else None
    return discover_cases(root, layout=cfg.data.layout, label_convention=cfg.data.label_convention,
                          modalities=cfg.data.modalities, spacing=spacing)  # type: ignore[arg-type]


def split_cases(cfg: SingrConfig, cases: Sequence[Any], paths: RunPaths, fold: int | None = None
                ) -> dict[str, list[str]]:
    """The saved split (made once from ``data.split_seed``); with ``fold`` (and ``data.folds``),
    train and val are that fold's, the test split unchanged."""
    from ..data.splits import fold_split, load_or_create_split

    split = load_or_create_split(paths.split_file, [c.case_id for c in cases], tuple(cfg.data.split_ratios),
                                 int(cfg.data.split_seed), folds=cfg.data.folds)
    if fold is None:
        return split
    return fold_split(split, fold, path=paths.split_file)


def prepare(cfg: SingrConfig, cases: Sequence[Any], paths: RunPaths, lams: Sequence[float] | None = None,
            progress: bool = True) -> dict[str, int]:
    """Preprocess ``cases`` and, for a SiNG loss, fill the distance cache for each lambda."""
    regression = is_regression_loss(cfg.loss.name)
    settings = [sing_settings(cfg, lam) for lam in (lams or [cfg.sing.lam])] if regression else []
    spacing = tuple(cfg.data.spacing) if cfg.data.spacing else None
    return preprocess_cases(cases, paths.cache_dir, settings, spacing, resolve_device(cfg.sing.device), progress)
