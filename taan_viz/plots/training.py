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


# Per-task validation curves are drawn up to this many tasks; beyond, only the mean.
_PER_TASK_MAX = 8


def _kind(key: str) -> str:
    """The metric kind of a flattened key: its last part (``val.mean.accuracy`` -> accuracy),
    so that metrics on different scales (RMSE and accuracy) get different axes."""
    return key.rsplit(".", 1)[-1]


def _per_task(metrics: Sequence[Mapping]) -> dict[str, dict[str, list[float]]]:
    """``{kind: {task: values per epoch}}`` from ``val.per_task`` (NaN where missing)."""
    out: dict[str, dict[str, list[float]]] = {}
    for e, entry in enumerate(metrics):
        per = (entry.get("val") or {}).get("per_task") or {}
        for task, values in per.items():
            for kind, v in (values or {}).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    series = out.setdefault(kind, {}).setdefault(str(task), [np.nan] * len(metrics))
                    series[e] = float(v)
    return out


def plot_training(metrics: Sequence[Mapping], *, figsize: tuple[float, float] | None = None):
    """Training losses and validation metrics per epoch, one axis per kind of metric.

    Losses share one axis; every validation metric kind (accuracy, RMSE, ...) gets its own,
    so that scales never mix. With at most 8 tasks each task's validation curve is drawn thin
    under the mean. Epochs are integer ticks; legends sit beside the axes, off the data.

    Parameters
    ----------
    metrics : sequence of dict
        ``Checkpoint.metrics``: one dict per epoch with ``epoch``, ``train_*`` losses and a
        ``val`` dict (see docs/checkpoint-format.md).
    figsize : (float, float), optional

    Returns
    -------
    matplotlib Figure

    Raises
    ------
    ValueError
        When there are no per-epoch metrics.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = flatten_metrics(metrics)
    if not rows:
        raise ValueError("the checkpoint has no per-epoch metrics to plot")
    epochs = np.array([r.get("epoch", i + 1) for i, r in enumerate(rows)], dtype=float)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    losses = [k for k in keys if k.startswith("train") and "loss" in k or k == "train_reg"]
    vals = [k for k in keys if k.startswith("val.")]
    kinds = list(dict.fromkeys(_kind(k) for k in vals))
    per_task = _per_task(metrics)
    panels = (["loss"] if losses else []) + kinds
    if not panels:
        raise ValueError("the checkpoint's metrics hold no training losses or validation metrics to plot")
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    if figsize is None:
        figsize = (7.2, 2.0 * nrows + 0.3)
    best = [i for i, m in enumerate(metrics) if m.get("best")]
    with paper_style():
        fig = Figure(figsize=figsize, layout="constrained")
        grid = fig.subplots(nrows, ncols, squeeze=False)
        for ax in grid.flat[len(panels):]:
            ax.set_visible(False)
        for ax, panel in zip(grid.flat, panels):
            series = losses if panel == "loss" else [k for k in vals if _kind(k) == panel]
            tasks = per_task.get(panel, {}) if panel != "loss" else {}
            if 0 < len(tasks) <= _PER_TASK_MAX:
                for j, (task, ys) in enumerate(tasks.items()):
                    ax.plot(epochs, ys, color=category_color(len(series) + j), linewidth=0.7, alpha=0.8,
                            label=f"{task} (task)")
            for i, key in enumerate(series):
                y = np.array([r.get(key, np.nan) for r in rows])
                ax.plot(epochs, y, marker="o", markersize=2.5, color="black" if key == "val.main" else category_color(i),
                        linewidth=1.6 if key in ("val.main", "train_loss") else 1.0, label=key)
            if best and "val.main" in series:
                b = best[-1]
                ax.axvline(epochs[b], color="0.6", linewidth=0.6, linestyle=(0, (3, 2)))
                ax.annotate("best", (epochs[b], 1.0), xycoords=("data", "axes fraction"), fontsize=6,
                            ha="left", va="top", xytext=(2, 0), textcoords="offset points", color="0.4")
            ax.set_xlabel("epoch")
            ax.set_ylabel("training loss" if panel == "loss" else f"validation {panel}")
            # Epochs are counts: integer ticks only, never 1.5.
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), fontsize=5.5, ncol=2,
                      handlelength=1.5, borderaxespad=0.0)
    return fig
