"""Evaluation: segment a split of the configured data set and score it against its labels.

Writes ``metrics_<split>.csv`` (one row per case: Dice, IoU, HD95 in mm per region and
their means; BraTS empty-case convention, see :mod:`singr.metrics`), ``summary_<split>.json``
and ``.md`` (mean ± standard error over cases), and overlay pictures of the first cases.
The segmentation is the one inference path (:class:`singr.engine.infer.Predictor`).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from ..config import SingrConfig
from ..errors import SingrInputError
from ..io import write_json, write_text
from ..metrics import case_metrics, summarize
from .infer import Predictor

__all__ = ["evaluate", "write_rows_csv", "summary_markdown"]


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


def summary_markdown(summary: dict[str, dict[str, float]], region_names: Sequence[str], title: str) -> str:
    """A Markdown table of the summary: one row per region and the mean."""
    lines = [f"# {title}", "", "| region | Dice | IoU | HD95 (mm) |", "| --- | --- | --- | --- |"]
    for r in list(region_names) + ["mean"]:
        lines.append(f"| {r} | " + " | ".join(_cell(summary.get(f"{m}_{r}")) for m in ("Dice", "IoU", "HD95")) + " |")
    n = int(next(iter(summary.values()))["n"]) if summary else 0
    what = "1 case (no standard error)" if n == 1 else f"{n} cases; mean ± standard error"
    lines += ["", f"{what}. Empty-case convention (BraTS): both empty -> Dice 1, HD95 0; one empty -> Dice 0, "
              "HD95 373.13 mm."]
    return "\n".join(lines) + "\n"


def evaluate(predictor: Predictor, cfg: SingrConfig, split: str = "test", out_dir: str | Path | None = None,
             save_predictions: bool = False, progress: bool = True, overlays: int = 3,
             fold: int | None = None) -> dict[str, Any]:
    """Segment the cases of ``split`` with ``predictor`` and write the files above to
    ``out_dir`` (default ``<output_dir>/eval``). Returns the summary and where it went."""
    from tqdm.auto import tqdm

    from ..data.readers import load_case
    from ..io import write_nifti
    from ..preprocess import prepare_case
    from .pipeline import discover, run_paths, split_cases

    paths = run_paths(cfg)
    cases = {c.case_id: c for c in discover(cfg)}
    sp = split_cases(cfg, list(cases.values()), paths, fold)
    if split not in sp:
        raise SingrInputError(f"unknown split {split!r}; the split file has {', '.join(sp)}", path=paths.split_file)
    ids = sp[split]
    if not ids:
        raise SingrInputError(f"split {split!r} is empty", path=paths.split_file)
    out = Path(out_dir) if out_dir else paths.output_dir / "eval"
    spacing = tuple(cfg.data.spacing) if cfg.data.spacing else None
    rows = []
    for cid in tqdm(ids, desc=f"evaluate {split}", unit="case", disable=not progress):
        prep = prepare_case(cases[cid], paths.cache_dir, spacing)  # read from the cache when fresh
        if prep.regions is None:
            raise SingrInputError("case has no label to evaluate against", case=cid)
        p = predictor.predict_prepared(prep.image, prep.label_convention)
        rows.append({"case": cid, **case_metrics(p.regions, prep.regions, prep.spacing, prep.region_names)})
        if len(rows) <= overlays:
            from ..viz import overlay_png

            overlay_png(out / "overlays" / f"{cid}.png", prep.image, p.regions, prep.region_names, p.signed,
                        prep.regions, title=f"{cid}: Dice mean {rows[-1]['Dice_mean']:.3f}")
        if save_predictions:
            src = load_case(cases[cid])
            write_nifti(out / "predictions" / f"{cid}.nii.gz", p.labels, src.affine, src.header)
    summ = summarize(rows)
    write_rows_csv(out / f"metrics_{split}.csv", rows)
    result = {"split": split, "n_cases": len(rows), "summary": summ,
              "model": predictor.meta.get("members") or predictor.identity}
    write_json(out / f"summary_{split}.json", result, indent=1, default=float)
    write_text(out / f"summary_{split}.md",
               summary_markdown(summ, predictor.region_names, f"Evaluation on the {split} split"))
    result["out_dir"] = str(out)
    return result
