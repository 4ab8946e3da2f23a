"""Hierarchical clustering of tasks from a distance matrix, validated, with Newick output.

The input is checked before scipy sees it (square, finite, symmetric within tolerance, zero
diagonal, tiny negative squared distances from rounding clipped with a warning), because scipy's
``linkage`` silently accepts a matrix that is not a distance and returns a meaningless tree.
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from taan_core import relatedness as _relatedness

# One ARI for the whole project (a hand-written one: importing scikit-learn costs about a second).
from taan_core.relatedness import adjusted_rand_index

__all__ = [
    "LINKAGE_METHODS",
    "OPTIMAL_ORDERING_MAX",
    "Clustering",
    "adjusted_rand_index",
    "check_distance_matrix",
    "cluster_tasks",
    "flat_clusters",
    "match_labels",
]

LINKAGE_METHODS = ("average", "complete", "single", "weighted", "ward", "centroid", "median")


# One check of a distance matrix for the analysis and the study (taan_core.relatedness).
check_distance_matrix = _relatedness.check_distance_matrix


@dataclass(frozen=True)
class Clustering:
    """A hierarchical clustering of T tasks.

    Attributes
    ----------
    linkage : ndarray of shape (T - 1, 4)
        scipy linkage matrix (merged ids, height, size); leaves in optimal order when requested.
    order : ndarray of shape (T,)
        Leaf order: ``order[i]`` is the task drawn at position i.
    cophenetic_correlation : float
        Pearson correlation between the input distances and the tree's cophenetic distances
        (how faithfully the tree represents the matrix); NaN for fewer than 3 tasks or
        constant distances.
    distance : ndarray of shape (T, T)
        The validated distances the tree was built from.
    labels : tuple of str
    method : str
    """

    linkage: np.ndarray
    order: np.ndarray
    cophenetic_correlation: float
    distance: np.ndarray
    labels: tuple[str, ...]
    method: str = "average"

    @property
    def num_tasks(self) -> int:
        return len(self.labels)

    def to_newick(self) -> str:
        """The tree in Newick format, branch lengths = differences of merge heights."""
        return _newick(self.linkage, self.labels)


def _quote(label: str) -> str:
    if label and not any(c in label for c in " ()[]':;,\t\n"):
        return label
    return "'" + label.replace("'", "''") + "'"


def _newick(z: np.ndarray, labels: Sequence[str]) -> str:
    t = len(labels)
    if t == 1:
        return _quote(labels[0]) + ";"
    text = [_quote(n) for n in labels] + [""] * (t - 1)
    height = np.zeros(2 * t - 1)
    # Bottom-up, iterative: a recursive walk would hit Python's recursion limit on chained trees.
    for k, (a, b, h, _) in enumerate(z):
        a, b = int(a), int(b)
        height[t + k] = h
        text[t + k] = f"({text[a]}:{h - height[a]:.6g},{text[b]}:{h - height[b]:.6g})"
        text[a] = text[b] = ""
    return text[-1] + ";"


# Optimal leaf ordering costs about a second per layer at T = 1000 and cannot be seen once a
# task is less than a pixel wide; "auto" applies it up to this many tasks.
OPTIMAL_ORDERING_MAX = 500


def cluster_tasks(
    distance,
    *,
    labels: Sequence[str] | None = None,
    squared: bool = False,
    method: str = "average",
    optimal_ordering: "bool | str" = "auto",
) -> Clustering:
    """Hierarchical clustering of tasks on a validated distance matrix.

    Parameters
    ----------
    distance : array-like of shape (T, T)
        Distances (or squared distances with ``squared=True``) between tasks.
    labels : sequence of str, optional
        Task names; ``0, 1, ...`` by default.
    squared : bool, default False
    method : str, default "average"
        One of :data:`LINKAGE_METHODS`. The functional distance is Euclidean (an L2 distance),
        so ward, centroid and median are valid too.
    optimal_ordering : bool or "auto", default "auto"
        Reorder leaves so that adjacent leaves are as close as possible (Bar-Joseph et al.);
        "auto" does so for at most :data:`OPTIMAL_ORDERING_MAX` tasks.

    Returns
    -------
    Clustering
    """
    from scipy.cluster.hierarchy import cophenet, leaves_list, linkage, optimal_leaf_ordering
    from scipy.spatial.distance import squareform

    if method not in LINKAGE_METHODS:
        raise ValueError(f"method must be one of {', '.join(LINKAGE_METHODS)}, got {method!r}")
    if optimal_ordering not in (True, False, "auto"):
        raise ValueError(f"optimal_ordering must be True, False or 'auto', got {optimal_ordering!r}")
    d = check_distance_matrix(distance, squared=squared)
    if (not squared and isinstance(distance, np.ndarray) and distance.dtype == d.dtype
            and distance.shape == d.shape and np.array_equal(d, distance)):
        # Nothing was repaired: keep the caller's matrix, not a second T x T copy per layer
        # (1 GB for five layers at T = 5000).
        d = distance
    t = d.shape[0]
    if t == 0:
        raise ValueError("distance must describe at least one task, got shape (0, 0)")
    names = tuple(str(i) for i in range(t)) if labels is None else tuple(str(n) for n in labels)
    if len(names) != t:
        raise ValueError(f"labels must have {t} entries (one per task), got {len(names)}")
    if t == 1:
        return Clustering(np.zeros((0, 4)), np.zeros(1, dtype=np.int64), float("nan"), d, names, method)
    condensed = squareform(d, checks=False)
    z = linkage(condensed, method=method)
    if optimal_ordering == "auto":
        optimal_ordering = t <= OPTIMAL_ORDERING_MAX
    if optimal_ordering and t > 2:
        z = optimal_leaf_ordering(z, condensed)
    coph = float("nan")
    if t > 2 and np.ptp(condensed) > 0:
        coph_d = cophenet(z)
        if np.ptp(coph_d) > 0:
            # Pearson's r from centred vectors: np.corrcoef stacks both into a new (2, n)
            # array and its covariance (1.2 s a layer at T = 5000, n = 12.5 million pairs).
            x = condensed - condensed.mean()
            coph_d -= coph_d.mean()
            coph = float(np.clip((x @ coph_d) / math.sqrt(float(x @ x) * float(coph_d @ coph_d)), -1.0, 1.0))
    return Clustering(linkage=z, order=leaves_list(z).astype(np.int64), cophenetic_correlation=coph,
                      distance=d, labels=names, method=method)


def flat_clusters(clustering: Clustering, n_clusters: int | None = None, threshold: float | None = None) -> np.ndarray:
    """Cut the tree into flat clusters, by count or by height.

    Parameters
    ----------
    clustering : Clustering
    n_clusters : int, optional
        At most this many clusters (fewer when merge heights tie).
    threshold : float, optional
        Tasks merged below this height share a cluster. Give exactly one of the two.

    Returns
    -------
    ndarray of shape (T,), int64
        Cluster ids 0, 1, ... numbered in leaf order (the first cluster drawn is 0).
    """
    from scipy.cluster.hierarchy import fcluster

    if (n_clusters is None) == (threshold is None):
        raise ValueError("give exactly one of n_clusters and threshold")
    t = clustering.num_tasks
    if n_clusters is not None:
        if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or n_clusters < 1:
            raise ValueError(f"n_clusters must be an int >= 1, got {n_clusters!r}")
    elif not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    if t == 1:
        return np.zeros(1, dtype=np.int64)
    if n_clusters is not None:
        raw = fcluster(clustering.linkage, t=min(int(n_clusters), t), criterion="maxclust")
    else:
        raw = fcluster(clustering.linkage, t=float(threshold), criterion="distance")
    return _renumber(raw, clustering.order)


def _renumber(raw: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Relabel cluster ids 0, 1, ... by first appearance along ``order``."""
    out = np.empty(len(raw), dtype=np.int64)
    mapping: dict[int, int] = {}
    for task in order:
        mapping.setdefault(int(raw[task]), len(mapping))
    for task, r in enumerate(raw):
        out[task] = mapping[int(r)]
    return out


def match_labels(reference: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Relabel ``labels`` so that its clusters carry the ids of the ``reference`` clusters they
    overlap most (Hungarian matching); unmatched clusters get fresh ids after the reference ones.

    Used to keep cluster colours consistent across layers.
    """
    from scipy.optimize import linear_sum_assignment

    reference = np.asarray(reference, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if reference.shape != labels.shape:
        raise ValueError(f"reference and labels must have the same shape, got {reference.shape} and {labels.shape}")
    ref_ids, ref_inv = np.unique(reference, return_inverse=True)
    lab_ids, lab_inv = np.unique(labels, return_inverse=True)
    overlap = np.zeros((len(lab_ids), len(ref_ids)), dtype=np.int64)
    np.add.at(overlap, (lab_inv, ref_inv), 1)
    rows, cols = linear_sum_assignment(-overlap)
    mapping = {int(lab_ids[r]): int(ref_ids[c]) for r, c in zip(rows, cols) if overlap[r, c] > 0}
    next_id = int(ref_ids.max(initial=-1)) + 1
    for lab in lab_ids:
        if int(lab) not in mapping:
            mapping[int(lab)] = next_id
            next_id += 1
    return np.array([mapping[int(v)] for v in labels], dtype=np.int64)
