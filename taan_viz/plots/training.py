"""Training curves from a checkpoint's per-epoch metrics: losses and validation metrics."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from taan_viz.plots._style import category_color, paper_style

__all__ = ["flatten_metrics", "plot_training"]


def flatten_metrics(metrics: Sequence[Mapping]) -> list[dict[str, float]]:
    """Per-epoch numeric scalars with nested keys joined by dots (``val.mean.accuracy``);
    per-task entries (``per_task``) and booleans are left out."""
    def walk(prefix: str, value, out: dict) -> None:
        if isinstance(value, Mapping):
            for key, sub in value.items():
                if key == "per_task":
                    continue
                walk(f"{prefix}.{key}" if prefix else str(key), sub, out)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[prefix] = float(value)

    rows = []
    for entry in metrics:
        row: dict[str, float] = {}
        walk("", entry, row)
        rows.append(row)
    return rows


def plot_training(metrics: Sequence[Mapping], *, figsize: tuple[float, float] = (7.2, 2.3)):
    """Losses (left) and validation metrics (right) per epoch.

    Parameters
    ----------
    metrics : sequence of dict
        ``Checkpoint.metrics``: one dict per epoch with ``epoch``, ``train_*`` losses and a
        ``val`` dict (see docs/checkpoint-format.md).

    Returns
    -------
    matplotlib Figure

    Raises
    ------
    ValueError
        When there are no per-epoch metrics.
    """
    from matplotlib.figure import Figure

    rows = flatten_metrics(metrics)
    if not rows:
        raise ValueError("the checkpoint has no per-epoch metrics to plot")
    epochs = np.array([r.get("epoch", i + 1) for i, r in enumerate(rows)], dtype=float)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    losses = [k for k in keys if k.startswith("train") and "loss" in k or k == "train_reg"]
    vals = [k for k in keys if k.startswith("val.")]
    with paper_style():
        fig = Figure(figsize=figsize, layout="constrained")
        ax_loss, ax_val = fig.subplots(1, 2)
        for i, key in enumerate(losses):
            y = np.array([r.get(key, np.nan) for r in rows])
            ax_loss.plot(epochs, y, marker="o", markersize=2.5, color=category_color(i), label=key)
        ax_loss.set_xlabel("epoch")
        ax_loss.set_ylabel("training loss")
        if losses:
            ax_loss.legend()
        for i, key in enumerate(vals):
            y = np.array([r.get(key, np.nan) for r in rows])
            ax_val.plot(epochs, y, marker="o", markersize=2.5, color=category_color(i),
                        linewidth=1.6 if key == "val.main" else 1.0, label=key)
        ax_val.set_xlabel("epoch")
        ax_val.set_ylabel("validation")
        if vals:
            ax_val.legend()
        best = [i for i, m in enumerate(metrics) if m.get("best")]
        if best and "val.main" in vals:
            b = best[-1]
            ax_val.axvline(epochs[b], color="0.6", linewidth=0.6, linestyle=(0, (3, 2)))
            ax_val.annotate("best", (epochs[b], 1.0), xycoords=("data", "axes fraction"), fontsize=6,
                            ha="left", va="top", xytext=(2, 0), textcoords="offset points", color="0.4")
        for ax in (ax_loss, ax_val):
            if len(epochs) <= 12:
                ax.set_xticks(epochs)
    return fig
