"""Bring your own data: a multi-task data set in one ``.npz`` file.

Arrays of the file (``N`` samples, ``T`` tasks; docs/data.md has the full description):

============== ================ =====================================================
key            shape            meaning
============== ================ =====================================================
features       (N, D) or        float inputs, the same shape for every task
               (N, *shape)
task_ids       (N,) int         task of every sample, in [0, T)
labels         (N,) or (N, K)   binary/multiclass: the class (column 0 if 2-D);
                                multilabel (0/1) and regression: the first
                                ``num_outputs[t]`` columns
task_names     (T,) str         optional; default ``task_0`` ..
kinds          (T,) or () str   optional; binary, multiclass, multilabel, regression
num_outputs    (T,) int         optional; classes of a multiclass task (default: its
                                largest label + 1; 2 to 100,000), columns of a multilabel or
                                regression task (default: K)
split          (N,) int or str  optional; 0/"train", 1/"val", 2/"test"; without it every
                                task is split at random (seeded) by the fractions
============== ================ =====================================================

Without ``kinds`` every task gets one kind inferred from ``labels``: boolean labels are binary
(1-D or one column) or multilabel (several columns); integer 1-D labels are binary if they are
all 0 or 1 and multiclass otherwise; 2-D labels of only 0 and 1 are multilabel; anything else
is regression. The file is read with ``allow_pickle=False``; every member must be a ``.npy``
array whose declared shape is checked against the bytes the file holds, and the arrays and the
tasks' output heads against the memory limit (``TAAN_MEMORY_LIMIT`` or the memory available),
before anything is allocated.
"""

from __future__ import annotations

import math
import os
import zipfile
from typing import Sequence

import numpy as np
import torch

from taan_core._atomic import atomic_write
from taan_core._memory import TRAINING_COPIES, check_memory, format_bytes
from taan_core._validation import check_int
from taan_core.data.base import (
    KINDS,
    SPLITS,
    MultiTaskData,
    TaskSpec,
    TensorSplit,
    _check_fractions,
    _split_indices,
)

__all__ = ["load_npz", "save_npz"]

_REQUIRED = ("features", "task_ids", "labels")
# The largest ratio of uncompressed to compressed size that deflate can reach.
_DEFLATE_MAX_RATIO = 1032
# More classes than this is a label column that is not one (ids, hashes) or a typo; the output
# layer alone would hold hidden x classes weights. YouTube-8M has 3,862, ImageNet-21k 21,841.
MAX_CLASSES = 100_000


def save_npz(
    path: str | os.PathLike,
    features: np.ndarray,
    task_ids: np.ndarray,
    labels: np.ndarray,
    *,
    task_names: Sequence[str] | None = None,
    kinds: Sequence[str] | str | None = None,
    num_outputs: Sequence[int] | None = None,
    split: np.ndarray | None = None,
) -> None:
    """Write arrays in the format :func:`load_npz` reads (see the module docstring).

    Parameters
    ----------
    path : str or PathLike
    features : array of shape (N, D) or (N, *shape)
    task_ids : int array of shape (N,)
    labels : array of shape (N,) or (N, K)
    task_names, kinds, num_outputs, split : optional, see the module docstring

    Raises
    ------
    taan_core._atomic.WriteError
        One line naming ``path`` when it cannot be written (a full disk); the file is then
        left as it was (written atomically).
    """
    arrays = {
        "features": np.asarray(features, dtype=np.float32),
        "task_ids": np.asarray(task_ids, dtype=np.int64),
        "labels": np.asarray(labels),
    }
    if task_names is not None:
        arrays["task_names"] = np.asarray([str(n) for n in task_names])
    if kinds is not None:
        arrays["kinds"] = np.asarray(kinds if isinstance(kinds, str) else [str(k) for k in kinds])
    if num_outputs is not None:
        arrays["num_outputs"] = np.asarray(num_outputs, dtype=np.int64)
    if split is not None:
        arrays["split"] = np.asarray(split)
    atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))


