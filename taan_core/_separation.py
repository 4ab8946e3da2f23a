"""Whether a distance matrix holds separated groups of tasks at all, or a continuum.

A threshold or a cluster count always returns groups, also where the tasks spread evenly; such
groups move with every training seed (docs/training.md: on school, 18-64 % of the pairs fall
under the sharing threshold, depending on the seed, and no cut's groups reproduce). One run
cannot measure its stability, but it can see whether its groups are separated: whether every
two tasks of one group are closer than any two tasks of different groups. The ratio of the two
(the Dunn index) is above 1 for separated groups and near 0 for a cut through a continuum,
where tasks on either side of the cut are neighbours. The public names are
:func:`taan_core.relatedness.separation` (which checks the matrix and calls :func:`judge`) and
:data:`taan_core.relatedness.SEPARATION_RATIO`; this module imports nothing of taan_core, so
that relatedness can import it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = ["SEPARATION_RATIO", "Separation", "judge"]

# Groups count as separated when the closest two tasks of different groups are further apart
# than the furthest two of one group. Measured (docs/training.md): planted layers 1.8-6.0 and
# school's layers and whole network 0.05-0.23 (ten seeds), so the natural 1 lies far from both.
SEPARATION_RATIO = 1.0


class Separation(NamedTuple):
    """How separated a partition of the tasks is.

    Attributes
    ----------
    k : int
        Number of groups of the partition judged (1 when there is nothing to judge).
    ratio : float
        The smallest distance between two tasks of different groups over the largest distance
        between two tasks of one group (the Dunn index); inf when every group holds identical
        tasks, NaN when there is nothing to judge (one group, only singletons, fewer than 3
        tasks).
    """

    k: int
    ratio: float

    @property
    def separated(self) -> bool:
        """Whether ``ratio`` exceeds :data:`SEPARATION_RATIO` (False for NaN)."""
        return bool(self.ratio > SEPARATION_RATIO)


def _dunn(d: np.ndarray, labels: np.ndarray) -> float:
    t = labels.size
    largest, smallest = -math.inf, math.inf
    # Row blocks of at most ~4M entries: no (T, T) mask or copy, so T = 10,000 costs no more
    # memory than the distance matrix it reads.
    step = max(1, 4_000_000 // max(t, 1))
    for start in range(0, t, step):
        block = d[start:start + step]
        same = labels[start:start + step, None] == labels[None, :]
        rows = np.arange(block.shape[0])
        same_off = same.copy()
        same_off[rows, start + rows] = False
        if same_off.any():
            largest = max(largest, float(block[same_off].max()))
        if not same.all():
            smallest = min(smallest, float(block[~same].min()))
    if largest == -math.inf or smallest == math.inf:
        # Only singletons (no pair within a group) or a single group (no pair across).
        return math.nan
    if largest == 0.0:
        return math.inf if smallest > 0 else math.nan
    return smallest / largest


def judge(d: np.ndarray, labels=None, max_clusters: int = 8, method: str = "average") -> Separation:
    """:func:`taan_core.relatedness.separation` on a matrix it has checked (see there)."""
    t = d.shape[0]
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != (t,):
            raise ValueError(f"labels must have shape (T,) = ({t},), got {lab.shape}")
        _, lab = np.unique(lab, return_inverse=True)
        return Separation(int(lab.max(initial=-1)) + 1 if t else 1, _dunn(d, lab.reshape(-1)))
    if isinstance(max_clusters, bool) or not isinstance(max_clusters, (int, np.integer)) or max_clusters < 2:
        raise ValueError(f"max_clusters must be an int >= 2, got {max_clusters!r}")
    best = Separation(1, math.nan)
    if t < 3:
        return best
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    # One tree, cut at every k (flat_cut would rebuild it for each).
    tree = linkage(squareform(d, checks=False), method=method)
    for k in range(2, min(int(max_clusters), t - 1) + 1):
        lab = fcluster(tree, t=k, criterion="maxclust")
        ratio = _dunn(d, lab)
        if not math.isnan(ratio) and (math.isnan(best.ratio) or ratio > best.ratio):
            # Tied merge heights can give fewer than k groups: report the count there is.
            best = Separation(len(np.unique(lab)), ratio)
    return best
