"""The learned activation functions themselves: F_t(x) for every task of a layer.

:func:`activation_curves` draws one layer on one Axes; :func:`plot_curves` draws every layer
(and optionally each task's residual F_t - relu below); :func:`plot_curve_grid` draws small
multiples, one panel per task, for layers with many tasks.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

from taan_viz.analysis import Analysis
from taan_viz.plots._style import (
    category_color,
    category_linestyle,
    measure_label,
    paper_style,
    short_label,
    text_width_pt,
    wrap_to_width,
)

if TYPE_CHECKING:  # pragma: no cover - only for annotations
    from taan_viz.palette import TaskPalette

__all__ = ["activation_curves", "activation_values", "curve_range", "grid_pages", "plot_curve_grid", "plot_curves"]

# Legends list at most this many colour groups (then "... k more": one per colour and dash
# pattern, see taan_viz.palette); per page of small multiples at most _GRID_MAX tasks.
_LEGEND_MAX = 32
# Task names in legends are whole up to this many characters (Omniglot's longest alphabet,
# "Blackfoot_(Canadian_Aboriginal_Syllabics)", has 41).
_NAME_MAX = 48
_GRID_MAX = 64
# Beyond this many tasks the lines of one group merge into a band anyway: each group is drawn
# as its mean and the band between the _BAND quantiles of its tasks at every x.
_SUMMARY_MIN = 150
_BAND = (0.1, 0.9)


def activation_values(alpha, hinges, x) -> np.ndarray:
    """F_t(x) = relu(x) + sum_m alpha[t, m] relu(hinges[m] - x).

    Parameters
    ----------
    alpha : array-like of shape (T, M)
    hinges : array-like of shape (M,)
    x : array-like of shape (N,)

    Returns
    -------
    ndarray of shape (T, N)
    """
    a = np.asarray(alpha, dtype=np.float64)
    b = np.asarray(hinges, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 1 or a.shape[1] != b.shape[0]:
        raise ValueError(f"alpha must have shape (T, M) with M = len(hinges) = {b.shape[0] if b.ndim == 1 else '?'}, "
                         f"got {a.shape}")
    basis = np.maximum(b[:, None] - x[None, :], 0.0)
    return np.maximum(x, 0.0)[None, :] + a @ basis


def curve_range(mu: float, sigma: float, hinges=None, width: float = 3.5) -> tuple[float, float]:
    """The x range that covers the measure: mu +- width * sigma, widened to the hinges that lie
    within mu +- 2 * width * sigma (farther ones would squash the part the data sees)."""
    lo, hi = mu - width * sigma, mu + width * sigma
    if hinges is not None:
        b = np.asarray(hinges, dtype=np.float64)
        near = b[np.abs(b - mu) <= 2 * width * sigma]
        if near.size:
            pad = 0.05 * (hi - lo)
            lo, hi = min(lo, near.min() - pad), max(hi, near.max() + pad)
    return float(lo), float(hi)


def _gauss(x: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


def activation_curves(
    alpha,
    hinges,
    *,
    ax=None,
    mu: float = 0.0,
    sigma: float = 1.0,
    xlim: tuple[float, float] | None = None,
    labels: Sequence[str] | None = None,
    clusters: Sequence[int] | None = None,
    palette: "TaskPalette | None" = None,
    highlight: int | None = None,
    density: bool = True,
    density_label: str | None = None,
    show_hinges: bool = True,
    relu: bool = True,
    residual: bool = False,
    legend: bool | str = "auto",
    line_kws: dict | None = None,
    legend_kws: dict | None = None,
    summary: bool | None = None,
):
    """Draw every task's activation of one layer on ``ax``.

    Parameters
    ----------
    alpha : array-like of shape (T, M)
    hinges : array-like of shape (M,)
    ax : matplotlib Axes, optional
    mu, sigma : float
        The Gaussian measure, shaded beneath the curves (its density, not to scale).
    xlim : (float, float), optional
        Defaults to :func:`curve_range`.
    labels : sequence of str, optional
        Task names.
    clusters : sequence of int, optional
        Cluster of each task; colours follow clusters (Okabe-Ito), else tasks.
    palette : TaskPalette, optional
        Colour and dash pattern of each task (:meth:`Analysis.palette`); overrides ``clusters``,
        so that a task has the colour it has in every other figure.
    highlight : int, optional
        Draw only this task in colour, the others in light grey (small multiples).
    density : bool, default True
    density_label : str, optional
        Legend text of the shaded density.
    show_hinges : bool, default True
        Mark the hinge positions b_m along the bottom.
    relu : bool, default True
        Draw relu(x) dashed for reference (the activation every task starts from).
    residual : bool, default False
        Draw F_t(x) - relu(x), the task-specific part, instead of F_t.
    legend : bool, "clusters" or "auto"
        True: one entry per cluster (its colour and first members) plus relu, measure and
        hinges; "clusters": the cluster entries only; "auto": True unless ``highlight``.
    line_kws : dict, optional
        Passed to the line collection.
    legend_kws : dict, optional
        Passed to ``Axes.legend`` (e.g. a location outside the Axes).
    summary : bool, optional
        Draw each colour group as its mean activation and the band between the 10 % and 90 %
        quantiles of its tasks, not one line per task; by default beyond 150 tasks (without
        ``highlight``), where single lines merge into bands.

    Returns
    -------
    matplotlib Axes
    """
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    a = np.asarray(alpha, dtype=np.float64)
    b = np.asarray(hinges, dtype=np.float64)
    t = a.shape[0]
    names = [str(i) for i in range(t)] if labels is None else [str(n) for n in labels]
    if len(names) != t:
        raise ValueError(f"labels must have {t} entries (one per task), got {len(names)}")
    if clusters is not None and len(clusters) != t:
        raise ValueError(f"clusters must have {t} entries (one per task), got {len(clusters)}")
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    lo, hi = curve_range(mu, sigma, b) if xlim is None else xlim
    # Piecewise linear: a point per 0.25 % of the range is smooth at print size; fewer in the
    # many small panels of a grid, which draw every task once per panel.
    x = np.linspace(lo, hi, 400 if highlight is None else 160)
    y = activation_values(a, b, x)
    if residual:
        y = y - np.maximum(x, 0.0)[None, :]
    if palette is not None:
        if palette.num_tasks != t:
            raise ValueError(f"palette must colour {t} tasks (one per row of alpha), got {palette.num_tasks}")
        groups = palette.keys
        color_of, style_of = palette.key_color, palette.key_linestyle
    else:
        groups = np.arange(t) if clusters is None else np.asarray(clusters)
        color_of, style_of = category_color, category_linestyle
    colors = [color_of(g) for g in groups]
    styles = [style_of(g) for g in groups]
    kws = {"linewidth": 1.1 if t <= 20 else 0.6, "alpha": 1.0 if t <= 20 else 0.5}
    kws.update(line_kws or {})
    if summary is None:
        summary = highlight is None and t > _SUMMARY_MIN
    segments = [] if summary else [np.column_stack([x, row]) for row in y]
    if summary:
        shown = []
        groups = np.asarray(groups)
        # Later groups first, so the first groups (listed first in the legend) end up on top.
        for g in sorted(dict.fromkeys(groups.tolist()), reverse=True):
            rows = y[groups == g]
            low, high = np.quantile(rows, _BAND, axis=0)
            mean = rows.mean(axis=0)
            ax.fill_between(x, low, high, color=color_of(g), alpha=0.22, linewidth=0, zorder=2)
            ax.plot(x, mean, color=color_of(g), linestyle=style_of(g), linewidth=1.1, zorder=3)
            shown += [low, high, mean]
        # The axis fits the bands, not single outlying tasks.
        y = np.asarray(shown)
    elif highlight is not None:
        others = [s for i, s in enumerate(segments) if i != highlight]
        ax.add_collection(LineCollection(others, colors="0.82", linewidths=0.6, zorder=2))
        ax.add_collection(LineCollection([segments[highlight]], colors=[colors[highlight]],
                                         linewidths=1.4, zorder=3))
    else:
        # Draw later clusters first so the first clusters (listed first) end up on top.
        idx = np.argsort(-groups, kind="stable")
        ax.add_collection(LineCollection([segments[i] for i in idx], colors=[colors[i] for i in idx],
                                         linestyles=[styles[i] for i in idx], zorder=3, **kws))
    handles = []
    if relu and not residual:
        ax.plot(x, np.maximum(x, 0.0), color="0.25", linewidth=0.8, linestyle=(0, (2, 2)), zorder=4)
        handles.append(Line2D([], [], color="0.25", linewidth=0.8, linestyle=(0, (2, 2)), label="relu(x)"))
    if residual:
        ax.axhline(0.0, color="0.6", linewidth=0.5, zorder=1)
    ymin, ymax = float(y.min()), float(y.max())
    if relu and not residual:
        ymin, ymax = min(ymin, 0.0), max(ymax, hi)
    pad = 0.06 * (ymax - ymin or 1.0)
    ax.set_xlim(lo, hi)
    ax.set_ylim(ymin - pad, ymax + pad)
    if density:
        # Axes-fraction heights: the density sits in the bottom quarter whatever the y range.
        pdf = _gauss(x, mu, sigma)
        ax.fill_between(x, 0.0, 0.22 * pdf / pdf.max(), transform=ax.get_xaxis_transform(),
                        color="0.88", linewidth=0, zorder=0)
        handles.append(Patch(color="0.85", label=density_label or measure_label(mu, sigma)))
    if show_hinges:
        inside = b[(b >= lo) & (b <= hi)]
        ax.plot(inside, np.full(inside.shape, 0.0), transform=ax.get_xaxis_transform(), linestyle="none",
                marker="|", markersize=5, markeredgewidth=0.8, color="0.3", clip_on=False, zorder=5)
        handles.append(Line2D([], [], linestyle="none", marker="|", markersize=5, color="0.3", label="hinges bₘ"))
    ax.set_xlabel("pre-activation x")
    ax.set_ylabel("Fₜ(x) − relu(x)" if residual else "Fₜ(x)")
    if legend == "auto":
        legend = highlight is None
    if legend:
        entries = []
        for g in dict.fromkeys(groups.tolist()):
            members = [names[i] for i in range(t) if groups[i] == g]
            text = ", ".join(short_label(m, _NAME_MAX) for m in members[:2])
            text += f" (+{len(members) - 2})" if len(members) > 2 else ""
            entries.append(Line2D([], [], color=color_of(g), linestyle=style_of(g), label=text))
        if len(entries) > _LEGEND_MAX:
            rest = len(entries) - (_LEGEND_MAX - 1)
            entries = entries[:_LEGEND_MAX - 1] + [Line2D([], [], color="none", label=f"… {rest} more groups")]
        if summary:
            entries.append(Patch(color="0.6", alpha=0.4, label=_band_label()))
        kws = {"loc": "upper left", "fontsize": 6, "handlelength": 1.8, "borderaxespad": 0.2,
               "labelspacing": 0.25}
        kws.update(legend_kws or {})
        ax.legend(handles=entries + (handles if legend != "clusters" else []), **kws)
    return ax


def plot_curves(
    analysis: Analysis,
    *,
    layers: Sequence[int | str] | None = None,
    n_clusters: int | None = None,
    threshold: float = 0.1,
    residual: bool = False,
    relu: bool = True,
    palette: "TaskPalette | None" = None,
    figsize: tuple[float, float] | None = None,
    summary: bool | None = None,
):
    """Activation curves of every analysed layer, each task in its colour.

    Parameters
    ----------
    analysis : Analysis
    layers : sequence of int or str, optional
        Layers of ``analysis`` to draw; all by default.
    n_clusters : int, optional
        Colour by the groups of this many clusters per layer; by default by the sharing
        tree's groups at ``threshold`` (see :meth:`Analysis.palette`).
    threshold : float, default 0.1
    residual : bool, default False
        Add a second row with each task's residual F_t - relu.
    relu : bool, default True
        Draw relu(x) for reference.
    palette : TaskPalette, optional
        Overrides ``analysis.palette(n_clusters, threshold)``.
    figsize : (float, float), optional
    summary : bool, optional
        Each colour group as its mean and a 10-90 % band instead of one line per task
        (:func:`activation_curves`); by default beyond 150 tasks.

    Returns
    -------
    matplotlib Figure
    """
    from matplotlib.figure import Figure

    chosen = analysis.select(layers)
    summary = analysis.num_tasks > _SUMMARY_MIN if summary is None else summary
    palette = analysis.palette(n_clusters=n_clusters, threshold=threshold) if palette is None else palette
    n = len(chosen)
    rows = 2 if residual else 1
    handles = _group_handles(palette, analysis.task_names) + _static_handles(relu, summary)
    width = min(7.2, 2.4 * n + 0.3) if figsize is None else figsize[0]
    ncol = _legend_columns([h.get_label() for h in handles], width)
    if figsize is None:
        # Room below the panels for the legend: colour groups and 3 reference entries.
        figsize = (width, rows * min(2.3, width / n * 0.9) + 0.75 + 0.125 * math.ceil(len(handles) / ncol))
    with paper_style():
        fig = Figure(figsize=figsize, layout="constrained")
        axes = fig.subplots(rows, n, squeeze=False)
        for k, la in enumerate(chosen):
            g = la.geometry
            common = dict(mu=g.mu, sigma=g.sigma, labels=analysis.task_names, palette=palette, relu=relu,
                          summary=summary)
            # One legend of colour groups below the figure (the same in every panel), where it
            # cannot cover a curve.
            activation_curves(g.alpha, g.hinges, ax=axes[0, k], **common, legend=False)
            axes[0, k].set_title(f"layer {la.index + 1} · {short_label(la.name, 28)}\n"
                                 "x ~ " + measure_label(g.mu, g.sigma))
            if residual:
                activation_curves(g.alpha, g.hinges, ax=axes[1, k], residual=True, **common, legend=False)
            if k > 0:
                for r in range(rows):
                    axes[r, k].set_ylabel("")
            if residual:
                axes[0, k].set_xlabel("")
        fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize=6,
                   handlelength=2.2, columnspacing=1.2, title=wrap_to_width(palette.describe(), fig.get_figwidth() * 0.95, 6),
                   title_fontsize=6)
    return fig


def _legend_columns(labels: Sequence[str], width_in: float, fontsize: float = 6.0) -> int:
    """Columns of the figure legend: up to 4, as many as fit ``width_in`` inches with every
    label whole (a handle of 2.2 em, 0.8 em before the label, 1.2 em between columns)."""
    widest = max((text_width_pt(label, fontsize) for label in labels), default=0.0)
    column = widest + (2.2 + 0.8 + 1.2) * fontsize
    return int(max(1, min(4, len(labels), (0.95 * width_in * 72) // column)))


def _group_handles(palette: "TaskPalette", names: Sequence[str]) -> list:
    """One legend entry per colour group: its colour, dash pattern and first members."""
    from matplotlib.lines import Line2D

    entries = []
    for key in range(palette.num_keys):
        members = [names[i] for i in palette.members(key)]
        text = ", ".join(short_label(m, _NAME_MAX) for m in members[:2])
        text += f" (+{len(members) - 2})" if len(members) > 2 else ""
        entries.append(Line2D([], [], color=palette.key_color(key), linestyle=palette.key_linestyle(key), label=text))
    if len(entries) > _LEGEND_MAX:
        rest = len(entries) - (_LEGEND_MAX - 1)
        entries = entries[:_LEGEND_MAX - 1] + [Line2D([], [], color="none",
                                                      label=f"… {rest} more groups (export: clusters.csv)")]
    return entries


def _band_label() -> str:
    lo, hi = (round(100 * q) for q in _BAND)
    return f"lines: each group's mean; bands: {lo}–{hi} % of its tasks"


def _static_handles(relu: bool, summary: bool = False) -> list:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color="0.6", alpha=0.4, label=_band_label())] if summary else []
    if relu:
        handles.append(Line2D([], [], color="0.25", linewidth=0.8, linestyle=(0, (2, 2)), label="relu(x)"))
    return handles + [Patch(color="0.85", label="measure N(μ, σ²) (density, not to scale)"),
                      Line2D([], [], linestyle="none", marker="|", markersize=5, color="0.3", label="hinges bₘ")]


def grid_pages(num_tasks: int, max_tasks: int = _GRID_MAX) -> int:
    """Number of pages :func:`plot_curve_grid` needs for ``num_tasks`` tasks."""
    return max(1, math.ceil(num_tasks / max_tasks))


def plot_curve_grid(
    analysis: Analysis,
    layer: int | str = -1,
    *,
    n_clusters: int | None = None,
    threshold: float = 0.1,
    max_tasks: int = _GRID_MAX,
    page: int = 1,
    ncols: int | None = None,
    palette: "TaskPalette | None" = None,
    figsize: tuple[float, float] | None = None,
):
    """Small multiples: one panel per task of one layer, that task in its colour over the others
    in grey, with its own recorded pre-activation density when the checkpoint has one.

    Parameters
    ----------
    analysis : Analysis
    layer : int or str, default -1
    n_clusters, threshold
        Colouring, as in :func:`plot_curves`.
    max_tasks : int, default 64
        Tasks per page (in clustered order).
    page : int, default 1
        Which page (1-based; :func:`grid_pages` says how many); the title says which tasks a
        page shows and that the others are on the other pages.
    ncols : int, optional
    palette : TaskPalette, optional
    figsize : (float, float), optional

    Returns
    -------
    matplotlib Figure
    """
    from matplotlib.figure import Figure

    la = analysis.layer(layer)
    if isinstance(max_tasks, bool) or not isinstance(max_tasks, int) or max_tasks < 1:
        raise ValueError(f"max_tasks must be an int >= 1, got {max_tasks!r}")
    pages = grid_pages(analysis.num_tasks, max_tasks)
    if isinstance(page, bool) or not isinstance(page, int) or not 1 <= page <= pages:
        raise ValueError(f"page must be an int in [1, {pages}] ({analysis.num_tasks} tasks, {max_tasks} a page), "
                         f"got {page!r}")
    palette = analysis.palette(n_clusters=n_clusters, threshold=threshold) if palette is None else palette
    g = la.geometry
    first = (page - 1) * max_tasks
    order = la.clustering.order[first:first + max_tasks]
    n = len(order)
    ncols = ncols or min(8, max(2, math.ceil(math.sqrt(n))))
    nrows = math.ceil(n / ncols)
    if figsize is None:
        figsize = (7.2, min(9.5, 0.8 * 7.2 / ncols * nrows + 0.5))
    lo, hi = curve_range(g.mu, g.sigma, g.hinges)
    with paper_style():
        fig = Figure(figsize=figsize, layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
        for ax in axes.flat[n:]:
            ax.set_visible(False)
        for ax in axes.flat[max(0, n - ncols):n]:
            # The last panel of each column carries the x tick labels (sharex hides the others).
            ax.xaxis.set_tick_params(labelbottom=True)
        for ax, task in zip(axes.flat, order):
            mu_t, sigma_t, label = g.mu, g.sigma, None
            if la.preact_mean is not None and la.preact_std is not None and la.preact_std[task] > 0:
                mu_t, sigma_t = float(la.preact_mean[task]), float(la.preact_std[task])
            activation_curves(g.alpha, g.hinges, ax=ax, mu=mu_t, sigma=sigma_t, xlim=(lo, hi), palette=palette,
                              labels=analysis.task_names, highlight=int(task), relu=False, legend=False,
                              density_label=label)
            ax.set_title(short_label(analysis.task_names[task], 20), fontsize=6.5, pad=2)
            ax.set_xlabel("")
            ax.set_ylabel("")
            ax.tick_params(labelsize=5.5)
        fig.supxlabel("pre-activation x", fontsize=7)
        fig.supylabel("Fₜ(x)", fontsize=7)
        shade = ("the task's recorded pre-activation density" if la.preact_mean is not None
                 else measure_label(g.mu, g.sigma))
        note = (f"layer {la.index + 1} · {la.name}: each task in its colour over all others in grey; "
                f"shaded: {shade}")
        if pages > 1:
            if page == 1:
                note += f"\nfirst {n} of {analysis.num_tasks} tasks in clustered order (page 1 of {pages}; "
            else:
                note += (f"\ntasks {first + 1}–{first + n} of {analysis.num_tasks} in clustered order "
                         f"(page {page} of {pages}; ")
            note += "the other pages hold the rest)"
        fig.suptitle(note, fontsize=7)
    return fig