def _read(path: str) -> dict[str, np.ndarray]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a readable .npz file (not a zip archive of .npy arrays)")
    try:
        declared = _check_declared_sizes(path)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable .npz file ({err})") from err
    # The arrays, then their float32 copies in the splits: about twice what the file declares.
    check_memory(2 * declared, f"{path}: reading the arrays ({format_bytes(declared)} declared by their headers)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable .npz file ({err})") from err
    except MemoryError as err:
        raise ValueError(f"{path}: the arrays do not fit in memory ({err or 'MemoryError'})") from err
    except ValueError as err:
        # numpy refuses object arrays without pickle; say which format is expected.
        raise ValueError(f"{path}: cannot read without pickle ({err}); store strings as unicode arrays") from err


def _check_declared_sizes(path: str) -> int:
    """Refuse arrays whose headers declare more bytes than the file can hold, before allocating;
    return the bytes all arrays declare.

    numpy allocates an array from its header's shape and then fills it, so a small file that
    declares shape (1e12, 1e6) would ask for exabytes. Every member's declared size must fit in
    its uncompressed size in the zip directory, which must itself be reachable from the bytes on
    disk (equal for stored members, at most deflate's 1032:1 for compressed ones). A member not
    named ``*.npy`` is refused: ``np.load`` would read it whole as raw bytes, unchecked.
    """
    on_disk = os.path.getsize(path)
    total = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise ValueError(f"{path}: member {info.filename!r}: expected only .npy arrays (the format of "
                                 "np.savez), got a member of another name")
            name = info.filename[: -len(".npy")]
            stored = info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size
            inflated = (info.compress_type == zipfile.ZIP_DEFLATED
                        and info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + 64)
            if info.compress_size > on_disk or stored or inflated:
                raise ValueError(
                    f"{path}: {name} claims {info.file_size} bytes from {info.compress_size} stored bytes "
                    f"in a file of {on_disk} bytes; the archive is damaged"
                )
            with archive.open(info) as fh:
                try:
                    version = np.lib.format.read_magic(fh)
                    # Version 3 differs from 2 only in the header's text encoding (utf-8).
                    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read_header(fh)
                except ValueError as err:
                    raise ValueError(f"{path}: {name} is not a readable .npy array ({err})") from err
                header = fh.tell()
            if dtype.hasobject:
                continue  # refused by np.load without pickle
            declared = math.prod(shape) * dtype.itemsize
            if header + declared > info.file_size:
                raise ValueError(
                    f"{path}: {name} declares shape {tuple(shape)} of {dtype} ({declared} bytes), "
                    f"but the file holds {info.file_size - header} bytes of it"
                )
            total += declared
    return total


def _infer_kind(labels: np.ndarray) -> str:
    if labels.dtype == bool:
        # True/False are the two classes; a regression on them would be a silent surprise.
        return "binary" if labels.ndim == 1 or labels.shape[1] == 1 else "multilabel"
    if labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer):
        return "binary" if np.isin(labels, (0, 1)).all() else "multiclass"
    if labels.ndim == 2 and labels.shape[1] > 1 and np.isin(labels, (0, 1)).all():
        return "multilabel"
    return "regression"


def _per_task(value: np.ndarray | None, name: str, num_tasks: int, path: str) -> np.ndarray | None:
    if value is None:
        return None
    if value.ndim == 0:
        return np.repeat(value.reshape(1), num_tasks)
    if value.shape != (num_tasks,):
        raise ValueError(f"{path}: {name} must have shape ({num_tasks},) (one per task), got {value.shape}")
    return value


