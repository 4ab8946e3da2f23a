"""Two-dimensional pictures of the tasks of a layer: classical multidimensional scaling.

The functional distance is an L2 distance, so the T activations are points of a Euclidean
space and classical MDS recovers their configuration exactly up to rotation when it has
enough axes; two axes show the dominant structure, with the share of variance they carry.

Two paths give the same picture. :func:`classical_mds` takes any distance matrix and
eigendecomposes its T x T double-centred square (O(T^3)). For a layer the distances are
``d(s, t)^2 = (a_s - a_t)^T G (a_s - a_t)`` with ``a_t`` the task's coordinates and ``G`` the
Gram matrix, and the double-centred matrix is ``Z Z^T`` with ``Z = (A - mean) G^(1/2)``: its
eigenvectors scaled by the roots of its eigenvalues are the principal components of ``Z``.
:func:`coordinate_mds` computes them from an SVD of ``Z`` (O(T M^2)), which is what
:func:`layer_mds` and :meth:`LayerGeometry.mds <taan_viz.geometry.LayerGeometry.mds>` use.
"""

from __future__ import annotations

import numpy as np

__all__ = ["classical_mds", "coordinate_mds", "layer_mds"]


def classical_mds(distance, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Classical (Torgerson) multidimensional scaling of a distance matrix.

    Parameters
    ----------
    distance : array-like of shape (T, T)
        Symmetric distances with a zero diagonal.
    n_components : int, default 2

    Returns
    -------
    coords : ndarray of shape (T, n_components)
        Coordinates whose Euclidean distances approximate ``distance``; each axis is signed so
        that its largest-magnitude coordinate is positive (a deterministic orientation).
    explained : ndarray of shape (n_components,)
        Share of the total (positive) eigenvalue mass each axis carries.
    """
    d = np.asarray(distance, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"distance must be a square matrix (T, T), got shape {d.shape}")
    if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
        raise ValueError(f"n_components must be an int >= 1, got {n_components!r}")
    t = d.shape[0]
    if t == 0:
        return np.zeros((0, n_components)), np.zeros(n_components)
    # Double centring of the squared distances gives the Gram matrix of centred coordinates.
    d2 = d ** 2
    b = -0.5 * (d2 - d2.mean(axis=0) - d2.mean(axis=1)[:, None] + d2.mean())
    b = 0.5 * (b + b.T)
    evals, evecs = np.linalg.eigh(b)
    evals, evecs = evals[::-1], evecs[:, ::-1]
    k = min(n_components, t)
    lam = np.clip(evals[:k], 0.0, None)
    coords = np.zeros((t, n_components))
    coords[:, :k] = evecs[:, :k] * np.sqrt(lam)
    _orient(coords, k)
    total = np.clip(evals, 0.0, None).sum()
    explained = np.zeros(n_components)
    if total > 0:
        explained[:k] = lam / total
    return coords, explained




def _orient(coords: np.ndarray, k: int) -> None:
    """Sign each axis so that its largest-magnitude coordinate is positive (in place)."""
    for j in range(k):
        col = coords[:, j]
        if col[np.argmax(np.abs(col))] < 0:
            coords[:, j] = -col


def coordinate_mds(coords, gram, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Classical MDS of the distances ``d(s, t)^2 = (x_s - x_t)^T G (x_s - x_t)``, from the points.

    The same result as ``classical_mds`` of those distances (up to the sign of an axis whose
    largest coordinates tie), computed as the principal components of ``(X - mean) G^(1/2)``
    in O(T K^2) time and O(T K) memory instead of O(T^3) and O(T^2).

    Parameters
    ----------
    coords : array-like of shape (T, K)
        The points, e.g. a layer's ``alpha`` (or ``[1, alpha]``: a constant column is centred
        away).
    gram : array-like of shape (K, K)
        Symmetric positive semidefinite matrix of the inner product, e.g. the hinge block ``W``
        of the layer's Gram matrix (or the whole Gram matrix with ``[1, alpha]``).
    n_components : int, default 2

    Returns
    -------
    coords : ndarray of shape (T, n_components)
        As :func:`classical_mds`: each axis signed so that its largest-magnitude coordinate is
        positive; axes beyond the rank of the points are 0.
    explained : ndarray of shape (n_components,)
        Share of the total variance each axis carries.
    """
    x = np.asarray(coords, dtype=np.float64)
    g = np.asarray(gram, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"coords must have shape (T, K), got shape {x.shape}")
    if g.shape != (x.shape[1], x.shape[1]):
        raise ValueError(f"gram must have shape (K, K) = ({x.shape[1]}, {x.shape[1]}) to match coords of shape "
                         f"{x.shape}, got {g.shape}")
    if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
        raise ValueError(f"n_components must be an int >= 1, got {n_components!r}")
    if not (np.isfinite(x).all() and np.isfinite(g).all()):
        raise ValueError("coords and gram must be finite")
    t = x.shape[0]
    out = np.zeros((t, n_components))
    explained = np.zeros(n_components)
    if t == 0 or x.shape[1] == 0:
        return out, explained
    lam, vec = np.linalg.eigh(0.5 * (g + g.T))
    z = (x - x.mean(axis=0)) @ (vec * np.sqrt(np.clip(lam, 0.0, None)))
    u, sv, _ = np.linalg.svd(z, full_matrices=False)
    k = min(n_components, sv.shape[0])
    out[:, :k] = u[:, :k] * sv[:k]
    _orient(out, k)
    total = float((sv**2).sum())
    if total > 0:
        explained[:k] = sv[:k] ** 2 / total
    return out, explained


def layer_mds(geometry, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Classical MDS of a layer's task distances, from its coordinates (see :func:`coordinate_mds`).

    Parameters
    ----------
    geometry : taan_viz.geometry.LayerGeometry
        Supplies ``alpha`` (T, M), ``hinges`` (M,) and the measure ``mu``, ``sigma``.
    n_components : int, default 2

    Returns
    -------
    coords, explained
        As :func:`classical_mds` of ``geometry.distance``.
    """
    import torch

    from taan_core.gaussian import gram_matrix

    hinges = torch.as_tensor(np.asarray(geometry.hinges, dtype=np.float64))
    w = gram_matrix(hinges, geometry.mu, geometry.sigma)[1:, 1:].numpy()
    return coordinate_mds(geometry.alpha, w, n_components)
