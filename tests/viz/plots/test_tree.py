"""taan_viz.plots.tree: the sharing tree diagram."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.patches import FancyBboxPatch

from tests.viz.viz_helpers import TASK_NAMES
from taan_viz.plots.tree import plot_sharing_tree


def test_one_box_per_group_and_one_head_per_task(analysis):
    tree = analysis.sharing_tree()
    ax = plot_sharing_tree(tree)
    boxes = [p for p in ax.patches if isinstance(p, FancyBboxPatch)]
    assert len(boxes) == 1 + sum(tree.num_groups)
    heads = [t.get_text() for t in ax.texts if t.get_text() in TASK_NAMES]
    assert sorted(heads) == sorted(TASK_NAMES)
    # Heads are drawn top to bottom in the tree order.
    ys = {t.get_text(): t.get_position()[1] for t in ax.texts if t.get_text() in TASK_NAMES}
    assert [TASK_NAMES[i] for i in tree.order] == sorted(ys, key=ys.get)
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[0] == "input" and ticks[-1] == "task heads" and ticks[1].startswith("layer 1")
    assert "1 → 2 → 4" in ax.get_xlabel()


def test_box_counts(analysis):
    ax = plot_sharing_tree(analysis.sharing_tree())
    counts = sorted(int(t.get_text()) for t in ax.texts if t.get_text().isdigit())
    assert counts == [2, 2, 3, 3, 6]


def test_into_given_axes_and_rejects(analysis):
    import matplotlib.pyplot as plt

    tree = analysis.sharing_tree(0.1)
    fig, ax = plt.subplots()
    assert plot_sharing_tree(tree, ax=ax, names=False) is ax
    assert not [t for t in ax.texts if t.get_text() in TASK_NAMES]
    with pytest.raises(ValueError, match="layer_labels must have 3 entries"):
        plot_sharing_tree(tree, layer_labels=["a"])
    absolute = analysis.sharing_tree(10.0, relative=False)
    assert absolute.num_groups == [1, 1, 1] and np.all(absolute.groups == 0)
    assert "≤ 10" in plot_sharing_tree(absolute).get_xlabel()


def test_draws_on_the_current_axes_and_tree_figure(analysis):
    import matplotlib.pyplot as plt

    from taan_viz.plots.tree import tree_figure

    plt.figure()
    tree = analysis.sharing_tree()
    assert plot_sharing_tree(tree) is plt.gca()
    fig, ax = tree_figure(tree)
    assert plot_sharing_tree(tree, ax=ax) is ax and ax.figure is fig
    with pytest.raises(ValueError, match="palette must colour 6 tasks"):
        from taan_viz.palette import task_palette

        plot_sharing_tree(tree, ax=ax, palette=task_palette([np.zeros(3)], ["x"]))


def test_single_run_note(analysis):
    tree = analysis.sharing_tree()
    note = plot_sharing_tree(tree).get_xlabel()
    assert note.endswith("one run, stability unknown: taan-core train --seeds 0-4, then taan-viz consensus")
    import matplotlib.pyplot as plt

    assert "consensus" not in plot_sharing_tree(tree, ax=plt.figure().gca(), single_run=False).get_xlabel()


def test_separation_note_line(analysis):
    tree = analysis.sharing_tree()
    note = plot_sharing_tree(tree, note="groups not separated in layer 2 (0.10): ...").get_xlabel()
    lines = note.replace("\n", " ")
    assert "groups not separated in layer 2 (0.10)" in lines
    assert lines.index("groups not separated") < lines.index("one run, stability unknown")
