"""A layer's distances in its own clustered order beside its dendrograms (``clustermap``), and
seaborn's clustermap with the tasks' colours as row colours (``seaborn_clustermap``).
"""

from __future__ import annotations

import numpy as np

from taan_viz.analysis import METRICS, Analysis, check_metric
from taan_viz.plots._style import (
    LABEL_ROW_PT,
    add_caption,
    check_labels,
    draw_names,
    label_fontsize,
    measure_label,
    paper_style,
    readable_color,
    short_label,
    show_labels,
)
from taan_viz.plots.dendrogram import dendrogram

__all__ = ["clustermap", "seaborn_clustermap"]


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
