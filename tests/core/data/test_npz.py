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
        (lambda a: a.update(labels=np.where(np.arange(30) == 9, 10**9, a["labels"]), kinds=np.array("multiclass")),
         r"task 0 \('task_0'\) is multiclass with 1000000001 classes \(its largest label is 1000000000\); expected 2 to 100,000"),
        (lambda a: a.update(num_outputs=np.array([1, 3, 3]), kinds=np.array("multiclass")),
         r"task 0 \('task_0'\) is multiclass with 1 class \(num_outputs gives 1\)"),
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


# --- Sizes bounded before allocation, empty files, boolean labels ---


def test_task_id_of_2_40_is_refused_without_allocating(tmp_path):
    import tracemalloc

    features, task_ids, labels = _arrays()
    task_ids = task_ids.astype(np.int64)
    task_ids[11] = 2**40
    path = _write(tmp_path, features=features, task_ids=task_ids, labels=labels)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"bad\.npz: task 3 \('task_3'\) has no samples; task ids must number the tasks 0 \.\. T-1 \(row 11 has task id 1099511627776\)"):
            load_npz(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20, f"refusing the file allocated {peak} bytes"


def test_negative_task_id_without_names(tmp_path):
    features, task_ids, labels = _arrays()
    path = _write(tmp_path, features=features, task_ids=np.where(np.arange(30) == 4, -2, task_ids), labels=labels)
    with pytest.raises(ValueError, match=r"bad\.npz: row 4: task id -2 must be >= 0"):
        load_npz(path)


def _npy_bytes(shape, dtype, payload: bytes) -> bytes:
    import io

    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": shape})
    return out.getvalue() + payload


def _zip(path, members: dict[str, bytes], compression):
    import zipfile

    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name + ".npy", data)
    return str(path)


@pytest.mark.parametrize("compression", ["stored", "deflated"])
def test_declared_shape_beyond_the_file_is_refused_before_loading(tmp_path, compression):
    import zipfile

    features, task_ids, labels = _arrays()
    members = {
        "features": _npy_bytes((10**12, 10**6), np.float32, features.tobytes()[:16]),
        "task_ids": _npy_bytes(task_ids.shape, task_ids.dtype, task_ids.tobytes()),
        "labels": _npy_bytes(labels.shape, labels.dtype, labels.tobytes()),
    }
    path = _zip(tmp_path / "huge.npz", members, zipfile.ZIP_STORED if compression == "stored" else zipfile.ZIP_DEFLATED)
    with pytest.raises(ValueError, match=r"huge\.npz: features declares shape \(1000000000000, 1000000\) of float32 "
                                         r"\(4000000000000000000 bytes\), but the file holds 16 bytes of it"):
        load_npz(path)


def test_zip_directory_claiming_more_than_the_file_holds_is_refused(tmp_path):
    import zipfile

    features, task_ids, labels = _arrays()
    path = _zip(tmp_path / "lying.npz", {"features": _npy_bytes((2**30, 4), np.float32, features.tobytes()),
                                         "task_ids": _npy_bytes(task_ids.shape, task_ids.dtype, task_ids.tobytes()),
                                         "labels": _npy_bytes(labels.shape, labels.dtype, labels.tobytes())},
                zipfile.ZIP_STORED)
    data = bytearray(open(path, "rb").read())
    central = data.index(b"PK\x01\x02")  # the directory entry of features.npy: uncompressed size at +24
    data[central + 24:central + 28] = (2**31).to_bytes(4, "little")
    open(path, "wb").write(bytes(data))
    with pytest.raises(ValueError, match=r"lying\.npz: features claims 2147483648 bytes from \d+ stored bytes in a file of \d+ bytes; the archive is damaged"):
        load_npz(path)


def test_memory_error_while_loading_becomes_one_value_error(tmp_path, monkeypatch):
    from taan_core import data as data_module
    from taan_core.data import npz as npz_module

    features, task_ids, labels = _arrays()
    path = tmp_path / "d.npz"
    save_npz(path, features, task_ids, labels)

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(npz_module.np, "load", no_memory)
    with pytest.raises(ValueError, match=r"d\.npz: the arrays do not fit in memory"):
        load_npz(str(path))
    monkeypatch.setitem(data_module.DATASETS, "digits", no_memory)
    with pytest.raises(ValueError, match=r"not enough memory to load the digits data set"):
        load_dataset("digits")


@pytest.mark.parametrize("names", [None, np.array(["a"])])
def test_file_without_samples_is_named(tmp_path, names):
    arrays = {"features": np.zeros((0, 4), np.float32), "task_ids": np.zeros(0, np.int64), "labels": np.zeros(0, np.int64)}
    if names is not None:
        arrays["task_names"] = names
    path = _write(tmp_path, **arrays)
    with pytest.raises(ValueError, match=r"bad\.npz: the file holds no samples \(features has shape \(0, 4\)\)"):
        load_npz(path)


def test_zero_width_features_or_labels_are_named(tmp_path):
    _, task_ids, labels = _arrays()
    path = _write(tmp_path, features=np.zeros((30, 0), np.float32), task_ids=task_ids, labels=labels)
    with pytest.raises(ValueError, match=r"bad\.npz: features must hold at least one value per sample, got shape \(30, 0\)"):
        load_npz(path)
    path = _write(tmp_path, features=np.zeros((30, 2), np.float32), task_ids=task_ids, labels=np.zeros((30, 0)))
    with pytest.raises(ValueError, match=r"bad\.npz: labels must have at least one column, got shape \(30, 0\)"):
        load_npz(path)


@pytest.mark.parametrize(("shape", "kind", "width"), [((30,), "binary", 1), ((30, 1), "binary", 1), ((30, 3), "multilabel", 3)])
def test_boolean_labels_are_binary(tmp_path, shape, kind, width):
    features, task_ids, _ = _arrays()
    labels = np.random.default_rng(6).random(shape) < 0.5
    path = tmp_path / "bool.npz"
    save_npz(path, features, task_ids, labels)
    data = load_npz(str(path))
    assert [(t.kind, t.num_outputs) for t in data.tasks] == [(kind, width)] * 3
    split = data.split("train")
    _, y = split.get(0, torch.arange(split.num_samples(0)))
    assert y.dtype == torch.float32 and set(y.unique().tolist()) <= {0.0, 1.0}
    rows = np.flatnonzero(task_ids == 0)
    expected = labels.reshape(30, -1)[rows, :width].astype(np.float32)
    # Every training row's label is one of task 0's rows, True as 1.
    assert all(any(np.array_equal(row, e) for e in expected) for row in y.numpy())