def _split_codes(split: np.ndarray, n: int, path: str) -> np.ndarray:
    if split.shape != (n,):
        raise ValueError(f"{path}: split must have shape ({n},), got {split.shape}")
    if split.dtype.kind in "US":
        codes = np.full(n, -1, dtype=np.int64)
        for i, name in enumerate(SPLITS):
            codes[split.astype(str) == name] = i
    elif np.issubdtype(split.dtype, np.integer):
        codes = split.astype(np.int64)
    else:
        raise ValueError(f"{path}: split must hold ints 0/1/2 or the strings train/val/test, got dtype {split.dtype}")
    bad = np.flatnonzero((codes < 0) | (codes > 2))
    if bad.size:
        raise ValueError(f"{path}: row {bad[0]}: split must be 0/1/2 or train/val/test, got {split[bad[0]]!r}")
    return codes


def _check_arrays(arrays: dict[str, np.ndarray], path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """features, task_ids and labels, after checking their presence, shapes, dtypes and values."""
    missing = [k for k in _REQUIRED if k not in arrays]
    if missing:
        raise ValueError(f"{path}: missing array(s) {missing}; the format needs {list(_REQUIRED)}")
    features, task_ids, labels = (arrays[k] for k in _REQUIRED)
    if features.ndim < 2:
        raise ValueError(f"{path}: features must have shape (N, D) or (N, *shape), got {features.shape}")
    if not (np.issubdtype(features.dtype, np.floating) or np.issubdtype(features.dtype, np.integer)):
        raise ValueError(f"{path}: features must be numeric, got dtype {features.dtype}")
    n = features.shape[0]
    if n == 0:
        raise ValueError(f"{path}: the file holds no samples (features has shape {features.shape})")
    if 0 in features.shape[1:]:
        raise ValueError(f"{path}: features must hold at least one value per sample, got shape {features.shape}")
    if task_ids.shape != (n,) or not np.issubdtype(task_ids.dtype, np.integer):
        raise ValueError(f"{path}: task_ids must be an int array of shape ({n},), got {task_ids.dtype} {task_ids.shape}")
    if labels.ndim not in (1, 2) or labels.shape[0] != n:
        raise ValueError(f"{path}: labels must have shape ({n},) or ({n}, K), got {labels.shape}")
    if labels.ndim == 2 and labels.shape[1] == 0:
        raise ValueError(f"{path}: labels must have at least one column, got shape {labels.shape}")
    if not (np.issubdtype(labels.dtype, np.floating) or np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"{path}: labels must be numeric, got dtype {labels.dtype}")
    finite = np.isfinite(features.reshape(n, -1)).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{path}: row {row}: features hold NaN or inf ({int((~finite).sum())} such row(s))")
    if np.issubdtype(labels.dtype, np.floating):
        finite = np.isfinite(labels.reshape(n, -1)).all(axis=1)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            raise ValueError(f"{path}: row {row}: labels hold NaN or inf")
    return features, task_ids, labels


def _task_names(names: np.ndarray | None, task_ids: np.ndarray, path: str) -> list[str]:
    """The T task names (given, or task_0 ..), after checking that every task id is in [0, T)
    and every task has samples."""
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise ValueError(f"{path}: task_names must be a 1-D string array, got {names.dtype} {names.shape}")
        names = [str(s) for s in names]
    else:
        if int(task_ids.min()) < 0:
            row = int(np.flatnonzero(task_ids < 0)[0])
            raise ValueError(f"{path}: row {row}: task id {task_ids[row]} must be >= 0")
        # T = max id + 1 needs every id below it to have rows; find a gap before allocating
        # anything of size T (one stray id of 2**40 must not ask for 2**40 names).
        present = np.unique(task_ids)
        gaps = np.flatnonzero(present != np.arange(present.size))
        if gaps.size:
            t, largest = int(gaps[0]), int(present[-1])
            row = int(np.flatnonzero(task_ids == largest)[0])
            raise ValueError(f"{path}: task {t} ('task_{t}') has no samples; task ids must number the tasks "
                             f"0 .. T-1 (row {row} has task id {largest})")
        names = [f"task_{t}" for t in range(present.size)]
    num_tasks = len(names)
    bad = np.flatnonzero((task_ids < 0) | (task_ids >= num_tasks))
    if bad.size:
        raise ValueError(f"{path}: row {bad[0]}: task id {task_ids[bad[0]]} out of range [0, {num_tasks})")
    counts = np.bincount(task_ids, minlength=num_tasks)
    if (counts == 0).any():
        t = int(np.flatnonzero(counts == 0)[0])
        raise ValueError(f"{path}: task {t} ({names[t]!r}) has no samples")
    return names


def _task_spec(t: int, name: str, kind: str, labels: np.ndarray, num_outputs: int | None, path: str) -> TaskSpec:
    """Task t's spec, after checking its labels (``labels``: its rows of the (n, K) labels).

    Label rows are reported by their row in the task (``_task_specs`` turns them into file rows).
    """
    width = labels.shape[1]
    if kind in ("binary", "multiclass"):
        col = labels[:, 0].astype(np.float64)
        nonint = np.flatnonzero(col != np.round(col))
        if nonint.size:
            raise _RowError(nonint[0], f"task {t} ({name!r}) is {kind}, label {col[nonint[0]]} is not an integer")
        k = 1 if kind == "binary" else num_outputs if num_outputs is not None else max(int(col.max()) + 1, 2)
        if kind == "multiclass" and not 2 <= k <= MAX_CLASSES:
            why = f"num_outputs gives {k}" if num_outputs is not None else f"its largest label is {int(col.max())}"
            raise ValueError(f"{path}: task {t} ({name!r}) is multiclass with {k} class{'es' * (k != 1)} ({why}); "
                             f"expected 2 to {MAX_CLASSES:,}")
        high = 2 if kind == "binary" else k
        bad = np.flatnonzero((col < 0) | (col >= high))
        if bad.size:
            raise _RowError(bad[0], f"label {int(col[bad[0]])} of task {t} ({name!r}) out of range [0, {high})")
        return TaskSpec(name, kind, k)
    k = num_outputs if num_outputs is not None else width
    if not 1 <= k <= width:
        raise ValueError(f"{path}: task {t} ({name!r}) needs {k} label columns, labels have {width}")
    if kind == "multilabel":
        bad = np.flatnonzero(~np.isin(labels[:, :k], (0, 1)).all(axis=1))
        if bad.size:
            raise _RowError(bad[0], f"multilabel labels of task {t} ({name!r}) must be 0 or 1")
    return TaskSpec(name, kind, k)


class _RowError(Exception):
    """A bad label in a task's row ``row``; ``_task_specs`` names the file and the file's row."""

    def __init__(self, row: int, message: str) -> None:
        super().__init__(message)
        self.row = int(row)


def _task_specs(arrays: dict[str, np.ndarray], labels: np.ndarray, task_ids: np.ndarray, names: list[str],
                path: str) -> tuple[list[TaskSpec], list[np.ndarray]]:
    """Every task's spec (kind and outputs, checked against its labels) and its rows."""
    num_tasks = len(names)
    kinds = _per_task(arrays.get("kinds"), "kinds", num_tasks, path)
    kinds = [str(k) for k in kinds] if kinds is not None else [_infer_kind(labels)] * num_tasks
    for t, kind in enumerate(kinds):
        if kind not in KINDS:
            raise ValueError(f"{path}: task {t} ({names[t]!r}): kind must be one of {', '.join(KINDS)}, got {kind!r}")
    num_outputs = _per_task(arrays.get("num_outputs"), "num_outputs", num_tasks, path)
    label2d = labels.reshape(labels.shape[0], -1)
    tasks, rows_of = [], []
    for t, (name, kind) in enumerate(zip(names, kinds)):
        rows = np.flatnonzero(task_ids == t)
        try:
            spec = _task_spec(t, name, kind, label2d[rows], None if num_outputs is None else int(num_outputs[t]), path)
        except _RowError as err:
            raise ValueError(f"{path}: row {rows[err.row]}: {err}") from None
        tasks.append(spec)
        rows_of.append(rows)
    # Every model has a head per task with at least one weight and one bias per output, trained
    # with Adam: outputs declared by the billion are refused here, with the file named.
    outputs = sum(spec.num_outputs for spec in tasks)
    check_memory(2 * outputs * 4 * TRAINING_COPIES,
                 f"{path}: num_outputs: training the heads of the {num_tasks:,} tasks' {outputs:,} outputs")
    return tasks, rows_of


def _split_rows(rows_of: list[np.ndarray], codes: np.ndarray | None, val_fraction: float, test_fraction: float,
                seed: int) -> list[list[np.ndarray]]:
    """Per task, its train, val and test rows: by the split ``codes`` (0/1/2 per row) or at
    random (seeded) when there are none."""
    rng = np.random.default_rng([seed, 0x4E5A])
    out = []
    for rows in rows_of:
        if codes is None:
            out.append([rows[i] for i in _split_indices(rows.size, val_fraction, test_fraction, rng)])
        else:
            out.append([rows[codes[rows] == i] for i in range(3)])
    return out


def _tensor_splits(features: np.ndarray, labels: np.ndarray, tasks: list[TaskSpec], chosen: list[list[np.ndarray]],
                   path: str) -> dict[str, TensorSplit]:
    """The train, val and test TensorSplits: float32 features, targets as each kind wants them."""
    label2d = labels.reshape(labels.shape[0], -1)
    parts: dict[str, tuple[list, list]] = {s: ([], []) for s in SPLITS}
    for t, (spec, rows) in enumerate(zip(tasks, chosen)):
        if rows[0].size == 0:
            raise ValueError(f"{path}: task {t} ({spec.name!r}) has no training rows")
        for which, r in zip(SPLITS, rows):
            x = torch.from_numpy(np.ascontiguousarray(features[r], dtype=np.float32))
            if spec.kind == "multiclass":
                y = torch.from_numpy(label2d[r, 0].astype(np.int64))
            elif spec.kind == "binary":
                y = torch.from_numpy(label2d[r, :1].astype(np.float32))
            else:
                y = torch.from_numpy(label2d[r, :spec.num_outputs].astype(np.float32))
            parts[which][0].append(x)
            parts[which][1].append(y)
    return {s: TensorSplit(tasks, xs, ys, source=path) for s, (xs, ys) in parts.items()}


def load_npz(
    data_path: str | None = None,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> MultiTaskData:
    """Load a multi-task data set from an ``.npz`` file in the documented format.

    Parameters
    ----------
    data_path : str
        The ``.npz`` file.
    val_fraction, test_fraction : float
        Per-task random split when the file has no ``split`` array.
    seed : int
        Seed of that split.

    Raises
    ------
    ValueError
        Naming the file and the row or task: a missing array, no samples, features of fewer
        than 2 dimensions, a non-finite feature, a task id or label out of range, a task
        without samples, arrays of disagreeing lengths, an array declaring more bytes than the
        file holds, a member that is not a ``.npy`` array, or arrays or output heads too large
        for the memory limit (``taan_core._memory``).
    """
    if data_path is None:
        raise ValueError("the npz data set needs data_path, the .npz file to read")
    _check_fractions(val_fraction, test_fraction)
    check_int(seed, "seed", minimum=0)
    path = str(data_path)
    arrays = _read(path)
    features, task_ids, labels = _check_arrays(arrays, path)
    names = _task_names(arrays.get("task_names"), task_ids, path)
    tasks, rows_of = _task_specs(arrays, labels, task_ids, names, path)
    codes = _split_codes(arrays["split"], features.shape[0], path) if "split" in arrays else None
    chosen = _split_rows(rows_of, codes, val_fraction, test_fraction, seed)
    splits = _tensor_splits(features, labels, tasks, chosen, path)
    config = {"data_path": path, "val_fraction": float(val_fraction), "test_fraction": float(test_fraction), "seed": seed}
    return MultiTaskData("npz", config, tasks, splits, input_shape=features.shape[1:])
