"""Heatmaps of the task-by-task geometry of each layer.

:func:`heatmap` draws one matrix on one Axes (like ``seaborn.heatmap``); :func:`plot_heatmaps`
draws every layer of an :class:`~taan_viz.analysis.Analysis` side by side, with one task order
(the clustering of a reference layer) and, by default, one colour scale and colour bar.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Sequence

import numpy as np

from taan_viz.analysis import METRICS, Analysis, check_metric
from taan_viz.plots._style import (
    DIVERGING_CMAP,
    LABEL_ROW_PT,
    PAPER_RC,
    SEQUENTIAL_CMAP,
    SINGLE_RUN_NOTE,
    add_caption,
    category_color,
    check_labels,
    label_fontsize,
    measure_label,
    paper_style,
    short_label,
    show_labels,
    text_color_for,
    wrap_to_width,
)

__all__ = ["heatmap", "metric_norm", "plot_heatmaps"]

# Above this many tasks, values in the cells stop being readable.
_ANNOT_MAX = 10
# Up to this many tasks the panels sit in one row of a page-wide figure; beyond, each panel
# grows so that every task name gets its row, and panels wrap into a grid.
_TICKS_MAX = 40
_FIGURE_WIDTH_MAX = 12.0
# Beyond this many tasks without names, panels grow with the task count (about a pixel per
# task at 300 dpi by 1000 tasks), up to _PANEL_MAX inches, at most _LARGE_COLUMNS to a row.
_LARGE_T = 150
_PANEL_MAX = 4.0
_LARGE_COLUMNS = 3
# A panel is at most ~1300 px wide at 300 dpi: beyond this many tasks the matrix is drawn as
# the means of k x k blocks (at most _POOL_CELLS a side), which is what the pixels would show,
# at a fraction of the cost of resampling T x T cells (75 s for five panels at T = 5000).
_POOL_CELLS = 1200


def metric_norm(metric: str, values: Sequence[np.ndarray]):
    """Colour map name and ``Normalize`` shared by ``values`` for ``metric``.

    Distances start at 0 on a sequential map; cosines use a diverging map on [-1, 1] centred
    at 0 (the full range, so figures of different checkpoints compare); inner products use a
    sequential map over their range, or a diverging one centred at 0 when they change sign.
    """
    from matplotlib.colors import Normalize, TwoSlopeNorm

    check_metric(metric)
    values = [np.asarray(v) for v in values]
    # Copies of the finite entries only where some are not finite (T x T arrays at large T).
    finite = [v if np.isfinite(v).all() else v[np.isfinite(v)] for v in values]
    lo = min((float(v.min()) for v in finite if v.size), default=0.0)
    hi = max((float(v.max()) for v in finite if v.size), default=1.0)
    if metric == "cosine":
        return DIVERGING_CMAP, Normalize(-1.0, 1.0)
    if metric == "inner-product" and lo < 0 < hi:
        return DIVERGING_CMAP, TwoSlopeNorm(0.0, lo, hi)
    if metric != "inner-product":
        lo = 0.0
    if not hi > lo:
        hi = lo + 1.0
    return SEQUENTIAL_CMAP, Normalize(lo, hi)


def _tick_rotation(names: Sequence[str]) -> int:
    longest = max(len(short_label(n)) for n in names)
    if longest <= 2:
        return 0
    return 45 if longest <= 10 and len(names) <= 12 else 90


def _axes_points(ax) -> tuple[float, float]:
    """Width and height of ``ax`` in points, before layout (a slight overestimate under
    constrained layout, hence the margin taken by the callers)."""
    fig_w, fig_h = ax.figure.get_size_inches()
    pos = ax.get_position()
    return pos.width * fig_w * 72, pos.height * fig_h * 72


def _text_width_pt(text: str, fontsize: float) -> float:
    """Width of one line of ``text`` in points, from the font's metrics (no figure needed)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    return text_to_path.get_text_width_height_descent(text, FontProperties(size=fontsize), ismath=False)[0]


