"""How the learned geometry developed during training: heatmaps and curves at the history
snapshots, with axes and colour scales fixed across snapshots so that frames compare.

:func:`plot_evolution` gives small multiples (rows: layers, columns: snapshots);
:func:`plot_curves_evolution` the same for the activation curves; :func:`animate_evolution`
writes an animated GIF (matplotlib's PillowWriter) with one frame per snapshot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from taan_viz.analysis import METRICS, Analysis, Snapshot, check_metric
from taan_viz.plots._style import add_caption, paper_style, short_label

__all__ = ["animate_evolution", "plot_curves_evolution", "plot_evolution"]


def _ordered(analysis, snapshots, name: str) -> tuple[Analysis, Sequence[Snapshot]]:
    """``(analysis, snapshots)``, accepting the order of taan 0.x, ``(snapshots, analysis)``,
    with a DeprecationWarning (the analysis comes first, as in every ``plot_*`` function)."""
    if isinstance(snapshots, Analysis) and not isinstance(analysis, Analysis):
        import warnings

        warnings.warn(f"{name}(snapshots, analysis) is deprecated; pass {name}(analysis, snapshots)",
                      DeprecationWarning, stacklevel=3)
        analysis, snapshots = snapshots, analysis
    if not isinstance(analysis, Analysis):
        raise TypeError(f"analysis must be an Analysis (from taan_viz.analysis.analyze), got {type(analysis).__name__}")
    return analysis, snapshots


def _check_snapshots(snapshots: Sequence[Snapshot], analysis: Analysis) -> None:
    if not snapshots:
        raise ValueError("snapshots must hold at least one history snapshot")
    names = [la.name for la in analysis.layers]
    for snap in snapshots:
        if [g.name for g in snap.layers] != names:
            raise ValueError(f"snapshots must cover the analysed layers {names}, got {[g.name for g in snap.layers]}")


def _evenly(snapshots: Sequence[Snapshot], count: int | None) -> list[Snapshot]:
    if count is None or len(snapshots) <= count:
        return list(snapshots)
    keep = sorted({int(round(i)) for i in np.linspace(0, len(snapshots) - 1, count)})
    return [snapshots[i] for i in keep]


def plot_evolution(
    analysis: Analysis,
    snapshots: Sequence[Snapshot],
    *,
    metric: str = "distance",
    max_columns: int = 6,
    figsize: tuple[float, float] | None = None,
):
    """Heatmaps of every analysed layer (rows) at up to ``max_columns`` snapshots (columns).

    Tasks keep the final analysis' order (the sharing-tree order of the last snapshot) and
    every panel shares one colour scale.

    Task names label the rows of the first column and the columns of the last row when the
    panels leave each name at least 3 pt.

    Parameters
    ----------
    analysis : Analysis
        The final state: task names and order.
    snapshots : sequence of Snapshot
        From :func:`taan_viz.analysis.history_geometry` with the same layers as ``analysis``.
    metric : str, default "distance"
    max_columns : int, default 6
        Evenly spaced snapshots, always the first and the last.
    figsize : (float, float), optional

    Returns
    -------
    matplotlib Figure
    """
    from matplotlib.figure import Figure

    from taan_viz.plots.heatmap import heatmap, metric_norm

    analysis, snapshots = _ordered(analysis, snapshots, "plot_evolution")
    check_metric(metric)
    _check_snapshots(snapshots, analysis)
    snaps = _evenly(snapshots, max_columns)
    order = analysis.sharing_tree().order
    names = [analysis.task_names[i] for i in order]
    mats = [[g.matrix(metric)[np.ix_(order, order)] for g in s.layers] for s in snaps]
    cmap, norm = metric_norm(metric, [m for row in mats for m in row])
    rows, cols = len(analysis.layers), len(snaps)
    t = analysis.num_tasks
    if figsize is None:
        cell = min(1.45, 6.4 / cols)
        # Room for the names, when the cells leave them enough (see heatmap).
        label_in = max(len(short_label(n)) for n in names) * 0.55 * 5 / 72 if cell * 72 * 0.85 / t >= 3 else 0.0
        figsize = (cell * cols + 1.0 + label_in, cell * rows + 0.6 + label_in)
    with paper_style():
        fig = Figure(figsize=figsize, layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        for c, (snap, row_mats) in enumerate(zip(snaps, mats)):
            for r, mat in enumerate(row_mats):
                ax = axes[r, c]
                heatmap(mat, labels=names, ax=ax, metric=metric, cmap=cmap, norm=norm, annot=False, cbar=False,
                        xticklabels=None if r == rows - 1 else False, yticklabels=None if c == 0 else False)
                if r == 0:
                    ax.set_title(f"epoch {snap.epoch}\nstep {snap.step}", fontsize=7)
                if c == 0:
                    la = analysis.layers[r]
                    ax.set_ylabel(f"layer {la.index + 1}\n{short_label(la.name, 14)}", fontsize=7)
        bar = fig.colorbar(axes[0, 0].images[0], ax=axes.ravel().tolist(), shrink=0.8, aspect=30,
                           label=METRICS[metric][0])
        bar.outline.set_visible(False)
        add_caption(fig, f"{t} tasks in the final sharing-tree order; one colour scale for every snapshot")
    return fig


def _curve_limits(snapshots: Sequence[Snapshot], k: int, x: np.ndarray) -> tuple[float, float]:
    from taan_viz.plots.curves import activation_values

    lo, hi = np.inf, -np.inf
    for snap in snapshots:
        g = snap.layers[k]
        y = activation_values(g.alpha, g.hinges, x)
        lo, hi = min(lo, float(y.min())), max(hi, float(y.max()))
    pad = 0.06 * ((hi - lo) or 1.0)
    return lo - pad, hi + pad


def plot_curves_evolution(
    analysis: Analysis,
    snapshots: Sequence[Snapshot],
    *,
    max_columns: int = 6,
    threshold: float = 0.1,
    palette=None,
    figsize: tuple[float, float] | None = None,
):
    """Activation curves of every analysed layer (rows) at up to ``max_columns`` snapshots,
    with the x and y range of each layer fixed across snapshots and tasks in their colours
    (:meth:`Analysis.palette` of the final state).

    Returns
    -------
    matplotlib Figure
    """
    from matplotlib.figure import Figure

    from taan_viz.plots.curves import activation_curves, curve_range

    analysis, snapshots = _ordered(analysis, snapshots, "plot_curves_evolution")
    _check_snapshots(snapshots, analysis)
    snaps = _evenly(snapshots, max_columns)
    palette = analysis.palette(threshold=threshold) if palette is None else palette
    rows, cols = len(analysis.layers), len(snaps)
    if figsize is None:
        cell = min(1.5, 7.0 / cols)
        figsize = (cell * cols + 0.5, cell * 0.85 * rows + 0.6)
    with paper_style():
        fig = Figure(figsize=figsize, layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False, sharex="row", sharey="row")
        for r, la in enumerate(analysis.layers):
            final = la.geometry
            xlim = curve_range(final.mu, final.sigma, final.hinges)
            ylim = _curve_limits(snaps, r, np.linspace(*xlim, 200))
            for c, snap in enumerate(snaps):
                g = snap.layers[r]
                ax = axes[r, c]
                activation_curves(g.alpha, g.hinges, ax=ax, mu=g.mu, sigma=g.sigma, xlim=xlim,
                                  palette=palette, labels=analysis.task_names, legend=False,
                                  line_kws={"linewidth": 0.8})
                ax.set_ylim(*ylim)
                ax.set_xlabel("")
                ax.set_ylabel(f"layer {la.index + 1}\n{short_label(la.name, 14)}" if c == 0 else "", fontsize=7)
                ax.tick_params(labelsize=5.5)
                if r == 0:
                    ax.set_title(f"epoch {snap.epoch}", fontsize=7)
        add_caption(fig, f"pre-activation x; {palette.describe()} (final state); dashed: relu; shaded: the measure")
    return fig


def animate_evolution(
    analysis: Analysis,
    snapshots: Sequence[Snapshot],
    path: "str | Path",
    *,
    metric: str = "distance",
    fps: float = 2.0,
    dpi: int = 90,
    threshold: float = 0.1,
) -> Path:
    """Write an animated GIF: per frame (snapshot) the heatmaps (top row) and activation curves
    (bottom row) of every analysed layer, on axes fixed across frames.

    Parameters
    ----------
    analysis : Analysis
    snapshots : sequence of Snapshot
    path : path-like
        Destination ``.gif``.
    metric : str, default "distance"
    fps : float, default 2
    dpi : int, default 90
    threshold : float, default 0.1
        Relative threshold of the final clusters that colour the curves.

    Returns
    -------
    Path
    """
    from matplotlib.animation import PillowWriter
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    from taan_viz.plots.curves import activation_values, curve_range
    from taan_viz.plots.heatmap import heatmap, metric_norm

    analysis, snapshots = _ordered(analysis, snapshots, "animate_evolution")
    check_metric(metric)
    _check_snapshots(snapshots, analysis)
    if not (isinstance(fps, (int, float)) and fps > 0):
        raise ValueError(f"fps must be > 0, got {fps!r}")
    path = Path(path)
    order = analysis.sharing_tree(threshold).order
    palette = analysis.palette(threshold=threshold)
    cmap, norm = metric_norm(metric, [g.matrix(metric) for s in snapshots for g in s.layers])
    n = len(analysis.layers)
    with paper_style():
        fig = Figure(figsize=(min(7.2, 2.3 * n + 0.8), 4.6), layout="constrained")
        axes = fig.subplots(2, n, squeeze=False)
        images, collections, xs = [], [], []
        for k, la in enumerate(analysis.layers):
            first = snapshots[0].layers[k]
            heatmap(first.matrix(metric)[np.ix_(order, order)], ax=axes[0, k], metric=metric, cmap=cmap, norm=norm,
                    annot=False, cbar=False, xticklabels=False, yticklabels=False)
            axes[0, k].set_title(f"layer {la.index + 1} · {short_label(la.name, 20)}")
            images.append(axes[0, k].images[0])
            xlim = curve_range(la.geometry.mu, la.geometry.sigma, la.geometry.hinges)
            x = np.linspace(*xlim, 300)
            xs.append(x)
            ax = axes[1, k]
            lines = LineCollection([], colors=palette.colors,
                                   linestyles=[palette.linestyle(i) for i in range(analysis.num_tasks)],
                                   linewidths=0.9)
            ax.add_collection(lines)
            collections.append(lines)
            ax.plot(x, np.maximum(x, 0.0), color="0.25", linewidth=0.7, linestyle=(0, (2, 2)))
            ax.set_xlim(*xlim)
            ax.set_ylim(*_curve_limits(snapshots, k, x))
            ax.set_xlabel("pre-activation x")
            if k == 0:
                ax.set_ylabel("Fₜ(x)")
        bar = fig.colorbar(images[-1], ax=axes[0, :].tolist(), shrink=0.85, label=METRICS[metric][0])
        bar.outline.set_visible(False)
        title = fig.suptitle("")
        writer = PillowWriter(fps=fps)
        with writer.saving(fig, str(path), dpi=dpi):
            for snap in snapshots:
                for k, g in enumerate(snap.layers):
                    images[k].set_data(g.matrix(metric)[np.ix_(order, order)])
                    y = activation_values(g.alpha, g.hinges, xs[k])
                    collections[k].set_segments([np.column_stack([xs[k], row]) for row in y])
                title.set_text(f"epoch {snap.epoch} · step {snap.step}")
                writer.grab_frame()
    return path
