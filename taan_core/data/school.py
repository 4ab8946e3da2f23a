"""The school data: exam scores of 15,362 London students in 139 schools, one task per school.

The classic multi-task regression benchmark (Bakker & Heskes 2003; Evgeniou, Micchelli & Pontil
2005; Argyriou, Evgeniou & Pontil 2008): the Inner London Education Authority's exam scores, in
the MATLAB file that the MALSAR toolbox distributes (``school.mat``, cell arrays ``X`` and
``Y`` of 139 schools). Each school is a regression task whose target is the student's exam score.

Columns of ``X`` (0-based; the file holds 28, the last a constant bias that is dropped here):

====== ==============================================================================
0-2    year of the exam (1985, 1986, 1987), one-hot
3      percentage of the school's students eligible for free school meals (that year)
4      percentage of the school's students in verbal-reasoning band 1 (that year)
5-6    student gender, one-hot
7-9    student verbal-reasoning band (1, 2, 3), one-hot
10-20  student ethnic group (11 groups), one-hot
21-23  school gender (mixed, boys, girls), one-hot
24-26  school denomination (maintained, Church of England, Roman Catholic), one-hot
====== ==============================================================================

The two percentage columns are standardised with the training rows' mean and standard
deviation; the one-hot columns stay 0/1. The target is standardised with the training rows'
mean and standard deviation (pooled over schools), and every task's ``target_scale`` records
that deviation so that metrics in score units (RMSE) come out in points. The usual protocol:
each of 10 seeded splits draws 25 % of every school's students for test; validation is carved
from the remaining 75 %; the figure reported is the explained variance on the pooled test set.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from taan_core._validation import check_int
from taan_core.data.base import SPLITS, MultiTaskData, TaskSpec, TensorSplit, _split_indices

__all__ = ["NUM_SCHOOLS", "FEATURE_NAMES", "load_school", "school_attributes"]

NUM_SCHOOLS = 139
_NUM_COLUMNS = 28
_NUMERIC = (3, 4)
FEATURE_NAMES: tuple[str, ...] = (
    "year_1985", "year_1986", "year_1987", "pct_free_meals", "pct_vr_band1", "gender_0", "gender_1",
    "vr_band_1", "vr_band_2", "vr_band_3", *(f"ethnic_{k}" for k in range(1, 12)),
    "school_mixed", "school_boys", "school_girls", "denomination_maintained", "denomination_cofe",
    "denomination_rc",
)
# The real file is 44 KB; anything this large is not the school data, and MATLAB v5 members
# are zlib-compressed, so a small hostile file could still inflate: this bounds the input side.
_MAX_FILE_BYTES = 64 * 2**20
_MAX_STUDENTS_PER_SCHOOL = 100_000


def _fail(path: str, what: str) -> ValueError:
    return ValueError(f"{path}: {what}")


def _read_mat(path: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The 139 (n_t, 28) feature and (n_t,) target arrays of ``path``, checked."""
    import scipy.io

    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise _fail(path, "no such file; the school data set needs --data PATH/school.mat "
                          "(docs/data.md says where to get it)") from None
    except OSError as err:
        raise _fail(path, f"cannot read the file ({err.strerror or err})") from err
    if Path(path).is_dir():
        raise _fail(path, "expected the file school.mat, got a folder")
    if size > _MAX_FILE_BYTES:
        raise _fail(path, f"expected the school data's MATLAB file (44 KB), got {size:,} bytes")
    try:
        mat = scipy.io.loadmat(path, variable_names=("X", "Y"))
    except NotImplementedError as err:  # MATLAB v7.3 files are HDF5
        raise _fail(path, "a MATLAB v7.3 (HDF5) file; save it as -v7 (scipy.io.loadmat reads v4-v7)") from err
    except Exception as err:  # scipy raises many types on damaged input; all mean the same here
        text = " ".join(str(err).split()) or type(err).__name__
        raise _fail(path, f"expected a MATLAB v5 file with cell arrays X and Y, could not read it ({text})") from err
    xs, ys = [], []
    for key, out in (("X", xs), ("Y", ys)):
        cells = mat.get(key)
        if cells is None:
            raise _fail(path, f"variable {key} is missing; expected cell arrays X and Y of {NUM_SCHOOLS} schools")
        if not isinstance(cells, np.ndarray) or cells.dtype != object or cells.size != NUM_SCHOOLS:
            got = f"{cells.dtype} array of shape {cells.shape}" if isinstance(cells, np.ndarray) else type(cells).__name__
            raise _fail(path, f"{key}: expected a 1 x {NUM_SCHOOLS} cell array, got a {got}")
        for t, cell in enumerate(cells.reshape(-1)):
            where = f"{key}{{{t + 1}}} (school {t + 1})"
            if not isinstance(cell, np.ndarray) or cell.dtype.kind not in "biuf":
                raise _fail(path, f"{where}: expected a numeric matrix, got {getattr(cell, 'dtype', type(cell).__name__)}")
            width = _NUM_COLUMNS if key == "X" else 1
            if cell.ndim != 2 or cell.shape[1] != width or not 1 <= cell.shape[0] <= _MAX_STUDENTS_PER_SCHOOL:
                raise _fail(path, f"{where}: expected shape (n, {width}) with 1 <= n <= {_MAX_STUDENTS_PER_SCHOOL:,}, "
                                  f"got {cell.shape}")
            values = cell.astype(np.float64)
            bad = ~np.isfinite(values).all(axis=1)
            if bad.any():
                raise _fail(path, f"{where} row {int(np.flatnonzero(bad)[0]) + 1}: value is not finite")
            out.append(values if key == "X" else values[:, 0])
    for t, (x, y) in enumerate(zip(xs, ys)):
        if x.shape[0] != y.shape[0]:
            raise _fail(path, f"school {t + 1}: X has {x.shape[0]} students, Y has {y.shape[0]}")
        onehot = np.delete(x[:, :-1], _NUMERIC, axis=1)
        if not np.isin(onehot, (0.0, 1.0)).all():
            row = int(np.flatnonzero(~np.isin(onehot, (0.0, 1.0)).all(axis=1))[0])
            raise _fail(path, f"X{{{t + 1}}} row {row + 1}: the one-hot columns must be 0 or 1")
    return xs, ys


