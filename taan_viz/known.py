"""What is known about the tasks, read from a CSV file: a distance matrix or per-task attributes.

:func:`taan_viz.compare.compare_runs` tests a run's task distances against distances known
beforehand. :func:`read_known` reads them in one of two forms:

matrix
    A header row (an empty or ``task`` cell, then the task names) and one row per task (its
    name, then its distance to every task): symmetric, zero diagonal, finite, >= 0.
attributes
    A header row (the task column, then the attributes) and one row per task. The distance of
    two tasks is the Euclidean distance of their encoded rows (:func:`encode_attributes`:
    numeric columns z-scored, categorical ones one-hot encoded).

:class:`KnownTasks` then matches the file's tasks to a run's by name.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = ["KINDS", "KnownTasks", "attribute_distance", "encode_attributes", "read_known"]

KINDS = ("auto", "matrix", "attributes")
# Asymmetry of a matrix read from a file beyond this fraction of its largest entry is an error.
_SYMMETRY_RTOL = 1e-6




@dataclass(frozen=True, eq=False)
class KnownTasks:
    """What a CSV file says about the tasks, before it is matched to a run's tasks.

    Attributes
    ----------
    source : str
        The file.
    kind : {"matrix", "attributes"}
    task_names : tuple of str
        The file's tasks, in file order (N of them).
    matrix : ndarray of shape (N, N) or None
        The distance matrix (kind "matrix"): symmetric, zero diagonal, finite, >= 0.
    columns : dict of str to tuple of str
        The attribute columns (kind "attributes"): each column's cells as text, in task order.
    """

    source: str
    kind: str
    task_names: tuple[str, ...]
    matrix: np.ndarray | None = None
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def _positions(self, task_names: Sequence[str]) -> np.ndarray:
        where = {name: k for k, name in enumerate(self.task_names)}
        missing = [name for name in task_names if name not in where]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise ValueError(f"{self.source}: {len(missing)} task(s) of the run are missing from it: {shown}")
        return np.array([where[name] for name in task_names], dtype=np.int64)

    def extra(self, task_names: Sequence[str]) -> list[str]:
        """The file's tasks that are not among ``task_names`` (ignored by :meth:`distance`)."""
        wanted = set(task_names)
        return [name for name in self.task_names if name not in wanted]

    def distance(self, task_names: Sequence[str], columns: Sequence[str] | None = None) -> np.ndarray:
        """The known distances between ``task_names``, shape (T, T), in that order.

        An attributes table is encoded over these tasks only (rows of other tasks are ignored
        and do not move the means and standard deviations of the z-scores). ``columns`` limits
        it to those attribute columns (all by default).

        Raises
        ------
        ValueError
            When a task is missing from the file (the message names them), or ``columns`` names
            a column the table lacks or is given for a matrix.
        """
        pos = self._positions(task_names)
        if columns is not None:
            if self.kind != "attributes":
                raise ValueError(f"{self.source}: choosing columns needs a table of attributes; "
                                 "the file is a task-by-task matrix")
            unknown = [c for c in columns if c not in self.columns]
            if unknown or not columns:
                raise ValueError(f"{self.source}: no column {unknown[0] if unknown else ''!r}; "
                                 f"columns: {', '.join(self.columns)}")
        if self.kind == "matrix":
            return self.matrix[np.ix_(pos, pos)].copy()
        chosen = self.columns if columns is None else {c: self.columns[c] for c in columns}
        return attribute_distance({c: [v[k] for k in pos] for c, v in chosen.items()})

    def labels(self, column: str, task_names: Sequence[str]) -> np.ndarray:
        """The cells of an attribute ``column`` for ``task_names``, shape (T,), as text."""
        if self.kind != "attributes":
            raise ValueError(f"{self.source}: grouping by a column needs a table of attributes; "
                             "the file is a task-by-task matrix")
        if column not in self.columns:
            raise ValueError(f"{self.source}: no column {column!r}; columns: {', '.join(self.columns)}")
        pos = self._positions(task_names)
        return np.array([self.columns[column][k] for k in pos], dtype=str)

    def encoding(self, task_names: Sequence[str]) -> list[str]:
        """How each attribute column enters the distance (empty for a matrix)."""
        pos = self._positions(task_names)
        out = []
        for name, cells in self.columns.items():
            values = [cells[k] for k in pos]
            if _numbers(values) is not None:
                out.append(f"{name}: numeric, z-scored")
            else:
                out.append(f"{name}: categorical, {len(set(values))} values, one-hot")
        return out


