"""Pictures of results: an axial slice through the tumour with contours and the signed map.

``overlay_png`` draws, side by side: the FLAIR (first channel) with the ground-truth
contours (when known), with the predicted contours, and the predicted signed map of the
whole tumour as a heat map in [-1, 1] with its zero level (the predicted boundary).
Contour colours follow the regions: TC red, WT green, ET yellow (FG green for one region).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

COLOURS = {"TC": "red", "WT": "lime", "ET": "yellow", "FG": "lime"}


def tumour_slice(regions: np.ndarray, axis: int = 2) -> int:
    """Index of the slice along ``axis`` with the most foreground in the union of ``regions``."""
    fg = np.asarray(regions).any(axis=0)
    area = fg.sum(axis=tuple(a for a in range(3) if a != axis))
    return int(area.argmax()) if area.any() else fg.shape[axis] // 2


def _draw_contours(ax, img: np.ndarray, regions: np.ndarray, region_names: Sequence[str], sl) -> None:
    """``img`` in grey with the 0.5 contour of each region's slice ``sl(region)``."""
    ax.imshow(img, cmap="gray")
    for rn, reg in zip(region_names, np.asarray(regions)):
        m = sl(reg).astype(float)
        if m.any() and not m.all():
            ax.contour(m, levels=[0.5], colors=COLOURS.get(rn, "cyan"), linewidths=1.0)


def _draw_signed(fig, ax, s: np.ndarray) -> None:
    """A signed map slice as a heat map in [-1, 1] with its zero level (the boundary) in black."""
    im = ax.imshow(s, cmap="coolwarm", vmin=-1, vmax=1)
    if (s >= 0).any() and (s < 0).any():
        ax.contour(s, levels=[0.0], colors="k", linewidths=0.8)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)


def _save_with_legend(fig, path: str | Path, region_names: Sequence[str], rect: tuple[float, ...], dpi: int) -> Path:
    """Add the region-colour legend, lay out, write the PNG atomically, close the figure."""
    import matplotlib.pyplot as plt

    from .io import atomic_path

    handles = [plt.Line2D([], [], color=COLOURS.get(n, "cyan"), label=n) for n in region_names]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=9)
    fig.tight_layout(rect=rect)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path


def overlay_png(path: str | Path, image: np.ndarray, pred_regions: np.ndarray, region_names: Sequence[str],
                signed: np.ndarray | None = None, gt_regions: np.ndarray | None = None,
                title: str = "", axis: int = 2) -> Path:
    """Write the overlay figure to ``path`` (PNG, atomically) and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = gt_regions if gt_regions is not None and np.asarray(gt_regions).any() else pred_regions
    k = tumour_slice(ref, axis)

    def sl(a: np.ndarray) -> np.ndarray:
        return np.rot90(np.take(a, k, axis=axis))

    img = sl(np.asarray(image)[0])
    panels = (["ground truth"] if gt_regions is not None else []) + ["prediction"] + (
        ["signed map (WT)"] if signed is not None else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.3), squeeze=False)
    for ax, name in zip(axes[0], panels):
        ax.set_axis_off()
        ax.set_title(name, fontsize=10)
        if name == "signed map (WT)":
            r = list(region_names).index("WT") if "WT" in region_names else 0
            _draw_signed(fig, ax, sl(np.asarray(signed)[r]))
            continue
        _draw_contours(ax, img, np.asarray(gt_regions if name == "ground truth" else pred_regions), region_names, sl)
    fig.suptitle(f"{title}  (slice {k} along axis {axis})".strip(), fontsize=11)
    return _save_with_legend(fig, path, region_names, (0, 0.05, 1, 0.95), dpi=90)


def comparison_png(path: str | Path, rows: Sequence[dict], region_names: Sequence[str],
                   names: tuple[str, str] = ("hard labels", "SiNGR"), axis: int = 2) -> Path:
    """One row per case, five panels: image, ground truth, hard-label prediction, SiNGR
    prediction (contours on the first channel), and SiNGR's signed map of WT as a heat map.

    Each row is ``{"case", "image" (C,...), "gt", "hard", "singr" (R,...) bool, "signed" (R,...),
    "dice": (hard, singr)}``; the slice is the one with the most ground-truth tumour.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["image", "ground truth", names[0], names[1], f"{names[1]} signed map (WT)"]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(3.2 * len(cols), 3.3 * len(rows)), squeeze=False)
    wt = list(region_names).index("WT") if "WT" in region_names else 0
    for i, row in enumerate(rows):
        k = tumour_slice(row["gt"] if np.asarray(row["gt"]).any() else row["singr"], axis)

        def sl(a: np.ndarray, k: int = k) -> np.ndarray:
            return np.rot90(np.take(a, k, axis=axis))

        img = sl(np.asarray(row["image"])[0])
        for j, col in enumerate(cols):
            ax = axes[i, j]
            ax.set_axis_off()
            title = col
            if col in names:
                title = f"{col}\nDice {row['dice'][names.index(col)]:.3f}"
            ax.set_title(title if i == 0 or col in names else "", fontsize=9)
            if j == len(cols) - 1:
                _draw_signed(fig, ax, sl(np.asarray(row["signed"])[wt]))
            elif j == 0:
                ax.imshow(img, cmap="gray")
                ax.text(2, 2, f"{row['case']} (slice {k})", color="w", fontsize=8, va="top")
            else:
                _draw_contours(ax, img, {1: row["gt"], 2: row["hard"], 3: row["singr"]}[j], region_names, sl)
    return _save_with_legend(fig, path, region_names, (0, 0.03, 1, 1), dpi=80)


