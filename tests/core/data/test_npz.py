"""Tests of the generic .npz format: round trip, inference, explicit splits, every bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from taan_core.data import load_dataset, load_npz, save_npz


def _arrays(n=30, tasks=3, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n, 4)).astype(np.float32)
    task_ids = np.arange(n) % tasks
    labels = rng.integers(0, 3, size=n)
    return features, task_ids, labels


def test_round_trip_multiclass(tmp_path):
    features, task_ids, labels = _arrays()
    path = tmp_path / "d.npz"
    save_npz(path, features, task_ids, labels, task_names=["x", "y", "z"], kinds="multiclass", num_outputs=[3, 3, 4])
    data = load_dataset("npz", data_path=str(path), seed=1)
    assert data.task_names == ["x", "y", "z"]
    assert [t.kind for t in data.tasks] == ["multiclass"] * 3
    assert [t.num_outputs for t in data.tasks] == [3, 3, 4]
    assert data.input_shape == (4,)
    assert data.config == {"data_path": str(path), "val_fraction": 0.2, "test_fraction": 0.2, "seed": 1}
    # Every row lands in exactly one split with its own features and label.
    rows = {}
    for which in ("train", "val", "test"):
        split = data.split(which)
        for t in range(3):
            x, y = split.get(t, torch.arange(split.num_samples(t)))
            for xi, yi in zip(x.numpy(), y.tolist()):
                row = int(np.flatnonzero((features == xi).all(axis=1))[0])
                assert task_ids[row] == t and labels[row] == yi
                rows[row] = which
    assert sorted(rows) == list(range(30))
    again = load_dataset("npz", **data.config)
    torch.testing.assert_close(again.split("val").get(0, torch.arange(2))[0], data.split("val").get(0, torch.arange(2))[0])


def test_inferred_kinds_and_default_names(tmp_path):
    features, task_ids, _ = _arrays()
    cases = {
        "binary": task_ids % 2,
        "multiclass": np.arange(30) % 5,
        "multilabel": np.eye(3, dtype=np.int64)[np.arange(30) % 3],
        "regression": np.linspace(0, 1, 30),
    }
    for kind, labels in cases.items():
        path = tmp_path / f"{kind}.npz"
        save_npz(path, features, task_ids, labels)
        data = load_npz(str(path))
        assert [t.kind for t in data.tasks] == [kind] * 3, kind
        assert data.task_names == ["task_0", "task_1", "task_2"]


def test_mixed_kinds_use_label_columns(tmp_path):
    n = 12
    features = np.zeros((n, 2), np.float32) + np.arange(n)[:, None]
    task_ids = np.arange(n) % 2
    labels = np.zeros((n, 3))
    labels[task_ids == 0, 0] = np.arange(6) % 4  # multiclass in column 0
    labels[task_ids == 1] = np.arange(18).reshape(6, 3) / 10  # regression over 2 of 3 columns
    path = tmp_path / "mixed.npz"
    save_npz(path, features, task_ids, labels, kinds=["multiclass", "regression"], num_outputs=[4, 2])
    data = load_npz(str(path))
    assert [(t.kind, t.num_outputs) for t in data.tasks] == [("multiclass", 4), ("regression", 2)]
    _, y = data.split("train").get(1, torch.tensor([0]))
    assert y.shape == (1, 2)


def test_explicit_split_column(tmp_path):
    features, task_ids, labels = _arrays(n=12, tasks=2)
    split = np.array(["train", "val", "test"] * 4)
    path = tmp_path / "s.npz"
    save_npz(path, features, task_ids, labels, split=split)
    data = load_npz(str(path))
    assert sum(data.split("val").num_samples(t) for t in range(2)) == 4
    save_npz(path, features, task_ids, labels, split=np.array([0, 1, 2] * 4))
    assert sum(load_npz(str(path)).split("test").num_samples(t) for t in range(2)) == 4


def _write(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda a: a.update(features=np.where(np.arange(30)[:, None] == 7, np.nan, a["features"])), r"bad\.npz: row 7: features hold NaN or inf"),
        (lambda a: a.update(features=np.where(np.arange(30)[:, None] == 4, np.inf, a["features"])), r"row 4: features hold NaN or inf"),
        (lambda a: a.update(features=a["features"][:, 0]), r"features must have shape \(N, D\)"),
        (lambda a: a.update(task_ids=a["task_ids"][:-1]), r"task_ids must be an int array of shape \(30,\)"),
        (lambda a: a.update(labels=np.where(np.arange(30) == 5, 7, a["labels"]), num_outputs=np.array([3, 3, 3]), kinds=np.array("multiclass")), r"row 5: label 7 of task 2 \('task_2'\) out of range \[0, 3\)"),
        (lambda a: a.update(labels=np.where(np.arange(30) == 3, -1, a["labels"])), r"row 3: label -1 of task 0"),
        (lambda a: a.update(task_names=np.array(["a", "b", "c", "d"])), r"task 3 \('d'\) has no samples"),
        (lambda a: a.update(task_ids=np.where(np.arange(30) == 2, 9, a["task_ids"]), task_names=np.array(["a", "b", "c"])), r"row 2: task id 9 out of range \[0, 3\)"),
        (lambda a: a.pop("labels"), r"missing array\(s\) \['labels'\]"),
        (lambda a: a.update(kinds=np.array(["binary", "ranking", "binary"])), r"task 1 \('task_1'\): kind must be one of"),
        (lambda a: a.update(kinds=np.array(["binary", "binary"])), r"kinds must have shape \(3,\)"),
        (lambda a: a.update(labels=np.where(np.arange(30) == 6, 0.5, a["labels"]), kinds=np.array("multiclass")), r"row 6: task 0 \('task_0'\) is multiclass, label 0.5 is not an integer"),
        (lambda a: a.update(labels=np.where(np.arange(30) == 8, np.nan, a["labels"].astype(float))), r"row 8: labels hold NaN or inf"),
        (lambda a: a.update(split=np.full(30, 5)), r"row 0: split must be 0/1/2"),
        (lambda a: a.update(split=np.full(30, 1)), r"task 0 \('task_0'\) has no training rows"),
    ],
)
def test_bad_inputs_name_file_and_row_or_task(tmp_path, mutate, match):
    features, task_ids, labels = _arrays()
    arrays = {"features": features, "task_ids": task_ids, "labels": labels}
    mutate(arrays)
    path = _write(tmp_path, **arrays)
    with pytest.raises(ValueError, match=match):
        load_npz(path)


def test_unreadable_and_missing_files(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match=r"junk\.npz: not a readable \.npz file"):
        load_npz(str(junk))
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_npz(str(tmp_path / "absent.npz"))
    pickled = tmp_path / "obj.npz"
    np.savez(pickled, features=np.zeros((2, 2)), task_ids=np.zeros(2, int), labels=np.array([object(), object()], dtype=object))
    with pytest.raises(ValueError, match="cannot read without pickle"):
        load_npz(str(pickled))
    with pytest.raises(ValueError, match="needs data_path"):
        load_npz(None)
