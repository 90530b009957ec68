"""Evaluation: segment a split of the configured data set and score it against its labels.

Writes ``metrics_<split>.csv`` (one row per case: Dice, IoU, HD95 in mm per region and
their means; BraTS empty-case convention, see :mod:`singr.metrics`; and, unless
``lesion=False``, the BraTS 2023 lesion-wise ``LesionDice_<region>`` / ``LesionHD95_<region>``
and their ``_mean``), ``summary_<split>.json`` and ``.md`` (mean ± standard error over cases),
and overlay pictures of the first cases. The segmentation is the one inference path
(:class:`singr.engine.infer.Predictor`).

:func:`fit_postprocess` fits a model's post-processing rules on a split (validation by
default): it segments the cases *without* post-processing and hands them to
:meth:`singr.engine.postprocess.PostprocessRules.fit` (``singr postprocess``); with
``out_of_fold`` the cases of each fold are segmented by the fold's own model (a fold
ensemble's rules, :mod:`tune.ensemble`).
"""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..config import SingrConfig
from ..errors import SingrInputError
from ..geometry import crop_to_union
from ..io import write_json, write_text
from ..metrics import case_metrics, summarize
from .infer import Prediction, Predictor
from .postprocess import PostprocessRules

__all__ = ["evaluate", "fit_postprocess", "segment_split", "write_rows_csv", "summary_markdown"]