def ambiguity_png(path: str | Path, cases: list[dict], region_names: Sequence[str] = ("TC", "WT", "ET"),
                  axis: int = 2) -> Path:
    """One row per case, three panels: the FLAIR slice, the label contours on it, and the
    signed map of WT as a heat map in [-1, 1] with its zero level; written atomically.

    Each case is ``{"title": str, "image" (C, X, Y, Z), "regions" (R, X, Y, Z) bool, "signed"
    (X, Y, Z) float in [-1, 1]}`` (the WT map, e.g. from :func:`singr.sing.sing_map`); the
    slice along ``axis`` is the one with the most tumour in that case's ``regions``. Meant for
    synthetic cases at several ambiguity levels (:func:`singr.data.synth.synthesize_case`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not cases:
        raise ValueError("cases must hold at least one case dict")
    for i, case in enumerate(cases):
        missing = [k for k in ("title", "image", "regions", "signed") if k not in case]
        if missing:
            raise ValueError(f"cases[{i}] lacks {', '.join(missing)}")
        img, reg, sig = (np.asarray(case[k]) for k in ("image", "regions", "signed"))
        if img.ndim != 4 or reg.ndim != 4 or reg.shape[1:] != img.shape[1:] or sig.shape != img.shape[1:]:
            raise ValueError(f"cases[{i}]: image (C,X,Y,Z), regions (R,X,Y,Z) and signed (X,Y,Z) must agree, "
                             f"got {img.shape}, {reg.shape}, {sig.shape}")
        if reg.shape[0] != len(region_names):
            raise ValueError(f"cases[{i}]: regions has {reg.shape[0]} channels but region_names has "
                             f"{len(region_names)}")
    cols = ["FLAIR", "label contours", "signed map (WT)"]
    fig, axes = plt.subplots(len(cases), len(cols), figsize=(3.4 * len(cols), 3.3 * len(cases)), squeeze=False)
    for i, case in enumerate(cases):
        regions = np.asarray(case["regions"])
        k = tumour_slice(regions, axis)

        def sl(a: np.ndarray, k: int = k) -> np.ndarray:
            return np.rot90(np.take(a, k, axis=axis))

        img = sl(np.asarray(case["image"])[0])
        for j, col in enumerate(cols):
            ax = axes[i, j]
            ax.set_axis_off()
            ax.set_title(col if i == 0 else "", fontsize=9)
            if j == 0:
                ax.imshow(img, cmap="gray")
                ax.text(2, 2, f"{case['title']} (slice {k})", color="w", fontsize=8, va="top")
            elif j == 1:
                _draw_contours(ax, img, regions, region_names, sl)
            else:
                _draw_signed(fig, ax, sl(np.asarray(case["signed"], dtype=float)))
    return _save_with_legend(fig, path, region_names, (0, 0.03, 1, 1), dpi=80)
