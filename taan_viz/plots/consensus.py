"""Figures of the consensus of several runs (:mod:`taan_viz.consensus`): how sure the picture is.

- :func:`plot_coclustering`: per layer, the fraction of runs in which two tasks share a cluster.
- :func:`plot_distance_spread`: per layer, the mean distance over runs (lower triangle) and its
  standard deviation (upper triangle).
- :func:`plot_support_tree`: the majority-rule consensus of the runs' sharing trees, each group
  coloured and labelled by its support (the fraction of runs whose own tree holds that group).

All three order the tasks like the consensus tree, so every group is a contiguous block.
"""

from __future__ import annotations

import numpy as np

from taan_viz.consensus import Consensus
from taan_viz.plots._style import SEQUENTIAL_CMAP, add_caption, paper_style, short_label, text_color_for

__all__ = ["plot_coclustering", "plot_distance_spread", "plot_support_tree"]

_NAMES_MAX = 60
_ANNOTATE_MAX = 10
# Support is read like bootstrap support: low values should stand out, high ones recede.
_SUPPORT_CMAP = "RdYlBu"
_SPREAD_CMAP = "magma_r"
# Dark red, for the lines that say a layer's groups differ between runs.
_WARNING_COLOR = "#A50F15"


def _say_unstable(fig, cons: Consensus) -> None:
    """Under the figure, one line per layer whose runs disagree (stability below
    :data:`~taan_viz.consensus.STABILITY_THRESHOLD`); nothing when every layer is stable."""
    if cons.warnings:
        add_caption(fig, "\n".join(cons.warnings), fontsize=7, color=_WARNING_COLOR)


def _tick_fontsize(t: int) -> float:
    return 7 if t <= 12 else 6 if t <= 24 else 5 if t <= 40 else 4


def _layers_by_depth(cons: Consensus) -> list[int]:
    return sorted(range(len(cons.layers)), key=lambda k: cons.layers[k].index)


def _depth_of(cons: Consensus, k: int) -> int:
    return _layers_by_depth(cons).index(k)


