"""taan_viz.sharing: groups within the threshold, nesting across depth, order, Newick, and the
groups of a layer whichever layers are analysed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taan_core.relatedness import sharing_groups
from taan_viz.sharing import share_components, sharing_tree, tree_from_groups


def _line(x) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return np.abs(x[:, None] - x[None, :])


def test_groups_are_pairwise_close_not_chained():
    # 0 - 0.05 - 0.1: neighbours within 0.06, the ends 0.1 apart: not one group.
    tree = sharing_tree([_line([0.0, 0.05, 0.1])], task_names=list("abc"), layer_names=["l"], threshold=0.06,
                        relative=False)
    assert tree.num_groups == [2]


def _partition(row) -> list[int]:
    ids: dict[int, int] = {}
    return [ids.setdefault(int(g), len(ids)) for g in row]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 9), st.integers(1, 4), st.integers(0, 10_000), st.floats(0.0, 2.0))
def test_one_rule_with_taan_core(t, depth, seed, threshold):
    rng = np.random.default_rng(seed)
    mats = [_line(rng.normal(size=t)) for _ in range(depth)]
    scales = rng.uniform(0.5, 2.0, size=depth).tolist()
    tree = sharing_tree(mats, task_names=[str(i) for i in range(t)], layer_names=[str(l) for l in range(depth)],
                        threshold=threshold, scales=scales, base_order=rng.permutation(t))
    assert [_partition(row) for row in tree.groups] == sharing_groups(mats, threshold, scales=scales)


def test_a_layer_has_its_groups_whichever_layers_are_analysed(tmp_path):
    import torch

    from taan_core.checkpoint import load_checkpoint
    from taan_viz.analysis import analyze
    from tests.viz.viz_helpers import make_wide_checkpoint_dict

    path = tmp_path / "checkpoint.pt"
    torch.save(make_wide_checkpoint_dict(), path)
    ckpt = load_checkpoint(path)
    full = analyze(ckpt)
    seen = set()
    for threshold in (0.05, 0.1, 0.2, 0.4, 0.8):
        whole = full.sharing_tree(threshold)
        seen.add(tuple(whole.num_groups))
        for layers in ([0, 4], [4], [1, 3], [2, 3, 4]):
            part = analyze(ckpt, layers=layers)
            tree = part.sharing_tree(threshold)
            for row, la in zip(tree.groups, sorted(part.layers, key=lambda la: la.index)):
                assert _partition(row) == _partition(whole.groups[la.index]), (threshold, layers, la.index)
            labels = part.cluster_labels(threshold=threshold)
            for lab, la in zip(labels, part.layers):
                assert _partition(lab) == _partition(full.cluster_labels(threshold=threshold)[la.index])
    assert len(seen) >= 3, "the thresholds must cut the tree in several ways"


def test_select_and_tree_from_groups_errors():
    tree = sharing_tree([_line([0, 0, 1]), _line([0, 1, 2])], task_names=list("abc"), layer_names=["a", "b"],
                        threshold=0.5, relative=False)
    assert tree.select([1]).layer_names == ("b",) and tree.select([1]).groups.tolist() == [tree.groups[1].tolist()]
    with pytest.raises(ValueError, match="increasing positions in 0..1"):
        tree.select([1, 0])
    common = {"task_names": list("abc"), "layer_names": ["a", "b"], "thresholds": [1.0, 1.0], "threshold": 1.0,
              "relative": False}
    with pytest.raises(ValueError, match="groups must be nested"):
        tree_from_groups([[0, 0, 1], [0, 1, 1]], **common)
    with pytest.raises(ValueError, match=r"groups must have shape \(L, T\) = \(2, 3\)"):
        tree_from_groups([[0, 0, 1]], **common)


def test_share_components():
    d = _line([0.0, 0.05, 0.5, 0.52, 3.0])
    assert share_components(d, 0.1).tolist() == [0, 0, 1, 1, 2]
    # Chains join: 0 - 0.05 - 0.1 are one component at threshold 0.06 although 0 and 0.1 are not close.
    assert share_components(_line([0.0, 0.05, 0.1]), 0.06).tolist() == [0, 0, 0]
    # Identical tasks share even at threshold 0.
    assert share_components(_line([1.0, 1.0, 2.0]), 0.0).tolist() == [0, 0, 1]


@pytest.mark.parametrize("d, thr, match", [
    (np.zeros((2, 3)), 0.1, "square matrix"),
    (np.zeros((2, 2)), -1.0, "threshold must be a finite number >= 0"),
    (np.zeros((2, 2)), float("inf"), "threshold must be a finite number >= 0"),
])
def test_share_components_rejects(d, thr, match):
    with pytest.raises(ValueError, match=match):
        share_components(d, thr)


def test_sharing_tree_nests_across_layers():
    names = list("abcd")
    # Layer 2 would re-join b and c, which layer 1 split: nesting keeps them apart.
    d1 = _line([0.0, 0.0, 5.0, 5.0])
    d2 = _line([0.0, 3.0, 3.0, 9.0])
    tree = sharing_tree([d1, d2], task_names=names, layer_names=["l1", "l2"], threshold=0.5, relative=False)
    assert tree.num_groups == [2, 4]
    g1, g2 = tree.groups
    assert g1[0] == g1[1] != g1[2] == g1[3]
    assert g2[1] != g2[2]
    assert tree.parent(1, int(g2[3])) == int(g1[3]) and tree.parent(0, 0) is None
    assert sorted(tree.members(0, int(g1[0])).tolist()) == [0, 1]
    assert tree.thresholds.tolist() == [0.5, 0.5]


def test_sharing_tree_relative_threshold():
    d = _line([0.0, 0.3, 2.0])
    rel = sharing_tree([d], task_names=list("abc"), layer_names=["l"], threshold=0.1, scales=[4.0])
    assert rel.thresholds.tolist() == [pytest.approx(0.4)] and rel.num_groups == [2]
    assert rel.relative


def test_sharing_tree_newick():
    tree = sharing_tree([_line([0, 0, 1]), _line([0, 1, 2])], task_names=["x", "y z", "w"],
                        layer_names=["a", "b"], threshold=0.5, relative=False, base_order=[2, 0, 1])
    text = tree.to_newick()
    assert text.endswith(")input;") and text.count("(") == text.count(")")
    assert "'y z':1" in text and "a/0" in text and "b/" in text
    assert tree.order.tolist()[0] == 2  # base order respected where groups allow


@pytest.mark.parametrize("kwargs, match", [
    ({"distances": []}, "at least one layer"),
    ({"layer_names": ["a"]}, "layer_names must have 2 entries"),
    ({"task_names": list("ab")}, r"distances\[0\] must have shape \(T, T\) with T = len\(task_names\) = 2"),
    ({"threshold": -1.0}, "threshold must be a finite number >= 0"),
    ({"relative": True, "scales": None}, "one scale per layer"),
    ({"base_order": [0, 0, 1]}, "base_order must be a permutation"),
])
def test_sharing_tree_rejects(kwargs, match):
    args = {"distances": [_line([0, 1, 2])] * 2, "task_names": list("abc"), "layer_names": ["a", "b"],
            "threshold": 0.5, "relative": False}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sharing_tree(**args)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 4), st.integers(0, 10_000), st.floats(0.0, 2.0))
def test_groups_are_nested_and_contiguous(t, depth, seed, threshold):
    rng = np.random.default_rng(seed)
    mats = [_line(rng.normal(size=t)) for _ in range(depth)]
    tree = sharing_tree(mats, task_names=[str(i) for i in range(t)], layer_names=[str(l) for l in range(depth)],
                        threshold=threshold, relative=False, base_order=rng.permutation(t))
    assert sorted(tree.order.tolist()) == list(range(t))
    for l in range(depth):
        row = tree.groups[l][tree.order]
        # Contiguous in the drawing order, numbered 0, 1, ... along it.
        changes = np.flatnonzero(np.diff(row)) + 1
        assert len(np.unique(row)) == len(changes) + 1
        assert row[0] == 0 and np.all(np.diff(np.unique(row, return_index=True)[1]) > 0)
        if l:
            # Nested: the same group at layer l implies the same group at layer l - 1.
            for g in np.unique(tree.groups[l]):
                assert len(np.unique(tree.groups[l - 1][tree.groups[l] == g])) == 1
