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


def overlay_png(path: str | Path, image: np.ndarray, pred_regions: np.ndarray, region_names: Sequence[str],
                signed: np.ndarray | None = None, gt_regions: np.ndarray | None = None,
                title: str = "", axis: int = 2) -> Path:
    """Write the overlay figure to ``path`` (PNG, atomically) and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_path

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
            s = sl(np.asarray(signed)[r])
            im = ax.imshow(s, cmap="coolwarm", vmin=-1, vmax=1)
            if (s >= 0).any() and (s < 0).any():
                ax.contour(s, levels=[0.0], colors="k", linewidths=0.8)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
            continue
        ax.imshow(img, cmap="gray")
        regs = gt_regions if name == "ground truth" else pred_regions
        for rn, reg in zip(region_names, np.asarray(regs)):
            m = sl(reg).astype(float)
            if m.any() and not m.all():
                ax.contour(m, levels=[0.5], colors=COLOURS.get(rn, "cyan"), linewidths=1.0)
    handles = [plt.Line2D([], [], color=COLOURS.get(n, "cyan"), label=n) for n in region_names]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=9)
    fig.suptitle(f"{title}  (slice {k} along axis {axis})".strip(), fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path
