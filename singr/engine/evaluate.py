"""Inference on cases and evaluation against their labels.

``predict_case``: one loaded case -> label map (input geometry), regions, signed maps.
``evaluate``: a split of the configured data set -> per-case CSV, summary JSON/Markdown
(Dice, IoU, HD95 in mm per region and mean; BraTS empty-case convention, see metrics).
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import SingrInputError
from ..io import write_text
from ..metrics import case_metrics, summarize
from ..preprocess import normalize_image
from ..regions import regions_to_labels
from .checkpoint import load_checkpoint, model_from_checkpoint
from .infer import logits_to_regions, logits_to_signed, predict_logits
from .train import infer_kwargs, resolve_train_device


@dataclass
class Prediction:
    labels: np.ndarray      # (D, H, W) uint8, in the output label convention
    regions: np.ndarray     # (R, D, H, W) bool
    signed: np.ndarray      # (R, D, H, W) float32, tanh of the network output
    region_names: tuple[str, ...]


class Predictor:
    """A loaded checkpoint ready to segment cases (used by the CLI and the HTTP endpoint)."""

    def __init__(self, checkpoint: str | Path | dict[str, Any], device: str = "auto"):
        self.state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
        self.device = resolve_train_device(device)
        self.model = model_from_checkpoint(self.state, self.device)
        self.meta = self.state["meta"]
        self.cfg = self.state["config"]

    def check_channels(self, image: np.ndarray, case: str = "input") -> None:
        n = int(self.meta["in_channels"])
        if image.ndim != 4 or image.shape[0] != n:
            mods = ", ".join(self.meta.get("modalities") or []) or f"{n} channels"
            raise SingrInputError(f"the model expects {n} modalities ({mods}); got image of shape {image.shape}",
                                  case=case)

    def logits(self, image: np.ndarray) -> torch.Tensor:
        """Raw output for an *un-normalised* image (C, D, H, W)."""
        return predict_logits(self.model, normalize_image(image), device=self.device, **infer_kwargs(self.cfg))

    def from_logits(self, logits: torch.Tensor, label_convention: str | None = None) -> Prediction:
        regions = logits_to_regions(logits)
        conv = label_convention or self.meta["label_convention"]
        return Prediction(regions_to_labels(regions, conv), regions, logits_to_signed(logits),
                          tuple(self.meta["region_names"]))

    def predict(self, image: np.ndarray, label_convention: str | None = None, case: str = "input") -> Prediction:
        self.check_channels(image, case)
        return self.from_logits(self.logits(image), label_convention)

    def predict_prepared(self, image: np.ndarray, label_convention: str | None = None) -> Prediction:
        """Like :meth:`predict` for an image already normalised (a prepared case)."""
        return self.from_logits(predict_logits(self.model, image, device=self.device, **infer_kwargs(self.cfg)),
                                label_convention)


def write_rows_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    buf = io.StringIO()
    keys = list(rows[0]) if rows else ["case"]
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    write_text(path, buf.getvalue())


def summary_markdown(summary: dict[str, dict[str, float]], region_names: Sequence[str], title: str) -> str:
    lines = [f"# {title}", "", "| region | Dice | IoU | HD95 (mm) |", "| --- | --- | --- | --- |"]
    for r in list(region_names) + ["mean"]:
        cells = []
        for m in ("Dice", "IoU", "HD95"):
            s = summary.get(f"{m}_{r}")
            cells.append("n/a" if s is None else f"{s['mean']:.4f} ± {s['se']:.4f}")
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    n = next(iter(summary.values()))["n"] if summary else 0
    lines += ["", f"{n} cases; mean ± standard error. Empty-case convention (BraTS): both empty -> Dice 1, "
              "HD95 0; one empty -> Dice 0, HD95 373.13 mm."]
    return "\n".join(lines) + "\n"


def evaluate(
    checkpoint: str | Path,
    cfg: dict[str, Any] | None = None,
    split: str = "test",
    out_dir: str | Path | None = None,
    save_predictions: bool = False,
    device: str = "auto",
    progress: bool = True,
    overlays: int = 3,
) -> dict[str, Any]:
    """Segment the cases of ``split`` and write ``<out_dir>/metrics_<split>.csv``,
    ``summary_<split>.json`` / ``.md`` and overlay pictures of the first ``overlays`` cases
    (``overlays/<case>.png``). ``cfg`` defaults to the checkpoint's own config."""
    from tqdm.auto import tqdm

    from ..io import write_nifti
    from ..preprocess import prepare_case
    from .data import discover, run_paths, split_cases

    pred = Predictor(checkpoint, device)
    cfg = cfg or pred.cfg
    paths = run_paths(cfg)
    cases = {c.case_id: c for c in discover(cfg)}
    sp = split_cases(cfg, list(cases.values()), paths)
    if split not in sp:
        raise SingrInputError(f"unknown split {split!r}; the split file has {', '.join(sp)}", path=paths.split_file)
    ids = sp[split]
    if not ids:
        raise SingrInputError(f"split {split!r} is empty", path=paths.split_file)
    out = Path(out_dir) if out_dir else paths.output_dir / "eval"
    rows = []
    for cid in tqdm(ids, desc=f"evaluate {split}", unit="case", disable=not progress):
        prep = prepare_case(cases[cid], paths.cache_dir, cfg["data"]["spacing"])  # reads the cache when fresh
        if prep.regions is None:
            raise SingrInputError("case has no label to evaluate against", case=cid)
        p = pred.predict_prepared(prep.image, prep.label_convention)
        rows.append({"case": cid, **case_metrics(p.regions, prep.regions, prep.spacing, prep.region_names)})
        if len(rows) <= overlays:
            from ..viz import overlay_png
            overlay_png(out / "overlays" / f"{cid}.png", prep.image, p.regions, prep.region_names, p.signed,
                        prep.regions, title=f"{cid}: Dice mean {rows[-1]['Dice_mean']:.3f}")
        if save_predictions:
            from ..data.readers import load_case
            src = load_case(cases[cid])
            write_nifti(out / "predictions" / f"{cid}.nii.gz", p.labels, src.affine, src.header)
    summ = summarize(rows)
    write_rows_csv(out / f"metrics_{split}.csv", rows)
    result = {"split": split, "n_cases": len(rows), "checkpoint": str(checkpoint), "summary": summ}
    write_text(out / f"summary_{split}.json", json.dumps(result, indent=1, default=float))
    write_text(out / f"summary_{split}.md",
                 summary_markdown(summ, pred.meta["region_names"], f"Evaluation on the {split} split"))
    result["out_dir"] = str(out)
    return result
