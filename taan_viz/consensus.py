"""Several runs, one picture with its confidence: consensus clustering across training runs.

Training a TAAN from different seeds can land in different places; one run's clustering says
nothing about how sure it is. Following consensus clustering (Monti et al., 2003) and bootstrap
support on phylogenetic trees (Felsenstein, 1985), :func:`consensus` combines the analyses of R
runs of the same network and data (same tasks, same layers):

co-clustering
    ``C[s, t]``: the fraction of runs in which tasks s and t fall in the same group of the
    layer: the groups every figure of a run colours (:meth:`Analysis.cluster_labels`: the
    sharing tree's groups at the threshold, or ``n_clusters`` flat clusters). 1 or 0
    everywhere means every run agrees; values in between are pairs the runs disagree on.
stability
    The mean adjusted Rand index over all pairs of runs of the layer's groups (1: every
    run finds the same partition; about 0: no more agreement than chance).
mean distance and spread
    Mean and standard deviation over runs of ``d(F_s, F_t)``.
sharing tree with support
    Every run has its sharing tree (the rule of ``taan-viz tree``, :meth:`Analysis.sharing_tree`).
    The support of a group of tasks at a layer is the fraction of runs whose own tree holds
    exactly that group there, as a clade's bootstrap support is the fraction of replicate trees
    that contain it (for a group of two tasks that no run joins with a third, the co-clustering
    of the pair). The consensus tree follows the majority rule of phylogenetic consensus trees
    (:func:`consensus_tree`): a group of two or more tasks is in it exactly when its support is
    above 1/2 and its tasks form one group of the consensus tree at the layer before; the other
    tasks stand alone at that layer, with the support of standing alone. Two groups that are
    each held by more than half of the runs are held together by at least one run, so they are
    disjoint or nested: the majority groups never overlap.

Everything here returns arrays and small dataclasses; :mod:`taan_viz.plots.consensus` draws them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from taan_viz.clustering import adjusted_rand_index
from taan_viz.sharing import SharingTree, tree_from_groups

# Below this stability (mean ARI between the runs' groups) a layer's groups depend on the
# seed, and the figures say so. Steinley (2004, "Properties of the Hubert-Arabie adjusted Rand
# index", Psychological Methods 9, 386-396) reads an ARI above 0.90 as excellent agreement,
# above 0.80 as good, above 0.65 as moderate and below as poor; 0.8 asks for good agreement.
# The ARI is strict with few tasks: one task in another group in one run of five gives 0.93 at
# 16 tasks in four groups, but 0.73 at 6 tasks in two.
STABILITY_THRESHOLD = 0.8

__all__ = [
    "STABILITY_THRESHOLD",
    "Consensus",
    "LayerConsensus",
    "check_same_runs",
    "coclustering",
    "consensus",
    "consensus_tree",
    "group_support",
    "pairwise_ari",
]


def coclustering(labels) -> np.ndarray:
    """Fraction of runs in which each pair of tasks shares a cluster.

    Parameters
    ----------
    labels : array-like of shape (R, T)
        Flat cluster ids of the T tasks in each of R runs; ids need not match across runs.

    Returns
    -------
    ndarray of shape (T, T), float64
        Symmetric, unit diagonal, values in {0, 1/R, ..., 1}.
    """
    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.shape[0] < 1:
        raise ValueError(f"labels must have shape (R, T) with R >= 1 runs, got shape {lab.shape}")
    same = lab[:, :, None] == lab[:, None, :]
    return same.mean(axis=0)


def pairwise_ari(labels) -> np.ndarray:
    """Adjusted Rand index between the flat clusters of every pair of runs.

    Parameters
    ----------
    labels : array-like of shape (R, T)

    Returns
    -------
    ndarray of shape (R, R), float64
        Symmetric with a unit diagonal.
    """
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels must have shape (R, T), got shape {lab.shape}")
    r = lab.shape[0]
    out = np.eye(r)
    for i in range(r):
        for j in range(i + 1, r):
            out[i, j] = out[j, i] = adjusted_rand_index(lab[i], lab[j])
    return out


def _groups_of(row: np.ndarray) -> set[frozenset[int]]:
    return {frozenset(np.flatnonzero(row == g).tolist()) for g in np.unique(row)}


def group_support(reference: SharingTree, trees: Sequence[SharingTree]) -> list[np.ndarray]:
    """Support of every group of ``reference``: the fraction of ``trees`` that hold it.

    A tree holds a group at layer l when one of its groups at layer l has exactly the same
    tasks (membership is compared, not group ids).

    Parameters
    ----------
    reference : SharingTree
    trees : sequence of SharingTree
        The runs' trees, with the same tasks and layers as ``reference``.

    Returns
    -------
    list of L ndarrays
        ``support[l][g]``: support of group g at layer l (ids as in ``reference.groups[l]``).
    """
    if not trees:
        raise ValueError("trees must hold at least one sharing tree")
    shape = reference.groups.shape
    for k, tree in enumerate(trees):
        if tree.groups.shape != shape:
            raise ValueError(f"trees[{k}] must have groups of shape {shape} like the reference, "
                             f"got {tree.groups.shape}")
    held = [[_groups_of(tree.groups[l]) for l in range(shape[0])] for tree in trees]
    out = []
    for l, row in enumerate(reference.groups):
        support = np.zeros(int(row.max()) + 1 if row.size else 0)
        for g in range(support.size):
            members = frozenset(np.flatnonzero(row == g).tolist())
            support[g] = np.mean([members in h[l] for h in held])
        out.append(support)
    return out


@dataclass(frozen=True)
class LayerConsensus:
    """The agreement of R runs at one layer.

    Attributes
    ----------
    name : str
    index : int
        Position of the layer in the checkpoints (0-based).
    labels : ndarray of shape (R, T)
        Each run's groups (:meth:`Analysis.cluster_labels`, the groups its figures colour).
    coclustering : ndarray of shape (T, T)
        Fraction of runs in which two tasks share a group.
    pairwise_ari : ndarray of shape (R, R)
        Adjusted Rand index between the runs' groups.
    mean_distance, std_distance : ndarray of shape (T, T)
        Mean and standard deviation (ddof 0) over runs of d(F_s, F_t).
    rms_norm : ndarray of shape (R,)
        Each run's RMS activation norm at this layer (the scale of relative thresholds).
    planted_ari : ndarray of shape (R,) or None
        Each run's ARI against the planted groups, when the checkpoints carry them.
    """

    name: str
    index: int
    labels: np.ndarray
    coclustering: np.ndarray
    pairwise_ari: np.ndarray
    mean_distance: np.ndarray
    std_distance: np.ndarray
    rms_norm: np.ndarray
    planted_ari: np.ndarray | None = None

    @property
    def stability(self) -> float:
        """Mean ARI over the pairs of distinct runs (1: every run finds the same clusters)."""
        r = self.pairwise_ari.shape[0]
        return float(self.pairwise_ari[np.triu_indices(r, 1)].mean())

    @property
    def unstable(self) -> bool:
        """Whether the stability is below :data:`STABILITY_THRESHOLD`: the runs' groups differ
        too much for any one run's groups to be read as a property of the tasks."""
        return not self.stability >= STABILITY_THRESHOLD

    @property
    def warning(self) -> str | None:
        """The one line that says so, or None when the layer is stable."""
        if not self.unstable:
            return None
        return (f"layer {self.index + 1}: groups differ between runs (stability {self.stability:.2f} < "
                f"{STABILITY_THRESHOLD:g}); do not read them as real")


