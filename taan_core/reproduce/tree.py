"""The sharing tree of a trained TAAN as plain data, and how well layers recover planted groups.

At every task-adaptive layer two tasks *share* an activation when the function-space distance
of their activations is at most ``threshold`` times the layer's RMS activation norm
``sqrt(mean_t |F_t|^2)``; a layer's groups are the connected components of that graph, refined
by the groups of the layer before (a hard-sharing network cannot re-join branches). This is the
rule of ``taan-viz tree`` with its defaults (relative threshold 0.1, the "data" measure); it is
computed here from ``taan_core.gaussian`` because the training side never imports taan_viz.
The result, ``groups[l][t]``, is what :class:`~taan_core.models.branched.Branched` takes.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np
import torch

from taan_core.models.branched import check_groups

__all__ = ["branched_overrides", "layer_distances", "planted_ari", "sharing_groups", "tree_from_checkpoint"]

_MEASURES = ("data", "standard")


def _measure(layer: Any, measure: str) -> tuple[float, float]:
    if measure not in _MEASURES:
        raise ValueError(f"measure must be one of {', '.join(_MEASURES)}, got {measure!r}")
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


def sharing_groups(
    distances: Sequence[np.ndarray],
    threshold: float = 0.1,
    *,
    scales: Sequence[float] | None = None,
) -> list[list[int]]:
    """Nested task groups per layer from per-layer distance matrices.

    Parameters
    ----------
    distances : sequence of L arrays of shape (T, T)
        Distances between the tasks' activations, input side first.
    threshold : float
        Tasks at distance <= ``threshold * scales[l]`` share layer l (``threshold`` itself
        when ``scales`` is None).
    scales : sequence of L floats, optional
        Each layer's scale, e.g. its RMS activation norm.

    Returns
    -------
    list of L lists of T ints
        ``groups[l][t]``, numbered by first appearance, nested across layers.
    """
    from scipy.sparse.csgraph import connected_components

    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"threshold must be a float, got {type(threshold).__name__}")
    if not math.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be finite and >= 0, got {threshold}")
    mats = [np.asarray(d, dtype=np.float64) for d in distances]
    if not mats:
        raise ValueError("distances must hold at least one layer")
    t = mats[0].shape[0] if mats[0].ndim == 2 else -1
    for l, d in enumerate(mats):
        if d.shape != (t, t):
            raise ValueError(f"distances[{l}] must have shape (T, T) = ({t}, {t}), got {d.shape}")
    if scales is not None and len(scales) != len(mats):
        raise ValueError(f"scales must give one value per layer ({len(mats)}), got {len(scales)}")
    keys = np.zeros(t, dtype=np.int64)
    groups = []
    for l, d in enumerate(mats):
        limit = threshold * (float(scales[l]) if scales is not None else 1.0)
        _, comp = connected_components(d <= limit, directed=False)
        # Refine by the previous layer: a pair keeps sharing only if it shared before.
        _, keys = np.unique(np.stack([keys, comp]), axis=1, return_inverse=True)
        keys = keys.reshape(-1)
        groups.append(keys.tolist())
    return check_groups(groups)


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
    """Config fields of a :class:`~taan_core.models.branched.Branched` network shaped like a TAAN.

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
        When the checkpoint holds no fully connected TAAN (a conv TAAN or an imported state_dict)
        and ``hidden`` is not given, or ``hidden`` has the wrong length.
    """
    ckpt = _as_checkpoint(checkpoint)
    groups = tree_from_checkpoint(ckpt, threshold, measure)
    if hidden is None:
        model = (ckpt.raw or {}).get("model") or {}
        config = model.get("config") or {}
        if model.get("class") != "TAAN" or "hidden" not in config:
            raise ValueError(f"{ckpt.path}: a branched network copies the layer widths of a fully connected TAAN, "
                             f"this checkpoint holds {model.get('class', 'no model')}; pass hidden explicitly")
        hidden = config["hidden"]
    hidden = [int(h) for h in hidden]
    if len(hidden) != len(groups):
        raise ValueError(f"hidden must give one width per task-adaptive layer ({len(groups)}), got {hidden}")
    return {"groups": groups, "hidden": hidden}


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
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform
    from sklearn.metrics import adjusted_rand_score

    if len(distances) != len(planted):
        raise ValueError(f"planted groups describe {len(planted)} layers, the model has {len(distances)}; "
                         "the ARI compares layers one to one")
    out = []
    for d, truth in zip(distances, planted):
        d = np.asarray(d, dtype=np.float64)
        truth = np.asarray(truth, dtype=np.int64)
        if d.shape != (truth.size, truth.size):
            raise ValueError(f"distance matrix of shape {d.shape} does not fit {truth.size} planted tasks")
        k = len(np.unique(truth))
        if truth.size < 2:
            labels = np.zeros(truth.size, dtype=np.int64)
        else:
            sym = np.clip((d + d.T) / 2, 0.0, None)
            np.fill_diagonal(sym, 0.0)
            z = linkage(squareform(sym, checks=False), method="average")
            labels = fcluster(z, t=k, criterion="maxclust")
        out.append(float(adjusted_rand_score(truth, labels)))
    return out
