"""taan_viz.palette: one colour per task, the same in every figure, at real scale (65 tasks),
and one rule for groups (the tree and the flat clusters agree)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.colors import to_hex

from tests.viz.viz_helpers import make_large_checkpoint_dict
from taan_viz.palette import LINESTYLES, MARKERS, task_palette
from taan_viz.plots._style import OKABE_ITO, name_texts, readable_color


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """The analysis of a 65-task checkpoint (the size of the exam data set)."""
    from taan_core.checkpoint import load_checkpoint
    from taan_viz.analysis import analyze

    path = tmp_path_factory.mktemp("large") / "exam.pt"
    torch.save(make_large_checkpoint_dict(), path)
    return analyze(load_checkpoint(path))


def test_task_palette_levels_and_second_encoding():
    few = task_palette([np.zeros(6), [0, 0, 1, 1, 2, 2]], ["a", "b"])
    assert few.level == 1 and few.num_keys == 3 and not few.encoded
    assert few.colors == [OKABE_ITO[0]] * 2 + [OKABE_ITO[1]] * 2 + [OKABE_ITO[2]] * 2
    assert {few.linestyle(t) for t in range(6)} == {"-"} and {few.marker(t) for t in range(6)} == {"o"}
    # Keys follow the given order, so neighbours in the figures get different colours.
    assert task_palette([[5, 5, 9, 9, 7, 7]], ["a"], order=[4, 5, 0, 1, 2, 3]).keys.tolist() == [1, 1, 2, 2, 0, 0]
    # 20 groups: 8 colours, then a dash pattern and a marker tell repeated colours apart.
    many = task_palette([np.zeros(20), np.arange(20)], ["a", "b"])
    assert many.level == 1 and many.encoded
    pairs = {(many.color(t), str(many.linestyle(t))) for t in range(20)}
    assert len(pairs) == 20
    assert len({(many.color(t), many.marker(t)) for t in range(20)}) == 20
    assert "dash pattern" in many.describe() and "repeat together" not in many.describe()
    # Beyond 32 groups at every layer: the shallowest layer, and the caption says what repeats.
    crowded = task_palette([np.arange(40), np.arange(40)], ["a", "b"])
    assert crowded.level == 0 and "repeat together beyond 32" in crowded.describe()
    # The deepest layer with at most 32 groups wins over a finer deeper one.
    assert task_palette([np.arange(40) // 2, np.arange(40)], ["a", "b"]).level == 0
    assert task_palette([np.arange(40) // 4, np.arange(40)], ["a", "b"]).level == 0
    assert len(LINESTYLES) * len(OKABE_ITO) == 32 and len(MARKERS) >= len(LINESTYLES)
    with pytest.raises(ValueError, match="layer_names must have 2 entries"):
        task_palette([np.zeros(3), np.zeros(3)], ["a"])
    with pytest.raises(ValueError, match="at least one layer"):
        task_palette([], [])


def test_palette_is_made_once_per_analysis(large):
    assert large.palette() is large.palette()
    assert large.palette(n_clusters=3) is not large.palette()


def test_one_rule_for_groups(large):
    """The tree, the groups every figure colours and counts, and the dendrogram titles agree."""
    from taan_viz.plots.cluster import plot_dendrograms
    from taan_viz.plots.tree import plot_sharing_tree

    tree = large.sharing_tree()
    labels = large.cluster_labels()
    for depth, lab in enumerate(labels):
        same_tree = tree.groups[depth][:, None] == tree.groups[depth][None, :]
        np.testing.assert_array_equal(lab[:, None] == lab[None, :], same_tree)
    fig = plot_dendrograms(large)
    counts = [int(ax.get_title().split("\n")[1].split()[0]) for ax in fig.axes if ax.collections]
    assert counts == tree.num_groups
    assert " → ".join(map(str, counts)) in plot_sharing_tree(tree).get_xlabel()
    # By count, the figures say that they use another rule.
    assert "not the sharing tree" in plot_dendrograms(large, n_clusters=3)._supxlabel.get_text()


def _segment_tasks(lines: LineCollection, alpha, hinges) -> list[int]:
    """The task of each drawn curve, found by its values."""
    from taan_viz.plots.curves import activation_values

    segs = lines.get_segments()
    values = activation_values(alpha, hinges, segs[0][:, 0])
    return [int(np.argmin(np.abs(values - s[:, 1]).max(axis=1))) for s in segs]


def test_same_colour_for_same_task_in_every_figure(large):
    from taan_viz.plots.cluster import clustermap, plot_dendrograms, plot_embeddings
    from taan_viz.plots.curves import plot_curves
    from taan_viz.plots.heatmap import plot_heatmaps
    from taan_viz.plots.tree import plot_sharing_tree

    palette = large.palette()
    want = {name: to_hex(palette.color(t)) for t, name in enumerate(large.task_names)}
    readable = {name: to_hex(readable_color(palette.color(t))) for t, name in enumerate(large.task_names)}
    assert len(set(want.values())) == min(8, palette.num_keys)

    # Curves: every layer's line of a task has the task's colour and dash pattern.
    fig = plot_curves(large)
    for la, ax in zip(large.layers, [ax for ax in fig.axes if ax.collections]):
        (lines,) = [c for c in ax.collections if isinstance(c, LineCollection)]
        tasks = _segment_tasks(lines, la.geometry.alpha, la.geometry.hinges)
        assert sorted(tasks) == list(range(large.num_tasks))
        assert [to_hex(c) for c in lines.get_colors()] == [want[large.task_names[t]] for t in tasks]
        drawn_dashes = [ls[1] for ls in lines.get_linestyles()]
        solid = [t for t in tasks if palette.linestyle(t) == "-"]
        assert len([d for d in drawn_dashes if d is None]) == len(solid)

    # Dendrograms and clustermap: leaf names in the task's (text-darkened) colour.
    for ax in [ax for ax in plot_dendrograms(large).axes if ax.collections]:
        assert {t.get_text(): to_hex(t.get_color()) for t in name_texts(ax)} == readable
    cmap_fig = clustermap(large, -1)
    ax_map = [ax for ax in cmap_fig.axes if ax.images and ax.get_label() != "<colorbar>"][0]
    assert {t.get_text(): to_hex(t.get_color()) for t in name_texts(ax_map)} == readable

    # Heatmap strips: the strip of each panel shows the tasks' colours in the panel's order.
    order = large.sharing_tree().order
    for panel in [ax for ax in plot_heatmaps(large).axes if ax.child_axes]:
        top = panel.child_axes[0].images[0]
        shown = [to_hex(c) for c in top.cmap(top.norm(np.asarray(top.get_array())[0]))]
        assert shown == [want[large.task_names[t]] for t in order]

    # Tree: the head of each task (dot at its row) in the task's colour.
    ax = plot_sharing_tree(large.sharing_tree(), palette=palette)
    rows = {t.get_position()[1]: t.get_text() for t in ax.texts if t.get_text() in want}
    assert len(rows) == large.num_tasks
    for dots in [c for c in ax.collections if isinstance(c, PathCollection)]:
        for (x, y), c in zip(dots.get_offsets(), dots.get_facecolors()):
            assert to_hex(c) == want[rows[y]]

    # MDS: each point in its task's colour (points found by their coordinates).
    from taan_viz.embedding import classical_mds

    fig = plot_embeddings(large)
    for la, ax in zip(large.layers, [ax for ax in fig.axes if ax.collections]):
        coords, _ = classical_mds(la.geometry.distance, 2)
        seen = 0
        for dots in ax.collections:
            for xy, c in zip(dots.get_offsets(), dots.get_facecolors()):
                task = int(np.argmin(np.hypot(*(coords - np.asarray(xy)).T)))
                assert to_hex(c) == want[large.task_names[task]]
                seen += 1
        assert seen == large.num_tasks


@pytest.mark.slow
def test_every_task_drawn_at_scale(large):
    from taan_viz.plots.curves import grid_pages, plot_curve_grid
    from taan_viz.plots.heatmap import plot_heatmaps

    t = large.num_tasks
    for ax in [ax for ax in plot_heatmaps(large).axes if ax.images and ax.get_label() != "<colorbar>"
               and np.asarray(ax.images[0].get_array()).shape == (t, t)]:
        assert ax.images[0].get_array().shape == (t, t)
    # The per-task grid paginates: every task is on exactly one page, and each page says so.
    pages = grid_pages(t)
    assert pages == 2
    titles = []
    for page in range(1, pages + 1):
        fig = plot_curve_grid(large, -1, page=page)
        titles += [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
        assert f"page {page} of {pages}" in fig._suptitle.get_text()
    assert sorted(titles) == sorted(large.task_names)
    with pytest.raises(ValueError, match=r"page must be an int in \[1, 2\]"):
        plot_curve_grid(large, -1, page=3)


def _names(labels) -> list[str]:
    return [t.get_text() for t in labels if t.get_text()]


@pytest.mark.parametrize("labels", ["auto", "all", "none"])
def test_task_names_by_the_labels_rule(large, labels):
    """Names at 65 tasks by default, on every figure that lists tasks; none with "none"."""
    from taan_viz.plots.cluster import clustermap, plot_dendrograms
    from taan_viz.plots.heatmap import plot_heatmaps
    from taan_viz.plots.tree import plot_sharing_tree, tree_figure

    names = set(large.task_names)
    shown = labels != "none"
    heat = plot_heatmaps(large, labels=labels)
    rows = [_names(strip.get_yticklabels()) for ax in heat.axes for strip in ax.child_axes]
    assert any(set(r) == names for r in rows) == shown
    assert all(not r for r in rows) == (not shown)
    dendro = [ax for ax in plot_dendrograms(large, labels=labels).axes if ax.collections]
    assert all((set(_names(name_texts(ax))) == names) == shown for ax in dendro)
    cmap = clustermap(large, -1, labels=labels)
    ax_map = [ax for ax in cmap.axes if ax.images and ax.get_label() != "<colorbar>"][0]
    assert (set(_names(name_texts(ax_map))) == names) == shown
    tree = large.sharing_tree()
    _, ax = tree_figure(tree, names=shown)
    plot_sharing_tree(tree, ax=ax, names=shown)
    assert ({t.get_text() for t in ax.texts} >= names) == shown
    if not shown:
        # Without names the figures say where they are.
        assert "names: --labels all" in dendro[0].get_ylabel()


def test_labels_auto_stops_beyond_100_tasks(tmp_path):
    from taan_core.checkpoint import load_checkpoint
    from taan_viz.analysis import analyze
    from taan_viz.plots.cluster import plot_dendrograms
    from taan_viz.plots.heatmap import plot_heatmaps

    path = tmp_path / "many.pt"
    torch.save(make_large_checkpoint_dict(num_tasks=120), path)
    a = analyze(load_checkpoint(path), layers=[2])
    heat = plot_heatmaps(a)
    assert not [n for ax in heat.axes for s in ax.child_axes for n in _names(s.get_yticklabels())]
    assert "120 tasks" in [ax for ax in heat.axes if ax.images][0].get_ylabel()
    forced = [ax for ax in plot_dendrograms(a, labels="all").axes if ax.collections][0]
    assert len(_names(name_texts(forced))) == 120
    with pytest.raises(ValueError, match="labels must be one of auto, all, none, got 'some'"):
        plot_heatmaps(a, labels="some")
