"""The multi-task data interface: task specifications, splits and data sets.

A multi-task data set has ``T`` tasks that share one input shape and each have their own label
space. Every source in :mod:`taan_core.data` returns a :class:`MultiTaskData` whose splits
(``"train"``, ``"val"``, ``"test"``) answer two questions per task: how many samples there are,
and what the inputs and labels of given sample indices are. Samplers and the trainer only use
that, so a split may live in memory (:class:`TensorSplit`) or stream from disk.

Labels per task kind (``n`` samples, ``K = num_outputs``):

========== ======================= ===================== ==================
kind       labels                  loss                  metric
========== ======================= ===================== ==================
binary     float32 (n, 1) in {0,1} BCE with logits       accuracy
multilabel float32 (n, K) in {0,1} BCE with logits       mAP@K
multiclass int64 (n,) in [0, K)    cross-entropy         accuracy
regression float32 (n, K)          mean squared error    RMSE and R^2
========== ======================= ===================== ==================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "known_attributes",
    "KINDS",
    "SPLITS",
    "TaskSpec",
    "MultiTaskSplit",
    "TensorSplit",
    "MultiTaskData",
]

KINDS: tuple[str, ...] = ("binary", "multilabel", "multiclass", "regression")
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class TaskSpec:
    """One task's name and label space.

    Parameters
    ----------
    name : str
        Task name, unique within a data set.
    kind : {"binary", "multilabel", "multiclass", "regression"}
        Label space; decides the label layout, the loss and the metric (see the module docstring).
    num_outputs : int
        Width of the task's model output: 1 for binary, the number of labels (multilabel), of
        classes (multiclass, >= 2) or of regression targets.
    target_scale : float
        Regression only: the labels are the targets divided by this (a data set that
        standardises its targets records their standard deviation here), so that metrics in
        the target's units (RMSE) multiply it back. 1.0 means the labels are in the target's
        units.
    """

    name: str
    kind: str
    num_outputs: int
    target_scale: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"task name must be a non-empty str, got {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if isinstance(self.num_outputs, bool) or not isinstance(self.num_outputs, (int, np.integer)):
            raise TypeError(f"task {self.name!r}: num_outputs must be an int, got {type(self.num_outputs).__name__}")
        if self.kind == "binary" and self.num_outputs != 1:
            raise ValueError(f"task {self.name!r}: a binary task has num_outputs 1, got {self.num_outputs}")
        if self.kind == "multiclass" and self.num_outputs < 2:
            raise ValueError(f"task {self.name!r}: a multiclass task needs num_outputs >= 2, got {self.num_outputs}")
        if self.num_outputs < 1:
            raise ValueError(f"task {self.name!r}: num_outputs must be >= 1, got {self.num_outputs}")
        object.__setattr__(self, "num_outputs", int(self.num_outputs))
        scale = self.target_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating, np.integer)):
            raise TypeError(f"task {self.name!r}: target_scale must be a float, got {type(scale).__name__}")
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"task {self.name!r}: target_scale must be finite and > 0, got {scale}")
        if self.kind != "regression" and scale != 1.0:
            raise ValueError(f"task {self.name!r}: target_scale applies to regression tasks, not {self.kind}")
        object.__setattr__(self, "target_scale", float(scale))

    def empty_labels(self) -> Tensor:
        """Labels of zero samples in this task's layout: (0,) int64 or (0, K) float32."""
        if self.kind == "multiclass":
            return torch.zeros(0, dtype=torch.long)
        return torch.zeros(0, self.num_outputs, dtype=torch.float32)


class MultiTaskSplit:
    """One split (train, val or test) of a multi-task data set.

    Subclasses implement :meth:`num_samples` and :meth:`get`; ``tasks`` holds the task specs.
    Sample indices of a task run from 0 to ``num_samples(task) - 1``.
    """

    tasks: list[TaskSpec]

    @property
    def num_tasks(self) -> int:
        """Number of tasks ``T``."""
        return len(self.tasks)

    def num_samples(self, task: int) -> int:
        """Number of samples of ``task`` in this split."""
        raise NotImplementedError

    def get(self, task: int, index: Tensor) -> tuple[Tensor, Tensor]:
        """Inputs and labels of samples ``index`` of ``task``.

        Parameters
        ----------
        task : int
            Task id in ``[0, T)``.
        index : LongTensor of shape (n,)
            Sample indices within the task; repeats are allowed.

        Returns
        -------
        x : float32 Tensor of shape (n, *input_shape)
        y : Tensor, (n, K) float32 or (n,) int64 (see the module docstring)
        """
        raise NotImplementedError

    def _check_task(self, task: int) -> int:
        if isinstance(task, bool) or not isinstance(task, (int, np.integer)):
            raise TypeError(f"task must be an int, got {type(task).__name__}")
        if not 0 <= task < self.num_tasks:
            raise ValueError(f"task must be in [0, {self.num_tasks}), got {task}")
        return int(task)

    def _check_index(self, task: int, index) -> Tensor:
        index = torch.as_tensor(index)
        if index.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"index must be an integer tensor, got {index.dtype}")
        if index.ndim != 1:
            raise ValueError(f"index must have shape (n,), got {tuple(index.shape)}")
        n = self.num_samples(task)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= n):
            raise ValueError(
                f"index of task {task} ({self.tasks[task].name!r}) must be in [0, {n}), "
                f"got values in [{int(index.min())}, {int(index.max())}]"
            )
        return index.long()

    def __repr__(self) -> str:
        sizes = ", ".join(str(self.num_samples(t)) for t in range(self.num_tasks))
        return f"{type(self).__name__}(num_tasks={self.num_tasks}, num_samples=[{sizes}])"


