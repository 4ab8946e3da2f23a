"""Two-dimensional pictures of the tasks of a layer: classical multidimensional scaling.

The functional distance is an L2 distance, so the T activations are points of a Euclidean
space and classical MDS recovers their configuration exactly up to rotation when it has
enough axes; two axes show the dominant structure, with the share of variance they carry.
"""

from __future__ import annotations

import numpy as np

__all__ = ["classical_mds"]



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
    for j in range(k):
        col = coords[:, j]
        if col[np.argmax(np.abs(col))] < 0:
            coords[:, j] = -col
    total = np.clip(evals, 0.0, None).sum()
    explained = np.zeros(n_components)
    if total > 0:
        explained[:k] = lam / total
    return coords, explained


