"""The report's charts (matplotlib, Agg backend): bars per variant and region, lines against an axis level.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from singr.io import atomic_path

from ..grid import Variant
from .data import METRICS


def bar_chart(path: Path, variants: Sequence[Variant], agg: dict[str, Any], regions: Sequence[str],
              title: str, highlight: str | None) -> Path:
    """Dice (left) and HD95 (right) per variant, grouped by region (and mean), SE error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [*regions, "mean"]
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.3 * len(variants) * 2), 4.2))
    width = 0.8 / max(1, len(variants))
    cmap = plt.get_cmap("tab10")
    for ax, metric in zip(axes, METRICS):
        for i, v in enumerate(variants):
            ms = [agg[v.name][f"{metric}_{k}"][0] for k in keys]
            ses = [agg[v.name][f"{metric}_{k}"][1] for k in keys]
            ses = [0.0 if not math.isfinite(s) else s for s in ses]
            xs = np.arange(len(keys)) + (i - (len(variants) - 1) / 2) * width
            ax.bar(xs, ms, width, yerr=ses, capsize=2, label=v.label, color=cmap(i % 10),
                   edgecolor="k" if v.name == highlight else None, linewidth=1.5 if v.name == highlight else 0)
        ax.set_xticks(np.arange(len(keys)), keys)
        ax.set_ylabel(f"{metric}{' (mm)' if metric == 'HD95' else ''}  (mean ± SE over seeds)")
        ax.set_title(f"{metric} ({'higher' if metric == 'Dice' else 'lower'} is better)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylim(0, 1)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(variants)), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.06 + 0.05 * ((len(variants) - 1) // 4), 1, 0.95))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def axis_plot(path: Path, axis: str, variants: Sequence[Variant], agg: dict[str, Any], title: str) -> Path:
    """Dice and HD95 (mean over regions) against the axis level, one line per variant, SE error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stems = list(dict.fromkeys(v.stem for v in variants))
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.0))
    cmap = plt.get_cmap("tab10")
    xs_all = sorted({float(v.x) for v in variants if v.x is not None})
    span = (xs_all[-1] - xs_all[0]) if len(xs_all) > 1 else 1.0
    for ax, metric in zip(axes, METRICS):
        for i, stem in enumerate(stems):
            vs = sorted((v for v in variants if v.stem == stem and v.x is not None), key=lambda v: float(v.x or 0))
            xs = [float(v.x or 0) + (i - (len(stems) - 1) / 2) * 0.012 * span for v in vs]
            ms = [agg[v.name][f"{metric}_mean"][0] for v in vs]
            ses = [agg[v.name][f"{metric}_mean"][1] for v in vs]
            ses = [0.0 if not math.isfinite(s) else s for s in ses]
            hl = any(v.role == "highlight" for v in vs)
            ax.errorbar(xs, ms, yerr=ses, marker="o", capsize=3, color=cmap(i % 10), label=vs[0].label if vs else stem,
                        linewidth=2.0 if hl else 1.2)
        ax.set_xticks(xs_all)
        ax.set_xlabel(axis)
        ax.set_ylabel(f"{metric} mean over regions{' (mm)' if metric == 'HD95' else ''}\n(mean ± SE over seeds)")
        ax.set_title(f"{metric} ({'higher' if metric == 'Dice' else 'lower'} is better)", fontsize=10)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(stems)), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 0.94))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
