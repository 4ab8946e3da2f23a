"""Consensus of several runs: co-clustering, stability and tree support against hand-computed
cases, invariance to cluster ids, refusal of runs that differ, and the figures."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from taan_core.checkpoint import load_checkpoint
from taan_viz.analysis import analyze
from taan_viz.consensus import (
    STABILITY_THRESHOLD,
    check_same_runs,
    coclustering,
    consensus,
    consensus_tree,
    group_support,
    pairwise_ari,
)
from taan_viz.sharing import sharing_tree
from tests.viz.viz_helpers import GROUPS, TASK_NAMES, make_checkpoint_dict

# Another nesting of the six tasks: at layer 2 "trains" goes with the animals.
OTHER_GROUPS = [[0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1], [0, 1, 1, 2, 2, 3]]


def _analyses(tmp_path, groups_per_run, seeds=None):
    out = []
    for k, groups in enumerate(groups_per_run):
        path = tmp_path / f"seed-{k}" / "checkpoint.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(make_checkpoint_dict(groups=groups, seed=k if seeds is None else seeds[k]), path)
        out.append(analyze(load_checkpoint(path)))
    return out


def _tree(groups_per_layer, names=("a", "b", "c", "d")):
    # Distance 0 inside a group and 1 across: the sharing tree at threshold 0.5 has these groups.
    mats = [(np.asarray(g)[:, None] != np.asarray(g)[None, :]).astype(float) for g in groups_per_layer]
    return sharing_tree(mats, task_names=list(names), layer_names=[f"l{i}" for i in range(len(mats))],
                        threshold=0.5, relative=False)


def test_identical_labelings_give_zero_one_coclustering_and_stability_one():
    labels = np.array([[0, 0, 1, 2, 2]] * 4)
    c = coclustering(labels)
    expected = (labels[0][:, None] == labels[0][None, :]).astype(float)
    np.testing.assert_array_equal(c, expected)
    np.testing.assert_array_equal(pairwise_ari(labels), np.ones((4, 4)))


def test_cluster_ids_do_not_matter():
    a = np.array([0, 0, 1, 1, 2, 3])
    permuted = np.array([2, 2, 0, 0, 3, 1])  # the same partition under other ids
    b = np.array([0, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(coclustering([a, b]), coclustering([permuted, b]))
    np.testing.assert_allclose(pairwise_ari([a, b]), pairwise_ari([permuted, b]))
    assert pairwise_ari([a, permuted])[0, 1] == 1.0


def test_three_runs_by_hand():
    # r1 = {0,1}{2,3}, r2 = {0,1,2}{3}, r3 = {0}{1,2,3}
    labels = np.array([[0, 0, 1, 1], [0, 0, 0, 1], [0, 1, 1, 1]])
    third, two = 1 / 3, 2 / 3
    expected = np.array([[1, two, third, 0], [two, 1, two, third], [third, two, 1, two], [0, third, two, 1]])
    np.testing.assert_allclose(coclustering(labels), expected)
    # Contingency tables by hand: ARI(r1, r2) = (1 - 1) / (2.5 - 1) = 0, ARI(r1, r3) = 0,
    # ARI(r2, r3) = (1 - 1.5) / (3 - 1.5) = -1/3.
    ari = pairwise_ari(labels)
    np.testing.assert_allclose(ari[np.triu_indices(3, 1)], [0.0, 0.0, -third], atol=1e-12)


def test_group_support_by_hand():
    reference = _tree([[0, 0, 0, 0], [0, 0, 1, 1]])
    runs = [_tree([[0, 0, 0, 0], [0, 0, 1, 1]]), _tree([[0, 0, 0, 0], [0, 0, 0, 1]]),
            _tree([[0, 0, 0, 0], [0, 0, 1, 2]])]
    support = group_support(reference, runs)
    assert support[0].tolist() == [1.0]
    ab = int(reference.groups[1, 0])
    cd = int(reference.groups[1, 2])
    assert support[1][ab] == pytest.approx(2 / 3) and support[1][cd] == pytest.approx(1 / 3)


def test_group_support_errors():
    reference = _tree([[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="at least one sharing tree"):
        group_support(reference, [])
    with pytest.raises(ValueError, match=r"trees\[0\] must have groups of shape \(1, 4\)"):
        group_support(reference, [_tree([[0, 0, 1, 1], [0, 1, 2, 3]])])


def test_identical_runs_agree_completely(tmp_path):
    analyses = _analyses(tmp_path, [GROUPS] * 3, seeds=[0, 0, 0])
    cons = consensus(analyses, runs=["a", "b", "c"])
    single = analyses[0].sharing_tree(0.1)
    for k, la in enumerate(cons.layers):
        assert la.stability == 1.0
        assert set(np.unique(la.coclustering)) <= {0.0, 1.0}
        groups = analyses[0].cluster_labels(threshold=0.1)[k]
        np.testing.assert_array_equal(la.coclustering, groups[:, None] == groups[None, :])
        np.testing.assert_allclose(la.std_distance, 0.0, atol=1e-12)
        np.testing.assert_allclose(la.mean_distance, analyses[0].layers[k].geometry.distance)
        assert la.planted_ari.tolist() == [1.0, 1.0, 1.0]
    for mine, theirs in zip(cons.tree.groups, single.groups):  # the same partitions, ids aside
        np.testing.assert_array_equal(mine[:, None] == mine[None, :], theirs[:, None] == theirs[None, :])
    assert all(s.tolist() == [1.0] * len(s) for s in cons.support)


def test_majority_rule_tree_and_support(tmp_path):
    # Three runs find the planted nesting (with different weights), the fourth another one.
    cons = consensus(_analyses(tmp_path, [GROUPS, GROUPS, GROUPS, OTHER_GROUPS]))
    doc = cons.to_dict()
    layer2 = {frozenset(g["tasks"]): g["support"] for g in doc["layers"][1]["tree_groups"]}
    assert layer2 == {frozenset(TASK_NAMES[:3]): 0.75, frozenset(TASK_NAMES[3:]): 0.75}
    layer3 = {frozenset(g["tasks"]): g["support"] for g in doc["layers"][2]["tree_groups"]}
    assert layer3[frozenset({"cars", "boats"})] == 0.75 and layer3[frozenset({"birds"})] == 1.0
    # co-clustering of trains with cars: together in 3 of 4 runs at layer 2
    c = cons.layers[1].coclustering
    assert c[2, 0] == 0.75 and c[2, 3] == 0.25
    assert cons.layers[0].stability == 1.0 and cons.layers[1].stability < 1.0
    assert doc["representative"] == "run-1"
    assert doc["layers"][1]["pairwise_ari"][0][3] < 1.0 and doc["layers"][1]["pairwise_ari"][0][1] == 1.0


def test_support_is_what_the_coclustering_says_and_half_is_no_majority():
    # Four runs of one layer: a, b together in runs 1-2 (half), c, d in runs 1-3.
    runs = [_tree([[0, 0, 1, 1]]), _tree([[0, 0, 1, 1]]), _tree([[0, 1, 2, 2]]), _tree([[0, 1, 2, 3]])]
    c = coclustering(np.stack([tree.groups[0] for tree in runs]))
    assert c[0, 1] == 0.5 and c[2, 3] == 0.75
    ab = _tree([[0, 0, 1, 2]])
    assert group_support(ab, runs)[0][ab.groups[0, 0]] == 0.5 == c[0, 1]
    tree = consensus_tree(runs)
    support = group_support(tree, runs)[0]
    g = tree.groups[0]
    assert g[0] != g[1]  # together in exactly half of the runs: apart
    assert g[2] == g[3] and support[g[2]] == 0.75 == c[2, 3]
    # Three of four runs join a, b: now a majority.
    runs[2] = _tree([[0, 0, 1, 1]])
    tree = consensus_tree(runs)
    assert tree.groups[0, 0] == tree.groups[0, 1]
    assert group_support(tree, runs)[0][tree.groups[0, 0]] == 0.75


def test_majority_groups_need_a_majority_parent():
    # Layer 2's {a, b} is in 3 of 4 runs, but its tasks share no majority group at layer 1
    # ({a, b, c} twice, {a, b, d} once, {a, b} once): the consensus keeps the tree nested.
    runs = [_tree([[0, 0, 0, 1], [0, 0, 1, 2]]), _tree([[0, 0, 0, 1], [0, 0, 1, 2]]),
            _tree([[0, 0, 1, 0], [0, 0, 1, 2]]), _tree([[0, 0, 1, 2], [0, 1, 2, 3]])]
    tree = consensus_tree(runs)
    assert tree.num_groups == [4, 4] and tree.groups[1, 0] != tree.groups[1, 1]
    # Standing alone has its own support: task a is never alone at layer 1.
    assert group_support(tree, runs)[0][tree.groups[0, 0]] == 0.0
    with pytest.raises(ValueError, match="at least one sharing tree"):
        consensus_tree([])
    with pytest.raises(ValueError, match=r"trees\[1\] must have the tasks and layers"):
        consensus_tree([runs[0], _tree([[0, 0, 1, 1]])])


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 7), st.integers(1, 3), st.integers(2, 6), st.integers(0, 10_000))
def test_consensus_groups_have_majority_support(t, depth, r, seed):
    rng = np.random.default_rng(seed)
    names = [str(i) for i in range(t)]
    runs = []
    for _ in range(r):
        mats = [np.abs(np.subtract.outer(x, x)) for x in rng.integers(0, 3, size=(depth, t)).astype(float)]
        runs.append(sharing_tree(mats, task_names=names, layer_names=[f"l{l}" for l in range(depth)],
                                 threshold=0.5, relative=False))
    tree = consensus_tree(runs)
    support = group_support(tree, runs)
    for l in range(depth):
        together = coclustering(np.stack([run.groups[l] for run in runs]))
        row = tree.groups[l]
        for g in np.unique(row):
            members = np.flatnonzero(row == g)
            if len(members) > 1:
                # Held by more than half of the runs, so every pair co-clusters in more than half.
                assert support[l][g] > 0.5
                assert together[np.ix_(members, members)].min() > 0.5
            if l:
                assert len(np.unique(tree.groups[l - 1][members])) == 1


def test_consensus_of_runs_split_half_and_half(tmp_path):
    # Two runs find the planted nesting, two another one: at layer 2 no group has a majority.
    cons = consensus(_analyses(tmp_path, [GROUPS, GROUPS, OTHER_GROUPS, OTHER_GROUPS]))
    for l, la in enumerate(sorted(cons.layers, key=lambda la: la.index)):
        row = cons.tree.groups[l]
        for g in np.unique(row):
            members = np.flatnonzero(row == g)
            if len(members) > 1:
                assert cons.support[l][g] > 0.5
                assert la.coclustering[np.ix_(members, members)].min() > 0.5
    assert cons.layers[1].coclustering[0, 2] == 0.5  # cars and trains: half of the runs
    assert cons.tree.groups[1, 0] != cons.tree.groups[1, 2]


def test_consensus_errors(tmp_path):
    analyses = _analyses(tmp_path, [GROUPS, GROUPS])
    with pytest.raises(ValueError, match="at least 2 runs, got 1"):
        consensus(analyses[:1])
    with pytest.raises(ValueError, match="runs must have 2 labels"):
        consensus(analyses, runs=["a"])
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        consensus(analyses, threshold=float("nan"))
    other = analyze(load_checkpoint(tmp_path / "seed-1" / "checkpoint.pt"), layers=[0, 1])
    with pytest.raises(ValueError, match="seed-1.*same layers"):
        consensus([analyses[0], other])
    other = analyze(load_checkpoint(tmp_path / "seed-1" / "checkpoint.pt"), measure="standard")
    with pytest.raises(ValueError, match="same measure and linkage"):
        consensus([analyses[0], other])


def test_runs_that_differ_are_refused_naming_the_file(tmp_path):
    a, b, c = tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "c.pt"
    torch.save(make_checkpoint_dict(), a)
    torch.save(make_checkpoint_dict(task_names=["x"] + TASK_NAMES[1:]), b)
    torch.save(make_checkpoint_dict(groups=GROUPS[:2], layer_names=["blocks.0.act", "blocks.1.act"]), c)
    ckpts = [load_checkpoint(p) for p in (a, b, c)]
    with pytest.raises(ValueError, match=r"b\.pt: runs must have the same tasks.*task 1 is 'x'"):
        check_same_runs(ckpts[:2])
    with pytest.raises(ValueError, match=r"c\.pt: runs must have the same layers"):
        check_same_runs([ckpts[0], ckpts[2]])
    with pytest.raises(ValueError, match="no runs given"):
        check_same_runs([])


@pytest.mark.slow
def test_figures_draw_small_and_large(tmp_path):
    from taan_viz.plots.consensus import plot_coclustering, plot_distance_spread, plot_support_tree

    cons = consensus(_analyses(tmp_path, [GROUPS, OTHER_GROUPS]))
    for fig in (plot_coclustering(cons), plot_distance_spread(cons), plot_support_tree(cons)):
        assert len(fig.axes) >= 2  # panels and colour bars
    fig = plot_coclustering(cons)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "0.5" in texts  # annotated fractions at T = 6
    # Beyond 60 tasks the names give way to a count (they would be too small to read).
    big = [[0] * 64, [t // 32 for t in range(64)], [t // 16 for t in range(64)]]
    names = [f"task{t}" for t in range(64)]
    path = tmp_path / "big" / "checkpoint.pt"
    path.parent.mkdir()
    runs = []
    for seed in (0, 1, 2):
        torch.save(make_checkpoint_dict(groups=big, task_names=names, seed=seed), path)
        runs.append(analyze(load_checkpoint(path)))
    cons = consensus(runs)
    assert cons.tree.num_groups == [1, 2, 4]
    for fig in (plot_coclustering(cons), plot_distance_spread(cons), plot_support_tree(cons)):
        texts = [t.get_text() for ax in fig.axes for t in [*ax.get_xticklabels(), *ax.get_yticklabels(), *ax.texts]]
        assert not [t for t in texts if re.fullmatch(r"task\d+", t)]


def _json(cons, tmp_path):
    import json

    from taan_viz._consensus_report import write_consensus_json

    path = write_consensus_json(cons, tmp_path / "consensus.json")
    return json.loads(path.read_text(encoding="utf-8"))


def test_runs_that_disagree_are_flagged(tmp_path):
    """Runs built to disagree (another nesting in one of three, other alphas): the layers below
    the threshold carry the flag and the one-line warning, in consensus.json and the figures."""
    from taan_viz.plots.consensus import plot_coclustering, plot_distance_spread, plot_support_tree

    cons = consensus(_analyses(tmp_path, [GROUPS, GROUPS, OTHER_GROUPS]))
    doc = _json(cons, tmp_path)
    assert STABILITY_THRESHOLD == 0.8 and doc["stability_threshold"] == 0.8
    assert "0.8" in doc["definitions"]["unstable"]
    flags = [(layer["position"], layer["unstable"]) for layer in doc["layers"]]
    assert flags == [(1, False), (2, True), (3, True)]
    layer2 = doc["layers"][1]
    assert layer2["stability"] < 0.8
    assert layer2["warning"] == (f"layer 2: groups differ between runs (stability {layer2['stability']:.2f} < 0.8); "
                                 "do not read them as real")
    assert doc["layers"][0]["warning"] is None
    assert doc["warnings"] == [layer["warning"] for layer in doc["layers"][1:]] == cons.warnings
    for fig in (plot_coclustering(cons), plot_distance_spread(cons), plot_support_tree(cons)):
        assert fig._supxlabel.get_text().split("\n") == cons.warnings


def test_runs_that_agree_are_not_flagged(tmp_path):
    from taan_viz.plots.consensus import plot_coclustering

    # The same planted groups from different seeds: other alphas, the same partitions.
    cons = consensus(_analyses(tmp_path, [GROUPS] * 3, seeds=[0, 1, 2]))
    doc = _json(cons, tmp_path)
    assert doc["stability_threshold"] == 0.8 and doc["warnings"] == []
    assert all(layer["stability"] == 1.0 and layer["unstable"] is False and layer["warning"] is None
               for layer in doc["layers"])
    assert cons.warnings == [] and plot_coclustering(cons)._supxlabel is None


@pytest.mark.slow
def test_cell_values_fit_their_cells_at_five_layers_and_long_names(tmp_path):
    from taan_viz.plots.consensus import plot_coclustering, plot_distance_spread
    from tests.viz.viz_helpers import overlapping, rendered_boxes, wide_runs

    cons = consensus(wide_runs(tmp_path))
    for fig in (plot_distance_spread(cons), plot_coclustering(cons)):
        panels = [ax for ax in fig.axes if ax.texts]
        assert len(panels) == 5  # every layer annotated at 8 tasks
        for ax in panels:
            boxes = rendered_boxes(fig, ax.texts)
            assert not overlapping(boxes)
            # Each value inside its own cell.
            cell = ax.get_window_extent().width / cons.num_tasks
            assert max(b.width for b in boxes) < cell
        figure = fig.bbox
        ticks = [t for ax in fig.axes for t in (*ax.get_xticklabels(), *ax.get_yticklabels()) if t.get_text()]
        assert "Asomtavruli_(Georgian)" in {t.get_text() for t in ticks}
        for box in rendered_boxes(fig, ticks + [ax.title for ax in fig.axes]):
            assert figure.x0 - 1 <= box.x0 and box.x1 <= figure.x1 + 1 and box.y1 <= figure.y1 + 1
