"""The analysis of a checkpoint: what the figures and exports show.

For every selected task-adaptive layer the tasks' activations ``F_t`` are points of the function
space L2(N(mu, sigma^2)). :func:`analyze` computes their geometry under a chosen Gaussian measure
(:mod:`taan_viz.geometry`), clusters the tasks (:mod:`taan_viz.clustering`), builds the sharing
tree across depth (:mod:`taan_viz.sharing`) and, when the checkpoint carries planted ground
truth, scores the clustering against it; :func:`history_geometry` does the same geometry at the
training history's snapshots. Everything here returns numpy arrays and small dataclasses;
``taan_viz.plots`` only draws them.

The measure
-----------
``"data"``
    The layer's recorded pre-activation statistics: N(mu, sigma^2) with mu, sigma the running
    mean and standard deviation of the layer's input over all tasks (N(0, 1) when the checkpoint
    has none, e.g. a reference state_dict).
``"standard"``
    N(0, 1), as in the paper and the reference code.
``"MU,SIGMA"``
    An explicit Gaussian, e.g. ``"0.5,2"``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from taan_viz.clustering import LINKAGE_METHODS, Clustering, adjusted_rand_index, cluster_tasks, flat_clusters
from taan_viz.geometry import METRICS, LayerGeometry, Measure, check_metric, layer_geometry, parse_measure
from taan_viz.inputs import select_layers

if TYPE_CHECKING:  # pragma: no cover - only for annotations
    from taan_core.checkpoint import Checkpoint
    from taan_viz.sharing import SharingTree

# The per-layer geometry lives in taan_viz.geometry; its names are re-exported here because
# most users meet them through an Analysis.
__all__ = [
    "METRICS",
    "Analysis",
    "LayerAnalysis",
    "LayerGeometry",
    "Measure",
    "Snapshot",
    "analyze",
    "check_metric",
    "history_geometry",
    "layer_geometry",
    "parse_measure",
]

@dataclass(frozen=True)
class LayerAnalysis:
    """Everything computed for one layer.

    Attributes
    ----------
    index : int
        Position of the layer in the checkpoint (0-based).
    geometry : LayerGeometry
    task_names : tuple of str
    planted : ndarray of shape (T,) or None
        Planted ground-truth group of each task at this layer.
    method : str
        Linkage method of :attr:`clustering`.
    optimal_ordering : bool or "auto"
        Whether :attr:`clustering` reorders leaves optimally (see ``cluster_tasks``).
    preact_mean, preact_std : ndarray of shape (T,) or None
        Recorded per-task statistics of the layer's pre-activations, when the checkpoint has them.
    has_statistics : bool
        Whether the checkpoint records the layer's pre-activation statistics (an imported
        reference state_dict does not; its "data" measure is then N(0, 1)).
    """

    index: int
    geometry: LayerGeometry
    task_names: tuple[str, ...]
    planted: np.ndarray | None = None
    method: str = "average"
    optimal_ordering: "bool | str" = "auto"
    preact_mean: np.ndarray | None = None
    preact_std: np.ndarray | None = None
    has_statistics: bool = True

    @functools.cached_property
    def clustering(self) -> Clustering:
        """Hierarchical clustering of the tasks on ``geometry.distance``, computed on first use
        (optimal leaf ordering costs about a second per layer at T = 1000)."""
        return cluster_tasks(self.geometry.distance, labels=self.task_names, method=self.method,
                             optimal_ordering=self.optimal_ordering)

    @functools.cached_property
    def ari(self) -> float | None:
        """Adjusted Rand index between the planted groups and the flat clusters of the same
        count (None without ground truth); computed on first use."""
        if self.planted is None:
            return None
        k = len(np.unique(self.planted))
        return adjusted_rand_index(self.planted, flat_clusters(self.clustering, n_clusters=k))

    @property
    def name(self) -> str:
        return self.geometry.name

    def flat(self, n_clusters: int | None = None, threshold: float = 0.1) -> np.ndarray:
        """Flat clusters of the tasks, shape (T,), ids numbered in leaf order.

        By count when ``n_clusters`` is given, else by cutting the tree at ``threshold`` times
        the layer's RMS activation norm (the same relative scale as the sharing tree).
        """
        if n_clusters is not None:
            return flat_clusters(self.clustering, n_clusters=n_clusters)
        if not np.isfinite(threshold) or threshold < 0:
            raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
        return flat_clusters(self.clustering, threshold=threshold * self.geometry.rms_norm)


@dataclass(frozen=True)
class Analysis:
    """The analysis of a checkpoint's layers under one measure.

    Attributes
    ----------
    task_names : tuple of str
    layers : list of LayerAnalysis
        The selected layers, in the order selected.
    measure : Measure
    method : str
        Linkage method of the clusterings.
    source : str
        Path of the checkpoint (for captions).
    sha256 : str
        Hash of the checkpoint file.
    tree_layers : tuple of (int, str, ndarray of shape (T, T), float)
        Every task-adaptive layer of the checkpoint, analysed or not, in depth order: its
        position, name, distance matrix and RMS activation norm under the measure. The sharing
        tree is read from all of them, so the groups of a layer do not depend on which layers
        are analysed. Empty: the analysed layers stand for the whole network.
    """

    task_names: tuple[str, ...]
    layers: list[LayerAnalysis]
    measure: Measure
    method: str = "average"
    source: str = ""
    sha256: str = ""
    metrics: list[dict] = field(default_factory=list)
    tree_layers: tuple = field(default=(), repr=False, compare=False)
    # Groups and palettes, computed once per (threshold, n_clusters): every figure of one
    # analysis must colour a task the same way.
    _memo: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def has_planted(self) -> bool:
        return any(layer.planted is not None for layer in self.layers)

    def cluster_labels(self, n_clusters: int | None = None, threshold: float = 0.1) -> list[np.ndarray]:
        """The task groups of every analysed layer: what the figures colour, count and box.

        One rule for every figure: by default (no ``n_clusters``) a layer's groups are the
        sharing tree's groups at that layer (:meth:`sharing_tree`: every pair of tasks of a
        group within ``threshold`` times the layer's RMS activation norm, nested across depth,
        read from all of the checkpoint's layers), so the tree, the
        dendrograms, the curves, the MDS maps, the report and the export cannot disagree. With
        ``n_clusters`` each layer's linkage tree is cut into that many clusters instead
        (:meth:`LayerAnalysis.flat`), and the captions say so.

        Ids are matched from shallow to deep layers, so that a group keeps its id as long as
        it persists; groups that split off get new ids.

        Returns
        -------
        list of ndarray of shape (T,)
            In the order of :attr:`layers`.
        """
        key = ("labels", n_clusters, float(threshold))
        if key not in self._memo:
            self._memo[key] = self._cluster_labels(n_clusters, threshold)
        return [lab.copy() for lab in self._memo[key]]

    def _cluster_labels(self, n_clusters: int | None, threshold: float) -> list[np.ndarray]:
        from taan_viz.clustering import match_labels

        by_depth = sorted(range(len(self.layers)), key=lambda k: self.layers[k].index)
        if n_clusters is None:
            if not np.isfinite(threshold) or threshold < 0:
                raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
            tree = self.sharing_tree(threshold)
            raw = {k: tree.groups[d] for d, k in enumerate(by_depth)}
        else:
            raw = {k: self.layers[k].flat(n_clusters=n_clusters) for k in by_depth}
        out: list[np.ndarray] = [np.empty(0)] * len(self.layers)
        previous = None
        for k in by_depth:
            labels = raw[k]
            if previous is not None:
                labels = match_labels(previous, labels)
            out[k] = previous = labels
        return out

    def separation(self, n_clusters: int | None = None, threshold: float = 0.1) -> list:
        """How separated each analysed layer's groups (:meth:`cluster_labels`) are.

        :func:`taan_core.relatedness.separation` of the layer's distances and its groups: the
        closest two tasks of different groups over the furthest two of one group. At most 1
        (``not sep.separated``) the groups cut a continuum, and such groups move between
        training seeds (docs/training.md); NaN where the layer claims no group of two or more.

        Returns
        -------
        list of taan_core.relatedness.Separation
            In the order of :attr:`layers`.
        """
        from taan_core.relatedness import separation

        key = ("separation", n_clusters, float(threshold))
        if key not in self._memo:
            labels = self.cluster_labels(n_clusters, threshold)
            self._memo[key] = [separation(la.geometry.distance, lab) for la, lab in zip(self.layers, labels)]
        return list(self._memo[key])

    def separation_note(self, n_clusters: int | None = None, threshold: float = 0.1) -> str | None:
        """One line naming the analysed layers whose groups are not separated, or None."""
        weak = [(la.index + 1, sep.ratio) for la, sep in zip(self.layers, self.separation(n_clusters, threshold))
                if not np.isnan(sep.ratio) and not sep.separated]
        if not weak:
            return None
        which = ", ".join(f"layer {k} ({ratio:.2f})" for k, ratio in weak)
        return (f"groups not separated in {which}: two tasks of different groups are closer than two of one "
                f"group, so the cut falls in a continuum and moves between seeds; do not read these groups as real")

    def palette(self, n_clusters: int | None = None, threshold: float = 0.1):
        """The colour of every task, shared by all figures of this analysis.

        Colour groups are the groups (:meth:`cluster_labels`) of the deepest layer (of the
        deepest with at most 32 groups, when it has more); beyond 8 groups a dash pattern or
        marker tells repeated colours apart (see :mod:`taan_viz.palette`).

        Returns
        -------
        taan_viz.palette.TaskPalette
        """
        from taan_viz.palette import task_palette

        key = ("palette", n_clusters, float(threshold))
        if key not in self._memo:
            labels = self.cluster_labels(n_clusters=n_clusters, threshold=threshold)
            by_depth = sorted(range(len(self.layers)), key=lambda k: self.layers[k].index)
            names = [f"{self.layers[k].index + 1} ({self.layers[k].name})" for k in by_depth]
            order = self.sharing_tree(threshold).order if n_clusters is None else None
            self._memo[key] = task_palette([labels[k] for k in by_depth], names, order=order)
        return self._memo[key]

    def describe_measure(self) -> str:
        """The measure in one line, saying where a "data" measure had no statistics to use."""
        if self.measure.kind != "data":
            return self.measure.describe()
        missing = [la for la in self.layers if not la.has_statistics]
        if missing and len(missing) == len(self.layers):
            return "N(0, 1): the file records no statistics"
        text = self.measure.describe()
        if missing:
            text += "; N(0, 1) for layer " + ", ".join(str(la.index + 1) for la in missing) + \
                ": the file records no statistics for it"
        return text

    def sharing_tree(self, threshold: float = 0.1, relative: bool = True) -> "SharingTree":
        """The sharing tree at the analysed layers, taken in depth order (see taan_viz.sharing).

        The tree is read from every task-adaptive layer of the checkpoint (:attr:`tree_layers`)
        and then restricted to the analysed ones, so a layer has the same groups whichever
        layers are analysed (``--layers 1,5`` draws the groups layer 5 has in the whole tree).
        Tasks are ordered like the deepest analysed layer's clustering, with groups made
        contiguous.
        """
        from taan_viz.sharing import sharing_tree

        key = ("tree", float(threshold), bool(relative))
        if key in self._memo:
            return self._memo[key]
        layers = sorted(self.layers, key=lambda la: la.index)
        full = self.tree_layers or tuple((la.index, la.name, la.geometry.distance, la.geometry.rms_norm)
                                         for la in layers)
        positions = [index for index, _, _, _ in full]
        try:
            rows = [positions.index(la.index) for la in layers]
        except ValueError as err:
            raise ValueError("tree_layers must hold every analysed layer") from err
        tree = sharing_tree([d for _, _, d, _ in full], task_names=self.task_names,
                            layer_names=[name for _, name, _, _ in full], threshold=threshold, relative=relative,
                            scales=[s for _, _, _, s in full], base_order=layers[-1].clustering.order)
        self._memo[key] = tree if len(rows) == len(full) else tree.select(rows)
        return self._memo[key]

    def layer(self, key: "int | str") -> LayerAnalysis:
        """A layer by name or by its position in :attr:`layers` (negative counts from the end).

        Positions are 0-based like every Python sequence: ``analysis.layer(0)`` is the first
        *analysed* layer, which need not be the checkpoint's first (``--layers 2,3`` analyses
        two layers; ``layer(0)`` is then the checkpoint's layer 2). The 1-based numbers of the
        command line and of the figures' titles ("layer 2") count the checkpoint's layers and
        are :attr:`LayerAnalysis.index` + 1.
        """
        if isinstance(key, str):
            for layer in self.layers:
                if layer.name == key:
                    return layer
            raise ValueError(f"no analysed layer named {key!r}; analysed: {', '.join(self.layer_names)}")
        if isinstance(key, bool) or not isinstance(key, int):
            raise TypeError(f"layer must be a name or an int position, got {type(key).__name__}")
        if not -len(self.layers) <= key < len(self.layers):
            raise ValueError(f"layer position {key} is out of range for {len(self.layers)} analysed layers")
        return self.layers[key]

    def select(self, layers: "Sequence[int | str] | None" = None) -> list[LayerAnalysis]:
        """The layers named by ``layers`` (names or positions; all when None), in that order.

        Raises
        ------
        ValueError
            When ``layers`` selects nothing or names an unknown layer.
        """
        keys = list(range(len(self.layers))) if layers is None else list(layers)
        chosen = [self.layer(k) for k in keys]
        if not chosen:
            raise ValueError("layers must select at least one layer")
        return chosen


def _planted_groups(ckpt: "Checkpoint", num_layers: int) -> list | None:
    groups = (ckpt.data or {}).get("groups")
    # Ground truth describes the teacher's layers; it is comparable only layer for layer.
    if groups is None or len(groups) != num_layers:
        return None
    return [np.asarray(g, dtype=np.int64) for g in groups]


def analyze(
    ckpt: "Checkpoint",
    *,
    measure: "str | Measure" = "data",
    layers: "str | Sequence[str | int] | None" = None,
    task_names: Sequence[str] | None = None,
    method: str = "average",
    optimal_ordering: "bool | str" = "auto",
) -> Analysis:
    """Geometry, clustering and (when planted) ARI of the selected layers of a checkpoint.

    Parameters
    ----------
    ckpt : Checkpoint
        From :func:`taan_core.checkpoint.load_checkpoint`.
    measure : str or Measure, default "data"
        See the module docstring.
    layers : str, int, sequence or None
        Layer names or 0-based indices of the checkpoint's layers (:func:`select_layers`); None
        for all. The command line's 1-based ``--layers`` is read by
        :func:`taan_viz.inputs.parse_layers`.
    task_names : sequence of str, optional
        Overrides the checkpoint's task names (same count).
    method : str, default "average"
        Linkage method (scipy names).
    optimal_ordering : bool or "auto", default "auto"
        Reorder the dendrogram leaves so that neighbours are as similar as possible ("auto":
        up to 500 tasks, beyond which it costs seconds and a task is narrower than a pixel).

    Returns
    -------
    Analysis
    """
    m = parse_measure(measure)
    if method not in LINKAGE_METHODS:
        raise ValueError(f"method must be one of {', '.join(LINKAGE_METHODS)}, got {method!r}")
    positions = select_layers(ckpt.layer_names, layers)
    names = tuple(ckpt.task_names if task_names is None else task_names)
    if len(names) != ckpt.num_tasks:
        raise ValueError(f"task_names must have {ckpt.num_tasks} entries (one per task), got {len(names)}")
    # Every layer holds T x T distances, and the clustering a few more matrices of that size:
    # a file of 300,000 tasks is refused here rather than by the allocator.
    from taan_core._memory import check_memory

    check_memory(4 * 8 * len(ckpt.layers) * ckpt.num_tasks ** 2,
                 f"{ckpt.path}: task_names: the analysis of {ckpt.num_tasks:,} tasks (T x T distances per layer)")
    planted = _planted_groups(ckpt, len(ckpt.layers))
    out = []
    geoms = {}
    # Every layer's geometry, analysed or not: the sharing tree is read from all of them.
    for pos, record in enumerate(ckpt.layers):
        mu, sigma = m.resolve(record)
        geoms[pos] = layer_geometry(record.alpha, record.hinges, mu, sigma, name=record.name)
    for pos in positions:
        record = ckpt.layers[pos]
        geom = geoms[pos]
        truth = planted[pos] if planted is not None else None
        stats = [None if v is None else np.asarray(v, dtype=np.float64)
                 for v in (record.preact_mean, record.preact_std)]
        # The schema stores a missing overall mean and std as 0 and 1; recorded running
        # statistics are never exactly that, so (0, 1) with no per-task values means "none".
        recorded = stats[0] is not None or stats[1] is not None or (record.mu, record.sigma) != (0.0, 1.0)
        out.append(LayerAnalysis(index=pos, geometry=geom, task_names=names, planted=truth, method=method,
                                 optimal_ordering=optimal_ordering, preact_mean=stats[0], preact_std=stats[1],
                                 has_statistics=bool(recorded)))
    tree_layers = tuple((pos, g.name, g.distance, g.rms_norm) for pos, g in sorted(geoms.items()))
    return Analysis(task_names=names, layers=out, measure=m, method=method, source=str(ckpt.path),
                    sha256=ckpt.sha256, metrics=list(ckpt.metrics), tree_layers=tree_layers)


@dataclass(frozen=True)
class Snapshot:
    """The geometry of the selected layers at one history snapshot.

    Attributes
    ----------
    epoch, step : int
    layers : list of LayerGeometry
    """

    epoch: int
    step: int
    layers: list[LayerGeometry]


def history_geometry(
    ckpt: "Checkpoint",
    *,
    measure: "str | Measure" = "data",
    layers: "str | Sequence[str | int] | None" = None,
    max_snapshots: int | None = None,
) -> list[Snapshot]:
    """Layer geometry at the checkpoint's history snapshots, oldest first.

    The ``"data"`` measure uses the final recorded statistics of each layer for every snapshot
    (statistics are not stored per snapshot), so that snapshots are compared under one measure.

    Parameters
    ----------
    layers : str, int, sequence or None
        Layer names or 0-based indices of the checkpoint's layers, as :func:`analyze`.
    max_snapshots : int, optional
        Keep at most this many snapshots, evenly spaced, always including the first and the last.

    Raises
    ------
    ValueError
        When the checkpoint has no history.
    """
    m = parse_measure(measure)
    positions = select_layers(ckpt.layer_names, layers)
    history = list(ckpt.history)
    if not history:
        raise ValueError(f"{ckpt.path}: the checkpoint has no history snapshots to show "
                         "(train with history recording, the default of taan-core train)")
    keep = range(len(history))
    if max_snapshots is not None:
        if isinstance(max_snapshots, bool) or not isinstance(max_snapshots, int) or max_snapshots < 1:
            raise ValueError(f"max_snapshots must be an int >= 1, got {max_snapshots!r}")
        if len(history) > max_snapshots:
            keep = sorted({int(round(i)) for i in np.linspace(0, len(history) - 1, max_snapshots)})
    out = []
    for k in keep:
        snap = history[k]
        geoms = []
        for pos in positions:
            mu, sigma = m.resolve(ckpt.layers[pos])
            geoms.append(layer_geometry(snap["alphas"][pos], snap["hinges"][pos], mu, sigma,
                                        name=ckpt.layers[pos].name))
        out.append(Snapshot(epoch=int(snap["epoch"]), step=int(snap["step"]), layers=geoms))
    return out

