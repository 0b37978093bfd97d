"""The report's figures: effects with their intervals, and the per-tag heat map."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ablations.effects import METRIC_LABELS, OK, Effect
from ablations.stats import ALPHA, HELPS, HURTS, METRICS, NO_EFFECT

VERDICT_COLORS = {HELPS: "#2b6cb0", HURTS: "#c53030", NO_EFFECT: "#a0aec0"}


def short_tag(tag: str) -> str:
    return tag.split("---")[-1]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _segment(ax, low: float, high: float, y: float, **style) -> None:
    if math.isfinite(low) and math.isfinite(high):
        ax.plot([low, high], [y, y], solid_capstyle="butt", **style)


def plot_effects(effects: Sequence[Effect], path: Path) -> Path:
    """Horizontal bars of Δ per ablation and metric: the test's interval (both noises,
    black), the seeds' alone (grey) and the track bootstrap's alone (orange)."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    y = np.arange(len(effects))[::-1]
    fig, axes = plt.subplots(
        1, 2, figsize=(12, 1.0 + 0.6 * len(effects)), sharey=True, squeeze=False
    )
    for ax, metric in zip(axes[0], METRICS, strict=True):
        for yi, e in zip(y, effects, strict=True):
            if e.status != OK:
                ax.text(0, yi, f"  {e.status}", va="center", ha="left", color="#718096", fontsize=9)
                continue
            row = e.metrics[metric]
            ax.barh(yi, row.delta, color=VERDICT_COLORS[row.verdict], height=0.5)
            _segment(ax, *row.interval(), yi + 0.05, color="black", lw=1.4)
            _segment(ax, row.seeds_only.low, row.seeds_only.high, yi - 0.12, color="#718096", lw=2)
            _segment(ax, row.tracks_low, row.tracks_high, yi - 0.27, color="#dd6b20", lw=2.5)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(f"Δ {METRIC_LABELS[metric]} (variant − reference)")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(y, [f"{e.name} ({len(e.seeds)})" for e in effects])
    handles = [
        Patch(color=c, label=f"component {v} (Holm)" if v != NO_EFFECT else v)
        for v, c in VERDICT_COLORS.items()
    ]
    handles += [
        plt.Line2D([], [], color="black", lw=1.4, label="95% CI, seeds and tracks (the test)"),
        plt.Line2D([], [], color="#718096", lw=2, label="seeds alone"),
        plt.Line2D([], [], color="#dd6b20", lw=2.5, label="tracks alone"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1 + 0.1 / max(len(effects), 1), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_per_tag(
    delta: pd.DataFrame,
    q_values: pd.DataFrame,
    path: Path,
    marked: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Heat map of per-tag Δ PR-AUC, ablations x tags; a dot marks the cells that survive
    Benjamini-Hochberg over the whole map, and planted tags get their group's name."""
    plt = _pyplot()
    values = delta.to_numpy(dtype=float)
    limit = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0
    limit = limit or 1.0
    suffix = {tag: f" [{group}]" for group, members in (marked or {}).items() for tag in members}
    labels = [short_tag(t) + suffix.get(t, "") for t in delta.columns]
    fig, ax = plt.subplots(figsize=(max(8, 0.22 * len(labels) + 3), 1.9 + 0.45 * len(delta)))
    image = ax.imshow(
        values, aspect="auto", cmap="RdBu", vmin=-limit, vmax=limit, interpolation="nearest"
    )
    rows, cols = np.nonzero(np.nan_to_num(q_values.to_numpy(dtype=float), nan=1.0) <= ALPHA)
    ax.scatter(cols, rows, s=16, c="black", edgecolors="white", linewidths=0.6, marker="o")
    ax.set_yticks(range(len(delta)), list(delta.index))
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_title(
        "per-tag Δ PR-AUC (variant − reference), mean over seeds\n"
        f"• survives Benjamini-Hochberg at {ALPHA:.0%} over the whole map",
        fontsize=10,
    )
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