def _split_school(n: int, val_fraction: float, test_fraction: float, rng: np.random.Generator):
    """Test first, then validation carved from the rest, so the test set ignores ``val_fraction``."""
    rest, _, test = _split_indices(n, 0.0, test_fraction, rng)
    train, val, _ = _split_indices(rest.size, val_fraction, 0.0, rng)
    return rest[train], rest[val], test


def load_school(
    data_path: str | None = None,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> MultiTaskData:
    """Load the school data as 139 per-school regression tasks.

    Parameters
    ----------
    data_path : str
        Path of ``school.mat`` (docs/data.md says where to get it).
    val_fraction : float
        Share of every school's **training part** (what the test split leaves) held out for
        validation, in [0, 1).
    test_fraction : float
        Share of every school's students held out for testing, in (0, 1); 0.25 in the literature.
    seed : int
        Seed of the split (the literature averages over 10 splits: seeds 0-9).

    Returns
    -------
    MultiTaskData
        Tasks ``school_001`` .. ``school_139`` (regression, 1 output, ``target_scale`` the
        training targets' standard deviation), input shape (27,); ``ground_truth`` holds
        ``{"attributes": school_attributes(data_path)}``, what is known about the schools.

    Raises
    ------
    ValueError
        If the file is missing, not a MATLAB v5 file, or does not hold 139 schools of 28
        feature columns and one target with matching row counts and finite values; the message
        names the file and the school.
    """
    if data_path is None:
        raise ValueError("the school data set reads school.mat: pass data_path (--data PATH/school.mat)")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    check_int(seed, "seed", minimum=0)
    path = str(data_path)
    xs, ys = _read_mat(path)

    rng = np.random.default_rng([seed, 0x5C400])
    parts = [_split_school(len(y), val_fraction, test_fraction, rng) for y in ys]
    train_x = np.concatenate([x[p[0]] for x, p in zip(xs, parts)])
    train_y = np.concatenate([y[p[0]] for y, p in zip(ys, parts)])
    mean = train_x[:, _NUMERIC].mean(axis=0)
    std = train_x[:, _NUMERIC].std(axis=0)
    y_mean, y_std = float(train_y.mean()), float(train_y.std())
    if not y_std > 0:
        raise _fail(path, "every training student has the same score; nothing to learn")

    def features(x: np.ndarray) -> torch.Tensor:
        x = x[:, :-1].copy()
        x[:, _NUMERIC] = (x[:, _NUMERIC] - mean) / np.where(std > 0, std, 1.0)
        return torch.from_numpy(x).float()

    tasks = [TaskSpec(f"school_{t + 1:03d}", "regression", 1, target_scale=y_std) for t in range(NUM_SCHOOLS)]
    splits = {
        which: TensorSplit(
            tasks,
            [features(x[p[k]]) for x, p in zip(xs, parts)],
            [torch.from_numpy((y[p[k]] - y_mean) / y_std).float().reshape(-1, 1) for y, p in zip(ys, parts)],
            source=path,
        )
        for k, which in enumerate(SPLITS)
    }
    config = {"data_path": path, "val_fraction": float(val_fraction), "test_fraction": float(test_fraction),
              "seed": seed}
    return MultiTaskData("school", config, tasks, splits, input_shape=(_NUM_COLUMNS - 1,),
                         ground_truth={"attributes": _attributes(xs)})


def school_attributes(data_path: str):
    """The school-level attributes of the 139 schools, one row per task.

    Parameters
    ----------
    data_path : str
        Path of ``school.mat``.

    Returns
    -------
    dict of str to list
        ``task`` (``school_001`` ..), ``gender`` (mixed, boys, girls), ``denomination``
        (maintained, cofe, rc), ``pct_free_meals`` and ``pct_vr_band1`` (the mean over the
        school's students, in percent), and ``students``: columns of 139 entries, ready for
        ``pandas.DataFrame`` or a CSV (``taan-viz compare --against``).
    """
    xs, _ = _read_mat(str(data_path))
    return _attributes(xs)


def _attributes(xs: list[np.ndarray]) -> dict[str, list]:
    genders, denominations = ("mixed", "boys", "girls"), ("maintained", "cofe", "rc")
    table: dict[str, list] = {"task": [], "gender": [], "denomination": [], "pct_free_meals": [],
                              "pct_vr_band1": [], "students": []}
    for t, x in enumerate(xs):
        table["task"].append(f"school_{t + 1:03d}")
        table["gender"].append(genders[int(np.argmax(x[0, 21:24]))])
        table["denomination"].append(denominations[int(np.argmax(x[0, 24:27]))])
        table["pct_free_meals"].append(round(float(x[:, 3].mean()), 3))
        table["pct_vr_band1"].append(round(float(x[:, 4].mean()), 3))
        table["students"].append(int(x.shape[0]))
    return table
