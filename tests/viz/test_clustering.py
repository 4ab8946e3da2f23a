"""taan_viz.clustering: validation, linkage, flat clusters, Newick, ARI."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taan_viz.clustering import (
    adjusted_rand_index,
    check_distance_matrix,
    cluster_tasks,
    flat_clusters,
    match_labels,
)


def _blocks() -> np.ndarray:
    """Three tight groups {0, 1}, {2, 3, 4}, {5}: within 0.1, between 1 and 3."""
    x = np.array([0.0, 0.1, 1.0, 1.05, 1.1, 4.0])
    return np.abs(x[:, None] - x[None, :])


def test_check_distance_matrix_repairs_rounding():
    d = _blocks()
    noisy = d + 1e-13 * np.triu(np.ones_like(d), 1)
    out = check_distance_matrix(noisy)
    np.testing.assert_array_equal(out, out.T)
    assert np.all(np.diag(out) == 0)
    d2 = d ** 2
    np.testing.assert_allclose(check_distance_matrix(d2, squared=True), d)


def test_check_distance_matrix_clips_tiny_negatives():
    d2 = _blocks() ** 2
    d2[0, 1] = d2[1, 0] = -1e-12
    with pytest.warns(RuntimeWarning, match="clipped 2 tiny negative entries"):
        out = check_distance_matrix(d2, "d2", squared=True)
    assert out[0, 1] == 0.0


@pytest.mark.parametrize("matrix, match", [
    (np.zeros((2, 3)), r"square matrix of shape \(T, T\), got shape \(2, 3\)"),
    (np.zeros(3), "square matrix"),
    (np.array([[0.0, np.nan], [np.nan, 0.0]]), "must be finite, got 2 non-finite"),
    (np.array([[0.0, 1.0], [2.0, 0.0]]), "must be symmetric"),
    (np.array([[0.5, 1.0], [1.0, 0.0]]), "zero diagonal"),
    (np.array([[0.0, -1.0], [-1.0, 0.0]]), "must be >= 0"),
])
def test_check_distance_matrix_rejects(matrix, match):
    with pytest.raises(ValueError, match=match):
        check_distance_matrix(matrix)


def test_check_distance_matrix_type():
    with pytest.raises(TypeError, match="numeric"):
        check_distance_matrix([["a", "b"], ["c", "d"]])


def test_cluster_tasks_finds_the_blocks():
    clus = cluster_tasks(_blocks(), labels=list("abcdef"))
    assert sorted(clus.order.tolist()) == list(range(6))
    assert clus.linkage.shape == (5, 4)
    flat = flat_clusters(clus, n_clusters=3)
    assert [set(np.flatnonzero(flat == k)) for k in np.unique(flat)] and len(np.unique(flat)) == 3
    assert flat[0] == flat[1] and flat[2] == flat[3] == flat[4] and len({flat[0], flat[2], flat[5]}) == 3
    # Ids follow leaf order: the first drawn leaf is in cluster 0.
    assert flat[clus.order[0]] == 0
    assert np.array_equal(flat, flat_clusters(clus, threshold=0.5))
    assert 0.9 < clus.cophenetic_correlation <= 1.0


def test_cluster_tasks_ultrametric_is_reproduced_exactly():
    # A distance that is already a tree (ultrametric): average linkage returns it, r = 1.
    d = np.array([[0, 1, 4, 4], [1, 0, 4, 4], [4, 4, 0, 2], [4, 4, 2, 0]], dtype=float)
    clus = cluster_tasks(d)
    assert clus.cophenetic_correlation == pytest.approx(1.0)
    assert sorted(clus.linkage[:, 2].tolist()) == [1.0, 2.0, 4.0]


def test_cluster_tasks_small_and_degenerate():
    one = cluster_tasks(np.zeros((1, 1)), labels=["only"])
    assert one.order.tolist() == [0] and np.isnan(one.cophenetic_correlation)
    assert flat_clusters(one, n_clusters=3).tolist() == [0]
    assert one.to_newick() == "only;"
    two = cluster_tasks(np.array([[0.0, 1.0], [1.0, 0.0]]))
    assert np.isnan(two.cophenetic_correlation)
    same = cluster_tasks(np.zeros((3, 3)))
    assert np.isnan(same.cophenetic_correlation)
    assert flat_clusters(same, threshold=0.0).tolist() == [0, 0, 0]


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "nearest"}, "method must be one of"),
    ({"labels": ["a"]}, "labels must have 6 entries"),
])
def test_cluster_tasks_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cluster_tasks(_blocks(), **kwargs)


def test_cluster_tasks_empty():
    with pytest.raises(ValueError, match="at least one task"):
        cluster_tasks(np.zeros((0, 0)))


@pytest.mark.parametrize("kwargs, match", [
    ({}, "exactly one of n_clusters and threshold"),
    ({"n_clusters": 2, "threshold": 1.0}, "exactly one"),
    ({"n_clusters": 0}, "n_clusters must be an int >= 1"),
    ({"n_clusters": True}, "n_clusters must be an int >= 1"),
    ({"threshold": -0.1}, "threshold must be a finite number >= 0"),
    ({"threshold": float("nan")}, "threshold must be a finite number >= 0"),
])
def test_flat_clusters_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        flat_clusters(cluster_tasks(_blocks()), **kwargs)


@pytest.mark.parametrize("method", ["average", "complete", "single", "weighted", "ward", "centroid", "median"])
def test_every_linkage_method(method):
    flat = flat_clusters(cluster_tasks(_blocks(), method=method), n_clusters=3)
    assert len(np.unique(flat)) == 3 and flat[0] == flat[1]


def test_newick():
    clus = cluster_tasks(_blocks(), labels=["a b", "c", "it's", "d:e", "f", "g"])
    text = clus.to_newick()
    assert text.endswith(";") and text.count("(") == text.count(")") == 5
    for quoted in ("'a b'", "'it''s'", "'d:e'"):
        assert quoted in text
    # Leaf to root, the branch lengths add up to the root height (an ultrametric tree).
    lengths = [float(x) for x in re.findall(r":(-?[0-9][0-9.e+-]*)", text)]
    assert len(lengths) == 2 * 6 - 2
    assert max(lengths) <= clus.linkage[-1, 2] + 1e-9


def test_newick_deep_chain_does_not_recurse():
    # A chain (single linkage of points on a line) 3000 deep: iterative Newick writing.
    x = np.cumsum(np.arange(1, 3001, dtype=float))
    clus = cluster_tasks(np.abs(x[:, None] - x[None, :]), method="single", optimal_ordering=False)
    assert clus.to_newick().count("(") == 2999


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=2, max_size=12), st.integers(0, 1000))
def test_ari_matches_definition(labels, seed):
    from sklearn.metrics import adjusted_rand_score

    other = np.random.default_rng(seed).permutation(labels)
    assert adjusted_rand_index(labels, other) == pytest.approx(adjusted_rand_score(labels, other))
    assert adjusted_rand_index(labels, labels) == pytest.approx(1.0)


@pytest.mark.parametrize("a, b", [
    ([0, 1, 2, 3], [4, 5, 6, 7]),      # both all singletons
    ([0, 0, 0, 0], [1, 1, 1, 1]),      # both one cluster
    ([0, 0, 0, 0], [0, 1, 2, 3]),      # one cluster vs singletons
    ([0, 0, 1, 1], [0, 1, 0, 1]),      # worse than chance
    ([5], [3]),
])
def test_ari_edge_cases_match_sklearn(a, b):
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b))


def test_optimal_ordering_switch():
    d = _blocks()
    auto = cluster_tasks(d)
    np.testing.assert_array_equal(auto.linkage, cluster_tasks(d, optimal_ordering=True).linkage)
    plain = cluster_tasks(d, optimal_ordering=False)
    assert sorted(plain.order.tolist()) == list(range(6))
    with pytest.raises(ValueError, match="optimal_ordering must be True, False or 'auto'"):
        cluster_tasks(d, optimal_ordering="yes")


def test_ari_rejects():
    with pytest.raises(ValueError, match="1-D of equal length"):
        adjusted_rand_index([0, 1], [0, 1, 1])


def test_match_labels():
    ref = np.array([0, 0, 0, 1, 1, 1])
    lab = np.array([5, 5, 7, 9, 9, 9])
    assert match_labels(ref, lab).tolist() == [0, 0, 2, 1, 1, 1]
    assert match_labels(ref, np.array([1, 1, 1, 0, 0, 0])).tolist() == ref.tolist()
    with pytest.raises(ValueError, match="same shape"):
        match_labels(ref, lab[:3])


def test_clustering_keeps_a_clean_matrix_and_copies_a_repaired_one():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 2))
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    assert cluster_tasks(d).distance is d
    nudged = d.copy()
    nudged[0, 1] += 1e-15  # asymmetric within tolerance: repaired, so a copy
    kept = cluster_tasks(nudged).distance
    assert kept is not nudged and np.array_equal(kept, kept.T)
