"""The figure of :mod:`taan_viz.compare`: the network's task distances against the known ones.

:func:`plot_compare` draws one scatter panel per layer, a point per pair of tasks (x: the known
distance, y: the TAAN's), each run in its own colour, the median TAAN distance per bin of the
known distance as a line, and the Mantel test's rho and p in the panel's title.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from taan_viz.plots._style import add_caption, category_color, paper_style

if TYPE_CHECKING:  # pragma: no cover - only for annotations
    from taan_viz.compare import Comparison

__all__ = ["format_p", "plot_compare"]

# Beyond this many points in a panel, SVG and PDF get the points as an image (thousands of
# vector markers make a file slow to open) while axes and text stay vector.
_RASTER_POINTS = 2000
# Distinct known distances up to this count are binned one per value (categorical attributes
# give few); beyond, the medians are taken over this many bins of equal width.
_BINS = 10


def format_p(p: float) -> str:
    """A p-value for a title, to two significant digits (``p = 0.0001``)."""
    return f"p = {p:.2g}" if math.isfinite(p) else "p undefined"


def _symbol(method: str) -> str:
    return "ρ" if method == "spearman" else "r"


def _rho(value: float, method: str) -> str:
    symbol = _symbol(method)
    return f"{symbol} undefined (constant distances)" if not math.isfinite(value) else f"{symbol} = {value:.2f}"


def _medians(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median of ``y`` per bin of ``x``: per distinct value when there are few, else per bin of
    equal width (at the median ``x`` of the bin; empty bins are skipped)."""
    values = np.unique(x)
    if values.size <= _BINS:
        return values, np.array([np.median(y[x == v]) for v in values])
    edges = np.linspace(values[0], values[-1], _BINS + 1)
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, _BINS - 1)
    keep = [b for b in range(_BINS) if (which == b).any()]
    return (np.array([np.median(x[which == b]) for b in keep]),
            np.array([np.median(y[which == b]) for b in keep]))


def plot_compare(comparison: "Comparison", *, max_columns: int = 3, alpha: float | None = None,
                 rasterized: bool | None = None):
    """The TAAN's task distances against the known ones, one panel per layer.

    Parameters
    ----------
    comparison : Comparison
        From :func:`taan_viz.compare.compare_runs`.
    max_columns : int, default 3
        Panels per row; more layers wrap into further rows.
    alpha : float, optional
        Opacity of the points (default: 0.8 for a few hundred pairs down to 0.12 for
        thousands, divided by the square root of the number of runs).
    rasterized : bool, optional
        Draw the points as an image inside SVG/PDF (default: beyond 2000 points a panel).

    Returns
    -------
    matplotlib Figure
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if isinstance(max_columns, bool) or not isinstance(max_columns, int) or max_columns < 1:
        raise ValueError(f"max_columns must be an int >= 1, got {max_columns!r}")
    if alpha is not None and not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
    t, r, n = comparison.num_tasks, comparison.num_runs, len(comparison.layers)
    iu, ju = np.triu_indices(t, 1)
    pairs = iu.size
    if alpha is None:
        alpha = max(float(np.clip(400 / max(pairs, 1), 0.12, 0.8)) / math.sqrt(r), 0.06)
    raster = pairs * r > _RASTER_POINTS if rasterized is None else rasterized
    size = 6.0 if pairs <= 200 else 3.0 if pairs <= 2000 else 1.8
    cols = min(n, max_columns)
    rows = -(-n // cols)
    with paper_style():
        fig = Figure(figsize=(min(7.2, 2.4 * cols + 0.4), 2.25 * rows + 0.75), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax in axes.flat[n:]:
            ax.set_visible(False)
        for k, (ax, la) in enumerate(zip(axes.flat, comparison.layers)):
            y = la.distance[:, iu, ju]
            x = (comparison.known if la.known is None else la.known)[iu, ju]
            colors = np.repeat(np.arange(r), pairs)
            # One scatter in a shuffled order, so that no run is drawn over all the others.
            shuffle = np.random.default_rng(0).permutation(r * pairs)
            ax.scatter(np.tile(x, r)[shuffle], y.ravel()[shuffle], s=size, alpha=alpha, linewidths=0,
                       c=[category_color(c) for c in colors[shuffle]], rasterized=raster)
            mx, my = _medians(x, la.distance.mean(axis=0)[iu, ju])
            ax.plot(mx, my, color="black", lw=1.0, marker="o", ms=2.5, label="median")
            title = [f"layer {la.index + 1}  {la.name}" + (f" vs {'+'.join(la.columns)}" if la.columns else ""),
                     f"{_rho(la.rho, comparison.method)}, {format_p(la.pvalue)}"]
            if r > 1:
                s = la.spread
                title[1] = "mean distance: " + title[1]
                title.append(f"runs: {_symbol(comparison.method)} {s['min']:.2f} to {s['max']:.2f}")
            if la.ari is not None:
                by = la.columns[0] if comparison.grouping == "columns" else comparison.grouping
                title.append(f"ARI vs {by}: {float(la.ari.mean()):.2f}")
            ax.set_title("\n".join(title), fontsize=7)
            ax.set_xlim(left=min(0.0, float(x.min())))
            ax.set_ylim(bottom=0)
            if k % cols == 0:
                ax.set_ylabel("TAAN distance d(F_s, F_t)")
            if k >= n - cols:
                ax.set_xlabel("known distance")
        handles = [Line2D([], [], color="black", lw=1.0, marker="o", ms=2.5, label="median per bin")]
        if r > 1:
            handles = [Line2D([], [], ls="", marker="o", ms=3, color=category_color(run), label=label)
                       for run, label in enumerate(comparison.runs)] + handles
        fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 6), fontsize=6.5)
        stat = "Spearman's rank correlation" if comparison.method == "spearman" else "Pearson's correlation"
        known = "attributes (numeric z-scored, categorical one-hot; Euclidean)" if comparison.kind == "attributes" \
            else "a task-by-task matrix"
        add_caption(fig, f"Each point is a pair of the {t} tasks ({pairs} pairs a panel). Known distance from "
                    f"{known}. Mantel test: {stat}, one-sided p from {comparison.permutations} relabellings "
                    "of the tasks.")
    return fig