def _panel_titles(heads: Sequence[tuple[int, str]], measures: Sequence[str], width_pt: float,
                  fontsize: float) -> tuple[list[str], float]:
    """Titles of the panels and their font size, each line at most ``width_pt`` points wide.

    ``heads`` are (layer number, layer name), ``measures`` the panels' ``N(mu, sigma²)``. Every
    panel gets the same layout, the first that fits all of them: "layer 1 · name" over
    "x ~ N(...)"; else "layer 1", the name and the measure on three lines, at the font size
    or, when a name is still too wide, one or two points smaller; else the same with names
    cut to the width (the layer number stays whole, and the full name is in the export)."""
    sizes = [fontsize, fontsize - 1, fontsize - 2]

    def fits(lines: Sequence[str], size: float) -> bool:
        # 5 % margin: drawn text is a little wider than the metrics (hinting, kerning).
        return all(1.05 * _text_width_pt(line, size) <= width_pt for line in lines)

    def measure_lines(size: float) -> list[str]:
        with_x = [f"x ~ {m}" for m in measures]
        return with_x if fits(with_x, size) else list(measures)

    two = [f"layer {k} · {name}" for k, name in heads]
    if fits(two, fontsize) and fits([f"x ~ {m}" for m in measures], fontsize):
        return [f"{h}\nx ~ {m}" for h, m in zip(two, measures)], fontsize
    for size in sizes:
        lines = [f"layer {k}" for k, _ in heads] + [n for _, n in heads] + measure_lines(size)
        if fits(lines, size):
            return [f"layer {k}\n{n}\n{m}" for (k, n), m in zip(heads, measure_lines(size))], size
    size = sizes[-1]

    def cut(name: str) -> str:
        while len(name) > 2 and not fits([name], size):
            name = name[:-2] + "\u2026"
        return name

    return [f"layer {k}\n{cut(n)}\n{m}" for (k, n), m in zip(heads, measure_lines(size))], size


