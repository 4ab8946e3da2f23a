"""The sharing tree: the hard-sharing architecture a trained TAAN implies.

At layer l two tasks *share* an activation when their activations are closer than a threshold,
``d(F_s, F_t) <= threshold`` (relative thresholds are fractions of the layer's RMS activation
norm ``sqrt(mean_t |F_t|^2)``, so ``0.1`` reads "differ by at most 10 % of a typical
activation"). The groups of a layer are the connected components of that "close" graph.

A hard-sharing network cannot re-join branches that split earlier, so groups are nested across
depth: the group of a task at layer l is its component at layer l intersected with its group at
layer l - 1. Read from the input to the heads this is a tree: the root is the shared input, each
level a layer, each node a group of tasks that could share that layer's weights, the leaves the
task heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from taan_core import relatedness as _relatedness
from taan_viz.clustering import _quote

__all__ = ["SharingTree", "share_components", "sharing_tree"]


# The same rule as the study's trees (taan_core.relatedness).
share_components = _relatedness.share_components


@dataclass(frozen=True)
class SharingTree:
    """Nested task groups per layer, from the input (layer 0) to the heads.

    Attributes
    ----------
    task_names : tuple of str
    layer_names : tuple of str
        Layers in depth order.
    groups : ndarray of shape (L, T), int64
        ``groups[l, t]``: group of task t at layer l, numbered 0, 1, ... along :attr:`order`.
        Nested: equal at layer l implies equal at every layer before l.
    order : ndarray of shape (T,)
        A task order in which every group of every layer is contiguous.
    thresholds : ndarray of shape (L,)
        The absolute distance threshold applied at each layer.
    threshold : float
        The threshold as given.
    relative : bool
        Whether ``threshold`` was a fraction of each layer's RMS activation norm.
    """

    task_names: tuple[str, ...]
    layer_names: tuple[str, ...]
    groups: np.ndarray
    order: np.ndarray
    thresholds: np.ndarray
    threshold: float
    relative: bool

    @property
    def num_layers(self) -> int:
        return len(self.layer_names)

    @property
    def num_groups(self) -> list[int]:
        """Number of groups at each layer."""
        return [int(row.max()) + 1 if row.size else 0 for row in self.groups]

    def members(self, layer: int, group: int) -> np.ndarray:
        """Tasks of ``group`` at ``layer``, in :attr:`order`."""
        in_group = self.groups[layer, self.order] == group
        return self.order[in_group]

    def parent(self, layer: int, group: int) -> int | None:
        """The group at ``layer - 1`` containing ``group`` (None at layer 0)."""
        if layer == 0:
            return None
        return int(self.groups[layer - 1, self.members(layer, group)[0]])

    def to_newick(self) -> str:
        """The tree in Newick format: root ``input``, one level per layer, tasks as leaves."""
        def node(layer: int, tasks: np.ndarray) -> str:
            if layer == self.num_layers:
                return ",".join(f"{_quote(self.task_names[t])}:1" for t in tasks)
            parts = []
            for g in dict.fromkeys(int(self.groups[layer, t]) for t in tasks):
                sub = tasks[self.groups[layer, tasks] == g]
                label = _quote(f"{self.layer_names[layer]}/{g}")
                parts.append(f"({node(layer + 1, sub)}){label}:1")
            return ",".join(parts)

        return f"({node(0, self.order)})input;"


def sharing_tree(
    distances: Sequence[np.ndarray],
    *,
    task_names: Sequence[str],
    layer_names: Sequence[str],
    threshold: float = 0.1,
    relative: bool = True,
    scales: Sequence[float] | None = None,
    base_order: Sequence[int] | None = None,
) -> SharingTree:
    """Build the sharing tree from per-layer distance matrices in depth order.

    Parameters
    ----------
    distances : sequence of L arrays of shape (T, T)
        ``d(F_s, F_t)`` of each layer, input side first.
    task_names, layer_names : sequences of str
    threshold : float, default 0.1
        Distance at or below which two tasks share a layer's activation.
    relative : bool, default True
        ``threshold`` is a fraction of ``scales[l]``.
    scales : sequence of L floats, optional
        Each layer's activation scale (``LayerGeometry.rms_norm``); required when ``relative``.
    base_order : sequence of int, optional
        Preferred task order (e.g. a clustering's leaf order); groups are made contiguous while
        keeping this order inside them. Task order by default.

    Returns
    -------
    SharingTree
    """
    mats = [np.asarray(d, dtype=np.float64) for d in distances]
    t = len(task_names)
    if not mats:
        raise ValueError("distances must hold at least one layer")
    if len(layer_names) != len(mats):
        raise ValueError(f"layer_names must have {len(mats)} entries (one per layer), got {len(layer_names)}")
    for l, d in enumerate(mats):
        if d.shape != (t, t):
            raise ValueError(f"distances[{l}] must have shape (T, T) with T = len(task_names) = {t}, got {d.shape}")
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    if relative:
        if scales is None or len(scales) != len(mats):
            raise ValueError("relative thresholds need one scale per layer (the layers' RMS activation norms)")
        abs_thr = np.array([threshold * float(s) for s in scales])
    else:
        abs_thr = np.full(len(mats), float(threshold))
    rank = np.empty(t, dtype=np.int64)
    base = np.arange(t) if base_order is None else np.asarray(base_order, dtype=np.int64)
    if sorted(base.tolist()) != list(range(t)):
        raise ValueError(f"base_order must be a permutation of 0..{t - 1}")
    rank[base] = np.arange(t)

    # Refine the partition layer by layer: a branch that split never re-joins.
    keys = np.zeros(t, dtype=np.int64)
    raw_groups = []
    for d, thr in zip(mats, abs_thr):
        comp = share_components(d, thr)
        _, keys = np.unique(np.stack([keys, comp], axis=1), axis=0, return_inverse=True)
        keys = keys.reshape(-1)
        raw_groups.append(keys.copy())
    # Rank each group by its first member in the base order, then sort tasks level by level.
    ranked = []
    for g in raw_groups:
        first = np.full(g.max() + 1, t, dtype=np.int64)
        np.minimum.at(first, g, rank)
        ranked.append(first[g])
    order = np.lexsort([rank] + ranked[::-1])
    groups = np.empty((len(mats), t), dtype=np.int64)
    for l, g in enumerate(raw_groups):
        mapping: dict[int, int] = {}
        for task in order:
            mapping.setdefault(int(g[task]), len(mapping))
        groups[l] = [mapping[int(v)] for v in g]
    return SharingTree(task_names=tuple(task_names), layer_names=tuple(layer_names), groups=groups,
                       order=order.astype(np.int64), thresholds=abs_thr, threshold=float(threshold),
                       relative=bool(relative))
