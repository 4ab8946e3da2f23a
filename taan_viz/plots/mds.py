"""The tasks as points of a plane (classical MDS of a layer's distances), one map per layer,
with their names placed so that they do not overlap.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from taan_viz.analysis import Analysis, LayerAnalysis
from taan_viz.palette import MARKERS as _MARKERS
from taan_viz.plots._style import (
    add_caption,
    NAME_GID,
    name_texts,
    paper_style,
    short_label,
    show_labels,
    text_width_pt,
)
from taan_viz.plots.dendrogram import _task_keys

# Beyond this many tasks a map names none of them unless asked (labels="all").
_EMBEDDING_NAMED_MAX = 8

__all__ = ["embedding", "place_labels", "plot_embeddings"]


def embedding(
    coords,
    *,
    ax=None,
    names: Sequence[str] | None = None,
    clusters: Sequence[int] | None = None,
    groups: Sequence[int] | None = None,
    palette=None,
    labels: "str | bool | Sequence[str]" = "auto",
    annotate: bool | None = None,
):
    """Scatter of task coordinates (e.g. classical MDS), coloured by cluster, shaped by group.

    Parameters
    ----------
    coords : array-like of shape (T, 2)
    ax : matplotlib Axes, optional
    names : sequence of str, optional
        The tasks' names.
    clusters : sequence of int, optional
        Colour of each task (Okabe-Ito by cluster).
    groups : sequence of int, optional
        Marker of each task (e.g. planted groups), so agreement with colours is visible.
    palette : TaskPalette, optional
        Colour of each task (overrides ``clusters``); when the palette needs its second
        encoding (more than 8 colour groups) it also sets the markers, overriding ``groups``.
    labels : {"auto", "all", "none"} or bool, default "auto"
        Write ``names`` next to the points where they overlap no other name or point
        (:func:`place_labels`); "auto": up to 8 tasks.
    annotate : bool, optional
        Deprecated name of ``labels`` (True: "all", False: "none").

    Returns
    -------
    matplotlib Axes
    """
    if not isinstance(labels, (str, bool)) and labels is not None:
        # The names used to be passed as labels; labels is now the rule of every figure.
        import warnings

        warnings.warn("embedding(labels=<names>) is deprecated: pass the names as names= (labels is now "
                      "'auto', 'all' or 'none', as in every figure)", DeprecationWarning, stacklevel=2)
        names, labels = labels, "auto"
    if annotate is not None:
        import warnings

        warnings.warn("embedding(annotate=...) is deprecated: use labels='all' or 'none'", DeprecationWarning,
                      stacklevel=2)
        labels = bool(annotate)
    xy = np.asarray(coords, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"coords must have shape (T, 2), got {xy.shape}")
    t = xy.shape[0]
    for name, seq in (("names", names), ("clusters", clusters), ("groups", groups)):
        if seq is not None and len(seq) != t:
            raise ValueError(f"{name} must have {t} entries (one per task), got {len(seq)}")
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    keys, color_of = _task_keys(t, clusters, palette)
    keys = np.zeros(t, dtype=int) if keys is None else keys
    if palette is not None and palette.encoded:
        markers = [palette.marker(i) for i in range(t)]
    else:
        gr = np.zeros(t, dtype=int) if groups is None else np.asarray(groups)
        uniq_groups = list(dict.fromkeys(gr.tolist()))
        markers = [_MARKERS[uniq_groups.index(g) % len(_MARKERS)] for g in gr.tolist()]
    size = 22 if t <= 60 else 10
    for m in dict.fromkeys(markers):
        sel = np.array([mk == m for mk in markers])
        ax.scatter(xy[sel, 0], xy[sel, 1], s=size, c=[color_of(c) for c in keys[sel]], marker=m,
                   edgecolors="white", linewidths=0.4, zorder=3)
    if names is not None and show_labels(labels, t, auto_max=_EMBEDDING_NAMED_MAX):
        ax.set_aspect("equal", adjustable="datalim")
        ax.margins(0.12)
        # The limits as they will be drawn, so the names are placed in the final frame.
        ax.autoscale_view()
        ax.apply_aspect()
        place_labels(ax, xy, names)
        return ax
    ax.set_aspect("equal", adjustable="datalim")
    ax.margins(0.12)
    return ax


_LABEL_PT = 5.5
# Where a point's name may go, in points from the point: right, left, above, below, then the
# diagonals; (dx, dy, ha, va).
_SPOTS = ((4, 0, "left", "center"), (-4, 0, "right", "center"), (0, 4, "center", "bottom"),
          (0, -4, "center", "top"), (3, 3, "left", "bottom"), (-3, 3, "right", "bottom"),
          (3, -3, "left", "top"), (-3, -3, "right", "top"))


def _merged_labels(xy: np.ndarray, labels: Sequence[str]) -> list[tuple[int, str]]:
    """(point, text) per label: points closer than 4 % of the plot's extent share one label
    ("name +k"), so that coinciding tasks do not print over each other."""
    t = xy.shape[0]
    extent = float(np.ptp(xy, axis=0).max()) if t > 1 else 1.0
    anchors: list[list] = []
    for i in np.lexsort((xy[:, 1], xy[:, 0])):
        for anchor in anchors:
            if np.hypot(*(xy[i] - xy[anchor[0]])) <= 0.04 * (extent or 1.0):
                anchor[1] += 1
                break
        else:
            anchors.append([i, 0])
    return [(int(i), short_label(labels[i], 32) + (f" +{extra}" if extra else "")) for i, extra in anchors]


def place_labels(ax, coords, labels: Sequence[str], *, fontsize: float = _LABEL_PT) -> list[int]:
    """Name the points of ``ax`` where a name overlaps no other name, no point and stays inside
    the Axes; returns the tasks whose name found no such place (and is left out).

    Each name tries the spots of :data:`_SPOTS` around its point in turn and takes the first
    free one, measured in points with the font's metrics under the Axes' current transforms:
    call it once the figure is laid out (:func:`plot_embeddings` does), since the names are
    placed in points from their data points.
    """
    from matplotlib.transforms import Bbox

    xy = np.asarray(coords, dtype=np.float64)
    fig = ax.figure
    scale = 72.0 / fig.dpi
    pts = ax.transData.transform(xy) * scale
    frame = ax.get_window_extent()
    # 3 pt inside the frame: a second layout pass may move it by a fraction of a point.
    frame = Bbox.from_extents(*(np.asarray(frame.extents) * scale + [3.0, 3.0, -3.0, -3.0]))
    radius = 3.0
    taken = [Bbox.from_extents(x - radius, y - radius, x + radius, y + radius) for x, y in pts]
    left_out = []
    for i, text in _merged_labels(xy, labels):
        w, h = 1.05 * text_width_pt(text, fontsize), 1.25 * fontsize
        others = taken[:i] + taken[i + 1:]
        for dx, dy, ha, va in _SPOTS:
            x0 = pts[i, 0] + dx - {"left": 0.0, "center": w / 2, "right": w}[ha]
            y0 = pts[i, 1] + dy - {"bottom": 0.0, "center": h / 2, "top": h}[va]
            box = Bbox.from_extents(x0, y0, x0 + w, y0 + h)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(o) for o in others):
                ax.annotate(text, tuple(xy[i]), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                            fontsize=fontsize, color="0.2", gid=NAME_GID)
                taken.append(box)
                break
        else:
            left_out.append(i)
    return left_out


def _data_aspect(coords: np.ndarray) -> float:
    """Height over width of the points' bounding box, kept within [0.3, 1] (MDS axis 1 always
    spreads at least as far as axis 2)."""
    span = np.ptp(coords, axis=0) if coords.shape[0] > 1 else np.ones(2)
    return float(np.clip(span[1] / span[0], 0.3, 1.0)) if span[0] > 0 else 1.0


def plot_embeddings(
    analysis: Analysis,
    *,
    layers: Sequence[int | str] | None = None,
    n_clusters: int | None = None,
    threshold: float = 0.1,
    palette=None,
    figsize: tuple[float, float] | None = None,
):
    """Classical MDS of each analysed layer's distances: tasks as points in their colours
    (:meth:`Analysis.palette`), marker shape by planted group when the checkpoint has ground
    truth (or the palette's second encoding beyond 8 colour groups).

    Panels keep an equal aspect (a distance reads the same in every direction) and are shaped
    like the points' extent, so the points fill them; up to 3 panels a row.

    Returns
    -------
    matplotlib Figure
    """
    from matplotlib.figure import Figure

    chosen: list[LayerAnalysis] = analysis.select(layers)
    palette = analysis.palette(n_clusters=n_clusters, threshold=threshold) if palette is None else palette
    n = len(chosen)
    maps = [la.geometry.mds(2) for la in chosen]
    ncols = min(n, 3)
    nrows = -(-n // ncols)
    aspect = max(_data_aspect(coords) for coords, _ in maps)
    if figsize is None:
        panel = min(2.4, 7.0 / ncols)
        figsize = (panel * ncols + 0.2, nrows * (panel * aspect + 0.55) + 0.35)
    with paper_style():
        fig = Figure(figsize=figsize, layout="constrained")
        grid = fig.subplots(nrows, ncols, squeeze=False)
        for ax in grid.flat[n:]:
            ax.set_visible(False)
        t = analysis.num_tasks
        for ax, la, (coords, explained) in zip(grid.flat, chosen, maps):
            planted = None if palette.encoded else la.planted
            embedding(coords, ax=ax, names=analysis.task_names, palette=palette, groups=planted, labels="none")
            # Equal aspect with the box (not the limits) adjusted: the panel takes the points'
            # shape instead of padding a thin cloud with empty space.
            ax.set_aspect("equal", adjustable="box")
            lo, hi = coords.min(axis=0), coords.max(axis=0)
            pad = 0.08 * float(max(hi - lo)) if coords.shape[0] > 1 and max(hi - lo) > 0 else 1.0
            half = 0.5 * max(hi[1] - lo[1], (hi[0] - lo[0]) * _data_aspect(coords))
            mid = 0.5 * (lo[1] + hi[1])
            ax.set_xlim(lo[0] - pad, hi[0] + pad)
            ax.set_ylim(mid - half - pad, mid + half + pad)
            ax.set_title(f"layer {la.index + 1} · {short_label(la.name, 28)}")
            ax.set_xlabel(f"MDS 1 ({100 * explained[0]:.0f} %)")
            ax.set_ylabel(f"MDS 2 ({100 * explained[1]:.0f} %)")
            ax.tick_params(labelsize=6)
        note = palette.describe()
        if any(la.planted is not None for la in chosen) and not palette.encoded:
            note += "; marker: planted group"
        caption = ("classical MDS of d(Fₛ, Fₜ) per layer; distances between points approximate functional "
                   f"distances;\n{note}")
        add_caption(fig, caption)
        if t <= _NAMED_MAX:
            # Names where they collide with nothing; when some find no place and every task has
            # its own colour and marker, a legend names them all, and the names are placed
            # again in the panels the legend left.
            # Twice: constrained layout settles on its second pass.
            fig.draw_without_rendering()
            fig.draw_without_rendering()
            left_out = [place_labels(ax, coords, analysis.task_names) for ax, (coords, _) in zip(grid.flat, maps)]
            styles = {(palette.color(i), palette.marker(i)) for i in range(t)}
            if any(left_out) and len(styles) == t:
                for ax in grid.flat[:n]:
                    for text in name_texts(ax):
                        text.remove()
                _task_legend(fig, analysis.task_names, palette)
                fig.draw_without_rendering()
                fig.draw_without_rendering()
                for ax, (coords, _) in zip(grid.flat, maps):
                    place_labels(ax, coords, analysis.task_names)
            elif any(left_out):
                add_caption(fig, caption + "; names that would overlap are left out (the export lists them)")
    return fig


# The MDS maps name their points up to this many tasks (beyond, names crowd the panels).
_NAMED_MAX = 16


def _task_legend(fig, names: Sequence[str], palette) -> None:
    """A legend above the panels with every task's marker, colour and full name."""
    from matplotlib.lines import Line2D

    from taan_viz.plots.curves import _legend_columns

    handles = [Line2D([], [], linestyle="none", marker=palette.marker(i), markersize=4,
                      color=palette.color(i), label=name) for i, name in enumerate(names)]
    # Above the panels: the caption holds the space below them.
    fig.legend(handles=handles, loc="outside upper center", ncol=_legend_columns(list(names), fig.get_figwidth()),
               fontsize=6, handletextpad=0.3, columnspacing=1.2)
