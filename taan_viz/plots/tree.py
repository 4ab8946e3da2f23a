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
# Beyond this many tasks, groups of fewer than T / _ROWS_SHOWN tasks (at least 2) are merged
# into one grey box per run of neighbours with the same parent: a figure of 5 in has room for
# about 200 distinguishable boxes in a column, not for 700 groups of 1 to 3 tasks.
_COLLAPSE_T = 150
_ROWS_SHOWN = 200
SMALL_FACE = "0.82"


def collapse_size(num_tasks: int) -> int:
    """The group size below which :func:`plot_sharing_tree` merges groups by default: 1 (none
    merged) up to 150 tasks, then ``max(2, ceil(T / 200))``."""
    return 1 if num_tasks <= _COLLAPSE_T else max(2, -(-num_tasks // _ROWS_SHOWN))


def _runs(tree: SharingTree, layer: int, min_size: int) -> list[tuple[np.ndarray, bool]]:
    """The boxes of one layer in row order: (member tasks, merged) for every group of at least
    ``min_size`` tasks, and one merged box per run of smaller neighbouring groups that share
    their parent group."""
    row = tree.groups[layer]
    parent = tree.groups[layer - 1] if layer else np.zeros_like(row)
    ids, first, sizes = np.unique(row, return_index=True, return_counts=True)
    boxes: list[tuple[np.ndarray, bool]] = []
    run: list[int] = []

    def close() -> None:
        if run:
            boxes.append((np.flatnonzero(np.isin(row, run)), True))
            run.clear()

    # Group ids are numbered along the tree's order, so id order is row order.
    for g, at, size in zip(ids, first, sizes):
        if size >= min_size:
            close()
            boxes.append((np.flatnonzero(row == g), False))
            continue
        if run and parent[np.flatnonzero(row == run[0])[0]] != parent[at]:
            close()
        run.append(int(g))
    close()
    return boxes


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
                    label=None, min_size: int = 1) -> tuple[list, list]:
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
    min_size : int, default 1
        Groups of fewer tasks are merged, with their neighbours of the same parent, into one
        box filled with :data:`SMALL_FACE` and without a label (:func:`collapse_size`).

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
        boxes = ([(np.flatnonzero(row == g), False) for g in np.unique(row)] if min_size <= 1
                 else _runs(tree, l, min_size))
        for members, merged in boxes:
            g = int(row[members[0]])
            lo, hi = pos[members].min(), pos[members].max()
            centre = 0.5 * (lo + hi)
            color = SMALL_FACE if merged else face(l, g)
            ax.add_patch(FancyBboxPatch((x - width / 2, lo - pad), width, hi - lo + 2 * pad, boxstyle=style,
                                        facecolor=color, zorder=3, **edge))
            if label is not None and not merged:
                label(ax, l, g, members, x, centre, hi - lo, color)
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
    min_size: int | None = None,
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
    min_size : int, optional
        Groups of fewer tasks are merged with their neighbours of the same parent into one grey
        box, and the note says how many; by default none up to 150 tasks, beyond that groups
        of fewer than T / 200 tasks (:func:`collapse_size`).

    Returns
    -------
    matplotlib Axes
    """
    from matplotlib.collections import LineCollection

    t = len(tree.task_names)
    min_size = collapse_size(t) if min_size is None else int(min_size)
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
        row_pt = ax.get_position().height * ax.figure.get_size_inches()[1] * 72 / max(t, 1)

        def count(ax, l, g, members, x, centre, rows, color):
            # A number only where the box is tall enough to hold it (5.5 pt type).
            if len(members) > 1 and rows >= 1 and (rows + 2 * pad) * row_pt >= 6:
                ax.text(x, centre, str(len(members)), ha="center", va="center", fontsize=5.5, color="white",
                        rotation=90 if rows < 2 else 0, zorder=4)

        segs, seg_colors = draw_tree_boxes(ax, tree, pos, width=width, pad=pad,
                                           face=lambda l, g: colors[l][g], label=count, min_size=min_size)
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
        merged = ""
        if min_size > 1:
            small = [int((np.bincount(row) < min_size).sum()) for row in tree.groups]
            merged = (f"; grey boxes: groups of fewer than {min_size} tasks merged with their neighbours "
                      f"({' → '.join(str(k) for k in small)} such groups per layer)")
        text = (f"boxes: groups of tasks that can share the layer ({rule});\n"
                f"groups per layer {counts}{merged}; numbers: tasks per group; {palette.describe()}"
                + ("" if show else f"; {t} task heads (names: --labels all, or the export)")
                + (f"\n{note}" if note else "") + (f"\n{SINGLE_RUN_NOTE}" if single_run else ""))
        ax.set_xlabel(wrap_to_width(text, ax.figure.get_figwidth() * 0.95, 6.5), fontsize=6.5, color="0.35")
    return ax
