"""Tests of taan_core.relatedness: distance checks, the sharing tree, flat cuts, the ARI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from taan_core.checkpoint import build_checkpoint, load_checkpoint, save_checkpoint
from taan_core.models import TAAN, HardShare, MLPConfig, TAANConfig
from taan_core.relatedness import branched_overrides
from taan_core.relatedness import (
    adjusted_rand_index,
    check_distance_matrix,
    flat_cut,
    planted_ari,
    share_components,
    sharing_groups,
    threshold_groups,
    tree_from_checkpoint,
)

def _blocks(labels, far=1.0, near=0.01):
    labels = np.asarray(labels)
    d = np.where(labels[:, None] == labels[None, :], near, far)
    np.fill_diagonal(d, 0.0)
    return d


def test_sharing_groups_thresholds_and_nests():
    shallow = _blocks([0, 0, 0, 0, 1, 1])
    deep = _blocks([0, 0, 1, 1, 1, 1])  # tasks 2, 3 join 4, 5 here, but split off at layer 0
    groups = sharing_groups([shallow, deep], threshold=0.1)
    assert groups == [[0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 2, 2]]
    # Relative thresholds scale with each layer.
    assert sharing_groups([shallow], threshold=0.1, scales=[0.05]) == [[0, 1, 2, 3, 4, 5]]
    assert sharing_groups([shallow], threshold=2.0) == [[0] * 6]


def test_groups_do_not_chain():
    # 0 - 0.05 - 0.1 on a line at threshold 0.06: each neighbour is close, the ends are not.
    line = np.abs(np.subtract.outer([0.0, 0.05, 0.1], [0.0, 0.05, 0.1]))
    assert share_components(line, 0.06).tolist() == [0, 0, 0]  # the chaining rule
    groups = threshold_groups(line, 0.06).tolist()
    assert groups in ([0, 0, 1], [0, 1, 1])
    assert sharing_groups([line], 0.06) == [groups]
    # Identical tasks are close even at threshold 0.
    assert threshold_groups(_blocks([0, 0, 1], near=0.0), 0.0).tolist() == [0, 0, 1]


def _random_layers(seed: int, t: int, depth: int, kind: str) -> list[np.ndarray]:
    """Distance matrices of ``depth`` layers: Euclidean distances of random points, or the
    functional distances of random activations (clustered alphas with noise, taan_core.gaussian)."""
    from taan_core.gaussian import distance_matrix

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(depth):
        if kind == "points":
            x = rng.normal(size=(t, 2)) * rng.uniform(0.2, 2.0)
            out.append(np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1)))
        else:
            centres = rng.normal(size=(rng.integers(1, 4), 6))
            alpha = centres[rng.integers(0, len(centres), t)] + rng.uniform(0.0, 0.5) * rng.normal(size=(t, 6))
            d = distance_matrix(torch.as_tensor(alpha), torch.linspace(-1.5, 1.5, 6, dtype=torch.float64))
            out.append(d.numpy())
    return out


def _pairs_within(groups, distances, limits):
    """For each layer l and each group of layer l: the largest distance of two of its tasks at
    every layer k <= l, with the limit of layer k."""
    for l, row in enumerate(groups):
        row = np.asarray(row)
        for g in np.unique(row):
            members = np.flatnonzero(row == g)
            for k in range(l + 1):
                yield l, k, float(distances[k][np.ix_(members, members)].max()), limits[k]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 4), st.integers(0, 10_000), st.floats(0.0, 1.5),
       st.sampled_from(["points", "alphas"]))
def test_every_pair_of_a_group_is_within_the_threshold(t, depth, seed, threshold, kind):
    mats = _random_layers(seed, t, depth, kind)
    scales = [float(np.sqrt((m ** 2).mean())) or 1.0 for m in mats]
    limits = [threshold * s for s in scales]
    # Each layer alone: complete linkage cut at the threshold, whatever the other layers are.
    flat = sharing_groups(mats, threshold, scales=scales, nested=False)
    for l in range(depth):
        assert flat[l] == sharing_groups([mats[l]], threshold, scales=[scales[l]])[0]
        assert flat[l] == threshold_groups(mats[l], limits[l]).tolist()
    for l, k, widest, limit in _pairs_within(flat, mats, limits):
        if k == l:
            assert widest <= limit
    # The tree: nested, and every pair of a group of layer l within the threshold at every
    # layer k <= l; the groups of layers 0..l do not depend on the layers after l.
    tree = sharing_groups(mats, threshold, scales=scales)
    for l, k, widest, limit in _pairs_within(tree, mats, limits):
        assert widest <= limit, (l, k)
    for l in range(1, depth):
        for g in np.unique(tree[l]):
            assert len({tree[l - 1][i] for i in np.flatnonzero(np.asarray(tree[l]) == g)}) == 1
    for l in range(depth):
        assert sharing_groups(mats[: l + 1], threshold, scales=scales[: l + 1]) == tree[: l + 1]
    # The first layer has no layer before it to nest in: its own groups.
    assert tree[0] == flat[0]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"distances": []}, ValueError, "at least one layer"),
        ({"distances": [np.zeros((2, 2)), np.zeros((3, 3))]}, ValueError, r"distances\[1\] must have shape"),
        ({"distances": [np.zeros((2, 2))], "threshold": -1.0}, ValueError, "threshold must be finite and >= 0"),
        ({"distances": [np.zeros((2, 2))], "threshold": "a"}, TypeError, "threshold must be a float"),
        ({"distances": [np.zeros((2, 2))], "scales": [1.0, 2.0]}, ValueError, "one value per layer"),
    ],
)
def test_sharing_groups_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        sharing_groups(**kwargs)


def _taan_checkpoint(tmp_path, alphas, hidden=(6, 5)):
    """A TAAN checkpoint whose layers have the given (T, M) alpha."""
    t, m = np.asarray(alphas[0]).shape
    model = TAAN(TAANConfig(input_dim=3, output_dims=[1] * t, hidden=list(hidden), num_hinges=m))
    with torch.no_grad():
        for (_, act), alpha in zip(model.adaptive_layers(), alphas):
            act.alpha.copy_(torch.as_tensor(alpha, dtype=torch.float32))
    ckpt = build_checkpoint(model, task_names=[f"t{k}" for k in range(t)],
                            data={"name": "planted", "config": {}, "groups": None})
    return save_checkpoint(ckpt, tmp_path / "taan.pt")


def test_tree_from_checkpoint_and_overrides(tmp_path):
    a, b = [0.0, 0.0, 0.0], [2.0, -1.0, 1.5]
    path = _taan_checkpoint(tmp_path, [[a, a, b, b], [a, b, b, b]])
    expected = [[0, 0, 1, 1], [0, 1, 2, 2]]
    assert tree_from_checkpoint(path) == expected
    assert tree_from_checkpoint(load_checkpoint(path), measure="standard") == expected
    assert branched_overrides(path) == {"groups": expected, "hidden": [6, 5]}
    assert branched_overrides(path, hidden=[3, 3])["hidden"] == [3, 3]
    with pytest.raises(ValueError, match=r"one width per task-adaptive layer \(2\)"):
        branched_overrides(path, hidden=[3])
    with pytest.raises(ValueError, match="measure must be one of standard, data"):
        tree_from_checkpoint(path, measure="other")
    with pytest.raises(TypeError, match="checkpoint must be a path or a Checkpoint"):
        tree_from_checkpoint(3)


def test_tree_needs_adaptive_layers(tmp_path):
    model = HardShare(MLPConfig(input_dim=3, output_dims=[1, 1], hidden=[4]))
    path = save_checkpoint(build_checkpoint(model, task_names=["a", "b"]), tmp_path / "hard.pt")
    with pytest.raises(ValueError, match="no task-adaptive layers"):
        tree_from_checkpoint(path)


def test_planted_ari():
    truth = [[0, 0, 1, 1], [0, 1, 2, 3]]
    assert planted_ari([_blocks(truth[0]), _blocks(truth[1])], truth) == [1.0, 1.0]
    wrong = planted_ari([_blocks([0, 1, 0, 1])], [truth[0]])
    assert wrong[0] < 0.5
    with pytest.raises(ValueError, match="planted groups describe 2 layers, the model has 1"):
        planted_ari([_blocks(truth[0])], truth)




def test_flat_cut_recovers_blocks_and_numbers_by_first_appearance():
    d = _blocks([2, 2, 0, 0, 1, 1])
    assert flat_cut(d, 3).tolist() == [0, 0, 1, 1, 2, 2]
    assert flat_cut(d, 1).tolist() == [0] * 6
    assert flat_cut(d, 10).tolist() == list(range(6))  # more clusters than tasks: every task alone
    assert flat_cut(np.zeros((1, 1)), 1).tolist() == [0]
    with pytest.raises(ValueError, match="n_clusters must be an int >= 1, got 0"):
        flat_cut(d, 0)
    with pytest.raises(ValueError, match="distance must be symmetric"):
        flat_cut(np.array([[0.0, 1.0], [2.0, 0.0]]), 2)


def test_check_distance_matrix_repairs_rounding_and_refuses_the_rest():
    d = np.array([[0.0, 4.0], [4.0 + 1e-12, 1e-13]])
    out = check_distance_matrix(d, squared=True)
    assert np.array_equal(out, out.T) and out[0, 0] == 0.0 and out[0, 1] == pytest.approx(2.0)
    with pytest.warns(RuntimeWarning, match="clipped 2 tiny negative entries"):
        assert check_distance_matrix(np.array([[0.0, -1e-12], [-1e-12, 0.0]])).min() == 0.0
    with pytest.raises(TypeError, match="must be a numeric"):
        check_distance_matrix([["a", "b"], ["c", "d"]])
    with pytest.raises(ValueError, match="must be a square matrix"):
        check_distance_matrix(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="must be finite"):
        check_distance_matrix(np.array([[0.0, np.nan], [np.nan, 0.0]]))
    with pytest.raises(ValueError, match="zero diagonal"):
        check_distance_matrix(np.eye(2))
    with pytest.raises(ValueError, match="must be >= 0"):
        check_distance_matrix(np.array([[0.0, -1.0], [-1.0, 0.0]]))


def test_share_components_errors():
    assert share_components(_blocks([0, 1, 0]), 0.1).tolist() == [0, 1, 0]
    with pytest.raises(ValueError, match="square matrix"):
        share_components(np.zeros(3), 0.1)
    with pytest.raises(ValueError, match="threshold must be a finite number >= 0"):
        share_components(np.zeros((2, 2)), float("nan"))


@pytest.mark.parametrize("seed", range(6))
def test_adjusted_rand_index_matches_sklearn(seed):
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    a, b = rng.integers(0, 1 + seed, n), rng.integers(0, 4, n)
    assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b))
    assert adjusted_rand_index(a, a) == pytest.approx(1.0)


@pytest.mark.parametrize(("a", "b"), [([0], [0]), ([0, 0, 0], [0, 1, 2]), ([0, 1, 2], [0, 1, 2]),
                                      ([0, 0, 0], [0, 0, 0]), ([0, 0, 1], [1, 1, 0])])
def test_adjusted_rand_index_edge_cases_match_sklearn(a, b):
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b))


def test_adjusted_rand_index_errors():
    with pytest.raises(ValueError, match="1-D of equal length"):
        adjusted_rand_index([0, 1], [0, 1, 1])


def test_taan_viz_uses_the_same_ari():
    from taan_viz import adjusted_rand_index as viz_ari

    assert viz_ari is adjusted_rand_index


def test_check_distance_matrix_returns_a_clean_matrix_itself_and_finds_asymmetry_in_any_block():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 2))  # more rows than one block of the asymmetry check (512)
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    assert check_distance_matrix(d) is d
    bad = d.copy()
    bad[590, 3] += 1.0
    with pytest.raises(ValueError, match=r"must be symmetric, got max \|D - D\^T\| = 1 "):
        check_distance_matrix(bad)
    nudged = d.copy()
    nudged[3, 590] += 1e-14
    fixed = check_distance_matrix(nudged)
    assert fixed is not nudged and np.array_equal(fixed, fixed.T) and nudged[3, 590] != d[3, 590]
