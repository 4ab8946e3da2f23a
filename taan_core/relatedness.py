"""How related the tasks of a trained TAAN are: distances, the sharing tree, flat clusters, ARI.

The primitives that every reader of a checkpoint's task relations uses, in one place:

- :func:`check_distance_matrix`: the checks on a distance matrix (square, finite, symmetric,
  zero diagonal, >= 0) before any clustering sees it;
- :func:`layer_distances`: each layer's function-space distance matrix and RMS activation norm;
- :func:`network_distances`: the distance between the task-specific networks' whole functions on
  a sample of inputs, and their RMS spread (defined in :mod:`taan_core._network_distance`). Unlike
  a layer's distances it does not depend on which layer carries a task difference, which the data
  do not identify (docs/training.md);
- :func:`threshold_groups` and :func:`sharing_groups`: the sharing tree, the one rule for groups
  of tasks in the whole project. At a task-adaptive layer two tasks are *close* when the
  distance of their activations is at most ``threshold`` times the layer's RMS activation norm
  ``sqrt(mean_t |F_t|^2)``. A group is a set of tasks that are pairwise close: the layer's
  complete-linkage tree cut at the threshold (:func:`threshold_groups`), so no two tasks of a
  group are further apart than the threshold, however many tasks lie between them. Across
  depth the groups are nested because a hard-sharing network cannot re-join branches: the
  groups of layer l are the complete-linkage groups of layer l's distances computed inside
  each group of layer l - 1 (:func:`sharing_groups`). Every pair of tasks in a group of layer l
  is therefore close at layer l and at every layer before it, and the groups of layers 0..l
  depend on those layers only. :func:`tree_from_checkpoint` applies the rule to all of a
  checkpoint's layers; the result ``groups[l][t]`` is what
  :class:`~taan_core.models.branched.Branched` takes;
- :func:`share_components`: the connected components of the "close" graph (single linkage),
  the rule before the one above. It chains: tasks a and c share a component through a task b
  close to both, at any distance from each other. Kept for callers that want exactly that;
- :func:`flat_cut`: average-linkage clusters of one layer cut into a number of clusters;
- :func:`separation`: whether a partition of the tasks, or the best cut of their distances, is
  separated (the closest pair across groups over the furthest pair within one, above
  :data:`SEPARATION_RATIO`) or cuts a continuum that every seed divides differently (defined in
  :mod:`taan_core._separation`);
- :func:`adjusted_rand_index` and :func:`planted_ari`: agreement of two partitions, and of every
  layer's clusters with planted groups.

``taan-viz`` draws the same tree (:mod:`taan_viz.sharing` calls :func:`sharing_groups` and adds
only what drawing needs: a display order) and the study records it.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Sequence

import numpy as np

from taan_core._names import MEASURE_NAMES
from taan_core._network_distance import network_distances
from taan_core._separation import SEPARATION_RATIO, Separation, judge

__all__ = [
    "MEASURES",
    "SEPARATION_RATIO",
    "Separation",
    "adjusted_rand_index",
    "branched_overrides",
    "check_distance_matrix",
    "flat_cut",
    "layer_distances",
    "network_distances",
    "planted_ari",
    "separation",
    "share_components",
    "sharing_groups",
    "threshold_groups",
    "tree_from_checkpoint",
]

MEASURES = MEASURE_NAMES


def check_distance_matrix(
    distance, name: str = "distance", *, squared: bool = False, rtol: float = 1e-6, atol: float = 1e-10
) -> np.ndarray:
    """Validate a (squared) distance matrix and return the cleaned distances (not squared).

    scipy's ``linkage`` silently accepts a matrix that is not a distance and returns a
    meaningless tree, so the input is checked first.

    Parameters
    ----------
    distance : array-like of shape (T, T)
    name : str
        Used in error messages.
    squared : bool, default False
        The input holds squared distances; the square root is taken after the checks.
    rtol, atol : float
        Asymmetry, diagonal entries and negative entries up to ``atol + rtol * max|D|`` are
        rounding and get repaired; anything larger is an error.

    Returns
    -------
    ndarray of shape (T, T), float64
        Exactly symmetric, zero diagonal, >= 0. A float64 ndarray that needs no repair is
        returned itself, not copied (unless ``squared``).

    Raises
    ------
    TypeError
        Non-numeric input.
    ValueError
        Not square, non-finite, asymmetric, non-zero diagonal or clearly negative entries.

    Warns
    -----
    RuntimeWarning
        When negative entries within tolerance are clipped to 0.
    """
    try:
        # No copy yet: a clean float64 matrix is returned as it is (see the end).
        d = np.asarray(distance, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a numeric (T, T) array, got {type(distance).__name__}") from err
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"{name} must be a square matrix of shape (T, T), got shape {d.shape}")
    if not np.isfinite(d).all():
        raise ValueError(f"{name} must be finite, got {int((~np.isfinite(d)).sum())} non-finite value(s)")
    if d.size == 0:
        return d.copy()
    tol = atol + rtol * max(abs(float(d.max())), abs(float(d.min())))
    asym = _max_asymmetry(d)
    if asym > tol:
        raise ValueError(f"{name} must be symmetric, got max |D - D^T| = {asym:.3g} (tolerance {tol:.3g})")
    diag = float(np.abs(np.diag(d)).max())
    if diag > tol:
        raise ValueError(f"{name} must have a zero diagonal, got max |D_tt| = {diag:.3g} (tolerance {tol:.3g})")
    if asym > 0 or diag > 0:
        d = 0.5 * (d + d.T)
        np.fill_diagonal(d, 0.0)
    low = float(d.min())
    if low < -tol:
        raise ValueError(f"{name} must be >= 0, got min {low:.3g} (tolerance {tol:.3g})")
    if low < 0:
        count = int((d < 0).sum())
        warnings.warn(f"{name}: clipped {count} tiny negative entries (min {low:.3g}) to 0; "
                      "they are rounding in the Gram quadratic form", RuntimeWarning, stacklevel=2)
        d = np.clip(d, 0.0, None)
    return np.sqrt(d) if squared else d


def _max_asymmetry(d: np.ndarray, block: int = 512) -> float:
    """max |D - D^T| of a square matrix, a block of rows at a time and only on and right of
    the diagonal block: at T = 5000 the whole difference and its transposed read cost 3.7 s a
    matrix, several times these blocks."""
    worst = 0.0
    for i in range(0, d.shape[0], block):
        worst = max(worst, float(np.abs(d[i:i + block, i:] - d[i:, i:i + block].T).max()))
    return worst


def _measure(layer: Any, measure: str) -> tuple[float, float]:
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    if measure == "standard":
        return 0.0, 1.0
    mu, sigma = float(layer.mu), float(layer.sigma)
    if not (math.isfinite(mu) and math.isfinite(sigma)) or sigma <= 0:
        raise ValueError(f"layer {layer.name}: recorded pre-activation statistics must be finite with std > 0, "
                         f"got mean {mu:g}, std {sigma:g}; use measure='standard'")
    return mu, sigma


def layer_distances(layers: Sequence[Any], measure: str = "data") -> list[tuple[np.ndarray, float]]:
    """Distance matrix and RMS activation norm of every layer.

    Parameters
    ----------
    layers : sequence of LayerRecord
        ``Checkpoint.layers`` (each with ``alpha`` (T, M), ``hinges`` (M,), ``mu``, ``sigma``).
    measure : {"data", "standard"}
        N(mu, sigma^2) from each layer's recorded pre-activation statistics, or N(0, 1).

    Returns
    -------
    list of (ndarray of shape (T, T), float)
        ``d(F_s, F_t)`` and ``sqrt(mean_t |F_t|^2)`` per layer, in depth order.
    """
    import torch

    from taan_core.gaussian import distance_matrix, inner_product_matrix

    out = []
    for layer in layers:
        mu, sigma = _measure(layer, measure)
        alpha = torch.as_tensor(layer.alpha, dtype=torch.float64)
        hinges = torch.as_tensor(layer.hinges, dtype=torch.float64)
        with torch.no_grad():
            dist = distance_matrix(alpha, hinges, mu, sigma).numpy()
            norms = torch.diagonal(inner_product_matrix(alpha, hinges, mu, sigma)).clamp_min(0.0)
        out.append((dist, float(norms.mean().sqrt())))
    return out


def share_components(distance, threshold: float) -> np.ndarray:
    """Connected components of the graph joining tasks with ``distance <= threshold``.

    Not the sharing rule (that is :func:`threshold_groups`): components chain, so two tasks of
    one component can be any distance apart when tasks between them are close to each.

    Parameters
    ----------
    distance : array-like of shape (T, T)
    threshold : float
        Absolute distance threshold, >= 0.

    Returns
    -------
    ndarray of shape (T,), int64
        Component id of each task, numbered by first appearance in task order.
    """
    from scipy.sparse.csgraph import connected_components

    d = np.asarray(distance, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"distance must be a square matrix (T, T), got shape {d.shape}")
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    _, labels = connected_components(d <= threshold, directed=False)
    return labels.astype(np.int64)


def _first_appearance(labels: np.ndarray) -> np.ndarray:
    """Relabel ids 0, 1, ... by first appearance in task order (so equal partitions compare equal)."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def _check_threshold(threshold) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        raise TypeError(f"threshold must be a float, got {type(threshold).__name__}")
    if not math.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be finite and >= 0, got {threshold}")
    return float(threshold)