class TensorSplit(MultiTaskSplit):
    """A split held in memory as one feature tensor and one label tensor per task.

    Parameters
    ----------
    tasks : sequence of TaskSpec
        The ``T`` task specs.
    features : sequence of T Tensors of shape (n_t, *input_shape)
        Inputs per task, float (returned as float32) or uint8 (returned as float32 times
        ``feature_scale``, which keeps image data sets at a quarter of the memory).
    labels : sequence of T Tensors
        Labels per task in the layout of its kind (see the module docstring).
    source : str
        Where the data came from, used in error messages.
    feature_scale : float
        Factor applied to uint8 features on :meth:`get`.

    Raises
    ------
    ValueError
        If the number of tasks, feature shapes or label layouts disagree, a feature is not
        finite, or a label is out of range. The message names ``source`` and the task.
    """

    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        features: Sequence[Tensor],
        labels: Sequence[Tensor],
        *,
        source: str = "data",
        feature_scale: float = 1.0,
    ) -> None:
        self.tasks = list(tasks)
        if len(features) != len(self.tasks) or len(labels) != len(self.tasks):
            raise ValueError(
                f"{source}: need features and labels for each of the {len(self.tasks)} tasks, "
                f"got {len(features)} and {len(labels)}"
            )
        self.source = source
        self.feature_scale = float(feature_scale)
        self._features: list[Tensor] = []
        self._labels: list[Tensor] = []
        shape = None
        for t, (spec, x, y) in enumerate(zip(self.tasks, features, labels)):
            x = torch.as_tensor(x)
            if x.dtype != torch.uint8:
                x = x.to(torch.float32)
            if shape is None:
                shape = tuple(x.shape[1:])
            elif tuple(x.shape[1:]) != shape:
                raise ValueError(
                    f"{source}: task {t} ({spec.name!r}) has inputs of shape {tuple(x.shape[1:])}, "
                    f"task 0 has {shape}; every task must share one input shape"
                )
            _check_task_features(x, spec, t, source)
            y = _as_task_labels(y, spec, t, source, num_samples=x.shape[0])
            self._features.append(x)
            self._labels.append(y)
        self.input_shape: tuple[int, ...] = shape if shape is not None else ()
        # One tensor of every task's rows (the per-task tensors become views of it), so that a
        # mixed-task batch is read with one gather instead of one per task: at 139 tasks the
        # per-task reads cost 12x the gather (7.6 ms against 0.64 ms a batch of 16 samples a task).
        sizes = [x.shape[0] for x in self._features]
        self._sizes = torch.tensor(sizes, dtype=torch.long)
        self._offsets = torch.cumsum(torch.tensor([0] + sizes[:-1], dtype=torch.long), 0)
        self._all_features: Tensor | None = None
        self._all_labels: Tensor | None = None
        if self._features and len({x.dtype for x in self._features}) == 1:
            self._all_features = torch.cat(self._features)
            self._features = list(self._all_features.split(sizes))
        # Labels share one tensor only when every task has the same layout (dtype and width).
        if self._labels and len({(y.dtype, tuple(y.shape[1:])) for y in self._labels}) == 1:
            self._all_labels = torch.cat(self._labels)
            self._labels = list(self._all_labels.split(sizes))

    def num_samples(self, task: int) -> int:
        return int(self._features[self._check_task(task)].shape[0])

    def get(self, task: int, index: Tensor) -> tuple[Tensor, Tensor]:
        task = self._check_task(task)
        index = self._check_index(task, index)
        x = self._features[task][index]
        if x.dtype == torch.uint8:
            x = x.to(torch.float32) * self.feature_scale
        return x, self._labels[task][index]

    def _gather(self, task: Tensor, index: Tensor, *, check: bool = True,
                ordered: bool = False) -> tuple[Tensor, list[Tensor]] | None:
        """The inputs and per-task labels of a mixed-task batch with one gather each, or None
        where the tasks' labels differ in layout (:func:`~taan_core.data.collate` then reads
        task by task).

        ``task`` and ``index`` are LongTensors of shape (B,) with valid task ids; returns ``x``
        of shape (B, *input_shape) and T label tensors, ``targets[t]`` the labels of the
        samples with ``task == t`` in batch order. ``check=False`` skips the range check of
        ``index`` and ``ordered=True`` the sort, for batches known to be valid and sorted by task.
        """
        if self._all_features is None or self._all_labels is None:
            return None
        if check and index.numel():
            sizes = self._sizes[task]
            if bool(((index < 0) | (index >= sizes)).any()):
                bad = int(torch.nonzero((index < 0) | (index >= sizes))[0])
                t = int(task[bad])
                raise ValueError(f"index of task {t} ({self.tasks[t].name!r}) must be in [0, {int(sizes[bad])}), "
                                 f"got {int(index[bad])}")
        rows = self._offsets[task] + index
        x = self._all_features[rows]
        if x.dtype == torch.uint8:
            x = x.to(torch.float32) * self.feature_scale
        y = self._all_labels[rows]
        counts = torch.bincount(task, minlength=self.num_tasks).tolist()
        # The sampler's balanced batches come sorted by task; proportional ones are sorted here
        # (stable, so each task's samples keep their batch order).
        if not ordered and task.numel() > 1 and not bool((task[1:] >= task[:-1]).all()):
            y = y[torch.argsort(task, stable=True)]
        return x, list(y.split(counts))


