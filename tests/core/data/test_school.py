"""The school data set: the real file's shape and protocol, and every kind of bad file."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import torch

from taan_core.data import load_dataset, school_attributes
from tests.school_data import SCHOOL_MAT, needs_school


def _all(split, t):
    return split.get(t, torch.arange(split.num_samples(t)))


@needs_school
def test_real_file_has_139_regression_tasks_and_the_protocol_split():
    data = load_dataset("school", data_path=str(SCHOOL_MAT))
    assert data.num_tasks == 139 and data.input_shape == (27,)
    assert data.task_names[0] == "school_001" and data.task_names[-1] == "school_139"
    assert {t.kind for t in data.tasks} == {"regression"}
    sizes = {w: [data.split(w).num_samples(t) for t in range(139)] for w in ("train", "val", "test")}
    totals = [sum(sizes[w][t] for w in sizes) for t in range(139)]
    assert sum(totals) == 15362 and min(totals) == 22 and max(totals) == 251
    for t, n in enumerate(totals):
        # 25 % of every school for test, 15 % of the rest for validation.
        assert sizes["test"][t] == round(0.25 * n)
        assert sizes["val"][t] == round(0.15 * (n - sizes["test"][t]))
    # The target is standardised on the training rows; target_scale brings it back to points.
    y = torch.cat([_all(data.split("train"), t)[1] for t in range(139)]).double()
    assert float(y.mean()) == pytest.approx(0.0, abs=1e-5) and float(y.std(unbiased=False)) == pytest.approx(1.0, rel=1e-5)
    assert 10.0 < data.tasks[0].target_scale < 15.0
    # The two percentage columns are standardised on the training rows, the one-hot ones stay 0/1.
    x = torch.cat([_all(data.split("train"), t)[0] for t in range(139)]).double()
    assert x[:, 3:5].mean(dim=0).abs().max() < 1e-4
    onehot = torch.cat([x[:, :3], x[:, 5:]], dim=1)
    assert bool(((onehot == 0) | (onehot == 1)).all())


@needs_school
def test_split_seed_changes_the_split_and_the_test_set_ignores_val_fraction():
    a = load_dataset("school", data_path=str(SCHOOL_MAT), seed=0)
    b = load_dataset("school", data_path=str(SCHOOL_MAT), seed=1)
    c = load_dataset("school", data_path=str(SCHOOL_MAT), seed=0, val_fraction=0.3)
    ya, yb, yc = (_all(d.split("test"), 5)[1] for d in (a, b, c))
    assert not torch.equal(ya, yb)
    # Same test students (the scale differs: it is fitted on the training part, which changed).
    scale = a.tasks[0].target_scale / c.tasks[0].target_scale
    assert yc.shape == ya.shape
    assert a.split("val").num_samples(5) < c.split("val").num_samples(5)
    assert a.config == {"data_path": str(SCHOOL_MAT), "val_fraction": 0.15, "test_fraction": 0.25, "seed": 0}
    assert np.isfinite(scale)


@needs_school
def test_attributes_are_school_level():
    table = school_attributes(str(SCHOOL_MAT))
    assert len(table["task"]) == 139 and table["task"][0] == "school_001"
    assert set(table["gender"]) == {"mixed", "boys", "girls"}
    assert set(table["denomination"]) == {"maintained", "cofe", "rc"}
    assert sum(table["students"]) == 15362


def _write(path, x=None, y=None, **extra):
    rng = np.random.default_rng(0)
    if x is None:
        x = [np.hstack([rng.integers(0, 2, (30, 3)), rng.integers(5, 50, (30, 2)), rng.integers(0, 2, (30, 22)),
                        np.ones((30, 1))]).astype(np.float64) for _ in range(139)]
    if y is None:
        y = [rng.normal(20, 10, (30, 1)) for _ in range(139)]
    cells = {}
    for key, value in (("X", x), ("Y", y)):
        if value is False:
            continue
        arr = np.empty((1, len(value)), dtype=object)
        for i, v in enumerate(value):
            arr[0, i] = v
        cells[key] = arr
    cells.update(extra)
    scipy.io.savemat(path, cells)
    return str(path)


def test_a_well_formed_synthetic_file_loads(tmp_path):
    data = load_dataset("school", data_path=_write(tmp_path / "s.mat"), seed=3)
    assert data.num_tasks == 139 and data.input_shape == (27,)


@pytest.mark.parametrize("case, match", [
    ("missing", "no such file.*--data"),
    ("folder", "expected the file school.mat, got a folder"),
    ("garbage", "expected a MATLAB v5 file with cell arrays X and Y"),
    ("v73", "MATLAB v7.3"),
    ("no_y", "variable Y is missing"),
    ("few", r"X: expected a 1 x 139 cell array"),
    ("width", r"X\{4\} \(school 4\): expected shape \(n, 28\)"),
    ("nan", r"Y\{2\} \(school 2\) row 3: value is not finite"),
    ("rows", "school 7: X has 30 students, Y has 29"),
    ("onehot", r"X\{1\} row 1: the one-hot columns must be 0 or 1"),
    ("text", r"X\{1\} \(school 1\): expected a numeric matrix"),
])
def test_bad_files_get_one_line_naming_the_file(tmp_path, case, match):
    rng = np.random.default_rng(1)
    good_x = lambda: np.hstack([np.zeros((30, 27)), np.ones((30, 1))])  # noqa: E731
    path = tmp_path / "s.mat"
    if case == "missing":
        path = tmp_path / "nope.mat"
    elif case == "folder":
        path = tmp_path
    elif case == "garbage":
        path.write_bytes(rng.bytes(500))
    elif case == "v73":
        path.write_bytes(b"MATLAB 7.3 MAT-file".ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM" + b"\x00" * 64)
    elif case == "no_y":
        _write(path, y=False)
    elif case == "few":
        _write(path, x=[good_x() for _ in range(5)])
    elif case == "width":
        x = [good_x() for _ in range(139)]
        x[3] = np.zeros((30, 27))
        _write(path, x=x)
    elif case == "nan":
        y = [np.ones((30, 1)) for _ in range(139)]
        y[1][2, 0] = np.nan
        _write(path, x=[good_x() for _ in range(139)], y=y)
    elif case == "rows":
        y = [np.ones((30, 1)) for _ in range(139)]
        y[6] = np.ones((29, 1))
        _write(path, x=[good_x() for _ in range(139)], y=y)
    elif case == "onehot":
        x = [good_x() for _ in range(139)]
        x[0][0, 7] = 3.0
        _write(path, x=x)
    elif case == "text":
        x = [good_x() for _ in range(139)]
        x[0] = "hello"
        _write(path, x=x)
    with pytest.raises(ValueError, match=match) as info:
        load_dataset("school", data_path=str(path))
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_options_are_checked():
    with pytest.raises(ValueError, match="pass data_path"):
        load_dataset("school")
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\)"):
        load_dataset("school", data_path="x.mat", test_fraction=0.0)
    with pytest.raises(TypeError, match="seed must be an int"):
        load_dataset("school", data_path="x.mat", seed=1.5)


@needs_school
def test_the_data_set_carries_its_attributes():
    from taan_core.data import known_attributes

    data = load_dataset("school", data_path=str(SCHOOL_MAT))
    table = known_attributes(data)
    assert table == school_attributes(str(SCHOOL_MAT))
    assert table["task"] == data.task_names
