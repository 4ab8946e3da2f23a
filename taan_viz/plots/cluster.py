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
from taan_viz.embedding import classical_mds
from taan_viz.plots._style import category_color, measure_label, paper_style, readable_color, short_label

__all__ = ["clustermap", "dendrogram", "embedding", "plot_dendrograms", "plot_embeddings"]

_LABELS_MAX = 60
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _link_colors(clustering: Clustering, clusters: np.ndarray | None, neutral: str) -> dict[int, str]:
    """Colour of every merge node: its cluster's colour when all its leaves share one cluster."""
    t = clustering.num_tasks
    if clusters is None:
        return {}
    owner: dict[int, int | None] = {i: int(clusters[i]) for i in range(t)}
    out = {}
    for k, (a, b, _, _) in enumerate(clustering.linkage):
        ca, cb = owner[int(a)], owner[int(b)]
        owner[t + k] = ca if ca is not None and ca == cb else None
        out[t + k] = category_color(owner[t + k]) if owner[t + k] is not None else neutral
    return out


def dendrogram(
    clustering: Clustering,
    *,
    ax=None,
    orientation: str = "left",
    clusters: Sequence[int] | None = None,
    cut: float | None = None,
    labels: bool | None = None,
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
        Task names at the leaves; default when T <= 60.
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
    cl = None if clusters is None else np.asarray(clusters)
    show = t <= _LABELS_MAX if labels is None else labels
    leaf_pos = np.arange(t) * 10 + 5.0
    if t == 1:
        segs, colors, top = [], [], 1.0
    else:
        colors_by_node = _link_colors(clustering, cl, neutral)
        info = _scipy_dendrogram(clustering.linkage, no_plot=True,
                                 link_color_func=lambda k: colors_by_node.get(k, neutral))
        assert list(info["leaves"]) == clustering.order.tolist()
        segs = []
        for xs, ys in zip(info["icoord"], info["dcoord"]):
            pts = np.column_stack([xs, ys]) if orientation == "top" else np.column_stack([ys, xs])
            segs.append(pts)
        colors = info["color_list"]
        top = float(clustering.linkage[:, 2].max()) or 1.0
    lw = linewidth or (0.9 if t <= 60 else 0.4)
    ax.add_collection(LineCollection(segs, colors=colors, linewidths=lw, capstyle="butt"))
    span = (0.0, t * 10.0)
    height = (0.0, top * 1.04)
    names = [short_label(clustering.labels[i]) for i in clustering.order]
    name_colors = ["black" if cl is None else readable_color(category_color(cl[i])) for i in clustering.order]
    if orientation == "top":
        ax.set_xlim(*span)
        ax.set_ylim(*height)
        ax.set_xticks(leaf_pos if show else [])
        if show:
            ax.set_xticklabels(names, rotation=90)
            for lab, c in zip(ax.get_xticklabels(), name_colors):
                lab.set_color(c)
        ax.spines[["top", "right", "bottom"]].set_visible(False)
        ax.tick_params(axis="x", length=0)
        if cut is not None:
            ax.axhline(cut, color="0.5", linewidth=0.6, linestyle=(0, (3, 2)))
    else:
        ax.set_ylim(span[1], span[0])
        ax.set_xlim(height[1], height[0])
        ax.yaxis.tick_right()
        ax.set_yticks(leaf_pos if show else [])
        if show:
            ax.set_yticklabels(names)
            for lab, c in zip(ax.get_yticklabels(), name_colors):
                lab.set_color(c)
        ax.spines[["top", "right", "left"]].set_visible(False)
        ax.tick_params(axis="y", length=0, pad=1)
        if cut is not None:
            ax.axvline(cut, color="0.5", linewidth=0.6, linestyle=(0, (3, 2)))
    return ax


def plot_dendrograms(
    analysis: Analysis,
    *,
    layers: Sequence[int | str] | None = None,
    n_clusters: int | None = None,
    threshold: float = 0.1,
    figsize: tuple[float, float] | None = None,
):
    """One dendrogram per analysed layer, clusters coloured consistently across layers.

    Parameters
    ----------
    analysis : Analysis
    layers : sequence of int or str, optional
    n_clusters : int, optional
        Clusters per layer by count; by default the trees are cut at ``threshold`` times each
        layer's RMS activation norm (dashed line).
    threshold : float, default 0.1
    figsize : (float, float), optional

    Returns
    -------
    matplotlib Figure
    """
    from matplotlib.figure import Figure

    chosen = analysis.select(layers)
    labels = analysis.cluster_labels(n_clusters=n_clusters, threshold=threshold)
    by_id = {id(la): lab for la, lab in zip(analysis.layers, labels)}
    t = analysis.num_tasks
    n = len(chosen)
    if figsize is None:
        figsize = (min(7.2, 2.4 * n + 0.2), min(9.0, max(2.2, 0.13 * min(t, _LABELS_MAX) + 0.9)))
    with paper_style():
        fig = Figure(figsize=figsize, layout="constrained")
        axes = fig.subplots(1, n, squeeze=False)[0]
        for ax, la in zip(axes, chosen):
            cut = None if n_clusters is not None else threshold * la.geometry.rms_norm
            dendrogram(la.clustering, ax=ax, clusters=by_id[id(la)], cut=cut)
            coph = la.clustering.cophenetic_correlation
            k = len(np.unique(by_id[id(la)]))
            extra = "" if np.isnan(coph) else f" · cophenetic r {coph:.2f}"
            if la.ari is not None:
                extra += f" · ARI {la.ari:.2f}"
            ax.set_title(f"layer {la.index + 1} · {short_label(la.name, 28)}\n{k} cluster{'s' * (k != 1)}{extra}",
                         fontsize=7.5)
            ax.set_xlabel("merge height d(Fₛ, Fₜ)")
        how = (f"{n_clusters} clusters per layer" if n_clusters is not None else
               f"dashed: cut at {threshold:g} × the layer's RMS activation norm")
        ari = "; ARI: adjusted Rand index of the planted groups vs. as many clusters" if analysis.has_planted else ""
        fig.supxlabel(f"{analysis.method}-linkage clustering of d(Fₛ, Fₜ); {how};\n"
                      f"colours follow a cluster across layers{ari}", fontsize=6.5, color="0.35")
    return fig


def clustermap(
    analysis: Analysis,
    layer: int | str = -1,
    *,
    metric: str = "distance",
    n_clusters: int | None = None,
    threshold: float = 0.1,
    annot: bool | None = None,
    figsize: tuple[float, float] | None = None,
):
    """One layer's matrix in clustered order, framed by its dendrogram on the left and top.

    Parameters
    ----------
    analysis : Analysis
    layer : int or str, default -1
    metric : str, default "distance"
        The matrix drawn (the tree is always built on the distance).
    n_clusters, threshold
        Cluster colouring of the links, as in :func:`plot_dendrograms`.
    annot : bool, optional
    figsize : (float, float), optional

    Returns
    -------
    matplotlib Figure
    """
    from matplotlib.figure import Figure

    from taan_viz.plots.heatmap import heatmap, metric_norm

    check_metric(metric)
    la = analysis.layer(layer)
    k = analysis.layers.index(la)
    clusters = analysis.cluster_labels(n_clusters=n_clusters, threshold=threshold)[k]
    order = la.clustering.order
    mat = la.geometry.matrix(metric)[np.ix_(order, order)]
    names = [analysis.task_names[i] for i in order]
    t = analysis.num_tasks
    if figsize is None:
        side = 4.6 if t <= 40 else 5.2
        figsize = (side + 0.9, side)
    cut = None if n_clusters is not None else threshold * la.geometry.rms_norm
    with paper_style():
        fig = Figure(figsize=figsize, layout="constrained")
        grid = fig.add_gridspec(2, 3, width_ratios=[0.22, 1.0, 0.045], height_ratios=[0.22, 1.0],
                                wspace=0.01, hspace=0.01)
        ax_map = fig.add_subplot(grid[1, 1])
        ax_top = fig.add_subplot(grid[0, 1])
        ax_left = fig.add_subplot(grid[1, 0])
        ax_bar = fig.add_subplot(grid[1, 2])
        cmap, norm = metric_norm(metric, [mat])
        heatmap(mat, labels=names, ax=ax_map, metric=metric, cmap=cmap, norm=norm, annot=annot, cbar=False)
        # Fill the grid cell so that the dendrograms' leaves line up with the rows and columns.
        ax_map.set_aspect("auto")
        ax_map.yaxis.tick_right()
        ax_map.set_yticks(np.arange(t) if t <= 40 else [])
        if t <= 40:
            ax_map.set_yticklabels([short_label(n) for n in names])
            for lab, c in zip(ax_map.get_yticklabels(), [readable_color(category_color(clusters[i])) for i in order]):
                lab.set_color(c)
        dendrogram(la.clustering, ax=ax_left, orientation="left", clusters=clusters, cut=cut, labels=False)
        dendrogram(la.clustering, ax=ax_top, orientation="top", clusters=clusters, cut=cut, labels=False)
        for ax in (ax_left, ax_top):
            ax.set_axis_off()
        bar = fig.colorbar(ax_map.images[0], cax=ax_bar, label=METRICS[metric][0])
        bar.outline.set_visible(False)
        ax_top.set_title(f"layer {la.index + 1} · {la.name}: {analysis.method}-linkage clustering, "
                         "x ~ " + measure_label(la.geometry.mu, la.geometry.sigma), fontsize=8)
    return fig


def embedding(
    coords,
    *,
    ax=None,
    labels: Sequence[str] | None = None,
    clusters: Sequence[int] | None = None,
    groups: Sequence[int] | None = None,
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
    annotate : bool, optional
        Write task names next to the points; default when T <= 8 (more names collide).

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
    cl = np.zeros(t, dtype=int) if clusters is None else np.asarray(clusters)
    gr = np.zeros(t, dtype=int) if groups is None else np.asarray(groups)
    uniq_groups = list(dict.fromkeys(gr.tolist()))
    size = 22 if t <= 60 else 8
    for g in uniq_groups:
        sel = gr == g
        ax.scatter(xy[sel, 0], xy[sel, 1], s=size, c=[category_color(c) for c in cl[sel]],
                   marker=_MARKERS[uniq_groups.index(g) % len(_MARKERS)], edgecolors="white",
                   linewidths=0.4, zorder=3)
    if annotate is None:
        annotate = t <= 8
    if annotate and labels is not None:
        # Points closer than 4 % of the plot's extent share one label ("name +k"), so that
        # coinciding tasks do not print over each other.
        extent = float(np.ptp(xy, axis=0).max()) if t > 1 else 1.0
        anchors: list[list] = []
        for i in np.lexsort((xy[:, 1], xy[:, 0])):
            for anchor in anchors:
                if np.hypot(*(xy[i] - xy[anchor[0]])) <= 0.04 * (extent or 1.0):
                    anchor[1] += 1
                    break
            else:
                anchors.append([i, 0])
        for i, extra in anchors:
            text = short_label(labels[i], 16) + (f" +{extra}" if extra else "")
            ax.annotate(text, tuple(xy[i]), xytext=(3, 2), textcoords="offset points", fontsize=5.5, color="0.2")
    ax.set_aspect("equal", adjustable="datalim")
    ax.margins(0.12)
    return ax


def plot_embeddings(
    analysis: Analysis,
    *,
    layers: Sequence[int | str] | None = None,
    n_clusters: int | None = None,
    threshold: float = 0.1,
    figsize: tuple[float, float] | None = None,
):
    """Classical MDS of each analysed layer's distances: tasks as points, coloured by cluster,
    marker shape by planted group when the checkpoint has ground truth.

    Returns
    -------
    matplotlib Figure
    """
    from matplotlib.figure import Figure

    chosen: list[LayerAnalysis] = analysis.select(layers)
    labels = analysis.cluster_labels(n_clusters=n_clusters, threshold=threshold)
    by_id = {id(la): lab for la, lab in zip(analysis.layers, labels)}
    n = len(chosen)
    if figsize is None:
        figsize = (min(7.2, 2.4 * n + 0.2), min(7.2, 2.4 * n + 0.2) / n + 0.55)
    with paper_style():
        fig = Figure(figsize=figsize, layout="constrained")
        axes = fig.subplots(1, n, squeeze=False)[0]
        for ax, la in zip(axes, chosen):
            coords, explained = classical_mds(la.geometry.distance, 2)
            embedding(coords, ax=ax, labels=analysis.task_names, clusters=by_id[id(la)], groups=la.planted)
            ax.set_title(f"layer {la.index + 1} · {short_label(la.name, 28)}")
            ax.set_xlabel(f"MDS 1 ({100 * explained[0]:.0f} %)")
            ax.set_ylabel(f"MDS 2 ({100 * explained[1]:.0f} %)")
            ax.tick_params(labelsize=6)
        note = "colour: cluster"
        if any(la.planted is not None for la in chosen):
            note += "; marker: planted group"
        fig.supxlabel(f"classical MDS of d(Fₛ, Fₜ) per layer ({note}); distances between points "
                      "approximate functional distances", fontsize=6.5, color="0.35")
    return fig