def _numbers(cells: Sequence[str]) -> np.ndarray | None:
    """The cells as floats when every one is a number, else None (a categorical column)."""
    try:
        return np.array([float(c) for c in cells], dtype=np.float64)
    except ValueError:
        return None


def read_known(path: "str | Path", *, kind: str = "auto") -> KnownTasks:
    """Read what is known about the tasks from a CSV file.

    Two forms, told apart by ``kind="auto"``: a *matrix* has a header row (an empty or ``task``
    cell, then task names) and one row per task (its name, then numbers), with the header's
    names equal to the first column's (in any order); anything else is a *table of attributes*:
    a header row (the first cell names the task column, the others the attributes), then one
    row per task (its name, then a value per attribute). A UTF-8 byte-order mark is skipped;
    empty lines are ignored; cells are stripped of surrounding spaces.

    Parameters
    ----------
    path : str or Path
    kind : {"auto", "matrix", "attributes"}, default "auto"

    Returns
    -------
    KnownTasks

    Raises
    ------
    ValueError
        One line naming the file and, where it applies, the row and column and what was
        expected: ragged rows, empty or repeated task names, a matrix cell that is not a finite
        number >= 0, a non-zero diagonal, an asymmetric matrix, an empty attribute cell.
    OSError
        When the file cannot be read.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start})") from err
    reader = csv.reader(text.splitlines())
    rows: list[tuple[int, list[str]]] = []
    for cells in reader:
        cells = [c.strip() for c in cells]
        if any(cells):
            rows.append((reader.line_num, cells))
    if len(rows) < 2:
        raise ValueError(f"{path}: expected a header row and one row per task, got {len(rows)} non-empty line(s)")
    (_, header), body = rows[0], rows[1:]
    if len(header) < 2:
        raise ValueError(f"{path}: the header must name the task column and at least one more column, "
                         f"got {len(header)} cell(s)")
    for line, cells in body:
        if len(cells) != len(header):
            raise ValueError(f"{path}: line {line} has {len(cells)} cells, the header has {len(header)}")
    names = [cells[0] for _, cells in body]
    lines = [line for line, _ in body]
    for k, name in enumerate(names):
        if not name:
            raise ValueError(f"{path}: line {lines[k]} has no task name in its first cell")
        if name in names[:k]:
            raise ValueError(f"{path}: task {name!r} appears twice (lines {lines[names.index(name)]} and {lines[k]})")
    columns = header[1:]
    for k, col in enumerate(columns):
        if not col:
            raise ValueError(f"{path}: column {k + 2} of the header has no name")
        if col in columns[:k]:
            raise ValueError(f"{path}: column {col!r} appears twice in the header")
    square = len(columns) == len(names) and set(columns) == set(names)
    if kind == "auto":
        kind = "matrix" if square else "attributes"
    if kind == "matrix":
        return _read_matrix(path, names, columns, body, square)
    for k, col in enumerate(columns, start=1):
        for line, cells in body:
            if not cells[k]:
                raise ValueError(f"{path}: row {cells[0]!r} (line {line}), column {col!r} is empty; "
                                 "every task needs a value (fill it or drop the column)")
    return KnownTasks(source=str(path), kind="attributes", task_names=tuple(names),
                      columns={col: tuple(cells[k] for _, cells in body) for k, col in enumerate(columns, start=1)})


def _read_matrix(path: Path, names: list[str], columns: list[str], body, square: bool) -> KnownTasks:
    if not square:
        only = sorted(set(names) ^ set(columns))
        example = f", e.g. {only[0]!r} is in only one of them" if only else ""
        raise ValueError(f"{path}: a task-by-task matrix needs the header to name the same tasks as the first "
                         f"column; got {len(columns)} header names and {len(names)} rows{example}")
    t = len(names)
    d = np.empty((t, t))
    for i, (line, cells) in enumerate(body):
        for j, cell in enumerate(cells[1:]):
            where = f"{path}: row {names[i]!r} (line {line}), column {columns[j]!r}"
            try:
                v = float(cell)
            except ValueError:
                raise ValueError(f"{where}: expected a number, got {cell!r}") from None
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{where}: expected a finite distance >= 0, got {cell!r}")
            d[i, j] = v
    col = {name: j for j, name in enumerate(columns)}
    d = d[:, [col[name] for name in names]]
    diag = np.abs(np.diag(d))
    if diag.max() > 0:
        i = int(np.argmax(diag))
        raise ValueError(f"{path}: row {names[i]!r}, column {names[i]!r}: expected 0 on the diagonal, got {d[i, i]:g}")
    gap = np.abs(d - d.T)
    if gap.max() > _SYMMETRY_RTOL * d.max():
        i, j = np.unravel_index(int(np.argmax(gap)), gap.shape)
        raise ValueError(f"{path}: the matrix must be symmetric; row {names[i]!r}, column {names[j]!r} is "
                         f"{d[i, j]:g} but row {names[j]!r}, column {names[i]!r} is {d[j, i]:g}")
    return KnownTasks(source=str(path), kind="matrix", task_names=tuple(names), matrix=0.5 * (d + d.T))


def encode_attributes(columns: Mapping[str, Sequence[str]]) -> np.ndarray:
    """Per-task attributes as numeric rows, the rule of the attribute distance.

    A column whose every cell is a number is *numeric* and standardised: ``(x - mean) / std``
    over the tasks given (population std; a constant column becomes 0 and adds nothing). Any
    other column is *categorical* and one-hot encoded: one 0/1 column per distinct value. Two
    tasks thus differ by ``(z_s - z_t)^2`` per numeric column and by 2 per categorical column
    on which they differ, in the squared Euclidean distance. Integer codes of categories (group
    ids) read as numbers: write them as text (``g1``) to make the column categorical.

    Parameters
    ----------
    columns : mapping of str to sequence of str
        Each attribute column's cells, one per task (T of them), as text.

    Returns
    -------
    ndarray of shape (T, P), float64
        P = the numeric columns + the distinct values of every categorical column.

    Raises
    ------
    ValueError
        No columns, columns of different lengths, or a numeric cell that is not finite.
    """
    if not columns:
        raise ValueError("columns must hold at least one attribute column")
    lengths = {name: len(cells) for name, cells in columns.items()}
    t = next(iter(lengths.values()))
    if any(n != t for n in lengths.values()):
        raise ValueError(f"every attribute column must have one cell per task; lengths {lengths}")
    parts = []
    for name, cells in columns.items():
        x = _numbers(cells)
        if x is None:
            levels = sorted(set(cells))
            index = {v: k for k, v in enumerate(levels)}
            onehot = np.zeros((t, len(levels)))
            onehot[np.arange(t), [index[c] for c in cells]] = 1.0
            parts.append(onehot)
            continue
        if not np.isfinite(x).all():
            bad = cells[int(np.flatnonzero(~np.isfinite(x))[0])]
            raise ValueError(f"column {name!r}: expected finite numbers, got {bad!r}")
        std = x.std()
        parts.append(((x - x.mean()) / std if std > 0 else np.zeros(t))[:, None])
    return np.hstack(parts)


def attribute_distance(columns: Mapping[str, Sequence[str]]) -> np.ndarray:
    """Euclidean distance between the tasks' encoded attributes (:func:`encode_attributes`).

    Returns
    -------
    ndarray of shape (T, T), float64
        Symmetric, zero diagonal.
    """
    from scipy.spatial.distance import cdist

    encoded = encode_attributes(columns)
    return cdist(encoded, encoded)
