"""Clusterings of the tasks: dendrograms per layer, a clustermap, and 2-D embeddings (MDS).

Colours mean clusters, and a cluster keeps its colour from layer to layer for as long as it
persists (:meth:`Analysis.cluster_labels`), so a reader can follow a group of tasks through
the depth of the network.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from taan_viz.analysis import METRICS, Analysis, LayerAnalysis, check_metric
from taan_viz.clustering import Clustering
from taan_viz.palette import MARKERS as _MARKERS
from taan_viz.plots._style import (
    LABEL_ROW_PT,
    add_caption,
    category_color,
    NAME_GID,
    check_labels,
    draw_names,
    join_to_width,
    label_fontsize,
    measure_label,
    name_texts,
    paper_style,
    readable_color,
    short_label,
    show_labels,
    text_width_pt,
)

__all__ = ["clustermap", "dendrogram", "embedding", "plot_dendrograms", "plot_embeddings", "seaborn_clustermap"]


def _link_colors(clustering: Clustering, keys: np.ndarray | None, color_of, neutral: str) -> dict[int, str]:
    """Colour of every merge node: its leaves' colour when they all share one colour key."""
    t = clustering.num_tasks
    if keys is None:
        return {}
    owner: dict[int, int | None] = {i: int(keys[i]) for i in range(t)}
    out = {}
    for k, (a, b, _, _) in enumerate(clustering.linkage):
        ca, cb = owner[int(a)], owner[int(b)]
        owner[t + k] = ca if ca is not None and ca == cb else None
        out[t + k] = color_of(owner[t + k]) if owner[t + k] is not None else neutral
    return out


def _task_keys(t: int, clusters, palette) -> tuple[np.ndarray | None, object]:
    """Colour key of each task and the key -> colour function (palette first, then clusters)."""
    if palette is not None:
        if palette.num_tasks != t:
            raise ValueError(f"palette must colour {t} tasks, got {palette.num_tasks}")
        return palette.keys, palette.key_color
    if clusters is not None:
        return np.asarray(clusters), category_color
    return None, category_color


def dendrogram(
    clustering: Clustering,
    *,
    ax=None,
    orientation: str = "left",
    clusters: Sequence[int] | None = None,
    cut: float | None = None,
    labels: bool | None = None,
    palette=None,
    neutral: str = "0.35",
    linewidth: float | None = None,
):
    """Draw a clustering's dendrogram on ``ax``.

    Parameters
    ----------
    clustering : Clustering
    ax : matplotlib Axes, optional
    orientation : {"left", "top"}
        "left": root at the left, leaves (and names) on the right, first leaf at the top;
        "top": root at the top, leaves along the bottom.
    clusters : sequence of int, optional
        Cluster of each task: links inside one cluster and leaf names take its colour.
    cut : float, optional
        Height of the cut that made ``clusters``; drawn as a dashed line.
    labels : bool, optional
        Task names at the leaves; default when T <= 100, in a font that fits the room of a leaf.
    palette : TaskPalette, optional
        Colour of each task (overrides ``clusters``), as in every figure of the analysis.
    neutral : str
        Colour of links joining different clusters.
    linewidth : float, optional

    Returns
    -------
    matplotlib Axes
    """
    from matplotlib.collections import LineCollection
    from scipy.cluster.hierarchy import dendrogram as _scipy_dendrogram

    if orientation not in ("left", "top"):
        raise ValueError(f"orientation must be 'left' or 'top', got {orientation!r}")
    t = clustering.num_tasks
    if clusters is not None and len(clusters) != t:
        raise ValueError(f"clusters must have {t} entries (one per task), got {len(clusters)}")
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    keys, color_of = _task_keys(t, clusters, palette)
    show = show_labels("auto", t) if labels is None else labels
    leaf_pos = np.arange(t) * 10 + 5.0
    if t == 1:
        segs, colors, top = [], [], 1.0
    else:
        colors_by_node = _link_colors(clustering, keys, color_of, neutral)
        info = _scipy_dendrogram(clustering.linkage, no_plot=True,
                                 link_color_func=lambda k: colors_by_node.get(k, neutral))
        assert list(info["leaves"]) == clustering.order.tolist()
        segs = []
        for xs, ys in zip(info["icoord"], info["dcoord"]):
            pts = np.column_stack([xs, ys]) if orientation == "top" else np.column_stack([ys, xs])
            segs.append(pts)
        colors = info["color_list"]
        top = float(clustering.linkage[:, 2].max()) or 1.0
    lw = linewidth or (0.9 if t <= 60 else 0.5)
    ax.add_collection(LineCollection(segs, colors=colors, linewidths=lw, capstyle="butt"))
    span = (0.0, t * 10.0)
    height = (0.0, top * 1.04)
    names = [short_label(clustering.labels[i]) for i in clustering.order]
    name_colors = ["black" if keys is None else readable_color(color_of(keys[i])) for i in clustering.order]
    width_pt, height_pt = (ax.get_position().width * ax.figure.get_size_inches()[0] * 72,
                           ax.get_position().height * ax.figure.get_size_inches()[1] * 72)
    fontsize = label_fontsize(0.9 * (width_pt if orientation == "top" else height_pt) / max(t, 1))
    if orientation == "top":
        ax.set_xlim(*span)
        ax.set_ylim(*height)
        ax.set_xticks([])
        if show:
            draw_names(ax, leaf_pos, names, name_colors, side="bottom", fontsize=fontsize)
        ax.spines[["top", "right", "bottom"]].set_visible(False)
        ax.tick_params(axis="x", length=0)
        if cut is not None:
            ax.axhline(cut, color="0.5", linewidth=0.6, linestyle=(0, (3, 2)))
    else:
        ax.set_ylim(span[1], span[0])
        ax.set_xlim(height[1], height[0])
        ax.set_yticks([])
        if show:
            draw_names(ax, leaf_pos, names, name_colors, side="right", fontsize=fontsize, pad_pt=1.0)
        ax.spines[["top", "right", "left"]].set_visible(False)
        ax.tick_params(axis="y", length=0, pad=1)
        if cut is not None:
            ax.axvline(cut, color="0.5", linewidth=0.6, linestyle=(0, (3, 2)))
    return ax