def _check_task_features(x: Tensor, spec: TaskSpec, task: int, source: str) -> None:
    """Raise ValueError naming ``source``, the task and the first bad row if ``x`` is not finite."""
    if x.dtype == torch.uint8 or x.numel() == 0:
        return
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    if bool(bad.any()):
        row = int(torch.nonzero(bad)[0])
        raise ValueError(
            f"{source}: task {task} ({spec.name!r}) sample {row} has a non-finite feature "
            f"(NaN or inf); {int(bad.sum())} such sample(s) in this task"
        )


def _as_task_labels(y, spec: TaskSpec, task: int, source: str, *, num_samples: int) -> Tensor:
    """Check labels against ``spec`` and return them in the layout of its kind.

    Binary labels may come as (n,) or (n, 1); regression labels as (n,) when ``K = 1``.
    Raises ValueError naming ``source``, the task and the first offending sample.
    """
    where = f"{source}: task {task} ({spec.name!r})"
    y = torch.as_tensor(y)
    if y.ndim == 0 or y.shape[0] != num_samples:
        raise ValueError(f"{where} has {num_samples} inputs but labels of shape {tuple(y.shape)}")
    if spec.kind == "multiclass":
        if y.ndim != 1:
            raise ValueError(f"{where}: multiclass labels must have shape (n,), got {tuple(y.shape)}")
        if y.is_floating_point():
            if not bool(torch.isfinite(y).all()) or not bool((y == y.round()).all()):
                row = int(torch.nonzero(~torch.isfinite(y) | (y != y.round()))[0])
                raise ValueError(f"{where} sample {row}: multiclass label must be an integer, got {y[row].item()}")
        y = y.long()
        bad = (y < 0) | (y >= spec.num_outputs)
        if bool(bad.any()):
            row = int(torch.nonzero(bad)[0])
            raise ValueError(
                f"{where} sample {row}: label {int(y[row])} out of range [0, {spec.num_outputs})"
            )
        return y
    if y.ndim == 1 and spec.num_outputs == 1:
        y = y.reshape(-1, 1)
    if y.ndim != 2 or y.shape[1] != spec.num_outputs:
        raise ValueError(f"{where}: {spec.kind} labels must have shape (n, {spec.num_outputs}), got {tuple(y.shape)}")
    y = y.to(torch.float32)
    finite = torch.isfinite(y).all(dim=1)
    if not bool(finite.all()):
        row = int(torch.nonzero(~finite)[0])
        raise ValueError(f"{where} sample {row}: label is not finite")
    if spec.kind in ("binary", "multilabel"):
        bad = ((y != 0) & (y != 1)).any(dim=1)
        if bool(bad.any()):
            row = int(torch.nonzero(bad)[0])
            raise ValueError(f"{where} sample {row}: {spec.kind} labels must be 0 or 1, got {y[row].tolist()}")
    return y