def _complete_linkage_cut(d: np.ndarray, limit: float) -> np.ndarray:
    """Complete-linkage clusters of a checked (n, n) matrix cut at ``limit``, ids by first appearance."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    n = d.shape[0]
    if n < 2:
        return np.zeros(n, dtype=np.int64)
    # A complete-linkage merge height is the largest distance between the two merged clusters
    # (max of input entries, no arithmetic), so cutting at ``limit`` keeps exactly the clusters
    # whose every pair is within ``limit``.
    z = linkage(squareform(d, checks=False), method="complete")
    return _first_appearance(fcluster(z, t=limit, criterion="distance"))


def threshold_groups(distance, threshold: float) -> np.ndarray:
    """Groups of pairwise-close tasks of one layer: complete linkage cut at ``threshold``.

    Every pair of tasks in a group is at distance <= ``threshold``; unlike connected components
    (:func:`share_components`) no group forms through a chain of close neighbours. Two groups
    are separated by at least one pair further apart than ``threshold``.

    Parameters
    ----------
    distance : array-like of shape (T, T)
        Checked with :func:`check_distance_matrix`.
    threshold : float
        Absolute distance threshold, >= 0.

    Returns
    -------
    ndarray of shape (T,), int64
        Group ids numbered 0, 1, ... by first appearance in task order.
    """
    limit = _check_threshold(threshold)
    return _complete_linkage_cut(check_distance_matrix(distance), limit)


def sharing_groups(
    distances: Sequence[np.ndarray],
    threshold: float = 0.1,
    *,
    scales: Sequence[float] | None = None,
    nested: bool = True,
) -> list[list[int]]:
    """Nested task groups per layer from per-layer distance matrices: the sharing tree.

    Layer 0's groups are its complete-linkage groups at the threshold (:func:`threshold_groups`);
    the groups of layer l are the complete-linkage groups of layer l's distances computed
    inside each group of layer l - 1, so a hard-sharing network that follows the tree never
    re-joins branches. Hence, for every group of layer l, every pair of its tasks is within the
    threshold at layer l and at every layer before it; the groups of layers 0..l do not depend
    on the layers after l.

    Parameters
    ----------
    distances : sequence of L arrays of shape (T, T)
        Distances between the tasks' activations, input side first.
    threshold : float
        Tasks at distance <= ``threshold * scales[l]`` are close at layer l (``threshold``
        itself when ``scales`` is None).
    scales : sequence of L floats, optional
        Each layer's scale, e.g. its RMS activation norm.
    nested : bool, default True
        False gives each layer's own groups, ignoring the other layers (not a tree).

    Returns
    -------
    list of L lists of T ints
        ``groups[l][t]``, numbered 0, 1, ... by first appearance in task order; with ``nested``
        nested across layers (tasks that share layer l share every layer before it).
    """
    threshold = _check_threshold(threshold)
    mats = [np.asarray(d, dtype=np.float64) for d in distances]
    if not mats:
        raise ValueError("distances must hold at least one layer")
    t = mats[0].shape[0] if mats[0].ndim == 2 else -1
    for l, d in enumerate(mats):
        if d.shape != (t, t):
            raise ValueError(f"distances[{l}] must have shape (T, T) = ({t}, {t}), got {d.shape}")
    if scales is not None and len(scales) != len(mats):
        raise ValueError(f"scales must give one value per layer ({len(mats)}), got {len(scales)}")
    parent = np.zeros(t, dtype=np.int64)
    groups = []
    for l, d in enumerate(mats):
        d = check_distance_matrix(d, name=f"distances[{l}]")
        limit = threshold * (float(scales[l]) if scales is not None else 1.0)
        if not math.isfinite(limit) or limit < 0:
            raise ValueError(f"scales[{l}] must make a finite threshold >= 0, got {scales[l]!r}")
        if not nested:
            parent = np.zeros(t, dtype=np.int64)
        keys = np.empty(t, dtype=np.int64)
        offset = 0
        for g in np.unique(parent):
            members = np.flatnonzero(parent == g)
            sub = _complete_linkage_cut(d[np.ix_(members, members)], limit)
            keys[members] = offset + sub
            offset += int(sub.max()) + 1
        parent = _first_appearance(keys)
        groups.append(parent.tolist())
    return groups


def _as_checkpoint(checkpoint: Any):
    from taan_core.checkpoint import Checkpoint, load_checkpoint

    if isinstance(checkpoint, Checkpoint):
        return checkpoint
    if isinstance(checkpoint, (str, os.PathLike)):
        return load_checkpoint(checkpoint)
    raise TypeError(f"checkpoint must be a path or a Checkpoint, got {type(checkpoint).__name__}")


def tree_from_checkpoint(checkpoint: Any, threshold: float = 0.1, measure: str = "data") -> list[list[int]]:
    """The sharing tree of a trained TAAN's checkpoint, as ``groups[l][t]``.

    Parameters
    ----------
    checkpoint : str, PathLike or Checkpoint
        A checkpoint with task-adaptive layers (``load_checkpoint`` reads it).
    threshold : float
        Relative threshold (fraction of each layer's RMS activation norm), as ``taan-viz tree``.
    measure : {"data", "standard"}

    Returns
    -------
    list of L lists of T ints

    Raises
    ------
    ValueError
        When the checkpoint has no task-adaptive layers.
    """
    ckpt = _as_checkpoint(checkpoint)
    if not ckpt.layers:
        raise ValueError(f"{ckpt.path}: the checkpoint has no task-adaptive layers to read a sharing tree from")
    geometry = layer_distances(ckpt.layers, measure)
    return sharing_groups([d for d, _ in geometry], threshold, scales=[s for _, s in geometry])


def branched_overrides(
    checkpoint: Any,
    threshold: float = 0.1,
    measure: str = "data",
    hidden: Sequence[int] | None = None,
) -> dict[str, list]:
    """Config fields of a :class:`Branched` network shaped like a trained TAAN.

    ``build_model("branched", shape, dims, **branched_overrides(path))`` builds the hard-sharing
    network whose branches follow the checkpoint's sharing tree, with the TAAN's layer widths.

    Parameters
    ----------
    checkpoint : str, PathLike or Checkpoint
    threshold, measure
        See :func:`tree_from_checkpoint`.
    hidden : sequence of int, optional
        Layer widths; by default those of the checkpoint's fully connected TAAN.

    Returns
    -------
    dict
        ``{"groups": [[...], ...], "hidden": [...]}``.

    Raises
    ------
    ValueError
        When the checkpoint holds a conv TAAN, or no fully connected TAAN (an imported
        state_dict) and ``hidden`` is not given, or ``hidden`` has the wrong length.
    """
    ckpt = _as_checkpoint(checkpoint)
    if ckpt.model_class == "TAANConv":
        # Its tree has one level per conv stage; branching a fully connected network along it
        # would silently compare a different network.
        raise ValueError(f"{ckpt.path}: a branched network is fully connected and cannot follow the sharing tree "
                         "of a conv TAAN (TAANConv); give the checkpoint of a fully connected TAAN")
    groups = tree_from_checkpoint(ckpt, threshold, measure)
    if hidden is None:
        config = ckpt.model_config
        if ckpt.model_class != "TAAN" or "hidden" not in config:
            raise ValueError(f"{ckpt.path}: a branched network copies the layer widths of a fully connected TAAN, "
                             f"this checkpoint holds {ckpt.model_class or 'no model'}; pass hidden explicitly")
        hidden = config["hidden"]
    hidden = [int(h) for h in hidden]
    if len(hidden) != len(groups):
        raise ValueError(f"hidden must give one width per task-adaptive layer ({len(groups)}), got {hidden}")
    return {"groups": groups, "hidden": hidden}


def flat_cut(distance, n_clusters: int, method: str = "average") -> np.ndarray:
    """Hierarchical clusters of the tasks on a checked distance matrix, cut into ``n_clusters``.

    Parameters
    ----------
    distance : array-like of shape (T, T)
        Checked with :func:`check_distance_matrix`.
    n_clusters : int
        At most this many clusters (fewer when merge heights tie).
    method : str, default "average"
        scipy linkage method.

    Returns
    -------
    ndarray of shape (T,), int64
        Cluster ids numbered 0, 1, ... by first appearance in task order.
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or n_clusters < 1:
        raise ValueError(f"n_clusters must be an int >= 1, got {n_clusters!r}")
    d = check_distance_matrix(distance)
    t = d.shape[0]
    if t < 2:
        return np.zeros(t, dtype=np.int64)
    z = linkage(squareform(d, checks=False), method=method)
    return _first_appearance(fcluster(z, t=min(int(n_clusters), t), criterion="maxclust"))


def separation(distance, labels=None, *, max_clusters: int = 8, method: str = "average") -> Separation:
    """How clearly the tasks fall into groups: between-group gap over within-group spread.

    With ``labels``, judges that partition: the smallest distance between tasks of different
    groups over the largest distance between tasks of one group. Without, judges the best of
    the linkage tree's cuts into 2..``max_clusters`` groups, i.e. asks whether the distances
    hold separated groups at all. Above 1 (:data:`SEPARATION_RATIO`) every pair inside a group
    is closer than every pair across groups; a cut through a continuum scores near 0. It does
    not depend on the distances' scale.

    Parameters
    ----------
    distance : array-like of shape (T, T)
        Checked with :func:`taan_core.relatedness.check_distance_matrix`.
    labels : array-like of shape (T,), optional
        A partition to judge (e.g. one layer of the sharing tree).
    max_clusters : int, default 8
        Without ``labels``: the largest group count tried (at most T - 1).
    method : str, default "average"
        Without ``labels``: the scipy linkage method of the cuts.

    Returns
    -------
    Separation
        ``(k, ratio)``: the partition's group count and its ratio (the best cut's, without
        ``labels``); ``ratio`` NaN where there is nothing to judge.

    Raises
    ------
    ValueError
        A bad matrix, labels of the wrong shape, or ``max_clusters`` not an int >= 2.
    """
    return judge(check_distance_matrix(distance), labels, max_clusters, method)


def adjusted_rand_index(labels_true, labels_pred) -> float:
    """Adjusted Rand index between two partitions of the same tasks (1 = identical, ~0 = chance).

    Hubert and Arabie's pair-counting form, as :func:`sklearn.metrics.adjusted_rand_score`
    computes it (the tests compare the two); written out here because importing scikit-learn
    takes about a second, a large share of a ``taan-viz`` command's time. Two partitions that
    agree on every pair (e.g. both a single cluster) score 1.
    """
    a = np.asarray(labels_true)
    b = np.asarray(labels_pred)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"labels_true and labels_pred must be 1-D of equal length, got {a.shape} and {b.shape}")
    n = a.shape[0]
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max(initial=-1) + 1, ib.max(initial=-1) + 1), dtype=np.int64)
    np.add.at(table, (ia.reshape(-1), ib.reshape(-1)), 1)

    def pairs(x):
        x = np.asarray(x, dtype=np.float64)
        return float((x * (x - 1) / 2).sum())

    both = pairs(table)
    rows, cols = pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    total = n * (n - 1) / 2
    expected = rows * cols / total if total else 0.0
    top = 0.5 * (rows + cols)
    if top == expected:
        # Both partitions are trivial the same way (all singletons or one cluster): identical.
        return 1.0
    return (both - expected) / (top - expected)


def planted_ari(distances: Sequence[np.ndarray], planted: Sequence[Sequence[int]]) -> list[float]:
    """Per-layer adjusted Rand index of the learned task clustering against planted groups.

    Layer l's tasks are clustered hierarchically (average linkage) on ``distances[l]`` and cut
    into as many clusters as layer l has planted groups, as ``taan-viz`` does.

    Parameters
    ----------
    distances : sequence of L arrays of shape (T, T)
    planted : sequence of L sequences of T ints

    Returns
    -------
    list of L floats
        1 for a perfect recovery, about 0 for chance.
    """
    if len(distances) != len(planted):
        raise ValueError(f"planted groups describe {len(planted)} layers, the model has {len(distances)}; "
                         "the ARI compares layers one to one")
    out = []
    for d, truth in zip(distances, planted):
        d = np.asarray(d, dtype=np.float64)
        truth = np.asarray(truth, dtype=np.int64)
        if d.shape != (truth.size, truth.size):
            raise ValueError(f"distance matrix of shape {d.shape} does not fit {truth.size} planted tasks")
        out.append(adjusted_rand_index(truth, flat_cut(d, len(np.unique(truth)))))
    return out