def _panel_grid(n: int, t: int):
    from matplotlib.figure import Figure

    cols = min(n, 3)
    rows = -(-n // cols)
    side = 2.3 if t <= 24 else 2.4
    fig = Figure(figsize=(min(7.2, cols * side + 0.9), rows * side + 0.7), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _ticks(ax, names, order) -> None:
    t = len(order)
    if t > _NAMES_MAX:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{t} tasks (consensus-tree order)", fontsize=6)
        return
    labels = [short_label(names[i], 16) for i in order]
    size = _tick_fontsize(t)
    ax.set_xticks(np.arange(t), labels, rotation=90, fontsize=size)
    ax.set_yticks(np.arange(t), labels, fontsize=size)
    ax.tick_params(length=0)


def _group_lines(ax, groups_row: np.ndarray, order: np.ndarray, upper_only: bool = False) -> None:
    """Thin white lines between the consensus tree's groups of the layer."""
    g = groups_row[order]
    cuts = np.flatnonzero(np.diff(g)) + 0.5
    t = len(order)
    for c in cuts:
        ax.axhline(c, color="white", lw=0.6)
        ax.axvline(c, color="white", lw=0.6)
    ax.set_xlim(-0.5, t - 0.5)
    ax.set_ylim(t - 0.5, -0.5)


def _annotate(ax, values: np.ndarray, cmap, norm, fmt: str, mask: np.ndarray | None = None) -> None:
    t = values.shape[0]
    for i in range(t):
        for j in range(t):
            if mask is not None and not mask[i, j]:
                continue
            v = values[i, j]
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=5.5,
                    color=text_color_for(cmap(norm(v))))


def plot_coclustering(cons: Consensus, *, annot: bool | None = None):
    """Per layer, the fraction of runs in which two tasks fall in the same group.

    Parameters
    ----------
    cons : Consensus
    annot : bool, optional
        Write the fractions in the cells (default: at most 10 tasks).

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib
    from matplotlib.colors import Normalize

    t = cons.num_tasks
    order = cons.order
    annot = t <= _ANNOTATE_MAX if annot is None else annot
    cmap = matplotlib.colormaps[SEQUENTIAL_CMAP]
    norm = Normalize(0.0, 1.0)
    with paper_style():
        fig, axes = _panel_grid(len(cons.layers), t)
        image = None
        for k, ax in enumerate(axes):
            la = cons.layers[k]
            c = la.coclustering[np.ix_(order, order)]
            image = ax.imshow(c, cmap=cmap, norm=norm, interpolation="nearest")
            _group_lines(ax, cons.tree.groups[_depth_of(cons, k)], order)
            if annot:
                _annotate(ax, c, cmap, norm, "{:.2g}")
            _ticks(ax, cons.task_names, order)
            ax.set_title(f"layer {la.index + 1}: {short_label(la.name, 18)}\nstability (mean ARI) {la.stability:.2f}")
        bar = fig.colorbar(image, ax=axes, shrink=0.8, aspect=30)
        bar.set_label(f"fraction of {cons.num_runs} runs sharing a group")
        cut = (f"{cons.n_clusters} clusters per layer" if cons.n_clusters is not None
               else f"sharing-tree groups at {cons.threshold:g} × RMS norm")
        fig.suptitle(f"Co-clustering over {cons.num_runs} runs ({cut}); lines: consensus-tree groups")
        _say_unstable(fig, cons)
    return fig


def plot_distance_spread(cons: Consensus, *, annot: bool | None = None):
    """Per layer, the mean functional distance over runs (lower triangle, with the diagonal)
    and its standard deviation over runs (upper triangle); one scale each for all layers.

    Parameters
    ----------
    cons : Consensus
    annot : bool, optional
        Write the values in the cells (default: at most 10 tasks).

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib
    from matplotlib.colors import Normalize

    t = cons.num_tasks
    order = cons.order
    annot = t <= _ANNOTATE_MAX if annot is None else annot
    lower = np.tril(np.ones((t, t), dtype=bool))
    top_mean = max(float(la.mean_distance.max()) for la in cons.layers) or 1.0
    top_std = max(float(la.std_distance.max()) for la in cons.layers) or 1.0
    cmap_m, cmap_s = matplotlib.colormaps[SEQUENTIAL_CMAP], matplotlib.colormaps[_SPREAD_CMAP]
    norm_m, norm_s = Normalize(0.0, top_mean), Normalize(0.0, top_std)
    with paper_style():
        fig, axes = _panel_grid(len(cons.layers), t)
        im_m = im_s = None
        for k, ax in enumerate(axes):
            la = cons.layers[k]
            mean = la.mean_distance[np.ix_(order, order)]
            std = la.std_distance[np.ix_(order, order)]
            im_m = ax.imshow(np.ma.masked_where(~lower, mean), cmap=cmap_m, norm=norm_m, interpolation="nearest")
            im_s = ax.imshow(np.ma.masked_where(lower, std), cmap=cmap_s, norm=norm_s, interpolation="nearest")
            _group_lines(ax, cons.tree.groups[_depth_of(cons, k)], order)
            if annot:
                _annotate(ax, mean, cmap_m, norm_m, "{:.2g}", lower)
                _annotate(ax, std, cmap_s, norm_s, "{:.2g}", ~lower)
            _ticks(ax, cons.task_names, order)
            ax.set_title(f"layer {la.index + 1}: {short_label(la.name, 18)}")
        # The mean's bar next to the panels, the spread's beyond it (the title's order).
        fig.colorbar(im_s, ax=axes, shrink=0.8, aspect=30, pad=0.01).set_label("std over runs (upper triangle)")
        fig.colorbar(im_m, ax=axes, shrink=0.8, aspect=30, pad=0.01).set_label("mean d(Fₛ, Fₜ) (lower triangle)")
        fig.suptitle(f"Functional distance over {cons.num_runs} runs: mean (lower) and spread (upper)")
        _say_unstable(fig, cons)
    return fig


def plot_support_tree(cons: Consensus, *, names: bool | None = None):
    """The majority-rule consensus sharing tree with each group's support.

    Columns are the input, each layer in depth order and the task heads; each box is a group of
    tasks that can share the layer, coloured by its support (the fraction of runs whose own
    sharing tree holds exactly that group at that layer) and labelled with it.

    Parameters
    ----------
    cons : Consensus
    names : bool, optional
        Task names at the heads (default: at most 60 tasks).

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    from taan_viz.plots.tree import draw_tree_boxes

    tree = cons.tree
    t = cons.num_tasks
    depth = tree.num_layers
    show = t <= _NAMES_MAX if names is None else names
    cmap = matplotlib.colormaps[_SUPPORT_CMAP]
    norm = Normalize(0.0, 1.0)
    pos = np.empty(t)
    pos[tree.order] = np.arange(t)
    width, pad = 0.26, 0.34
    with paper_style():
        rows = min(t, _NAMES_MAX) if show else 40
        fig = Figure(figsize=(min(7.2, 1.25 * (depth + 1) + (1.7 if show else 0.9)), 0.17 * rows + 1.3),
                     layout="constrained")
        ax = fig.add_subplot()

        def support(ax, l, g, members, x, centre, rows, color):
            s = float(cons.support[l][g])
            text = "1" if s >= 1 else "0" if s <= 0 else f"{s:.2f}".lstrip("0")
            tall = rows + 2 * pad >= 1.4
            if tall or t <= _NAMES_MAX:
                ax.text(x, centre, text, ha="center", va="center", fontsize=5.5 if tall else 4.5,
                        color=text_color_for(color), rotation=0 if tall else 90, zorder=4)

        segs, _ = draw_tree_boxes(ax, tree, pos, width=width, pad=pad,
                                  face=lambda l, g: cmap(norm(float(cons.support[l][g]))),
                                  edge={"edgecolor": "0.25", "linewidth": 0.3}, label=support)
        heads = depth + 1
        for task in range(t):
            segs.append([(depth + width / 2, pos[task]), (heads - 0.12, pos[task])])
        ax.add_collection(LineCollection(segs, colors="0.45", linewidths=0.8 if t <= _NAMES_MAX else 0.3, zorder=2))
        if show:
            for task in range(t):
                ax.text(heads - 0.08, pos[task], short_label(cons.task_names[task], 24), ha="left", va="center",
                        fontsize=6.5 if t <= 30 else 5)
        ax.set_xlim(-0.4, heads + (1.4 if show else 0.2))
        ax.set_ylim(t - 1 + pad + 0.2, -pad - 0.2)
        layer_labels = [f"layer {cons.layers[k].index + 1}\n{short_label(cons.layers[k].name, 14)}"
                        for k in _layers_by_depth(cons)]
        ax.set_xticks(np.arange(heads + 1), ["input"] + layer_labels + ["task heads"])
        ax.xaxis.tick_top()
        ax.tick_params(axis="x", length=0, labelsize=6.5)
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.5, aspect=25, location="bottom")
        bar.set_label(f"support: fraction of {cons.num_runs} runs whose sharing tree holds the group", fontsize=6.5)
        counts = " → ".join(str(k) for k in tree.num_groups)
        ax.set_title(f"Consensus sharing tree: groups held by more than half of the runs' trees "
                     f"(d ≤ {cons.threshold:g} × RMS norm);\ngroups per layer {counts}", fontsize=7)
        _say_unstable(fig, cons)
    return fig
