"""Dendrograms of the tasks, one per layer.

Colours mean clusters, and a cluster keeps its colour from layer to layer for as long as it
persists (:meth:`Analysis.cluster_labels`), so a reader can follow a group of tasks through
the depth of the network.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from taan_viz.analysis import Analysis
from taan_viz.clustering import Clustering
from taan_viz.plots._style import (
    LABEL_ROW_PT,
    add_caption,
    category_color,
    check_labels,
    draw_names,
    join_to_width,
    label_fontsize,
    paper_style,
    readable_color,
    short_label,
    show_labels,
    text_width_pt,
)


__all__ = ["dendrogram", "plot_dendrograms"]


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
    labels: "str | bool" = "auto",
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
    labels : {"auto", "all", "none"} or bool, default "auto"
        Task names at the leaves ("auto": up to 100 tasks), in a font that fits the room of a
        leaf; the rule of every figure (:func:`taan_viz.plots._style.show_labels`).
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
    show = show_labels(labels, t)
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