class MultiTaskData:
    """A multi-task data set: task specs, ground truth (if any) and its three splits.

    Parameters
    ----------
    name : str
        Registry name of the source (``"planted"``, ``"digits"``, ...).
    config : dict
        Plain-typed keyword arguments such that ``load_dataset(name, **config)`` rebuilds this
        data set (it includes ``data_path`` for sources read from files).
    tasks : sequence of TaskSpec
    splits : mapping from "train", "val", "test" to MultiTaskSplit
    ground_truth : dict or None
        What is known about the tasks. For synthetic data ``{"groups": groups}`` with
        ``groups[l][t]`` the planted group of task ``t`` at hidden layer ``l`` (plus
        source-specific entries); for real data ``{"attributes": {column: list of T values}}``
        with a ``task`` column of the task names (school's gender, denomination, ...).
        :func:`known_attributes` turns either into one table.

    Attributes
    ----------
    input_shape : tuple of int
        Shape of one input, shared by all tasks.
    task_names : list of str
    """

    def __init__(
        self,
        name: str,
        config: Mapping[str, Any],
        tasks: Sequence[TaskSpec],
        splits: Mapping[str, MultiTaskSplit],
        *,
        input_shape: Sequence[int],
        ground_truth: dict | None = None,
    ) -> None:
        self.name = name
        self.config = dict(config)
        self.tasks = list(tasks)
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"{name}: task names must be unique, got duplicates {dup}")
        missing = [s for s in SPLITS if s not in splits]
        if missing:
            raise ValueError(f"{name}: splits {missing} are missing")
        for which, split in splits.items():
            if split.num_tasks != len(self.tasks):
                raise ValueError(f"{name}: split {which!r} has {split.num_tasks} tasks, expected {len(self.tasks)}")
        train = splits["train"]
        for t, spec in enumerate(self.tasks):
            if train.num_samples(t) == 0:
                raise ValueError(f"{name}: task {t} ({spec.name!r}) has no training samples")
        self._splits = dict(splits)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.ground_truth = ground_truth

    @property
    def task_names(self) -> list[str]:
        """Names of the ``T`` tasks, in task-id order."""
        return [t.name for t in self.tasks]

    @property
    def num_tasks(self) -> int:
        """Number of tasks ``T``."""
        return len(self.tasks)

    def split(self, which: str) -> MultiTaskSplit:
        """The ``"train"``, ``"val"`` or ``"test"`` split."""
        if which not in self._splits:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {which!r}")
        return self._splits[which]

    def __repr__(self) -> str:
        sizes = ", ".join(
            f"{s}={sum(self._splits[s].num_samples(t) for t in range(self.num_tasks))}" for s in SPLITS
        )
        return (
            f"MultiTaskData(name={self.name!r}, num_tasks={self.num_tasks}, "
            f"input_shape={self.input_shape}, {sizes})"
        )


def _split_indices(
    n: int, val_fraction: float, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle ``range(n)`` and cut it into train, val and test index arrays.

    Every split gets ``round(n * fraction)`` samples, but train keeps at least one, test gets
    one as soon as ``n >= 2`` and val one as soon as ``n >= 3``, so small tasks stay usable.
    """
    perm = rng.permutation(n)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    if test_fraction > 0 and n >= 2:
        n_test = max(n_test, 1)
    if val_fraction > 0 and n >= 3:
        n_val = max(n_val, 1)
    n_test = min(n_test, max(n - 1, 0))
    n_val = min(n_val, max(n - 1 - n_test, 0))
    n_train = n - n_val - n_test
    return np.sort(perm[:n_train]), np.sort(perm[n_train:n_train + n_val]), np.sort(perm[n_train + n_val:])


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise unless both fractions are floats in [0, 1) that sum to less than 1."""
    for name, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name} must be a float, got {type(v).__name__}")
        if not 0.0 <= v < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {v}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}"
        )


def known_attributes(data: MultiTaskData) -> dict[str, list]:
    """What is known about the tasks of ``data``, one row per task, for ``taan-viz compare``.

    Parameters
    ----------
    data : MultiTaskData

    Returns
    -------
    dict of str to list
        Columns of ``T`` entries, the first ``task`` (the task names): a data set's own
        attributes (``ground_truth["attributes"]``), or the planted groups as text columns
        ``layer1``, ``layer2``, ... (``g1``, ``g2``, ...: categories, not numbers).

    Raises
    ------
    ValueError
        If the data set records nothing about its tasks.
    """
    truth = data.ground_truth or {}
    if truth.get("attributes"):
        table = {k: list(v) for k, v in truth["attributes"].items()}
        if table.get("task") != data.task_names:
            raise ValueError(f"{data.name}: the attributes' task column must list the {data.num_tasks} tasks in order")
        return table
    if truth.get("groups") is not None:
        table = {"task": data.task_names}
        for l, row in enumerate(truth["groups"]):
            table[f"layer{l + 1}"] = [f"g{int(g) + 1}" for g in row]
        return table
    raise ValueError(f"the {data.name} data set records nothing known about its tasks (planted records its groups, "
                     "school its schools' attributes); write the CSV yourself (docs/viz.md, compare)")
