"""taan_viz.embedding: classical MDS from distances and, for a layer, from its coordinates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from taan_core.gaussian import gram_matrix
from taan_viz.embedding import classical_mds, coordinate_mds, layer_mds
from taan_viz.geometry import layer_geometry


def _planted_layer(num_tasks: int = 50, num_hinges: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = np.arange(num_tasks) * 4 // num_tasks
    alpha = 0.5 * rng.normal(size=(4, num_hinges))[groups] + 0.05 * rng.normal(size=(num_tasks, num_hinges))
    hinges = np.sort(rng.uniform(-2, 2, num_hinges))
    return layer_geometry(alpha, hinges, mu=0.3, sigma=1.2, name="act")


def _assert_equal_up_to_sign(a: np.ndarray, b: np.ndarray, atol: float) -> None:
    for j in range(a.shape[1]):
        assert min(np.abs(a[:, j] - b[:, j]).max(), np.abs(a[:, j] + b[:, j]).max()) <= atol, j


@pytest.mark.parametrize("n_components", [1, 2, 5])
def test_layer_mds_equals_the_eigendecomposition_of_the_distances(n_components):
    geometry = _planted_layer()
    ref, ref_explained = classical_mds(geometry.distance, n_components)
    coords, explained = layer_mds(geometry, n_components)
    scale = np.abs(ref).max()
    _assert_equal_up_to_sign(coords, ref, atol=1e-7 * scale)
    np.testing.assert_allclose(explained, ref_explained, rtol=1e-7, atol=1e-12)
    mds_coords, mds_explained = geometry.mds(n_components)
    np.testing.assert_array_equal(mds_coords, coords)
    np.testing.assert_array_equal(mds_explained, explained)
    # The distances between the points of all their axes are the layer's distances.
    full, _ = layer_mds(geometry, geometry.alpha.shape[1])
    d = np.sqrt(((full[:, None, :] - full[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(d, geometry.distance, atol=1e-7 * geometry.distance.max())


def test_coordinate_mds_takes_the_whole_gram_matrix_with_the_relu_column():
    geometry = _planted_layer(num_tasks=20, num_hinges=5, seed=1)
    g = gram_matrix(torch.as_tensor(geometry.hinges), geometry.mu, geometry.sigma).numpy()
    with_ones = np.concatenate([np.ones((20, 1)), geometry.alpha], axis=1)
    coords, explained = coordinate_mds(with_ones, g, 3)
    ref, ref_explained = layer_mds(geometry, 3)
    _assert_equal_up_to_sign(coords, ref, atol=1e-10 * np.abs(ref).max())
    np.testing.assert_allclose(explained, ref_explained, rtol=1e-9)


def test_coordinate_mds_edge_cases():
    coords, explained = coordinate_mds(np.zeros((0, 3)), np.eye(3), 2)
    assert coords.shape == (0, 2) and (explained == 0).all()
    coords, explained = coordinate_mds(np.ones((4, 2)), np.eye(2), 2)  # all tasks equal
    assert (coords == 0).all() and (explained == 0).all()
    coords, explained = coordinate_mds(np.array([[0.0], [2.0]]), np.eye(1), 3)  # more axes than rank
    np.testing.assert_allclose(np.sort(coords[:, 0]), [-1.0, 1.0])
    assert (coords[:, 1:] == 0).all() and explained[0] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "args,match",
    [
        ((np.zeros(3), np.eye(3)), r"coords must have shape \(T, K\)"),
        ((np.zeros((4, 3)), np.eye(2)), r"gram must have shape \(K, K\) = \(3, 3\)"),
        ((np.zeros((4, 3)), np.eye(3), 0), r"n_components must be an int >= 1"),
        ((np.full((4, 3), np.nan), np.eye(3)), r"must be finite"),
    ],
)
def test_coordinate_mds_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        coordinate_mds(*args)