def _groups_note(analysis: Analysis, n_clusters: int | None, threshold: float) -> str:
    if n_clusters is not None:
        return (f"groups: {n_clusters} clusters cut from each layer's linkage tree (--clusters), "
                "not the sharing tree's groups")
    return (f"groups: the sharing tree's (every two tasks of a group within {threshold:g} × the layer's RMS "
            "activation norm, nested across layers), as in the tree figure")


def plot_dendrograms(
    analysis: Analysis,
    *,
    layers: Sequence[int | str] | None = None,
    n_clusters: int | None = None,
    threshold: float = 0.1,
    labels: str = "auto",
    palette=None,
    figsize: tuple[float, float] | None = None,
):
    """One dendrogram per analysed layer, tasks in their colours (:meth:`Analysis.palette`).

    Parameters
    ----------
    analysis : Analysis
    layers : sequence of int or str, optional
    n_clusters : int, optional
        Groups per layer by count; by default the sharing tree's groups at ``threshold`` (its
        threshold, times each layer's RMS activation norm, dashed).
    threshold : float, default 0.1
    labels : {"auto", "all", "none"}, default "auto"
        Task names at the leaves: "auto" up to 100 tasks, the figure growing with the count.
    palette : TaskPalette, optional
    figsize : (float, float), optional

    Returns
    -------
    matplotlib Figure
    """
    from matplotlib.figure import Figure

    check_labels(labels)
    chosen = analysis.select(layers)
    groups = analysis.cluster_labels(n_clusters=n_clusters, threshold=threshold)
    by_id = {id(la): lab for la, lab in zip(analysis.layers, groups)}
    palette = analysis.palette(n_clusters=n_clusters, threshold=threshold) if palette is None else palette
    t = analysis.num_tasks
    n = len(chosen)
    named = show_labels(labels, t)
    width = min(7.2, 2.4 * n + 0.2) if n <= 3 else 1.6 * n + 0.4
    # A panel is its tree (at least 0.9 in) and the names beside it; panels that do not fit
    # side by side wrap into rows, so no panel is squeezed until its title leaves the figure.
    names_in = (max(text_width_pt(short_label(name), 7.0) for name in analysis.task_names) / 72 + 0.1
                if named and t else 0.0)
    # Constrained layout keeps a title's height, not its width, so the tree itself must be as
    # wide as the title and axis label above and below it.
    tree_in = 1.1
    panel = max(1.5, tree_in + names_in)
    ncols = n if figsize is not None or n * panel <= width else max(1, int(width // panel))
    nrows = -(-n // ncols)
    if figsize is None:
        rows = t if named else min(t, 40)
        figsize = (width if ncols == n else min(width, ncols * panel + 0.2),
                   # + room for the titles and the caption's 3 to 4 lines
                   nrows * (max(2.2, rows * (LABEL_ROW_PT if named else 5.0) / 72 + 1.1)) + 0.5)
    with paper_style():
        fig = Figure(figsize=figsize, layout="constrained")
        grid = fig.subplots(nrows, ncols, squeeze=False)
        for ax in grid.flat[n:]:
            ax.set_visible(False)
        axes = grid.flat[:n]
        for ax, la in zip(axes, chosen):
            cut = None if n_clusters is not None else threshold * la.geometry.rms_norm
            dendrogram(la.clustering, ax=ax, palette=palette, cut=cut, labels=named)
            coph = la.clustering.cophenetic_correlation
            k = len(np.unique(by_id[id(la)]))
            stats = [f"{k} cluster{'s' * (k != 1)}"]
            stats += [] if np.isnan(coph) else [f"cophenetic r {coph:.2f}"]
            stats += [] if la.ari is None else [f"ARI {la.ari:.2f}"]
            # Fitted to the panel: a title wider than the figure would be cut.
            room = max(0.9 * tree_in, 0.95 * figsize[0] / ncols - names_in)
            ax.set_title(join_to_width([f"layer {la.index + 1}", short_label(la.name, 28)], room, 7.5) + "\n"
                         + join_to_width(stats, room, 7.5), fontsize=7.5)
            xlabel = "merge height d(Fₛ, Fₜ)"
            ax.set_xlabel(xlabel if text_width_pt(xlabel, 8) <= room * 72 else "merge height\nd(Fₛ, Fₜ)")
            if not named:
                ax.set_ylabel(f"{t} tasks (names: --labels all, or the export)")
        how = "" if n_clusters is not None else "; dashed: the threshold"
        ari = "; ARI: adjusted Rand index of the planted groups vs. as many clusters" if analysis.has_planted else ""
        add_caption(fig, f"{analysis.method}-linkage clustering of d(Fₛ, Fₜ); {_groups_note(analysis, n_clusters, threshold)}"
                f"{how};\n{palette.describe()}{ari}")
    return fig


def clustermap(
    analysis: Analysis,
    layer: int | str = -1,
    *,
    metric: str = "distance",
    n_clusters: int | None = None,
    threshold: float = 0.1,
    annot: bool | None = None,
    labels: str = "auto",
    palette=None,
    figsize: tuple[float, float] | None = None,
):
    """One layer's matrix in clustered order, framed by its dendrogram on the left and top, with
    a strip of task colours (:meth:`Analysis.palette`) between the tree and the rows.

    Parameters
    ----------
    analysis : Analysis
    layer : int or str, default -1
    metric : str, default "distance"
        The matrix drawn (the tree is always built on the distance).
    n_clusters, threshold
        Groups that colour the links and the strip, as in :func:`plot_dendrograms`.
    annot : bool, optional
    labels : {"auto", "all", "none"}, default "auto"
        Task names on the right: "auto" up to 100 tasks, the figure growing with the count.
    palette : TaskPalette, optional
    figsize : (float, float), optional

    Returns
    -------
    matplotlib Figure
    """
    from matplotlib.figure import Figure

    from taan_viz.plots.heatmap import heatmap, metric_norm

    check_metric(metric)
    check_labels(labels)
    la = analysis.layer(layer)
    palette = analysis.palette(n_clusters=n_clusters, threshold=threshold) if palette is None else palette
    order = la.clustering.order
    mat = la.geometry.matrix(metric)[np.ix_(order, order)]
    names = [analysis.task_names[i] for i in order]
    t = analysis.num_tasks
    named = show_labels(labels, t)
    if figsize is None:
        side = max(4.6 if t <= 40 else 5.2, t * LABEL_ROW_PT / 72 / 0.75 if named else 0.0)
        figsize = (side + 0.9 + (0.9 if named else 0.0), side)
    cut = None if n_clusters is not None else threshold * la.geometry.rms_norm
    with paper_style():
        fig = Figure(figsize=figsize, layout="constrained")
        grid = fig.add_gridspec(2, 3, width_ratios=[0.22, 1.0, 0.045], height_ratios=[0.22, 1.0],
                                wspace=0.04, hspace=0.04)
        ax_map = fig.add_subplot(grid[1, 1])
        ax_top = fig.add_subplot(grid[0, 1])
        ax_left = fig.add_subplot(grid[1, 0])
        ax_bar = fig.add_subplot(grid[1, 2])
        cmap, norm = metric_norm(metric, [mat])
        # Row and column colour strips (like seaborn's row_colors): the tasks' colours.
        heatmap(mat, labels=names, ax=ax_map, metric=metric, cmap=cmap, norm=norm, annot=annot, cbar=False,
                xticklabels=False, yticklabels=False, groups=palette.keys[order],
                group_colors=[palette.key_color(k) for k in range(palette.num_keys)])
        # Fill the grid cell so that the dendrograms' leaves line up with the rows and columns.
        ax_map.set_aspect("auto")
        ax_map.set_yticks([])
        if named:
            size = label_fontsize(0.9 * figsize[1] * 72 * 0.75 / t)
            draw_names(ax_map, np.arange(t), [short_label(n) for n in names],
                       [readable_color(palette.color(int(i))) for i in order], fontsize=size)
        else:
            ax_map.set_ylabel(f"{t} tasks (names: --labels all, or the export)")
            ax_map.yaxis.set_label_position("right")
        dendrogram(la.clustering, ax=ax_left, orientation="left", palette=palette, cut=cut, labels=False)
        dendrogram(la.clustering, ax=ax_top, orientation="top", palette=palette, cut=cut, labels=False)
        for ax in (ax_left, ax_top):
            ax.set_axis_off()
        bar = fig.colorbar(ax_map.images[0], cax=ax_bar, label=METRICS[metric][0])
        bar.outline.set_visible(False)
        ax_top.set_title(f"layer {la.index + 1} · {la.name}: {analysis.method}-linkage clustering, "
                         "x ~ " + measure_label(la.geometry.mu, la.geometry.sigma), fontsize=8)
        add_caption(fig, f"strip and links: {palette.describe()}")
    return fig


def seaborn_clustermap(
    analysis: Analysis,
    layer: int | str = -1,
    *,
    metric: str = "distance",
    n_clusters: int | None = None,
    threshold: float = 0.1,
    labels: str = "auto",
    palette=None,
    figsize: tuple[float, float] | None = None,
    **kwargs,
):
    """One layer's matrix as a ``seaborn.clustermap``, ordered by the analysis' own clustering.

    The rows and columns are :func:`taan_viz.frames.distance_frame` (task names as index and
    columns); both dendrograms are the layer's linkage matrix (``row_linkage``/``col_linkage``),
    so the order is :attr:`Clustering.order`, not a clustering seaborn recomputes; the row and
    column colour strips are the tasks' colours (:meth:`Analysis.palette`), as in every figure.

    Parameters
    ----------
    analysis : Analysis
    layer : int or str, default -1
    metric : str, default "distance"
        The matrix drawn (the tree is always built on the distance).
    n_clusters, threshold
        Groups that colour the strips, as in :func:`clustermap`.
    labels : {"auto", "all", "none"}, default "auto"
        Task names on the rows and columns: "auto" up to 100 tasks.
    palette : TaskPalette, optional
    figsize : (float, float), optional
    **kwargs
        Passed on to ``seaborn.clustermap`` (e.g. ``dendrogram_ratio``, ``cbar_pos``).

    Returns
    -------
    seaborn.matrix.ClusterGrid
        ``.figure`` is a pyplot figure (seaborn's figure-level functions use pyplot): close it
        with ``matplotlib.pyplot.close(grid.figure)``. ``.dendrogram_row.reordered_ind`` is the
        leaf order.
    """
    import seaborn as sns

    from taan_viz.frames import distance_frame
    from taan_viz.plots.heatmap import metric_norm

    check_metric(metric)
    check_labels(labels)
    la = analysis.layer(layer)
    palette = analysis.palette(n_clusters=n_clusters, threshold=threshold) if palette is None else palette
    t = analysis.num_tasks
    if palette.num_tasks != t:
        raise ValueError(f"palette must colour {t} tasks, got {palette.num_tasks}")
    if t < 2:
        raise ValueError(f"seaborn_clustermap needs at least 2 tasks, got {t}")
    frame = distance_frame(analysis, layer, metric)
    frame.index = frame.columns = [short_label(n) for n in analysis.task_names]
    colors = palette.colors
    named = show_labels(labels, t)
    if figsize is None:
        side = max(5.0, t * LABEL_ROW_PT / 72 / 0.7 if named else 0.0)
        figsize = (side + (0.9 if named else 0.0), side + (0.9 if named else 0.0))
    cmap, norm = metric_norm(metric, [frame.to_numpy()])
    options = dict(row_linkage=la.clustering.linkage, col_linkage=la.clustering.linkage,
                   row_colors=colors, col_colors=colors, cmap=cmap, vmin=norm.vmin, vmax=norm.vmax,
                   xticklabels=named, yticklabels=named, figsize=figsize, dendrogram_ratio=0.14,
                   colors_ratio=0.025, cbar_kws={"label": METRICS[metric][0]})
    if metric == "inner-product" and norm.vmin < 0 < norm.vmax:
        options["center"] = 0.0
    options.update(kwargs)
    with paper_style():
        grid = sns.clustermap(frame, **options)
        if named:
            size = label_fontsize(0.9 * figsize[1] * 72 * 0.75 / t)
            order = grid.dendrogram_row.reordered_ind
            for ticks in (grid.ax_heatmap.get_yticklabels(), grid.ax_heatmap.get_xticklabels()):
                for lab, i in zip(ticks, order):
                    lab.set_fontsize(size)
                    lab.set_color(readable_color(palette.color(int(i))))
        grid.ax_heatmap.set_xlabel("")
        grid.ax_heatmap.set_ylabel("")
        # Above the column dendrogram: a suptitle would overlap it (seaborn fills the figure).
        grid.ax_col_dendrogram.set_title(f"layer {la.index + 1} · {la.name}: {analysis.method}-linkage "
                                         "clustering, x ~ " + measure_label(la.geometry.mu, la.geometry.sigma),
                                         fontsize=8)
        # seaborn's tight layout left no room for the title.
        grid.figure.subplots_adjust(top=1.0 - 0.3 / grid.figure.get_size_inches()[1])
        if grid.ax_cbar is not None and "cbar_pos" not in kwargs:
            # The colour bar in the empty corner between the dendrograms, its label above it
            # (seaborn's default position, fixed in figure coordinates, overlaps the trees).
            left, top = grid.ax_row_dendrogram.get_position(), grid.ax_col_dendrogram.get_position()
            w, h = left.width, top.height
            grid.ax_cbar.set_position((left.x0 + 0.15 * w, top.y0 + 0.05 * h, 0.12 * w, 0.7 * h))
            grid.ax_cbar.set_ylabel("")
            grid.ax_cbar.set_title(METRICS[metric][0], fontsize=7, loc="left")
            grid.ax_cbar.tick_params(labelsize=6)
    return grid


def embedding(
    coords,
    *,
    ax=None,
    labels: Sequence[str] | None = None,
    clusters: Sequence[int] | None = None,
    groups: Sequence[int] | None = None,
    palette=None,
    annotate: bool | None = None,
):
    """Scatter of task coordinates (e.g. classical MDS), coloured by cluster, shaped by group.

    Parameters
    ----------
    coords : array-like of shape (T, 2)
    ax : matplotlib Axes, optional
    labels : sequence of str, optional
    clusters : sequence of int, optional
        Colour of each task (Okabe-Ito by cluster).
    groups : sequence of int, optional
        Marker of each task (e.g. planted groups), so agreement with colours is visible.
    palette : TaskPalette, optional
        Colour of each task (overrides ``clusters``); when the palette needs its second
        encoding (more than 8 colour groups) it also sets the markers, overriding ``groups``.
    annotate : bool, optional
        Write task names next to the points where they overlap no other name or point
        (:func:`place_labels`); default when T <= 8.

    Returns
    -------
    matplotlib Axes
    """
    xy = np.asarray(coords, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"coords must have shape (T, 2), got {xy.shape}")
    t = xy.shape[0]
    for name, seq in (("labels", labels), ("clusters", clusters), ("groups", groups)):
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
    if annotate is None:
        annotate = t <= 8
    if annotate and labels is not None:
        ax.set_aspect("equal", adjustable="datalim")
        ax.margins(0.12)
        # The limits as they will be drawn, so the names are placed in the final frame.
        ax.autoscale_view()
        ax.apply_aspect()
        place_labels(ax, xy, labels)
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
            embedding(coords, ax=ax, labels=analysis.task_names, palette=palette, groups=planted, annotate=False)
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
