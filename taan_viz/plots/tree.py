"""The sharing tree drawn as a network diagram: the hard-sharing architecture a TAAN implies.

Columns are depths (input, each task-adaptive layer, the task heads); each box is a group of
tasks whose activations at that layer are close enough to share it; a box connects to the box
of the previous layer that contains it, so the picture reads as a branching multi-task network.
"""

from __future__ import annotations

import numpy as np

from taan_viz.plots._style import (
    LABEL_ROW_PT,
    SINGLE_RUN_NOTE,
    label_fontsize,
    paper_style,
    short_label,
    show_labels,
    wrap_to_width,
)
from taan_viz.sharing import SharingTree

__all__ = ["plot_sharing_tree", "tree_figure"]

# Tasks beyond which lines and dots get thinner (names follow the labels rule).
_THIN = 60


def _box_colors(tree: SharingTree, palette, neutral: str) -> list[dict[int, str]]:
    """Colour of every group: the colour its tasks share in the palette, or ``neutral`` while
    the group still holds tasks of several colours (it branches further down)."""
    out = []
    for row in tree.groups:
        colors = {}
        for g in np.unique(row):
            keys = np.unique(palette.keys[row == g])
            colors[int(g)] = palette.key_color(int(keys[0])) if len(keys) == 1 else neutral
        out.append(colors)
    return out


def _tree_palette(tree: SharingTree):
    from taan_viz.palette import task_palette

    names = [f"{l + 1} ({n})" for l, n in enumerate(tree.layer_names)]
    return task_palette(list(tree.groups), names, order=tree.order)


def draw_tree_boxes(ax, tree: SharingTree, pos: np.ndarray, *, width: float, pad: float, face, edge=None,
                    label=None) -> tuple[list, list]:
    """The boxes of a sharing tree on ``ax``, shared by :func:`plot_sharing_tree` and the
    consensus tree: the input spanning every task, then per layer (column l + 1) one rounded box
    per group over its tasks' rows, each joined to the box before it by a straight connector.

    Parameters
    ----------
    ax : matplotlib Axes
    tree : SharingTree
    pos : (T,) array
        Row of each task.
    width, pad : float
        Box width (data units) and the room above the first and below the last row of a box.
    face : callable (l, g) -> colour
        Fill of group g of layer l.
    edge : dict, optional
        Edge properties of the group boxes (default: none).
    label : callable (ax, l, g, members, x, centre, rows, colour), optional
        Draws what the box of group g of layer l says: ``members`` are its tasks, (x, centre)
        its middle, ``rows`` its height in rows (last minus first).

    Returns
    -------
    segs, seg_colors : list
        The connectors as line segments and their boxes' colours, for the caller's own
        LineCollection with the head lines.
    """
    from matplotlib.patches import FancyBboxPatch

    t = len(pos)
    style = "round,pad=0,rounding_size=0.06"
    edge = {"edgecolor": "none"} if edge is None else edge
    ax.add_patch(FancyBboxPatch((-width / 2, -pad), width, t - 1 + 2 * pad, boxstyle=style, facecolor="0.3",
                                edgecolor="none", zorder=3))
    segs, seg_colors = [], []
    for l in range(tree.num_layers):
        x = l + 1
        row = tree.groups[l]
        for g in np.unique(row):
            members = np.flatnonzero(row == g)
            lo, hi = pos[members].min(), pos[members].max()
            centre = 0.5 * (lo + hi)
            color = face(l, int(g))
            ax.add_patch(FancyBboxPatch((x - width / 2, lo - pad), width, hi - lo + 2 * pad, boxstyle=style,
                                        facecolor=color, zorder=3, **edge))
            if label is not None:
                label(ax, l, int(g), members, x, centre, hi - lo, color)
            # Connector: straight from the parent box, which spans this group's rows.
            segs.append([(x - 1 + width / 2, centre), (x - width / 2, centre)])
            seg_colors.append(color)
    return segs, seg_colors


