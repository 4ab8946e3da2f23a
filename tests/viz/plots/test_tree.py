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


def _large_tree(t=300):
    from taan_viz.sharing import SharingTree

    first = (np.arange(t) >= t // 2).astype(np.int64)
    # Layer 2: the first half keeps 140 tasks together and splits the other 10 into singletons.
    second = np.empty(t, dtype=np.int64)
    second[:140] = 0
    second[140:150] = np.arange(1, 11)
    second[150:] = 11
    return SharingTree(task_names=tuple(f"task_{i}" for i in range(t)), layer_names=("a", "b"),
                       groups=np.stack([first, second]), order=np.arange(t), thresholds=np.array([0.1, 0.1]),
                       threshold=0.1, relative=True)


def test_large_trees_merge_small_groups_and_say_so():
    from taan_viz.plots.tree import SMALL_FACE, collapse_size

    assert collapse_size(150) == 1 and collapse_size(300) == 2 and collapse_size(5000) == 25
    tree = _large_tree()
    ax = plot_sharing_tree(tree)
    boxes = [p for p in ax.patches if isinstance(p, FancyBboxPatch)]
    # input, 2 groups of layer 1, and in layer 2 the 140, one box for the 10 singletons, the 150.
    assert len(boxes) == 6
    grey = [b for b in boxes if np.allclose(b.get_facecolor()[:3], [float(SMALL_FACE)] * 3)]
    assert len(grey) == 1 and grey[0].get_height() == pytest.approx(9 + 2 * 0.45)
    note = ax.get_xlabel().replace("\n", " ")
    assert "grey boxes: groups of fewer than 2 tasks merged" in note
    assert "(0 → 10 such groups per layer)" in note
    # min_size=1 draws every group again.
    ax = plot_sharing_tree(tree, ax=plt_axes(), min_size=1)
    assert len([p for p in ax.patches if isinstance(p, FancyBboxPatch)]) == 1 + 2 + 12
    assert "grey boxes" not in ax.get_xlabel()


def plt_axes():
    import matplotlib.pyplot as plt

    return plt.figure().add_subplot()
