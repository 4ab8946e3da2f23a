"""The sharing tree: the hard-sharing architecture a trained TAAN implies.

At layer l two tasks are *close* when ``d(F_s, F_t) <= threshold`` (relative thresholds are
fractions of the layer's RMS activation norm ``sqrt(mean_t |F_t|^2)``, so ``0.1`` reads "differ
by at most 10 % of a typical activation"). A group is a set of pairwise-close tasks: the
complete-linkage tree of the layer's distances cut at the threshold, so no group forms through
a chain of neighbours.

A hard-sharing network cannot re-join branches that split earlier, so groups are nested across
depth: the groups of layer l are the complete-linkage groups of layer l computed inside each
group of layer l - 1. Every pair of tasks in a group of layer l is then close at layer l and at
every layer before it. Read from the input to the heads this is a tree: the root is the shared
input, each level a layer, each node a group of tasks that could share that layer's weights,
the leaves the task heads.

The groups are :func:`taan_core.relatedness.sharing_groups`'s, the one rule of the project (the
study and ``taan-core train --model branched --tree-from`` use it too); this module adds what
drawing needs: an order in which every group is contiguous, and group ids along it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from taan_core import relatedness as _relatedness
from taan_viz.clustering import _quote

__all__ = ["SharingTree", "share_components", "sharing_tree", "threshold_groups", "tree_from_groups"]


# Re-exported from taan_core.relatedness, the one copy of the rule (share_components is the
# chaining rule of earlier versions, kept for callers that use it; the tree does not).
share_components = _relatedness.share_components
threshold_groups = _relatedness.threshold_groups


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

    def select(self, layers: Sequence[int]) -> "SharingTree":
        """The tree restricted to some of its layers (positions in depth order), with the same
        groups at those layers and the same task order: what ``--layers`` draws of a tree that
        was read from every layer."""
        rows = [int(l) for l in layers]
        if not rows or any(not 0 <= l < self.num_layers for l in rows) or rows != sorted(set(rows)):
            raise ValueError(f"layers must be increasing positions in 0..{self.num_layers - 1}, got {list(layers)}")
        return SharingTree(task_names=self.task_names, layer_names=tuple(self.layer_names[l] for l in rows),
                           groups=self.groups[rows].copy(), order=self.order.copy(),
                           thresholds=self.thresholds[rows].copy(), threshold=self.threshold,
                           relative=self.relative)

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
        Distance at or below which two tasks are close at a layer; a group's tasks are pairwise
        close (:func:`taan_core.relatedness.sharing_groups`).
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
    groups = _relatedness.sharing_groups(mats, float(threshold), scales=list(scales) if relative else None)
    return tree_from_groups(groups, task_names=task_names, layer_names=layer_names, thresholds=abs_thr,
                            threshold=float(threshold), relative=bool(relative), base_order=base_order)


def tree_from_groups(
    groups,
    *,
    task_names: Sequence[str],
    layer_names: Sequence[str],
    thresholds: Sequence[float],
    threshold: float,
    relative: bool,
    base_order: Sequence[int] | None = None,
) -> SharingTree:
    """A :class:`SharingTree` of given nested groups, with a drawing order.

    Parameters
    ----------
    groups : array-like of shape (L, T)
        Group ids per layer, nested (equal at layer l implies equal at layer l - 1).
    task_names, layer_names : sequences of str
    thresholds : sequence of L floats
        The absolute threshold of each layer (for captions).
    threshold : float
    relative : bool
    base_order : sequence of int, optional
        Preferred task order, kept inside the groups; task order by default.

    Returns
    -------
    SharingTree
        Groups renumbered 0, 1, ... along the order.
    """
    raw_groups = [np.unique(np.asarray(g), return_inverse=True)[1].reshape(-1).astype(np.int64) for g in groups]
    t = len(task_names)
    if any(g.shape != (t,) for g in raw_groups) or len(raw_groups) != len(layer_names):
        raise ValueError(f"groups must have shape (L, T) = ({len(layer_names)}, {t})")
    for l in range(1, len(raw_groups)):
        pairs = np.unique(np.stack([raw_groups[l], raw_groups[l - 1]]), axis=1)
        if len(np.unique(pairs[0])) != pairs.shape[1]:
            raise ValueError(f"groups must be nested: a group of layer {l} spans several groups of layer {l - 1}")
    rank = np.empty(t, dtype=np.int64)
    base = np.arange(t) if base_order is None else np.asarray(base_order, dtype=np.int64)
    if sorted(base.tolist()) != list(range(t)):
        raise ValueError(f"base_order must be a permutation of 0..{t - 1}")
    rank[base] = np.arange(t)
    # Rank each group by its first member in the base order, then sort tasks level by level.
    ranked = []
    for g in raw_groups:
        first = np.full(g.max() + 1, t, dtype=np.int64)
        np.minimum.at(first, g, rank)
        ranked.append(first[g])
    order = np.lexsort([rank] + ranked[::-1])
    out = np.empty((len(raw_groups), t), dtype=np.int64)
    for l, g in enumerate(raw_groups):
        mapping: dict[int, int] = {}
        for task in order:
            mapping.setdefault(int(g[task]), len(mapping))
        out[l] = [mapping[int(v)] for v in g]
    return SharingTree(task_names=tuple(task_names), layer_names=tuple(layer_names), groups=out,
                       order=order.astype(np.int64), thresholds=np.asarray(thresholds, dtype=np.float64),
                       threshold=float(threshold), relative=bool(relative))
