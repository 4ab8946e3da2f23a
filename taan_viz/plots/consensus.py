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
from taan_viz.plots._style import (
    SEQUENTIAL_CMAP,
    add_caption,
    paper_style,
    short_label,
    text_color_for,
    text_width_pt,
)

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


def _panel_grid(n: int, t: int, names=()):
    from matplotlib.figure import Figure

    cols = min(n, 3)
    rows = -(-n // cols)
    side = 2.3 if t <= 24 else 2.4
    # Room for the names under the lowest panels and left of the first column (long names
    # would otherwise shrink the panels until their values no longer fit a cell).
    label_in = 0.0
    if names and t <= _NAMES_MAX:
        label_in = max(text_width_pt(short_label(n_, 24), _tick_fontsize(t)) for n_ in names) / 72
    fig = Figure(figsize=(min(7.2, cols * side + 0.9 + label_in), rows * side + 0.7 + label_in),
                 layout="constrained")
    # A wider pad: with square panels and a shared colour bar the layout's passes drift by a few
    # pixels, which the default pad of 3 pt does not absorb at the first column's names.
    fig.get_layout_engine().set(w_pad=0.1)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _ticks(ax, names, order, *, x: bool = True, y: bool = True) -> None:
    """Task names along the panel's axes; ``x``/``y`` False leaves them to the panel below or
    to the left, which shows the same names in the same order."""
    t = len(order)
    if t > _NAMES_MAX:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{t} tasks (consensus-tree order)", fontsize=6)
        return
    labels = [short_label(names[i], 24) for i in order]
    size = _tick_fontsize(t)
    ax.set_xticks(np.arange(t), labels if x else [], rotation=90, fontsize=size)
    ax.set_yticks(np.arange(t), labels if y else [], fontsize=size)
    ax.tick_params(length=0)


def _outer(axes: list, k: int) -> tuple[bool, bool]:
    """Whether panel k of a row-major grid of up to 3 columns is the lowest of its column and
    the first of its row: only those carry the task names."""
    cols = min(len(axes), 3)
    return k + cols >= len(axes), k % cols == 0


def _group_lines(ax, groups_row: np.ndarray, order: np.ndarray, upper_only: bool = False) -> None:
    """Thin white lines around the consensus tree's groups of two or more tasks in the layer
    (between two tasks that stand alone there is nothing to mark: at 139 singletons the lines
    would cover the matrix as a grid)."""
    g = groups_row[order]
    sizes = np.bincount(g)[g]
    change = np.flatnonzero(np.diff(g))
    cuts = change[(sizes[change] > 1) | (sizes[change + 1] > 1)] + 0.5
    t = len(order)
    for c in cuts:
        ax.axhline(c, color="white", lw=0.6)
        ax.axvline(c, color="white", lw=0.6)
    ax.set_xlim(-0.5, t - 0.5)
    ax.set_ylim(t - 0.5, -0.5)


# Cell values below this font size are left out rather than printed over each other
# (3.5 pt is 15 pixels high at the 300 dpi of the saved figures).
_ANNOTATE_MIN_PT = 3.5


def _fit_titles(fig, axes) -> None:
    """Break the panels' title lines at ": " where they are wider than their panel (constrained
    layout keeps a title's height, not its width, so a wide title would leave the figure)."""
    fig.draw_without_rendering()
    fig.draw_without_rendering()
    for ax in axes:
        title = ax.title
        width = ax.get_window_extent().width * 72 / fig.dpi
        lines = []
        for line in title.get_text().split("\n"):
            if text_width_pt(line, title.get_fontsize()) > width and ": " in line:
                lines.extend(line.split(": ", 1))
            else:
                lines.append(line)
        title.set_text("\n".join(lines))


def _annotate(fig, pending: list) -> None:
    """Write the cell values of every ``(ax, values, cmap, norm, fmt, mask)`` in ``pending``,
    sized to the cells the layout gave the panels.

    The figure is laid out first, so the size of a cell is known. Entries with the same
    ``fmt`` (one matrix kind: the fractions, the means or the spreads) share one format and
    font, those that fit the smallest cell of them (the heatmap's rule: leading zeros dropped,
    then one decimal, at most 5.5 pt); a kind that would need less than
    :data:`_ANNOTATE_MIN_PT` is left out. The values stay inside their cells, so they change
    nothing in the layout."""
    from taan_viz.plots.heatmap import _cell_text, _fit_annotation

    if not pending:
        return
    # Twice: constrained layout settles on its second pass (the colour bars move the panels).
    fig.draw_without_rendering()
    fig.draw_without_rendering()
    kinds: dict[str, list] = {}
    for entry in pending:
        kinds.setdefault(entry[4], []).append(entry)
    for fmt, entries in kinds.items():
        cells, values = [], []
        for ax, vals, _, _, _, mask in entries:
            box = ax.get_window_extent()
            cells.append(min(box.width, box.height) * 72 / fig.dpi / max(vals.shape[0], 1))
            values.append(vals[np.ones(vals.shape, dtype=bool) if mask is None else mask])
        values = np.concatenate(values)
        shown, bare, size = _fit_annotation(fmt, values, min(cells))
        size = min(size, 5.5)
        # Measured, not estimated: the widest value takes at most 85 % of a cell.
        widest = max((text_width_pt(_cell_text(shown, v, bare), size) for v in values), default=0.0)
        if widest > 0.85 * min(cells):
            size *= 0.85 * min(cells) / widest
        if size < _ANNOTATE_MIN_PT:
            continue
        for ax, vals, cmap, norm, _, mask in entries:
            mask = np.ones(vals.shape, dtype=bool) if mask is None else mask
            for i, j in zip(*np.nonzero(mask)):
                v = vals[i, j]
                ax.text(j, i, _cell_text(shown, v, bare), ha="center", va="center", fontsize=size,
                        color=text_color_for(cmap(norm(v))))


def plot_coclustering(cons: Consensus, *, annot: bool | None = None):
    """Per layer, the fraction of runs in which two tasks fall in the same group.

    Parameters
    ----------
    cons : Consensus
    annot : bool, optional
        Write the fractions in the cells (default: at most 10 tasks), in a font that fits the
        cells; none where that font would be below 3.5 pt.

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
        fig, axes = _panel_grid(len(cons.layers), t, cons.task_names)
        pending: list = []
        image = None
        for k, ax in enumerate(axes):
            la = cons.layers[k]
            c = la.coclustering[np.ix_(order, order)]
            image = ax.imshow(c, cmap=cmap, norm=norm, interpolation="nearest")
            _group_lines(ax, cons.tree.groups[_depth_of(cons, k)], order)
            if annot:
                pending.append((ax, c, cmap, norm, "{:.2g}", None))
            _ticks(ax, cons.task_names, order, x=_outer(axes, k)[0], y=_outer(axes, k)[1])
            # Short lines: constrained layout keeps a title's height, not its width.
            ax.set_title(f"layer {la.index + 1}: {short_label(la.name, 18)}\nstability {la.stability:.2f}")
        bar = fig.colorbar(image, ax=axes, shrink=0.8, aspect=30)
        bar.set_label(f"fraction of {cons.num_runs} runs sharing a group")
        cut = (f"{cons.n_clusters} clusters per layer" if cons.n_clusters is not None
               else f"sharing-tree groups at {cons.threshold:g} × RMS norm")
        fig.suptitle(f"Co-clustering over {cons.num_runs} runs ({cut}); lines: consensus-tree groups;\n"
                     "stability: mean adjusted Rand index between the runs' groups")
        _say_unstable(fig, cons)
        _fit_titles(fig, axes)
        _annotate(fig, pending)
    return fig


def plot_distance_spread(cons: Consensus, *, annot: bool | None = None):
    """Per layer, the mean functional distance over runs (lower triangle, with the diagonal)
    and its standard deviation over runs (upper triangle); one scale each for all layers.

    Parameters
    ----------
    cons : Consensus
    annot : bool, optional
        Write the values in the cells (default: at most 10 tasks), in a format and font that
        fit the cells; none where that font would be below 3.5 pt.

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib
    from matplotlib.colors import Normalize

    from taan_viz.plots.heatmap import _annot_format

    t = cons.num_tasks
    order = cons.order
    annot = t <= _ANNOTATE_MAX if annot is None else annot
    lower = np.tril(np.ones((t, t), dtype=bool))
    top_mean = max(float(la.mean_distance.max()) for la in cons.layers) or 1.0
    top_std = max(float(la.std_distance.max()) for la in cons.layers) or 1.0
    cmap_m, cmap_s = matplotlib.colormaps[SEQUENTIAL_CMAP], matplotlib.colormaps[_SPREAD_CMAP]
    norm_m, norm_s = Normalize(0.0, top_mean), Normalize(0.0, top_std)
    # One format per kind for all panels, from all layers' values (the same colour scale).
    fmt_m = _annot_format(np.concatenate([la.mean_distance[lower] for la in cons.layers]))
    fmt_s = _annot_format(np.concatenate([la.std_distance[~lower] for la in cons.layers]))
    with paper_style():
        fig, axes = _panel_grid(len(cons.layers), t, cons.task_names)
        pending: list = []
        im_m = im_s = None
        for k, ax in enumerate(axes):
            la = cons.layers[k]
            mean = la.mean_distance[np.ix_(order, order)]
            std = la.std_distance[np.ix_(order, order)]
            im_m = ax.imshow(np.ma.masked_where(~lower, mean), cmap=cmap_m, norm=norm_m, interpolation="nearest")
            im_s = ax.imshow(np.ma.masked_where(lower, std), cmap=cmap_s, norm=norm_s, interpolation="nearest")
            _group_lines(ax, cons.tree.groups[_depth_of(cons, k)], order)
            if annot:
                pending.append((ax, mean, cmap_m, norm_m, fmt_m, lower))
                pending.append((ax, std, cmap_s, norm_s, fmt_s, ~lower))
            _ticks(ax, cons.task_names, order, x=_outer(axes, k)[0], y=_outer(axes, k)[1])
            ax.set_title(f"layer {la.index + 1}: {short_label(la.name, 18)}")
        # The mean's bar next to the panels, the spread's beyond it (the title's order).
        fig.colorbar(im_s, ax=axes, shrink=0.8, aspect=30, pad=0.01).set_label("std over runs (upper triangle)")
        fig.colorbar(im_m, ax=axes, shrink=0.8, aspect=30, pad=0.01).set_label("mean d(Fₛ, Fₜ) (lower triangle)")
        fig.suptitle(f"Functional distance over {cons.num_runs} runs: mean (lower) and spread (upper)")
        _say_unstable(fig, cons)
        _fit_titles(fig, axes)
        _annotate(fig, pending)
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