@dataclass(frozen=True)
class Consensus:
    """The consensus of R runs' analyses.

    Attributes
    ----------
    runs : tuple of str
        A label per run (e.g. ``seed-0``), in input order.
    sources : tuple of str
        The checkpoint file of each run.
    task_names : tuple of str
    layers : list of LayerConsensus
        In the order analysed.
    tree : SharingTree
        Majority-rule consensus of the runs' sharing trees (layers in depth order).
    support : list of ndarray
        ``support[l][g]``: fraction of runs whose sharing tree holds group g of ``tree`` at layer l.
    run_trees : list of SharingTree
        Each run's own sharing tree.
    threshold : float
    n_clusters : int or None
        The flat cut: ``n_clusters`` clusters per layer, or (None) ``threshold`` times the RMS norm.
    measure : str
        Description of the Gaussian measure of the distances.
    method : str
        Linkage of the flat clusters.
    """

    runs: tuple[str, ...]
    sources: tuple[str, ...]
    task_names: tuple[str, ...]
    layers: list[LayerConsensus]
    tree: SharingTree
    support: list[np.ndarray]
    run_trees: list[SharingTree]
    threshold: float
    n_clusters: int | None
    measure: str
    method: str

    @property
    def num_runs(self) -> int:
        return len(self.runs)

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @property
    def order(self) -> np.ndarray:
        """Task order of the figures: the consensus tree's, where every group is contiguous."""
        return self.tree.order

    @property
    def warnings(self) -> list[str]:
        """One line per layer whose stability is below :data:`STABILITY_THRESHOLD`, in depth order."""
        return [la.warning for la in sorted(self.layers, key=lambda la: la.index) if la.unstable]

    @property
    def representative(self) -> int:
        """The run that agrees most with the others: the highest ARI to the other runs, summed
        over the layers (the medoid); the first such run on ties."""
        total = sum(la.pairwise_ari.sum(axis=1) for la in self.layers)
        return int(np.argmax(total))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``consensus.json`` (lists, floats, strings)."""
        depth = {la.index: l for l, la in enumerate(sorted(self.layers, key=lambda la: la.index))}
        layers = []
        for la in self.layers:
            l = depth[la.index]
            row = self.tree.groups[l]
            groups = [{"tasks": [self.task_names[t] for t in self.tree.members(l, g)],
                       "support": float(self.support[l][g])} for g in range(int(row.max()) + 1)]
            layers.append({
                "position": la.index + 1, "name": la.name,
                "stability": la.stability,
                "unstable": la.unstable,
                "warning": la.warning,
                "pairwise_ari": la.pairwise_ari.tolist(),
                "coclustering": la.coclustering.tolist(),
                "mean_distance": la.mean_distance.tolist(),
                "std_distance": la.std_distance.tolist(),
                "clusters": {run: lab.tolist() for run, lab in zip(self.runs, la.labels)},
                "planted_ari": None if la.planted_ari is None else dict(zip(self.runs, la.planted_ari.tolist())),
                "tree_groups": groups,
            })
        cut = (f"{self.n_clusters} flat clusters per layer" if self.n_clusters is not None
               else f"the runs' sharing-tree groups: every pair within {self.threshold:g} x the layer's RMS "
                    "activation norm, nested across layers")
        return {
            "runs": [{"label": r, "checkpoint": s} for r, s in zip(self.runs, self.sources)],
            "task_names": list(self.task_names),
            "measure": self.measure,
            "method": self.method,
            "threshold": self.threshold,
            "n_clusters": self.n_clusters,
            "stability_threshold": STABILITY_THRESHOLD,
            "warnings": self.warnings,
            "definitions": {
                "coclustering": ("fraction of runs in which two tasks share a group ("
                                 + (f"{cut}, {self.method} linkage" if self.n_clusters is not None else cut) + ")"),
                "stability": "mean adjusted Rand index between the groups of every pair of runs",
                "unstable": f"stability below {STABILITY_THRESHOLD:g} (Steinley 2004: below 0.8 the agreement of "
                            "two partitions is less than good); the layer's groups depend on the run, and "
                            "its warning says not to read them as real",
                "support": "fraction of runs whose sharing tree holds exactly the group at that layer; "
                           "the consensus tree holds a group of two or more tasks only when its support "
                           "is above 0.5 (majority rule)",
            },
            "representative": self.runs[self.representative],
            "layers": layers,
            "tree_newick": self.tree.to_newick(),
        }


def check_same_runs(checkpoints: Sequence[Any]) -> None:
    """ValueError, naming the file, unless every checkpoint has the first one's tasks and layers.

    Parameters
    ----------
    checkpoints : sequence of taan_core.checkpoint.Checkpoint
    """
    if not checkpoints:
        raise ValueError("no runs given")
    first = checkpoints[0]
    for ckpt in checkpoints[1:]:
        if list(ckpt.task_names) != list(first.task_names):
            if len(ckpt.task_names) != len(first.task_names):
                why = f"{len(ckpt.task_names)} tasks, {first.path} has {len(first.task_names)}"
            else:
                k = next(i for i, (a, b) in enumerate(zip(ckpt.task_names, first.task_names)) if a != b)
                why = f"task {k + 1} is {ckpt.task_names[k]!r}, in {first.path} {first.task_names[k]!r}"
            raise ValueError(f"{ckpt.path}: runs must have the same tasks to be combined; {why}")
        if list(ckpt.layer_names) != list(first.layer_names):
            raise ValueError(f"{ckpt.path}: runs must have the same layers to be combined; layers "
                             f"{', '.join(ckpt.layer_names)}, in {first.path} {', '.join(first.layer_names)}")


def consensus(
    analyses: Sequence[Any],
    *,
    runs: Sequence[str] | None = None,
    threshold: float = 0.1,
    n_clusters: int | None = None,
) -> Consensus:
    """Combine the analyses of several runs of one network into co-clustering, stability,
    distance spread and a sharing tree with support.

    Parameters
    ----------
    analyses : sequence of Analysis
        From :func:`taan_viz.analysis.analyze`, one per run, with the same task names, the same
        analysed layers, measure kind and linkage method.
    runs : sequence of str, optional
        A label per run; ``run-1, run-2, ...`` by default.
    threshold : float, default 0.1
        Flat clusters and sharing groups: tasks closer than this fraction of the layer's RMS
        activation norm (as in ``taan-viz cluster`` and ``tree``).
    n_clusters : int, optional
        Cut every layer's clustering into this many clusters instead (co-clustering only; the
        sharing tree always uses ``threshold``). Without it the co-clustering counts the runs'
        sharing-tree groups, so it and the tree's support come from the same groups.

    Returns
    -------
    Consensus

    Raises
    ------
    ValueError
        Fewer than two runs, or runs that differ in tasks, layers, measure or method.
    """
    analyses = list(analyses)
    r = len(analyses)
    if r < 2:
        raise ValueError(f"consensus needs at least 2 runs, got {r}")
    labels_ = tuple(f"run-{k + 1}" for k in range(r)) if runs is None else tuple(str(x) for x in runs)
    if len(labels_) != r:
        raise ValueError(f"runs must have {r} labels (one per analysis), got {len(labels_)}")
    first = analyses[0]
    for k, a in enumerate(analyses[1:], start=1):
        where = a.source or labels_[k]
        if a.task_names != first.task_names:
            raise ValueError(f"{where}: runs must have the same tasks to be combined")
        if [(la.index, la.name) for la in a.layers] != [(la.index, la.name) for la in first.layers]:
            raise ValueError(f"{where}: runs must analyse the same layers to be combined")
        if a.measure.kind != first.measure.kind or a.method != first.method:
            raise ValueError(f"{where}: runs must be analysed under the same measure and linkage method")
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")

    layers = []
    groups = [a.cluster_labels(n_clusters=n_clusters, threshold=threshold) for a in analyses]
    for k, la0 in enumerate(first.layers):
        per_run = [a.layers[k] for a in analyses]
        lab = np.stack([g[k] for g in groups])
        dist = np.stack([la.geometry.distance for la in per_run])
        planted = None
        if all(la.planted is not None for la in per_run):
            planted = np.array([la.ari for la in per_run], dtype=np.float64)
        layers.append(LayerConsensus(
            name=la0.name, index=la0.index, labels=lab, coclustering=coclustering(lab),
            pairwise_ari=pairwise_ari(lab), mean_distance=dist.mean(axis=0), std_distance=dist.std(axis=0),
            rms_norm=np.array([la.geometry.rms_norm for la in per_run]), planted_ari=planted))

    by_depth = sorted(layers, key=lambda la: la.index)
    run_trees = [a.sharing_tree(threshold) for a in analyses]
    tree = consensus_tree(run_trees, base_order=_order_from(by_depth[-1].coclustering, by_depth[-1].mean_distance,
                                                            first.method))
    return Consensus(runs=labels_, sources=tuple(a.source for a in analyses), task_names=first.task_names,
                     layers=layers, tree=tree, support=group_support(tree, run_trees), run_trees=run_trees,
                     threshold=float(threshold), n_clusters=n_clusters, measure=first.measure.describe(),
                     method=first.method)


def consensus_tree(trees: Sequence[SharingTree], *, base_order: Sequence[int] | None = None) -> SharingTree:
    """Majority-rule consensus of sharing trees with the same tasks and layers.

    At each layer, in depth order, a group of two or more tasks is in the consensus tree when
    more than half of the trees hold exactly that group there (its support, as
    :func:`group_support` counts it, is above 1/2) and its tasks form one group of the
    consensus tree at the layer before (so the consensus stays nested, like a hard-sharing
    network). Every other task stands alone at that layer. Groups held by more than half of
    the trees never overlap: two of them are both held by at least one tree, in which they are
    disjoint, or nested across layers.

    Parameters
    ----------
    trees : sequence of SharingTree
        Two or more; same task names and layer names.
    base_order : sequence of int, optional
        Preferred drawing order (see :func:`~taan_viz.sharing.tree_from_groups`).

    Returns
    -------
    SharingTree
        Thresholds 0.5 (the majority) at every layer, ``relative=False``.
    """
    from collections import Counter

    trees = list(trees)
    if not trees:
        raise ValueError("trees must hold at least one sharing tree")
    first = trees[0]
    for k, tree in enumerate(trees[1:], start=1):
        if tree.task_names != first.task_names or tree.layer_names != first.layer_names:
            raise ValueError(f"trees[{k}] must have the tasks and layers of trees[0]")
    r, t, depth = len(trees), len(first.task_names), first.num_layers
    parent = np.zeros(t, dtype=np.int64)
    out = []
    for l in range(depth):
        held = Counter(g for tree in trees for g in _groups_of(tree.groups[l]))
        row = np.full(t, -1, dtype=np.int64)
        next_id = 0
        for members, count in sorted(held.items(), key=lambda item: min(item[0])):
            idx = np.fromiter(sorted(members), dtype=np.int64)
            # More than half of the runs; exactly half is not a majority.
            if 2 * count > r and len(idx) > 1 and len(np.unique(parent[idx])) == 1:
                row[idx] = next_id
                next_id += 1
        for task in np.flatnonzero(row < 0):
            row[task] = next_id
            next_id += 1
        out.append(row)
        parent = row
    return tree_from_groups(out, task_names=first.task_names, layer_names=first.layer_names,
                            thresholds=np.full(depth, 0.5), threshold=0.5, relative=False, base_order=base_order)


def _order_from(cocluster: np.ndarray, mean_distance: np.ndarray, method: str) -> np.ndarray:
    """Leaf order of the clustering of 1 - co-clustering, with the runs' mean distance as the
    tie-breaker: tasks often together end up adjacent, and where the runs' groups disagree (the
    co-clustering is near 0 off the diagonal, as on school) tasks close on average still do."""
    from taan_viz.clustering import cluster_tasks

    top = float(mean_distance.max())
    d = (1.0 - cocluster) + (0.5 * mean_distance / top if top > 0 else 0.0)
    np.fill_diagonal(d, 0.0)
    # ward/centroid/median need Euclidean input; 1 - C need not be, and average is the usual
    # choice for consensus matrices (Monti et al.).
    return cluster_tasks(d, method="average" if method in ("ward", "centroid", "median") else method,
                         optimal_ordering="auto").order