def tree_figure(tree: SharingTree, *, names: bool | None = None, figsize: tuple[float, float] | None = None):
    """A Figure sized to ``tree`` (one row per task when names are shown), with one Axes for
    :func:`plot_sharing_tree`; returns ``(fig, ax)``."""
    from matplotlib.figure import Figure

    t, depth = len(tree.task_names), tree.num_layers
    show = show_labels("auto", t) if names is None else names
    if figsize is None:
        rows = t * LABEL_ROW_PT / 72 if show else 40 * 0.12
        # + the column headings and the 3 to 4 lines of the note below
        figsize = (min(7.2, 1.05 * (depth + 1) + (1.5 if show else 0.6)), max(2.0, rows + 1.0) + 0.45)
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def plot_sharing_tree(
    tree: SharingTree,
    *,
    ax=None,
    layer_labels: list[str] | None = None,
    names: bool | None = None,
    palette=None,
    neutral: str = "0.55",
    single_run: bool = True,
    note: str | None = None,
):
    """Draw a :class:`~taan_viz.sharing.SharingTree`.

    Parameters
    ----------
    tree : SharingTree
    ax : matplotlib Axes, optional
        Defaults to the current Axes, like every axes-level function; :func:`tree_figure`
        makes a Figure sized to the tree.
    layer_labels : list of str, optional
        Column headings of the layers; ``"layer l\\nname"`` by default.
    names : bool, optional
        Task names at the heads; default when T <= 100, in a font that fits a row.
    palette : TaskPalette, optional
        Colours of the tasks (:meth:`Analysis.palette`), so that a task has one colour in all
        figures; by default made from the tree's groups by the same rule.
    neutral : str
        Colour of groups that still hold tasks of several colours.
    single_run : bool, default True
        The note's last line says that one run cannot tell how stable its groups are, and how
        to find out (:data:`~taan_viz.plots._style.SINGLE_RUN_NOTE`). False where the tree sits
        beside the consensus of several runs.
    note : str, optional
        A further line of the note, e.g. :meth:`Analysis.separation_note` (which layers' groups
        are not separated).

    Returns
    -------
    matplotlib Axes
    """
    from matplotlib.collections import LineCollection

    t = len(tree.task_names)
    depth = tree.num_layers
    show = show_labels("auto", t) if names is None else names
    if layer_labels is None:
        layer_labels = [f"layer {l + 1}\n{short_label(n, 16)}" for l, n in enumerate(tree.layer_names)]
    if len(layer_labels) != depth:
        raise ValueError(f"layer_labels must have {depth} entries (one per layer), got {len(layer_labels)}")
    palette = _tree_palette(tree) if palette is None else palette
    if palette.num_tasks != t:
        raise ValueError(f"palette must colour {t} tasks (one per task of the tree), got {palette.num_tasks}")
    with paper_style():
        if ax is None:
            import matplotlib.pyplot as plt

            ax = plt.gca()
        pos = np.empty(t)
        pos[tree.order] = np.arange(t)
        colors = _box_colors(tree, palette, neutral)
        width = 0.22
        pad = 0.32 if t <= _THIN else 0.45
        def count(ax, l, g, members, x, centre, rows, color):
            if len(members) > 1 and rows >= 1:
                ax.text(x, centre, str(len(members)), ha="center", va="center", fontsize=5.5, color="white",
                        rotation=90 if rows < 2 else 0, zorder=4)

        segs, seg_colors = draw_tree_boxes(ax, tree, pos, width=width, pad=pad,
                                           face=lambda l, g: colors[l][g], label=count)
        heads = depth + 1
        for task in range(t):
            y = pos[task]
            segs.append([(depth + width / 2, y), (heads - 0.12, y)])
            seg_colors.append(palette.color(task))
        ax.add_collection(LineCollection(segs, colors=seg_colors, linewidths=1.0 if t <= _THIN else 0.5,
                                         zorder=2))
        # Heads in the tasks' own colours, with the palette's second encoding as marker.
        for m in dict.fromkeys(palette.marker(i) for i in range(t)):
            sel = [i for i in range(t) if palette.marker(i) == m]
            ax.scatter(np.full(len(sel), heads - 0.1), pos[sel], s=9 if t <= _THIN else 4, marker=m,
                       c=[palette.color(i) for i in sel], zorder=4, linewidths=0)
        if show:
            height_pt = ax.get_position().height * ax.figure.get_size_inches()[1] * 72
            size = label_fontsize(0.9 * height_pt / max(t, 1), largest=6.5)
            for task in range(t):
                ax.text(heads, pos[task], short_label(tree.task_names[task], 24), ha="left", va="center",
                        fontsize=size)
        ax.set_xlim(-0.4, heads + (1.6 if show else 0.3))
        ax.set_ylim(t - 1 + pad + 0.2, -pad - 0.2)
        ax.set_xticks(np.arange(heads + 1), ["input"] + list(layer_labels) + ["task heads"])
        ax.xaxis.tick_top()
        ax.tick_params(axis="x", length=0, labelsize=6.5)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("left" if label.get_text() == "task heads" else "center")
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        rule = (f"every two of its tasks d(Fₛ, Fₜ) ≤ {tree.threshold:g} × the layer's RMS activation norm"
                if tree.relative else f"every two of its tasks d(Fₛ, Fₜ) ≤ {tree.threshold:g}")
        counts = " → ".join(str(k) for k in tree.num_groups)
        text = (f"boxes: groups of tasks that can share the layer ({rule});\n"
                f"groups per layer {counts}; numbers: tasks per group; {palette.describe()}"
                + ("" if show else f"; {t} task heads (names: --labels all, or the export)")
                + (f"\n{note}" if note else "") + (f"\n{SINGLE_RUN_NOTE}" if single_run else ""))
        ax.set_xlabel(wrap_to_width(text, ax.figure.get_figwidth() * 0.95, 6.5), fontsize=6.5, color="0.35")
    return ax
