"""The whole-network relatedness of a run: how far apart the task-specific networks' functions are.

Per-layer distances answer "where in the network do two tasks differ"; on real data that is not
identified (a difference can be carried by either of two layers) and moves between seeds. The
distance between the tasks' whole functions on the data is what the data pin down
(:func:`taan_core.relatedness.network_distances`); on school it reproduces between seeds far
better than any layer's (docs/training.md). This module computes it for a checkpoint, on the
inputs of the split the checkpoint's data set records, and summarises it: the tasks' order
along the main axis of a classical MDS, that axis' share, and whether the distances hold
separated groups at all (:func:`taan_core.relatedness.separation`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from taan_core.checkpoint import Checkpoint
    from taan_core.relatedness import Separation

__all__ = ["NetworkRelatedness", "mean_network", "network_agreement", "network_relatedness", "write_network_csv"]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class NetworkRelatedness:
    """Whole-network task distances of one run.

    Attributes
    ----------
    task_names : tuple of str
    distance : ndarray of shape (T, T)
        RMS difference of the task functions over the inputs, in output units.
    scale : float
        RMS spread of the task functions around their mean over tasks.
    split : str
        The split whose inputs (every task's, pooled) were used.
    num_inputs : int
    axis : ndarray of shape (T,)
        Each task's coordinate on the first classical-MDS axis of ``distance / scale``
        (:func:`taan_viz.embedding.classical_mds`, which fixes the axis' sign).
    axis_share : float
        Share of the MDS eigenvalues on that axis (1: the tasks lie on a line).
    separation : Separation
        Of the best cut of the distances into 2..8 groups.
    runs : int
        1 for one run; R for the mean of R runs' relative distances (:func:`mean_network`),
        whose ``distance`` is then already relative and ``scale`` 1.
    """

    task_names: tuple[str, ...]
    distance: np.ndarray
    scale: float
    split: str
    num_inputs: int
    axis: np.ndarray
    axis_share: float
    separation: "Separation"
    runs: int = 1

    @property
    def relative(self) -> np.ndarray:
        """``distance / scale`` (``distance`` itself when every task computes the same function)."""
        return self.distance / self.scale if self.scale > 0 else self.distance.copy()

    @property
    def order(self) -> np.ndarray:
        """Task indices along the main axis, shape (T,)."""
        return np.argsort(self.axis, kind="stable")


def _pooled_inputs(data_split):
    import torch

    parts = [data_split.get(t, torch.arange(data_split.num_samples(t)))[0] for t in range(data_split.num_tasks)]
    return torch.cat(parts)


def network_relatedness(checkpoint: "Checkpoint", data_path: str | None = None, split: str = "val",
                        batch_size: int = 512) -> NetworkRelatedness:
    """The whole-network relatedness of a trained model on its own data set's inputs.

    Parameters
    ----------
    checkpoint : Checkpoint
        A full checkpoint of a :mod:`taan_core.models` model (``model_from_checkpoint`` rebuilds
        it) whose ``data`` names its data set and split configuration.
    data_path : str, optional
        The data file or folder; default the path the checkpoint records.
    split : {"train", "val", "test"}, default "val"
        Whose inputs, every task's pooled, the functions are compared on.
    batch_size : int, default 512

    Returns
    -------
    NetworkRelatedness

    Raises
    ------
    ValueError
        An unknown split, a checkpoint without a rebuildable model or data set, or data that
        cannot be read (with a hint to pass the data path).
    """
    from taan_core.checkpoint import model_from_checkpoint
    from taan_core.data import load_dataset
    from taan_core.relatedness import network_distances, separation
    from taan_viz.embedding import classical_mds

    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    name = (checkpoint.data or {}).get("name")
    if not name:
        raise ValueError(f"{checkpoint.path}: the checkpoint does not name its data set; the whole-network "
                         "relatedness needs the data")
    config = dict((checkpoint.data or {}).get("config") or {})
    if data_path is not None:
        config["data_path"] = str(data_path)
    try:
        data = load_dataset(name, **config)
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"{checkpoint.path}: cannot load its data set {name!r} ({err}); pass the data with --data") from err
    model = model_from_checkpoint(checkpoint)
    inputs = _pooled_inputs(data.split(split))
    distance, scale = network_distances(model, inputs, len(checkpoint.task_names), batch_size=batch_size)
    relative = distance / scale if scale > 0 else distance
    coords, explained = classical_mds(relative, n_components=1)
    axis = coords[:, 0]
    return NetworkRelatedness(task_names=tuple(checkpoint.task_names), distance=distance, scale=scale, split=split,
                              num_inputs=int(inputs.shape[0]), axis=axis, axis_share=float(explained[0]),
                              separation=separation(relative))


def _summarised(task_names, relative, split, num_inputs, runs) -> NetworkRelatedness:
    from taan_core.relatedness import separation
    from taan_viz.embedding import classical_mds

    coords, explained = classical_mds(relative, n_components=1)
    return NetworkRelatedness(task_names=tuple(task_names), distance=relative, scale=1.0, split=split,
                              num_inputs=num_inputs, axis=coords[:, 0], axis_share=float(explained[0]),
                              separation=separation(relative), runs=runs)


def mean_network(results: Sequence[NetworkRelatedness]) -> NetworkRelatedness:
    """The mean over runs of their relative whole-network distances, summarised like one run.

    On school the mean of five seeds reproduces between two disjoint sets of five seeds with a
    Spearman correlation of 0.92 (one run's: 0.64-0.77; docs/training.md).

    Parameters
    ----------
    results : sequence of NetworkRelatedness
        At least two, of the same tasks.

    Returns
    -------
    NetworkRelatedness
        With ``runs = len(results)``, ``scale = 1`` and ``distance`` the mean of ``relative``.
    """
    if len(results) < 2:
        raise ValueError(f"a mean needs at least two runs, got {len(results)}")
    names = results[0].task_names
    for r in results[1:]:
        if len(r.task_names) != len(names):
            raise ValueError(f"runs must have the same tasks, got {len(names)} and {len(r.task_names)}")
    relative = np.mean([r.relative for r in results], axis=0)
    return _summarised(names, relative, results[0].split, results[0].num_inputs, len(results))


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x)


def network_agreement(results: Sequence[NetworkRelatedness]) -> dict[str, float]:
    """How well several runs' whole-network relatedness agrees (mean over pairs of runs).

    Returns
    -------
    dict
        ``distance_spearman``: Spearman correlation of the relative distances over the task
        pairs; ``axis_spearman``: |Spearman| of the tasks' main-axis coordinates (the axis'
        sign is arbitrary).
    """
    if len(results) < 2:
        raise ValueError(f"agreement needs at least two runs, got {len(results)}")
    t = len(results[0].task_names)
    iu = np.triu_indices(t, 1)
    pairs = list(itertools.combinations(results, 2))

    def corr(a, b):
        return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])

    return {"distance_spearman": float(np.mean([corr(a.relative[iu], b.relative[iu]) for a, b in pairs])),
            "axis_spearman": float(np.mean([abs(corr(a.axis, b.axis)) for a, b in pairs]))}


def write_network_csv(path, net: NetworkRelatedness):
    """Write ``net.relative`` as CSV (atomically): a header of task names, then one row per task
    (its name, its main-axis coordinate, its relative distance to every task).

    Returns
    -------
    Path
    """
    import csv
    import io

    from taan_core._atomic import write_file

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["task", "axis", *net.task_names])
    for name, axis, row in zip(net.task_names, net.axis, net.relative):
        writer.writerow([name, repr(float(axis)), *(repr(float(v)) for v in row)])
    return write_file(path, buf.getvalue())
