"""Relatedness tested against what is known about the tasks: the Mantel test per layer.

A trained TAAN says how alike its tasks are at each depth (the distance matrices of
:mod:`taan_viz.analysis`). When something is known about the tasks beforehand (a taxonomy, the
attributes of the schools or exams the tasks come from, a distance from the literature),
:func:`compare_runs` asks whether the network's distances follow it, layer by layer:

known distances
    Read by :func:`read_known` (:mod:`taan_viz.known`) from a CSV in one of two forms: a
    task-by-task distance matrix, or a table of per-task attributes turned into distances by
    :func:`encode_attributes` (numeric columns z-scored, categorical columns one-hot encoded,
    Euclidean distance between the encoded rows).
the test
    :func:`mantel_test` (Mantel, 1967): the correlation (Spearman's rho by default) of the two
    matrices' upper triangles, and a one-sided permutation p-value obtained by relabelling the
    tasks of one matrix at random (rows and columns together), which keeps the dependence
    between the pairs that share a task.
agreement of the groups
    Optionally, the adjusted Rand index between a layer's groups (the sharing tree's, as every
    figure colours them) and a categorical column of the table.

Everything here returns arrays and small dataclasses; :mod:`taan_viz.plots.compare` draws them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

# The readers of the known distances live in taan_viz.known; their names are re-exported here
# because users meet them through a comparison.
from taan_viz.known import KINDS, KnownTasks, attribute_distance, encode_attributes, read_known

__all__ = [
    "KINDS",
    "METHODS",
    "Comparison",
    "KnownTasks",
    "LayerComparison",
    "MantelResult",
    "attribute_distance",
    "compare_runs",
    "encode_attributes",
    "mantel_test",
    "mantel_tests",
    "read_known",
]

METHODS = ("spearman", "pearson")
# Matrix entries gathered per batch of relabellings (float32: 64 MB).
_BATCH_ENTRIES = 16_000_000
# A float32 statistic closer than this to the observed one is recomputed in float64. float32's
# rounding of a correlation of a million products is about 1e-6; the margin is 1000 times that.
_SCREEN = 1e-3
# Permuted statistics equal to the observed one up to rounding (a relabelling of tasks with
# identical rows, summed in another order) count as ">=": a few units in the 13th digit.
_TIE = 1e-10


# ----------------------------------------------------------------------------------------------
# the Mantel test


@dataclass(frozen=True)
class MantelResult:
    """The outcome of :func:`mantel_test`.

    Attributes
    ----------
    statistic : float
        Correlation of the two matrices' upper triangles (NaN when one of them is constant).
    pvalue : float
        ``(1 + #{permuted statistic >= statistic}) / (1 + permutations)`` (NaN with the statistic).
    permutations : int
    n_tasks : int
    method : str
    """

    statistic: float
    pvalue: float
    permutations: int
    n_tasks: int
    method: str


def mantel_test(d1, d2, permutations: int = 9999, seed: "int | None" = 0, method: str = "spearman") -> MantelResult:
    """The Mantel test of two distance matrices over the same tasks.

    The statistic is the correlation of the T(T-1)/2 entries above the diagonal of ``d1`` and
    of ``d2``: Spearman's rho (ties get average ranks) or Pearson's r. Its null distribution is
    built by relabelling the tasks of ``d2`` at random, permuting its rows and columns together,
    which keeps the dependence between pairs that share a task (the pairs are not independent,
    so the usual p-value of a correlation would be far too small). The p-value is one-sided, for
    a positive association, and counts the observed labelling as one of the permutations:
    ``p = (1 + #{r_perm >= r}) / (1 + permutations)``, so it is never below
    ``1 / (1 + permutations)``.

    Ranks are taken once: a relabelling only moves the entries of ``d2``'s upper triangle among
    themselves, so their mean and spread, hence the denominator, stay the same and each permuted
    statistic is one sum of products, computed for batches of permutations at a time (9999
    permutations of 139 tasks take about 0.6 s).

    Parameters
    ----------
    d1, d2 : array-like of shape (T, T)
        Distance matrices (symmetric, zero diagonal, >= 0), T >= 3, tasks in the same order.
    permutations : int, default 9999
        Random relabellings, >= 1.
    seed : int or None, default 0
        Seed of the permutations (``numpy.random.default_rng``).
    method : {"spearman", "pearson"}, default "spearman"

    Returns
    -------
    MantelResult
        The statistic and p-value are NaN when either matrix is constant above the diagonal
        (a correlation is then undefined).

    Raises
    ------
    ValueError
        Matrices of different shapes, fewer than 3 tasks, not distance matrices, or bad
        ``permutations`` / ``method``.
    """
    return mantel_tests(d1, [d2], permutations, seed, method)[0]


def mantel_tests(known, matrices: Sequence, permutations: int = 9999, seed: "int | None" = 0,
                 method: str = "spearman", progress=None) -> list[MantelResult]:
    """:func:`mantel_test` of ``known`` against each of ``matrices``, with one set of relabellings.

    The results equal ``[mantel_test(known, d, permutations, seed, method) for d in matrices]``
    (the same relabellings, the statistics up to rounding in the 13th digit), at the cost of about
    one test: a relabelling p moves the entries of ``known`` instead of those of every matrix
    (``sum_{i<j} x_ij y[p_i, p_j] = sum_{i<j} x[q_i, q_j] y_ij`` with q the inverse of p), so
    each relabelling gathers one T x T matrix and one matrix product scores it against all
    matrices at once. The products are in float32, and every statistic that float32's rounding
    could place on the other side of the observed one (within 1e-3 of it) is recomputed in
    float64, so the counts are those of float64. At T = 1000 with five matrices that is about
    3 ms a relabelling (the per-matrix float64 form took 6 ms a relabelling and matrix).

    Parameters
    ----------
    known : array-like of shape (T, T)
        The distance matrix every test shares.
    matrices : sequence of array-like of shape (T, T)
        The matrices tested against it (layers, runs, their mean).
    permutations, seed, method
        As in :func:`mantel_test`.
    progress : callable, optional
        ``progress(done, total)`` after each batch of relabellings (a progress bar).

    Returns
    -------
    list of MantelResult
        One per matrix, in order.
    """
    from scipy.stats import rankdata

    from taan_core.relatedness import check_distance_matrix

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if isinstance(permutations, bool) or not isinstance(permutations, (int, np.integer)) or permutations < 1:
        raise ValueError(f"permutations must be an int >= 1, got {permutations!r}")
    a = check_distance_matrix(known, "d1")
    t = a.shape[0]
    if t < 3:
        raise ValueError(f"the Mantel test needs at least 3 tasks (3 pairs), got {t}")
    iu, ju = np.triu_indices(t, 1)
    x = rankdata(a[iu, ju]) if method == "spearman" else a[iu, ju]
    xc = x - x.mean()
    # known's centred values on both sides of the diagonal: a relabelled copy is one gather.
    big_x = np.zeros((t, t))
    big_x[iu, ju] = xc
    big_x += big_x.T
    pairs, denoms = [], []
    for k, d in enumerate(matrices):
        b = check_distance_matrix(d, "d2" if len(matrices) == 1 else f"matrices[{k}]")
        if b.shape != a.shape:
            raise ValueError(f"d1 and d2 must have the same shape, got {a.shape} and {b.shape}")
        y = rankdata(b[iu, ju]) if method == "spearman" else b[iu, ju]
        # Centred too (a relabelled xc still sums to 0, so the statistic is unchanged): every
        # statistic is then a correlation of at most 1 in size, which bounds float32's error.
        pairs.append(y - y.mean())
        denoms.append(math.sqrt(float(xc @ xc) * float(pairs[-1] @ pairs[-1])))
    if not pairs:
        return []
    denoms = np.array(denoms)
    defined = denoms > 0
    scale = np.where(defined, denoms, 1.0)
    pairs = np.stack(pairs)
    observed = (pairs @ xc) / scale
    # The relabellings are scored in float32 (half the bytes to gather and multiply: 2x faster)
    # against the matrices' values above the diagonal; a statistic within _SCREEN of the observed
    # one, where float32's rounding could decide the comparison, is recomputed in float64.
    ys = np.zeros((len(pairs), t, t), dtype=np.float32)
    ys[:, iu, ju] = pairs
    ys = ys.reshape(len(pairs), -1)
    x32 = big_x.astype(np.float32)
    n = int(permutations)
    rng = np.random.default_rng(seed)
    batch = max(1, _BATCH_ENTRIES // (t * t))
    gathered = np.empty((batch, t, t), dtype=np.float32)
    rows = np.empty((t, t), dtype=np.float32)
    above = np.zeros(len(pairs), dtype=np.int64)
    for start in range(0, n, batch):
        # Drawn a batch at a time: the same relabellings as one draw of all n, in less memory.
        chunk = rng.permuted(np.tile(np.arange(t), (min(batch, n - start), 1)), axis=1)
        inverse = np.argsort(chunk, axis=1)
        for b, q in enumerate(inverse):
            np.take(x32, q, axis=0, out=rows)
            np.take(rows, q, axis=1, out=gathered[b])
        stats = (gathered[: len(chunk)].reshape(len(chunk), -1) @ ys.T).astype(np.float64) / scale
        close = np.abs(stats - observed) <= _SCREEN
        for b, k in zip(*np.nonzero(close)):
            q = inverse[b]
            stats[b, k] = (big_x[q[iu], q[ju]] @ pairs[k]) / scale[k]
        above += (stats >= observed - _TIE).sum(axis=0)
        if progress is not None:
            progress(start + len(chunk), n)
    return [MantelResult(float(observed[k]) if defined[k] else math.nan,
                         (1 + int(above[k])) / (1 + n) if defined[k] else math.nan, n, t, method)
            for k in range(len(ys))]


# ----------------------------------------------------------------------------------------------
# runs against what is known


@dataclass(frozen=True)
class LayerComparison:
    """One layer of the runs tested against the known distances.

    Attributes
    ----------
    name : str
    index : int
        Position of the layer in the checkpoints (0-based).
    rho, pvalue : float
        The Mantel test of the mean distance matrix over the runs (one run: its own).
    run_rho, run_pvalue : ndarray of shape (R,)
        The Mantel test of each run's distance matrix.
    distance : ndarray of shape (R, T, T)
        Each run's distances d(F_s, F_t) at this layer (the analysis's own).
    ari : ndarray of shape (R,) or None
        Each run's adjusted Rand index between the layer's groups and the grouping column.
    known : ndarray of shape (T, T) or None
        This layer's known distances when they come from its own attribute columns
        (``columns``); None when every layer is tested against :attr:`Comparison.known`.
    columns : tuple of str or None
        Those columns.
    """

    name: str
    index: int
    rho: float
    pvalue: float
    run_rho: np.ndarray
    run_pvalue: np.ndarray
    distance: np.ndarray
    ari: np.ndarray | None = None
    known: np.ndarray | None = None
    columns: tuple[str, ...] | None = None

    @property
    def spread(self) -> dict[str, float]:
        """Mean, standard deviation (ddof 0), min and max of the runs' statistics."""
        r = self.run_rho
        return {"mean": float(r.mean()), "std": float(r.std()), "min": float(r.min()), "max": float(r.max())}


@dataclass(frozen=True)
class Comparison:
    """R runs' layers tested against what is known about their T tasks.

    Attributes
    ----------
    runs, sources : tuple of str
        A label and a checkpoint per run.
    task_names : tuple of str
    source, kind : str
        The file of known distances and its form ("matrix" or "attributes").
    known : ndarray of shape (T, T)
        The known distances, in the runs' task order.
    layers : list of LayerComparison
    method : str
    permutations, seed : int
    grouping : str or None
        The attribute column the groups are scored against.
    threshold : float
        The sharing threshold of the layers' groups (relative to the RMS activation norm).
    ignored : tuple of str
        Tasks of the file that are not in the runs.
    encoding : tuple of str
        How each attribute column enters the distance.
    """

    runs: tuple[str, ...]
    sources: tuple[str, ...]
    task_names: tuple[str, ...]
    source: str
    kind: str
    known: np.ndarray
    layers: list[LayerComparison]
    method: str = "spearman"
    permutations: int = 9999
    seed: "int | None" = 0
    grouping: str | None = None
    threshold: float = 0.1
    ignored: tuple[str, ...] = ()
    encoding: tuple[str, ...] = ()

    @property
    def num_runs(self) -> int:
        return len(self.runs)

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def table(self) -> list[str]:
        """The result as lines of a plain-text table: one row per layer."""
        symbol = "rho" if self.method == "spearman" else "r"
        head = ["layer", "name", symbol, "p"]
        own = any(la.columns for la in self.layers)
        if own:
            head.insert(2, "against")
        if self.num_runs > 1:
            head += [f"runs: mean {symbol}", "std", "min", "max"]
        if self.grouping is not None:
            head.append(f"ARI vs {self.grouping}")
        rows = []
        for la in self.layers:
            row = [str(la.index + 1), la.name, f"{la.rho:.3f}", f"{la.pvalue:.2g}"]
            if own:
                row.insert(2, "+".join(la.columns or ()) or "all")
            if self.num_runs > 1:
                row += [f"{v:.3f}" for v in la.spread.values()]
            if la.ari is not None:
                row.append(f"{float(la.ari.mean()):.3f}")
            rows.append(row)
        widths = [max(len(r[k]) for r in [head, *rows]) for k in range(len(head))]
        return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]

    def write_json(self, path: "str | Path", extra: dict | None = None) -> Path:
        """Write :meth:`to_dict` (plus ``extra``) as strict, indented JSON, atomically."""
        import json

        from taan_core._atomic import atomic_write

        text = json.dumps({**self.to_dict(), **dict(extra or {})}, indent=1, allow_nan=False) + "\n"
        return atomic_write(path, lambda f: f.write(text.encode("utf-8")))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``compare.json``; NaN becomes None, so the JSON is strict."""
        def num(v) -> float | None:
            return None if v is None or not math.isfinite(v) else float(v)

        layers = []
        for la in self.layers:
            runs = {}
            for k, run in enumerate(self.runs):
                runs[run] = {"rho": num(la.run_rho[k]), "p": num(la.run_pvalue[k])}
                if la.ari is not None:
                    runs[run]["ari"] = num(la.ari[k])
            layers.append({
                "position": la.index + 1, "name": la.name, "rho": num(la.rho), "p": num(la.pvalue),
                "permutations": self.permutations, "n_tasks": self.num_tasks,
                "runs": runs, "spread": {k: num(v) for k, v in la.spread.items()},
                "ari": None if la.ari is None else num(float(la.ari.mean())),
                "columns": None if la.columns is None else list(la.columns),
            })
        stat = "Spearman's rho" if self.method == "spearman" else "Pearson's r"
        return {
            "against": {"file": self.source, "kind": self.kind, "encoding": list(self.encoding),
                        "ignored_tasks": list(self.ignored)},
            "runs": [{"label": r, "checkpoint": s} for r, s in zip(self.runs, self.sources)],
            "task_names": list(self.task_names),
            "method": self.method, "permutations": self.permutations, "seed": self.seed,
            "grouping": self.grouping, "threshold": self.threshold,
            "definitions": {
                "rho": f"Mantel statistic: {stat} between the upper triangles of the known and the TAAN distance "
                       "matrices (of the mean distance over the runs; each run's under 'runs')",
                "p": "one-sided permutation p-value, (1 + #{permuted rho >= rho}) / (1 + permutations), relabelling "
                     "the tasks of one matrix (rows and columns together)",
                "spread": "mean, std (ddof 0), min and max of the runs' rho",
                "ari": "adjusted Rand index between the layer's sharing-tree groups at the threshold and the "
                       "grouping column (mean over runs; each run's under 'runs')",
            },
            "layers": layers,
        }


def compare_runs(
    analyses: Any,
    against: "str | Path | KnownTasks",
    *,
    kind: str = "auto",
    grouping: str | None = None,
    permutations: int = 9999,
    seed: "int | None" = 0,
    layers: "Sequence[int | str] | None" = None,
    runs: Sequence[str] | None = None,
    method: str = "spearman",
    threshold: float = 0.1,
    columns: "Sequence[str | Sequence[str]] | None" = None,
    progress: "Callable[[int, int], None] | None" = None,
) -> Comparison:
    """Test every layer's task distances of one or more runs against known distances.

    Parameters
    ----------
    analyses : Analysis or sequence of Analysis
        From :func:`taan_viz.analysis.analyze`, one per run, with the same tasks and analysed
        layers. Their distance matrices (``layer.geometry.distance``) are used as they are.
    against : str, Path or KnownTasks
        A CSV file (:func:`read_known`) or what it read.
    kind : {"auto", "matrix", "attributes"}, default "auto"
        Form of the file, when ``against`` is a path.
    grouping : str, optional
        An attribute column: each layer's groups (:meth:`Analysis.cluster_labels` at
        ``threshold``, the sharing tree's) are scored against it by the adjusted Rand index.
        ``"columns"`` scores each layer against its own column of ``columns``.
    permutations : int, default 9999
    seed : int or None, default 0
        Every run and layer is tested with the same relabellings.
    layers : sequence of int or str, optional
        Analysed layers (positions among ``analysis.layers`` or names); all by default.
    runs : sequence of str, optional
        A label per run; ``run-1, run-2, ...`` by default.
    method : {"spearman", "pearson"}, default "spearman"
    threshold : float, default 0.1
    columns : sequence, optional
        The attribute columns each compared layer is tested against, one entry per layer (or
        one for all): a column name or a sequence of names. Planted data, whose groups differ by
        layer, compare layer l with ``layer{l}``: ``columns=["layer1", "layer2", "layer3"]``.
        By default every layer is tested against all columns.
    progress : callable, optional
        ``progress(done, total)`` as the relabellings of each known matrix are scored (one
        pass for all layers and runs tested against it).

    Returns
    -------
    Comparison

    Raises
    ------
    ValueError
        Runs that differ in tasks or layers, tasks missing from the file, an unknown grouping
        column, or the errors of :func:`read_known` and :func:`mantel_test`.
    """
    from taan_core.relatedness import adjusted_rand_index

    analyses = [analyses] if hasattr(analyses, "layers") else list(analyses)
    if not analyses:
        raise ValueError("give at least one analysis")
    labels = tuple(f"run-{k + 1}" for k in range(len(analyses))) if runs is None else tuple(map(str, runs))
    if len(labels) != len(analyses):
        raise ValueError(f"runs must have {len(analyses)} labels (one per analysis), got {len(labels)}")
    first = analyses[0]
    for a, label in zip(analyses[1:], labels[1:]):
        if a.task_names != first.task_names or [la.name for la in a.layers] != first.layer_names:
            raise ValueError(f"{a.source or label}: runs must have the same tasks and analysed layers to be compared")
    known = against if isinstance(against, KnownTasks) else read_known(against, kind=kind)
    names = first.task_names
    reference = known.distance(names)
    if grouping == "columns" and columns is None:
        raise ValueError('grouping="columns" scores each layer against its own column: give columns too')
    groups = None if grouping in (None, "columns") else known.labels(grouping, names)
    chosen = [first.layers.index(la) for la in first.select(layers)]
    per_layer: list = [None] * len(chosen)
    if columns is not None:
        entries = [(c,) if isinstance(c, str) else tuple(c) for c in columns]
        if len(entries) not in (1, len(chosen)):
            raise ValueError(f"columns must give one entry for all layers or one per compared layer "
                             f"({len(chosen)}), got {len(entries)}")
        per_layer = entries * len(chosen) if len(entries) == 1 else entries
    # Every matrix tested against the same known distances shares one set of relabellings
    # (mantel_tests): each run's matrix and, with several runs, their mean, for every layer.
    layers_by_known: dict = {}
    for k, cols in zip(chosen, per_layer):
        layers_by_known.setdefault(cols, []).append(k)
    own = {cols: known.distance(names, cols) for cols in layers_by_known if cols is not None}
    dists = {k: np.stack([a.layers[k].geometry.distance for a in analyses]) for k in chosen}
    pooled_too = len(analyses) > 1
    tested: dict = {}
    for cols, ks in layers_by_known.items():
        matrices = [m for k in ks for m in (*dists[k], *([dists[k].mean(axis=0)] if pooled_too else []))]
        results = iter(mantel_tests(reference if cols is None else own[cols], matrices, permutations, seed, method,
                                    progress=progress))
        for k in ks:
            tests = [next(results) for _ in analyses]
            tested[k] = (tests, next(results) if pooled_too else tests[0])
    out = []
    for k, cols in zip(chosen, per_layer):
        dist = dists[k]
        tests, pooled = tested[k]
        ari = None
        if grouping == "columns":
            if len(cols) != 1:
                raise ValueError(f'grouping="columns" needs one column per layer, got {"+".join(cols)}')
            by = known.labels(cols[0], names)
        else:
            by = groups
        if by is not None:
            ari = np.array([adjusted_rand_index(by, a.cluster_labels(threshold=threshold)[k]) for a in analyses])
        la = first.layers[k]
        out.append(LayerComparison(
            name=la.name, index=la.index, rho=pooled.statistic, pvalue=pooled.pvalue,
            run_rho=np.array([r.statistic for r in tests]), run_pvalue=np.array([r.pvalue for r in tests]),
            distance=dist, ari=ari, known=None if cols is None else own[cols], columns=cols))
    return Comparison(
        runs=labels, sources=tuple(a.source for a in analyses), task_names=tuple(names), source=known.source,
        kind=known.kind, known=reference, layers=out, method=method, permutations=int(permutations), seed=seed,
        grouping=grouping, threshold=float(threshold), ignored=tuple(known.extra(names)),
        encoding=tuple(known.encoding(names)))