def write_rows_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rows as CSV (columns: the union of the rows' keys, first seen first), atomically."""
    buf = io.StringIO()
    keys = list(dict.fromkeys(k for r in rows for k in r)) or ["case"]
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    write_text(path, buf.getvalue())


def _cell(s: dict[str, float] | None) -> str:
    if s is None:
        return "n/a"
    return f"{s['mean']:.4f}" if int(s.get("n", 0)) < 2 else f"{s['mean']:.4f} ± {s['se']:.4f}"


_VOXEL_COLUMNS = (("Dice", "Dice"), ("IoU", "IoU"), ("HD95", "HD95 (mm)"))
_LESION_COLUMNS = (("LesionDice", "lesion-wise Dice"), ("LesionHD95", "lesion-wise HD95 (mm)"))


def summary_markdown(summary: dict[str, dict[str, float]], region_names: Sequence[str], title: str) -> str:
    """A Markdown table of the summary: one row per region and the mean; Dice, IoU, HD95 and,
    when the summary has them (``LesionDice_<region>``), the lesion-wise Dice and HD95."""
    cols = list(_VOXEL_COLUMNS) + [c for c in _LESION_COLUMNS if f"{c[0]}_mean" in summary]
    lines = [f"# {title}", "", "| region | " + " | ".join(h for _, h in cols) + " |",
             "| --- |" + " --- |" * len(cols)]
    for r in list(region_names) + ["mean"]:
        lines.append(f"| {r} | " + " | ".join(_cell(summary.get(f"{m}_{r}")) for m, _ in cols) + " |")
    n = int(next(iter(summary.values()))["n"]) if summary else 0
    what = "1 case (no standard error)" if n == 1 else f"{n} cases; mean ± standard error"
    lines += ["", f"{what}. Empty-case convention (BraTS): both empty -> Dice 1, HD95 0; one empty -> Dice 0, "
              "HD95 373.13 mm."]
    if len(cols) > len(_VOXEL_COLUMNS):
        lines += ["Lesion-wise (BraTS 2023): per ground-truth lesion (26-connected after 3 dilations, over 50 "
                  "voxels), a missed or false-positive lesion scores Dice 0 and HD95 374 mm; no lesion and "
                  "nothing predicted: Dice 1, HD95 0."]
    return "\n".join(lines) + "\n"


def _split_ids(cfg: SingrConfig, split: str, fold: int | None) -> tuple[dict[str, Any], list[str], Any]:
    """(cases by id, the ids of ``split`` (of fold ``fold``), run paths); errors name the split file."""
    from .pipeline import discover, run_paths, split_cases

    paths = run_paths(cfg)
    cases = {c.case_id: c for c in discover(cfg)}
    sp = split_cases(cfg, list(cases.values()), paths, fold)
    if split not in sp:
        raise SingrInputError(f"unknown split {split!r}; the split file has {', '.join(sp)}", path=paths.split_file)
    ids = list(sp[split])
    if not ids:
        raise SingrInputError(f"split {split!r} is empty", path=paths.split_file)
    return cases, ids, paths


def segment_split(predictor: Predictor, cfg: SingrConfig, split: str = "test", fold: int | None = None,
                  progress: bool = False) -> Iterator[tuple[Any, Prediction, float]]:
    """``(prepared case, prediction, seconds)`` for each labelled case of ``split``, in split
    order; ``seconds`` is the time of ``predictor.predict_prepared`` alone (the case is read from
    the preprocessing cache). A case without a label is a :class:`SingrInputError` naming it."""
    from tqdm.auto import tqdm

    from ..preprocess import prepare_case

    cases, ids, paths = _split_ids(cfg, split, fold)
    spacing = tuple(cfg.data.spacing) if cfg.data.spacing else None
    for cid in tqdm(ids, desc=f"segment {split}", unit="case", disable=not progress):
        prep = prepare_case(cases[cid], paths.cache_dir, spacing)  # read from the cache when fresh
        if prep.regions is None:
            raise SingrInputError(f"case has no label to score the {split} split against", case=cid)
        t0 = time.perf_counter()
        p = predictor.predict_prepared(prep.image, prep.label_convention)
        yield prep, p, time.perf_counter() - t0


def evaluate(predictor: Predictor, cfg: SingrConfig, split: str = "test", out_dir: str | Path | None = None,
             save_predictions: bool = False, progress: bool = True, overlays: int = 3,
             fold: int | None = None, lesion: bool = True) -> dict[str, Any]:
    """Segment the cases of ``split`` with ``predictor`` and write the files above to
    ``out_dir`` (default ``<output_dir>/eval``); ``lesion=False`` leaves out the lesion-wise
    columns. Returns ``{"split", "n_cases", "summary", "model", "postprocess", "tta",
    "seconds_per_case", "out_dir"}`` (``seconds_per_case``: mean segmentation time)."""
    from ..data.readers import load_case
    from ..io import write_nifti
    from .pipeline import discover, run_paths

    out = Path(out_dir) if out_dir else run_paths(cfg).output_dir / "eval"
    rows: list[dict[str, Any]] = []
    seconds: list[float] = []
    files = {c.case_id: c for c in discover(cfg)} if save_predictions else {}
    for prep, p, dt in segment_split(predictor, cfg, split, fold, progress):
        cid = prep.case_id
        seconds.append(dt)
        rows.append({"case": cid, **case_metrics(p.regions, prep.regions, prep.spacing, prep.region_names,
                                                 lesion=lesion)})
        if len(rows) <= overlays:
            from ..viz import overlay_png

            overlay_png(out / "overlays" / f"{cid}.png", prep.image, p.regions, prep.region_names, p.signed,
                        prep.regions, title=f"{cid}: Dice mean {rows[-1]['Dice_mean']:.3f}")
        if save_predictions:
            src = load_case(files[cid])
            write_nifti(out / "predictions" / f"{cid}.nii.gz", prep.paste(p.labels), src.affine, src.header)
    summ = summarize(rows)
    write_rows_csv(out / f"metrics_{split}.csv", rows)
    result = {"split": split, "n_cases": len(rows), "summary": summ,
              "model": [m.to_dict() for m in predictor.member_info] or predictor.identity,
              "postprocess": predictor.postprocess.to_dict() if predictor.applies_postprocess else None,
              "tta": bool(predictor.settings.tta), "seconds_per_case": float(np.mean(seconds))}
    write_json(out / f"summary_{split}.json", result, indent=1, default=float)
    write_text(out / f"summary_{split}.md",
               summary_markdown(summ, predictor.region_names, f"Evaluation on the {split} split"))
    result["out_dir"] = str(out)
    return result


def fit_postprocess(predictor: Predictor | None, cfg: SingrConfig, split: str = "val", fold: int | None = None,
                    progress: bool = False, *, out_of_fold: Iterable[tuple[int, Predictor]] | None = None
                    ) -> tuple[PostprocessRules, dict[str, Any]]:
    """Fit post-processing rules for ``predictor`` on ``split`` (of fold ``fold`` with ``data.folds``).

    The cases are segmented *without* post-processing (whatever the predictor's own rules and
    setting), with the predictor's other settings (ensemble, mirroring), then
    :meth:`PostprocessRules.fit` keeps a rule only where it raises the mean Dice over cases and
    regions. Returns ``(rules, report)``: the fit's report (``n_cases``, ``dice_before``,
    ``dice_after``, ``scores``) with ``split``, ``fold``, ``cases`` (ids) and ``rules``
    (:meth:`PostprocessRules.describe`), all JSON-able.

    ``out_of_fold`` (instead of ``predictor``, which is then None): pairs ``(k, the model of
    fold k)``; each fold's ``split`` cases are segmented by that fold's model, the one that did
    not train on them (nnU-Net's cross-validation post-processing; ``cfg`` has ``data.folds``).
    An iterator loads one model at a time. The report's ``split`` says so and its ``fold`` is None.
    """
    if (predictor is None) == (out_of_fold is None):
        raise ValueError("fit_postprocess: give a predictor or out_of_fold (one of the two)")
    runs: Iterable[tuple[int | None, Predictor]] = [(fold, predictor)] if predictor is not None else out_of_fold or []
    data: list[tuple[np.ndarray, np.ndarray, Sequence[float]]] = []
    ids: list[str] = []
    names: tuple[str, ...] = ()
    for k, model in runs:
        raw = model.with_settings(postprocess=False)
        names = tuple(raw.region_names) or names
        for prep, p, _ in segment_split(raw, cfg, split, k, progress):
            if names and tuple(prep.region_names) != tuple(names):
                raise SingrInputError(f"the case's regions {list(prep.region_names)} differ from the model's "
                                      f"{list(names)}", case=prep.case_id)
            names = tuple(prep.region_names)
            data.append((*crop_to_union(p.regions, prep.regions), prep.spacing))
            ids.append(prep.case_id)
    rules, report = PostprocessRules.fit(data, names)
    where = (split if out_of_fold is None else
             f"{split}, out of fold (each fold's cases segmented by the member that did not train on them)")
    report.update({"split": where, "fold": fold if out_of_fold is None else None, "cases": ids,
                   "rules": rules.describe()})
    return rules, report