def _annot_format(values: np.ndarray) -> str:
    """Format of the cell values, chosen from the data: one decimal more than values 5 % of
    their range apart need to print differently, for cells with room; a narrow cell drops that
    one (:func:`_fit_annotation`), never more. Distances in [0, 1] print as ``0.253`` or
    ``0.25``, never as 0 or 1; cosines close to 1 as ``0.9341`` or ``0.934``."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return "{:.2f}"
    top = float(np.abs(finite).max())
    if top >= 1e4 or 0 < top < 1e-3:
        return "{:.3g}"
    spread = float(finite.max() - finite.min()) or top or 1.0
    decimals = int(min(4, max(0, math.ceil(-math.log10(spread / 20)) + 1)))
    return f"{{:.{decimals}f}}"


def _cell_text(fmt: str, value: float, bare: bool = False) -> str:
    """``value`` in ``fmt``; ``bare`` drops the leading zero of fractions (".25", and "0" for
    a zero), for cells too narrow for "0.25"."""
    text = fmt.format(value)
    # "-0.00" reads as a sign error; zero is zero.
    if text.startswith("-") and text.strip("-0.") == "":
        text = text[1:]
    if bare and text.lstrip("-").startswith("0."):
        text = "0" if text.strip("0.") == "" else text.replace("0.", ".", 1)
    # A true minus sign, not a hyphen.
    return "\u2212" + text[1:] if text.startswith("-") else text


def _annotation_size(texts: Sequence[str], cell_pt: float) -> float:
    """Font size at which the longest of ``texts`` fits a cell of ``cell_pt`` points."""
    chars = max((len(text) for text in texts), default=1)
    # Digits are about 0.55 em wide; keep a 15 % margin and at most 70 % of the height.
    return min(6.5, 0.85 * cell_pt / (0.55 * max(chars, 1)), 0.7 * cell_pt)


def _fit_annotation(fmt: str, values: np.ndarray, cell_pt: float) -> tuple[str, bool, float]:
    """A format, whether to drop leading zeros (:func:`_cell_text`) and a font size whose text
    fits a cell of ``cell_pt`` points.

    Digits come first: a narrow cell loses the leading zero of fractions (".25", when every
    value is one), then one decimal, and only then does the font go below 3.5 pt (to 2.5 pt;
    3.5 pt is 15 pixels high at the 300 dpi of the saved figures)."""
    values = np.asarray(values, dtype=np.float64).ravel()

    def size(f: str, bare: bool) -> float:
        return _annotation_size([_cell_text(f, v, bare) for v in values], cell_pt)

    formats = [fmt]
    if fmt.endswith("f}"):
        decimals = int(fmt[fmt.index(".") + 1:-2])
        if decimals > 0:
            formats.append(f"{{:.{decimals - 1}f}}")
    candidates = []
    for f in formats:
        candidates.append((f, False))
        # Without leading zeros only when every value is a fraction: ".25" beside "1.50" misleads.
        if all(_cell_text(f, v).lstrip("\u2212").startswith("0") for v in values):
            candidates.append((f, True))
    for f, bare in candidates:
        if size(f, bare) >= 3.5:
            return f, bare, size(f, bare)
    # Nothing fits at 3.5 pt: the largest font of the candidates (the first on ties).
    f, bare = max(candidates, key=lambda c: size(*c))
    return f, bare, max(2.5, size(f, bare))


def _block_means(mat: np.ndarray, cells: int = _POOL_CELLS) -> np.ndarray:
    """``mat`` (T, T) as the means of k x k blocks, k = ceil(T / cells) (the last block of
    each axis holds the remainder); ``mat`` itself when T <= cells."""
    t = mat.shape[0]
    k = -(-t // cells)
    if k <= 1:
        return mat
    starts = np.arange(0, t, k)
    sizes = np.diff(np.append(starts, t)).astype(np.float64)
    sums = np.add.reduceat(np.add.reduceat(mat, starts, axis=0), starts, axis=1)
    return sums / np.outer(sizes, sizes)


def _group_strip(ax, groups: np.ndarray, where: str, size: float, colors: Sequence[str] | None = None):
    """A thin strip of group colours along the top or left edge of ``ax``; returns its Axes.

    ``colors`` gives the colour of each group id (0, 1, ...); by default the Okabe-Ito colours
    in order of the distinct ids."""
    from matplotlib.colors import ListedColormap

    ids = np.asarray(groups)
    if colors is None:
        uniq = np.unique(ids)
        codes = np.searchsorted(uniq, ids)
        colors = [category_color(i) for i in range(len(uniq))]
    else:
        codes = ids
    cmap = ListedColormap(list(colors))
    top = len(colors) - 0.5
    t = len(codes)
    # Not shared with ``ax``: a shared axis would give the strip its own copy of every tick,
    # which for many tasks costs more than the rest of the panel. The matrix spans exactly
    # -0.5 .. T - 0.5 on both axes (imshow's cells), so equal limits keep cells aligned.
    if where == "top":
        strip = ax.inset_axes([0.0, 1.0 + size * 0.25, 1.0, size])
        strip.imshow(codes[None, :], cmap=cmap, vmin=-0.5, vmax=top, aspect="auto", interpolation="nearest")
        strip.set_xlim(-0.5, t - 0.5)
    else:
        strip = ax.inset_axes([-size * 1.25, 0.0, size, 1.0])
        strip.imshow(codes[:, None], cmap=cmap, vmin=-0.5, vmax=top, aspect="auto", interpolation="nearest")
        strip.set_ylim(t - 0.5, -0.5)
    strip.set_xticks([])
    strip.set_yticks([])
    for spine in strip.spines.values():
        spine.set_visible(False)
    return strip


def heatmap(
    data,
    *,
    labels: Sequence[str] | None = None,
    ax=None,
    metric: str = "distance",
    cmap=None,
    norm=None,
    annot: bool | None = None,
    fmt: str | None = None,
    groups: Sequence[int] | None = None,
    group_colors: Sequence[str] | None = None,
    cbar: bool = True,
    cbar_kws: dict | None = None,
    annot_kws: dict | None = None,
    xticklabels: bool | None = None,
    yticklabels: bool | None = None,
):
    """Draw a (T, T) task matrix on ``ax``.

    Parameters
    ----------
    data : array-like of shape (T, T)
        Already in the order to draw (see :func:`plot_heatmaps` for clustered order).
    labels : sequence of str, optional
        Task names in the same order as ``data``.
    ax : matplotlib Axes, optional
        Defaults to the current Axes.
    metric : str, default "distance"
        Chooses the colour map and its range (:func:`metric_norm`) and the colour-bar label.
    cmap, norm : optional
        Override the colour map and normalisation.
    annot : bool, optional
        Write the values in the cells; default on for T <= 10. The font and the number of
        decimals are chosen so that a value fits its cell.
    fmt : str or callable, optional
        Format of annotations (``"{:.2f}"``), or a function from a value to its text (drawn
        as it returns it). By default chosen from the data: one decimal more than values 5 %
        of their range apart need to differ, and one fewer (never more) where cells are narrow.
    groups : sequence of int, optional
        Group of each task (same order); drawn as colour strips above and left of the matrix.
    group_colors : sequence of str, optional
        Colour of each group id (``group_colors[g]``); Okabe-Ito colours in id order by default.
    cbar : bool, default True
        Add a colour bar next to ``ax``.
    cbar_kws, annot_kws : dict, optional
        Passed to ``Figure.colorbar`` and ``Axes.text``.
    xticklabels, yticklabels : bool, optional
        Show task names on that axis; by default when T <= 100 and the Axes leaves each name
        at least 3 pt (the font then follows the room of a row).

    Returns
    -------
    matplotlib Axes
    """
    mat = np.asarray(data, dtype=np.float64)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise ValueError(f"data must be a square (T, T) matrix, got shape {mat.shape}")
    t = mat.shape[0]
    names = [str(i) for i in range(t)] if labels is None else [str(n) for n in labels]
    if len(names) != t:
        raise ValueError(f"labels must have {t} entries (one per row of data), got {len(names)}")
    if groups is not None and len(groups) != t:
        raise ValueError(f"groups must have {t} entries (one per task), got {len(groups)}")
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    default_cmap, default_norm = metric_norm(metric, [mat])
    cmap = default_cmap if cmap is None else cmap
    norm = default_norm if norm is None else norm
    # Few tasks: crisp cells. Many: more cells than pixels, where "nearest" aliases into moire;
    # beyond _POOL_CELLS, block means in task coordinates (the strips stay aligned).
    image = ax.imshow(_block_means(mat), cmap=cmap, norm=norm,
                      interpolation="nearest" if t <= 200 else "antialiased", aspect="equal",
                      extent=(-0.5, t - 0.5, t - 0.5, -0.5))
    if t > 200:
        image.set_rasterized(True)
    for spine in ax.spines.values():
        spine.set_visible(False)
    width_pt, height_pt = _axes_points(ax)
    # An equal-aspect square fills the shorter side; 0.85: constrained layout takes some room.
    cell_pt = 0.85 * min(width_pt, height_pt) / max(t, 1)
    fits = show_labels("auto", t) and cell_pt >= 3.0
    show_x = fits if xticklabels is None else xticklabels
    show_y = fits if yticklabels is None else yticklabels
    fontsize = label_fontsize(cell_pt)
    ax.tick_params(length=0, pad=2, labelsize=fontsize)
    ax.set_xticks(np.arange(t) if show_x else [])
    ax.set_yticks(np.arange(t) if show_y else [])
    if show_x:
        rotation = _tick_rotation(names)
        ax.set_xticklabels([short_label(n) for n in names], rotation=rotation,
                           ha="right" if rotation == 45 else "center",
                           va="top", rotation_mode="anchor" if rotation == 45 else "default")
    if show_y:
        ax.set_yticklabels([short_label(n) for n in names])
    if annot is None:
        annot = t <= _ANNOT_MAX
    if annot:
        if callable(fmt):
            text_of = fmt
            size = max(2.5, _annotation_size([fmt(v) for v in mat.ravel()], cell_pt))
        else:
            fmt, bare, size = _fit_annotation(_annot_format(mat) if fmt is None else fmt, mat, cell_pt)
            text_of = partial(_cell_text, fmt, bare=bare)
        kws = {"ha": "center", "va": "center", "fontsize": size}
        kws.update(annot_kws or {})
        colors = image.cmap(image.norm(mat))
        for i in range(t):
            for j in range(t):
                ax.text(j, i, text_of(mat[i, j]), color=text_color_for(colors[i, j]), **kws)
    if groups is not None:
        # Many tasks: a strip a fortieth of the panel, wide enough to see groups of ten tasks.
        size = 0.025 if t > _LARGE_T else max(0.012, min(0.05, 0.6 / t))
        _group_strip(ax, np.asarray(groups), "top", size, group_colors)
        left = _group_strip(ax, np.asarray(groups), "left", size, group_colors)
        if show_y:
            # Names go outside the strip, so they do not cover it.
            ax.set_yticks([])
            left.set_yticks(np.arange(t))
            left.set_yticklabels([short_label(n) for n in names])
            left.tick_params(length=0, pad=2, labelsize=fontsize)
    if cbar:
        kws = {"shrink": 0.8, "label": METRICS[metric][0]}
        kws.update(cbar_kws or {})
        bar = ax.figure.colorbar(image, ax=ax, **kws)
        bar.outline.set_visible(False)
    return ax


def plot_heatmaps(
    analysis: Analysis,
    *,
    metric: str = "distance",
    layers: Sequence[int | str] | None = None,
    order_by: int | str | None = "tree",
    threshold: float = 0.1,
    scale: str = "shared",
    annot: bool | None = None,
    groups: bool = True,
    labels: str = "auto",
    palette=None,
    figsize: tuple[float, float] | None = None,
    caption: bool = True,
    single_run: bool = True,
):
    """One heatmap per layer, tasks in one clustered order, one colour scale.

    Parameters
    ----------
    analysis : Analysis
    metric : {"distance", "squared-distance", "cosine", "inner-product"}
    layers : sequence of int or str, optional
        Layers of ``analysis`` to draw (positions or names); all by default.
    order_by : "tree", int, str or None, default "tree"
        How tasks are ordered, the same in every panel. A layer (position in ``analysis`` or
        name): the leaf order of that layer's clustering. ``"tree"``: the order of the sharing
        tree (the deepest layer's clustering, rearranged so that the groups sharing each
        shallower layer are contiguous, which keeps every panel block-structured). None: the
        checkpoint's task order.
    threshold : float, default 0.1
        Relative sharing threshold for ``order_by="tree"`` and the colour strips.
    scale : {"shared", "layer"}
        One colour scale and colour bar for all panels, or one per panel.
    annot : bool, optional
        Values in the cells; default on for T <= 10.
    groups : bool, default True
        Colour strips with each task's colour (:meth:`Analysis.palette`), the same colours as
        in every other figure of the analysis.
    labels : {"auto", "all", "none"}, default "auto"
        Task names: "auto" up to 100 tasks (panels grow so each name gets its row, and wrap
        into a grid beyond 40 tasks), "all" at any count, "none" never.
    palette : TaskPalette, optional
        Colours of the strips; ``analysis.palette(threshold=threshold)`` by default.
    figsize : (float, float), optional
    caption : bool, default True
        A note under the panels saying how tasks are ordered and which measure is used, and
        which layers' groups are not separated (:meth:`Analysis.separation_note`).

    single_run : bool, default True
        The caption's last line says that one run cannot tell how stable its groups are, and
        how to find out (:data:`~taan_viz.plots._style.SINGLE_RUN_NOTE`). False where the figure
        sits beside the consensus of several runs.

    Returns
    -------
    matplotlib Figure
    """
    from matplotlib.figure import Figure

    check_metric(metric)
    check_labels(labels)
    if scale not in ("shared", "layer"):
        raise ValueError(f"scale must be 'shared' or 'layer', got {scale!r}")
    chosen = analysis.select(layers)
    t = analysis.num_tasks
    ref = None if order_by in (None, "tree") else analysis.layer(order_by)
    if order_by == "tree":
        order = analysis.sharing_tree(threshold).order
    else:
        order = np.arange(t) if ref is None else ref.clustering.order
    names = [analysis.task_names[i] for i in order]
    order = np.asarray(order)

    # Matrices the layers did not hold before this figure are dropped again once read, so that
    # a figure of cosines does not leave five T x T arrays behind (1 GB at T = 5000).
    attr = metric.replace("-", "_")
    held = {id(la) for la in chosen if attr in vars(la.geometry)}

    def read(la, use):
        try:
            return use(la.geometry.matrix(metric))
        finally:
            if id(la) not in held:
                la.geometry.release(metric)

    def reorder(m: np.ndarray) -> np.ndarray:
        # Rows in one take, then the columns of a block of rows at a time in place: one T x T
        # copy (np.ix_ makes two and costs four times as much).
        out = m.take(order, axis=0)
        for i in range(0, len(order), 512):
            out[i:i + 512] = out[i:i + 512].take(order, axis=1)
        return out

    def ordered(la) -> np.ndarray:
        # One layer's matrix at a time (at T = 5000 five ordered copies held 1 GB).
        return read(la, reorder)

    def extremes(m: np.ndarray) -> np.ndarray:
        finite = m if np.isfinite(m).all() else m[np.isfinite(m)]
        return np.array([finite.min(), finite.max()]) if finite.size else finite

    n = len(chosen)
    named = show_labels(labels, t)
    palette = analysis.palette(threshold=threshold) if palette is None and groups else palette
    label_in = max(len(short_label(s)) for s in names) * 0.55 * 6.0 / 72 if named else 0.0
    grown = named and t > _TICKS_MAX
    large = not named and t > _LARGE_T
    if grown:
        # Each name gets its row: the panel side follows the task count.
        panel = t * LABEL_ROW_PT / 72
        ncols = max(1, min(n, int((_FIGURE_WIDTH_MAX - label_in - 0.9) // (panel + 0.25))))
    elif large:
        # No names, so the panel's side is for the cells: it grows with log T from the page
        # size, as far as _LARGE_COLUMNS panels in a row of a 12 in figure allow.
        ncols = min(n, _LARGE_COLUMNS)
        panel = min(_PANEL_MAX, 2.4 + math.log10(t / 100), (_FIGURE_WIDTH_MAX - 0.9) / ncols - 0.45)
    else:
        panel, ncols = None, n
    nrows = -(-n // ncols)
    if order_by == "tree":
        how = (f"tasks ordered by {analysis.method}-linkage clustering of layer "
               f"{max(la.index for la in analysis.layers) + 1}, grouped by the sharing tree")
    elif ref is None:
        how = "task order of the checkpoint"
    else:
        how = f"tasks ordered by {analysis.method}-linkage clustering of layer {ref.index + 1}"
    if not named and t > 1:
        how += f"; {t} tasks, names: --labels all, or the export"
    weak = analysis.separation_note(threshold=threshold) if caption and (groups or order_by == "tree") else None
    note = ((f"{how}; strip {palette.describe()}" if groups else how) + (f"\n{weak}" if weak else "")
            + (f"\n{SINGLE_RUN_NOTE}" if single_run else ""))
    if figsize is None:
        if panel is None:
            # Panels as large as a 7.2 in (two-column) page allows; the labels' length decides
            # the extra room below and left of them.
            rot = _tick_rotation(names) if named else 0
            below = label_in * (1.0 if rot == 90 else 0.72 if rot == 45 else 0.15)
            panel = min(2.4 if n > 1 else 3.4, (7.2 - 0.9 - label_in) / n)
            width, height = min(7.2, panel * n + 0.9 + label_in), panel + 0.6 + below
        elif large:
            width, height = ncols * (panel + 0.45) + 0.9, nrows * (panel + 0.75)
        else:
            width, height = ncols * (panel + 0.25) + label_in + 0.9, nrows * (panel + 0.7)
        # Room for each line of the caption as add_caption wraps it (6.5 pt, 1.2 line spacing).
        lines = wrap_to_width(note, width * 0.96, 6.5).count("\n") + 1 if caption else 0
        figsize = (width, height + lines * 6.5 * 1.2 / 72)
    with paper_style():
        fig = Figure(figsize=figsize, layout="constrained")
        grid = fig.subplots(nrows, ncols, squeeze=False)
        axes = list(grid.flat[:n])
        for ax in grid.flat[n:]:
            ax.set_visible(False)
        # The range does not depend on the order: read it from the layers' own matrices.
        # Cosines have a fixed range; the other metrics' range is read layer by layer.
        shared_cmap, shared_norm = metric_norm(
            metric, [] if metric == "cosine" or scale != "shared" else [read(la, extremes) for la in chosen])
        # Titles centre over their panels, one panel pitch apart: each line must fit a pitch
        # (less a gap), or neighbouring titles run into each other.
        pitch_pt = (fig.get_figwidth() - label_in - 0.9) / ncols * 72
        titles, title_size = _panel_titles(
            [(la.index + 1, short_label(la.name, 28)) for la in chosen],
            [measure_label(la.geometry.mu, la.geometry.sigma) for la in chosen],
            pitch_pt - 8, PAPER_RC["axes.titlesize"])
        # Where each panel sits in its layout box (a colour bar sets it). An equal-aspect panel
        # is narrower or shorter than its box; centred, it moves after constrained layout has
        # measured the title above it, which can then leave the page (by 3 pt at 100 dpi). At
        # the top of the box it stays where it was measured; at the right, beside its bar.
        top_right = (1.0, 1.0)
        fmt, annot_kws = None, None
        if scale == "shared" and (t <= _ANNOT_MAX if annot is None else annot):
            # One format and font of the cell values for every panel of a shared scale, fitted
            # to all their values, so that the panels read alike. Panels have one size, the
            # size heatmap() fits to.
            values = np.concatenate([la.geometry.matrix(metric).ravel() for la in chosen])
            cell_pt = 0.85 * min(_axes_points(axes[0])) / t
            digits, bare, size = _fit_annotation(_annot_format(values), values, cell_pt)
            fmt, annot_kws = partial(_cell_text, digits, bare=bare), {"fontsize": size}
        for k, (la, ax) in enumerate(zip(chosen, axes)):
            mat = ordered(la)
            cmap, norm = (shared_cmap, shared_norm) if scale == "shared" else metric_norm(metric, [mat])
            first_col = k % ncols == 0
            strip = palette.keys[order] if groups else None
            colors = [palette.key_color(g) for g in range(palette.num_keys)] if groups else None
            # Rows and columns share one order, so names left of each row of panels suffice
            # once panels are sized for their names (and halve the text to lay out).
            heatmap(mat, labels=names, ax=ax, metric=metric, cmap=cmap, norm=norm, annot=annot, fmt=fmt,
                    annot_kws=annot_kws,
                    groups=strip, group_colors=colors, cbar=scale == "layer", cbar_kws={"panchor": top_right},
                    xticklabels=named and not grown, yticklabels=named and first_col)
            if named and grown:
                ax.set_xlabel("columns: the rows' tasks, same order", fontsize=6, color="0.35")
            ax.set_title(titles[k], fontsize=title_size, pad=10 if strip is not None else 4)
        if scale == "shared":
            bar = fig.colorbar(axes[-1].images[0], ax=list(grid.flat), shrink=0.85 if nrows == 1 else 0.5,
                               aspect=25, label=METRICS[metric][0], panchor=top_right)
            bar.outline.set_visible(False)
        if not named:
            for ax in axes:
                ax.set_xlabel(f"{t} tasks")
            # Short, so that the rotated label fits beside the panel; the caption says where
            # the names are.
            for ax in axes[::ncols]:
                # Clear of the group strip left of the panel (heatmap() sets its width).
                strip_pt = 1.25 * (0.025 if t > _LARGE_T else max(0.012, min(0.05, 0.6 / t))) * _axes_points(ax)[0]
                ax.set_ylabel(f"{t} tasks", labelpad=strip_pt + 3 if groups else 4)
        if caption:
            add_caption(fig, note)
    return fig
