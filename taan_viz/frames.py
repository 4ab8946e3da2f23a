"""The analysis as pandas DataFrames, for notebooks and for seaborn.

:func:`distance_frame` is one layer's T x T matrix labelled by task; :func:`tasks_frame` has one
row per task and analysed layer; :func:`layers_frame` one row per analysed layer. Layers are
numbered from 1 (``LayerAnalysis.index + 1``) and groups from 1, as in the titles, the file
names, the report and the exports; the groups are the ones every figure colours
(:meth:`Analysis.cluster_labels`).

pandas is imported inside the functions: ``import taan_viz`` and the commands that do not use
these frames never load it.
"""

from __future__ import annotations

import numpy as np

from taan_viz.analysis import Analysis, check_metric

__all__ = ["distance_frame", "layers_frame", "tasks_frame"]


def _check_analysis(analysis) -> Analysis:
    if not isinstance(analysis, Analysis):
        raise TypeError(f"analysis must be a taan_viz.Analysis, got {type(analysis).__name__}")
    return analysis


def distance_frame(analysis: Analysis, layer: int | str = -1, metric: str = "distance"):
    """One layer's task-by-task matrix, index and columns the task names (in task order).

    Parameters
    ----------
    analysis : Analysis
    layer : int or str, default -1
        Position among the analysed layers (0-based, negative from the end) or layer name,
        as in :meth:`Analysis.layer`.
    metric : str, default "distance"
        A key of :data:`taan_viz.analysis.METRICS` ("distance", "squared-distance", "cosine",
        "inner-product").

    Returns
    -------
    pandas.DataFrame of shape (T, T)
        Float64; ``index.name`` is "task", ``columns.name`` is "task".
    """
    import pandas as pd

    check_metric(metric)
    la = _check_analysis(analysis).layer(layer)
    names = pd.Index(list(analysis.task_names), name="task")
    return pd.DataFrame(la.geometry.matrix(metric).copy(), index=names, columns=names.copy())


def _nearest(distance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each task's nearest other task and the distance to it (-1 and NaN when T = 1)."""
    t = distance.shape[0]
    if t < 2:
        return np.full(t, -1), np.full(t, np.nan)
    off = distance + np.diag(np.full(t, np.inf))
    nearest = np.argmin(off, axis=1)
    return nearest, off[np.arange(t), nearest]


def tasks_frame(analysis: Analysis, threshold: float = 0.1, n_clusters: int | None = None):
    """One row per task and analysed layer, in the order of :attr:`Analysis.layers`, then tasks.

    Parameters
    ----------
    analysis : Analysis
    threshold : float, default 0.1
        Group rule of the figures: the sharing tree's groups at this relative threshold.
    n_clusters : int, optional
        Cut each layer's linkage tree into this many clusters instead (as ``--clusters``).

    Returns
    -------
    pandas.DataFrame of shape (T * L, 9)
        Columns ``task`` (str), ``layer`` (int, 1-based position in the checkpoint),
        ``layer_name`` (str), ``group`` (int, from 1: :meth:`Analysis.cluster_labels`),
        ``norm`` (float, |F_t| under the measure), ``nearest`` (str, the closest other task;
        None when T = 1), ``nearest_distance`` (float), ``planted`` (nullable Int64, from 1;
        missing without ground truth) and ``order`` (int, the task's position in the layer's
        clustered leaf order).
    """
    import pandas as pd

    _check_analysis(analysis)
    groups = analysis.cluster_labels(n_clusters=n_clusters, threshold=threshold)
    names = np.asarray(analysis.task_names, dtype=object)
    t = analysis.num_tasks
    parts = []
    for la, lab in zip(analysis.layers, groups):
        nearest, near_d = _nearest(la.geometry.distance)
        position = np.empty(t, dtype=np.int64)
        position[la.clustering.order] = np.arange(t)
        planted = (pd.array([None] * t, dtype="Int64") if la.planted is None
                   else pd.array(np.asarray(la.planted, dtype=np.int64) + 1, dtype="Int64"))
        parts.append(pd.DataFrame({
            "task": names,
            "layer": np.full(t, la.index + 1, dtype=np.int64),
            "layer_name": la.name,
            "group": np.asarray(lab, dtype=np.int64) + 1,
            "norm": la.geometry.norms,
            "nearest": np.where(nearest >= 0, names[nearest], None) if t else names,
            "nearest_distance": near_d,
            "planted": planted,
            "order": position,
        }))
    return pd.concat(parts, ignore_index=True)


def layers_frame(analysis: Analysis, threshold: float = 0.1, n_clusters: int | None = None):
    """One row per analysed layer, in the order of :attr:`Analysis.layers`.

    Parameters
    ----------
    analysis : Analysis
    threshold : float, default 0.1
    n_clusters : int, optional
        Group rule, as in :func:`tasks_frame`.

    Returns
    -------
    pandas.DataFrame of shape (L, 10)
        Columns ``layer`` (1-based), ``layer_name``, ``mu`` and ``sigma`` (the measure),
        ``rms_norm``, ``mean_distance`` and ``max_distance`` (over pairs of distinct tasks;
        NaN when T = 1), ``groups`` (number of groups), ``cophenetic_r`` and ``ari`` (adjusted
        Rand index of the planted groups, NaN without them).
    """
    import pandas as pd

    _check_analysis(analysis)
    groups = analysis.cluster_labels(n_clusters=n_clusters, threshold=threshold)
    t = analysis.num_tasks
    rows = []
    for la, lab in zip(analysis.layers, groups):
        pairs = la.geometry.distance[np.triu_indices(t, k=1)]
        rows.append({
            "layer": la.index + 1,
            "layer_name": la.name,
            "mu": float(la.geometry.mu),
            "sigma": float(la.geometry.sigma),
            "rms_norm": la.geometry.rms_norm,
            "mean_distance": float(pairs.mean()) if pairs.size else np.nan,
            "max_distance": float(pairs.max()) if pairs.size else np.nan,
            "groups": len(np.unique(lab)),
            "cophenetic_r": float(la.clustering.cophenetic_correlation),
            "ari": np.nan if la.ari is None else float(la.ari),
        })
    return pd.DataFrame(rows, columns=["layer", "layer_name", "mu", "sigma", "rms_norm", "mean_distance",
                                       "max_distance", "groups", "cophenetic_r", "ari"])
