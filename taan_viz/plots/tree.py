"""The sharing tree drawn as a network diagram: the hard-sharing architecture a TAAN implies.

Columns are depths (input, each task-adaptive layer, the task heads); each box is a group of
tasks whose activations at that layer are close enough to share it; a box connects to the box
of the previous layer that contains it, so the picture reads as a branching multi-task network.
"""

from __future__ import annotations

import numpy as np

from taan_viz.plots._style import OKABE_ITO, category_color, paper_style, short_label
from taan_viz.sharing import SharingTree

__all__ = ["plot_sharing_tree"]

_NAMES_MAX = 60


def _lineage_colors(tree: SharingTree, neutral: str) -> list[dict[int, str]]:
    """Colour of every group, by branch: the deepest layer with at most 8 groups (one colour
    each) names the branches; deeper groups take their branch's colour, shallower groups take
    it when they lead to a single branch and stay neutral while they still branch. Colours
    therefore never repeat for unrelated branches."""
    counts = tree.num_groups
    level = max((l for l, k in enumerate(counts) if k <= len(OKABE_ITO)), default=None)
    out = []
    for l, row in enumerate(tree.groups):
        colors = {}
        for g in np.unique(row):
            if level is None:
                colors[int(g)] = neutral
                continue
            branches = np.unique(tree.groups[level][row == g])
            colors[int(g)] = category_color(int(branches[0])) if len(branches) == 1 else neutral
        out.append(colors)
    return out


def plot_sharing_tree(
    tree: SharingTree,
    *,
    ax=None,
    layer_labels: list[str] | None = None,
    names: bool | None = None,
    neutral: str = "0.55",
    figsize: tuple[float, float] | None = None,
):
    """Draw a :class:`~taan_viz.sharing.SharingTree`.

    Parameters
    ----------
    tree : SharingTree
    ax : matplotlib Axes, optional
        Draw into this Axes; by default a new Figure sized to the tree is made.
    layer_labels : list of str, optional
        Column headings of the layers; ``"layer l\\nname"`` by default.
    names : bool, optional
        Task names at the heads; default when T <= 60.
    neutral : str
        Colour of groups that still branch further down.
    figsize : (float, float), optional
        Size of the new Figure (ignored with ``ax``).

    Returns
    -------
    matplotlib Axes
    """
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch

    t = len(tree.task_names)
    depth = tree.num_layers
    show = t <= _NAMES_MAX if names is None else names
    if layer_labels is None:
        layer_labels = [f"layer {l + 1}\n{short_label(n, 16)}" for l, n in enumerate(tree.layer_names)]
    if len(layer_labels) != depth:
        raise ValueError(f"layer_labels must have {depth} entries (one per layer), got {len(layer_labels)}")
    with paper_style():
        if ax is None:
            if figsize is None:
                rows = min(t, _NAMES_MAX) if show else 40
                figsize = (min(7.2, 1.05 * (depth + 1) + (1.5 if show else 0.6)), 0.17 * rows + 1.0)
            fig = Figure(figsize=figsize, layout="constrained")
            ax = fig.add_subplot()
        pos = np.empty(t)
        pos[tree.order] = np.arange(t)
        colors = _lineage_colors(tree, neutral)
        width = 0.22
        pad = 0.32 if t <= _NAMES_MAX else 0.45
        segs, seg_colors = [], []
        # The input spans every task.
        ax.add_patch(FancyBboxPatch((-width / 2, -pad), width, t - 1 + 2 * pad, boxstyle="round,pad=0,rounding_size=0.06",
                                    facecolor="0.3", edgecolor="none", mutation_aspect=1, zorder=3))
        for l in range(depth):
            x = l + 1
            row = tree.groups[l]
            for g in np.unique(row):
                members = np.flatnonzero(row == g)
                lo, hi = pos[members].min(), pos[members].max()
                centre = 0.5 * (lo + hi)
                color = colors[l][int(g)]
                ax.add_patch(FancyBboxPatch((x - width / 2, lo - pad), width, hi - lo + 2 * pad,
                                            boxstyle="round,pad=0,rounding_size=0.06", facecolor=color,
                                            edgecolor="none", zorder=3))
                if len(members) > 1 and hi - lo >= 1:
                    ax.text(x, centre, str(len(members)), ha="center", va="center", fontsize=5.5,
                            color="white", rotation=90 if hi - lo < 2 else 0, zorder=4)
                # Connector: straight from the parent box, which spans this group's rows.
                segs.append([(x - 1 + width / 2, centre), (x - width / 2, centre)])
                seg_colors.append(color)
        heads = depth + 1
        for task in range(t):
            y = pos[task]
            g = int(tree.groups[-1, task])
            segs.append([(depth + width / 2, y), (heads - 0.12, y)])
            seg_colors.append(colors[-1][g])
        ax.add_collection(LineCollection(segs, colors=seg_colors, linewidths=1.0 if t <= _NAMES_MAX else 0.3,
                                         zorder=2))
        ax.scatter(np.full(t, heads - 0.1), pos, s=9 if t <= _NAMES_MAX else 1,
                   c=[colors[-1][int(tree.groups[-1, i])] for i in range(t)], zorder=4, linewidths=0)
        if show:
            for task in range(t):
                ax.text(heads, pos[task], short_label(tree.task_names[task], 24), ha="left", va="center",
                        fontsize=6.5 if t <= 30 else 5)
        ax.set_xlim(-0.4, heads + (1.6 if show else 0.3))
        ax.set_ylim(t - 1 + pad + 0.2, -pad - 0.2)
        ax.set_xticks(np.arange(heads + 1) if not show else np.arange(heads + 1),
                      ["input"] + list(layer_labels) + ["task heads"])
        ax.xaxis.tick_top()
        ax.tick_params(axis="x", length=0, labelsize=6.5)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("left" if label.get_text() == "task heads" else "center")
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        rule = (f"d(Fₛ, Fₜ) ≤ {tree.threshold:g} × the layer's RMS activation norm" if tree.relative
                else f"d(Fₛ, Fₜ) ≤ {tree.threshold:g}")
        counts = " → ".join(str(k) for k in tree.num_groups)
        ax.set_xlabel(f"boxes: groups of tasks that can share the layer ({rule});\n"
                      f"groups per layer {counts}; numbers: tasks per group; colours: branches",
                      fontsize=6.5, color="0.35")
    return ax
