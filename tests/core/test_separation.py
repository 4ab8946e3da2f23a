"""Tests of taan_core.relatedness.separation: separated groups against a continuum."""

from __future__ import annotations

import math

import numpy as np
import pytest

from taan_core.relatedness import SEPARATION_RATIO, Separation, separation


def _points(x):
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return np.linalg.norm(x[:, None] - x[None, :], axis=-1)


def test_separated_groups_are_found_with_their_count():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    x = np.concatenate([c + 0.1 * rng.normal(size=(10, 2)) for c in centres])
    sep = separation(_points(x))
    assert sep.k == 3 and sep.ratio > 5 and sep.separated


def test_a_continuum_is_not_separated():
    # 139 tasks spread evenly along one axis, as school's whole-network distances are.
    rng = np.random.default_rng(1)
    for _ in range(5):
        sep = separation(_points(rng.uniform(size=139)))
        assert sep.ratio < 0.3 and not sep.separated


def test_labels_judge_that_partition_by_brute_force():
    rng = np.random.default_rng(2)
    d = _points(rng.normal(size=(12, 3)))
    labels = rng.integers(0, 3, size=12)
    within = [d[i, j] for i in range(12) for j in range(12) if i != j and labels[i] == labels[j]]
    across = [d[i, j] for i in range(12) for j in range(12) if labels[i] != labels[j]]
    sep = separation(d, labels)
    assert sep.k == len(np.unique(labels))
    assert sep.ratio == pytest.approx(min(across) / max(within), rel=1e-12)


def test_scale_free_and_best_of_the_cuts():
    rng = np.random.default_rng(3)
    d = _points(np.concatenate([rng.normal(size=(6, 2)), 10 + rng.normal(size=(6, 2))]))
    a, b = separation(d), separation(123.0 * d)
    assert a.k == b.k == 2 and a.ratio == pytest.approx(b.ratio, rel=1e-12)
    # No cut scores better than the one returned.
    from taan_core.relatedness import flat_cut

    assert all(separation(d, flat_cut(d, k)).ratio <= a.ratio + 1e-12 for k in range(2, 9))


def test_nothing_to_judge_and_identical_groups():
    assert math.isnan(separation(np.zeros((2, 2))).ratio)
    assert separation(np.zeros((2, 2))) == Separation(1, separation(np.zeros((2, 2))).ratio)
    assert not Separation(1, math.nan).separated
    d = _points([0.0, 0.0, 0.0, 1.0])
    assert math.isnan(separation(d, [0, 0, 0, 0]).ratio)  # one group
    assert math.isnan(separation(d, [0, 1, 2, 3]).ratio)  # only singletons
    assert math.isnan(separation(np.zeros((4, 4))).ratio)  # all tasks alike
    two = _points([0.0, 0.0, 1.0, 1.0])
    sep = separation(two)
    assert sep.k == 2 and sep.ratio == math.inf and sep.separated


def test_threshold_is_strict():
    assert not Separation(2, SEPARATION_RATIO).separated
    assert Separation(2, np.nextafter(SEPARATION_RATIO, 2.0)).separated


def test_errors():
    d = _points([0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"labels must have shape \(T,\) = \(3,\), got \(2,\)"):
        separation(d, [0, 1])
    with pytest.raises(ValueError, match="max_clusters must be an int >= 2, got 1"):
        separation(d, max_clusters=1)
    with pytest.raises(ValueError, match="must be symmetric"):
        separation(np.array([[0.0, 1.0, 2.0], [0.5, 0.0, 1.0], [2.0, 1.0, 0.0]]))


def test_labels_in_row_blocks_match_brute_force():
    # 2100 tasks: read in two row blocks (the helper bounds its temporaries to ~4M entries).
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2100, 2))
    d = _points(x)
    labels = rng.integers(0, 5, size=2100)
    same = labels[:, None] == labels[None, :]
    within = same & ~np.eye(2100, dtype=bool)
    assert separation(d, labels).ratio == d[~same].min() / d[within].max()
