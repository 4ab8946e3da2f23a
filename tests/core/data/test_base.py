"""Tests of taan_core.data.base: task specs, in-memory splits, the data set container, the registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from taan_core.data import DATASETS, MultiTaskData, TaskSpec, TensorSplit, load_dataset
from taan_core.data.base import _split_indices


def _split(n=(3, 4)):
    tasks = [TaskSpec("a", "regression", 2), TaskSpec("b", "multiclass", 3)]
    xs = [torch.arange(k * 2, dtype=torch.float32).reshape(k, 2) for k in n]
    ys = [torch.ones(n[0], 2), torch.arange(n[1]) % 3]
    return tasks, TensorSplit(tasks, xs, ys, source="mem")


def test_task_spec_validation():
    assert TaskSpec("t", "binary", 1).num_outputs == 1
    with pytest.raises(ValueError, match="kind must be one of"):
        TaskSpec("t", "ranking", 1)
    with pytest.raises(ValueError, match="binary task has num_outputs 1"):
        TaskSpec("t", "binary", 2)
    with pytest.raises(ValueError, match="multiclass task needs num_outputs >= 2"):
        TaskSpec("t", "multiclass", 1)
    with pytest.raises(ValueError, match="num_outputs must be >= 1"):
        TaskSpec("t", "regression", 0)
    with pytest.raises(TypeError, match="num_outputs must be an int"):
        TaskSpec("t", "regression", 1.0)
    with pytest.raises(TypeError, match="non-empty str"):
        TaskSpec("", "regression", 1)


def test_empty_labels_layout():
    assert TaskSpec("t", "multiclass", 4).empty_labels().shape == (0,)
    assert TaskSpec("t", "multilabel", 4).empty_labels().shape == (0, 4)


def test_tensor_split_get_and_sizes():
    tasks, split = _split()
    assert split.num_tasks == 2
    assert [split.num_samples(t) for t in range(2)] == [3, 4]
    x, y = split.get(1, torch.tensor([3, 0, 3]))
    assert x.dtype == torch.float32 and x.shape == (3, 2)
    torch.testing.assert_close(x[0], torch.tensor([6.0, 7.0]))
    assert y.dtype == torch.long and y.tolist() == [0, 0, 0]
    x, y = split.get(0, torch.zeros(0, dtype=torch.long))
    assert x.shape == (0, 2) and y.shape == (0, 2)
    assert "num_samples=[3, 4]" in repr(split)


def test_tensor_split_get_errors():
    _, split = _split()
    with pytest.raises(ValueError, match=r"task must be in \[0, 2\)"):
        split.get(2, torch.tensor([0]))
    with pytest.raises(TypeError, match="task must be an int"):
        split.get(0.0, torch.tensor([0]))
    with pytest.raises(ValueError, match=r"index of task 0 \('a'\) must be in \[0, 3\)"):
        split.get(0, torch.tensor([3]))
    with pytest.raises(TypeError, match="integer tensor"):
        split.get(0, torch.tensor([0.0]))


def test_uint8_features_are_scaled():
    tasks = [TaskSpec("img", "multiclass", 2)]
    split = TensorSplit(tasks, [torch.full((2, 1, 2, 2), 255, dtype=torch.uint8)], [torch.tensor([0, 1])], feature_scale=1 / 255)
    x, _ = split.get(0, torch.tensor([1]))
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, torch.ones(1, 1, 2, 2))


@pytest.mark.parametrize(
    ("features", "labels", "kind", "k", "match"),
    [
        (torch.tensor([[0.0], [float("nan")]]), torch.zeros(2, 1), "regression", 1, r"mem: task 0 \('t'\) sample 1 has a non-finite feature"),
        (torch.tensor([[0.0], [float("inf")]]), torch.zeros(2, 1), "regression", 1, "sample 1 has a non-finite feature"),
        (torch.zeros(2, 1), torch.tensor([0, 3]), "multiclass", 3, r"sample 1: label 3 out of range \[0, 3\)"),
        (torch.zeros(2, 1), torch.tensor([-1, 0]), "multiclass", 3, r"sample 0: label -1 out of range"),
        (torch.zeros(2, 1), torch.tensor([[0.0], [2.0]]), "binary", 1, "sample 1: binary labels must be 0 or 1"),
        (torch.zeros(2, 1), torch.zeros(2, 3), "multilabel", 2, r"labels must have shape \(n, 2\)"),
        (torch.zeros(2, 1), torch.tensor([[0.0], [float("nan")]]), "regression", 1, "sample 1: label is not finite"),
        (torch.zeros(2, 1), torch.zeros(3, 1), "regression", 1, "has 2 inputs but labels of shape"),
        (torch.zeros(2, 1), torch.tensor([0.5, 1.0]), "multiclass", 3, "must be an integer"),
    ],
)
def test_tensor_split_rejects_bad_data(features, labels, kind, k, match):
    with pytest.raises(ValueError, match=match):
        TensorSplit([TaskSpec("t", kind, k)], [features], [labels], source="mem")


def test_tensor_split_rejects_mismatched_shapes_and_counts():
    tasks = [TaskSpec("a", "regression", 1), TaskSpec("b", "regression", 1)]
    with pytest.raises(ValueError, match="every task must share one input shape"):
        TensorSplit(tasks, [torch.zeros(2, 3), torch.zeros(2, 4)], [torch.zeros(2, 1)] * 2, source="mem")
    with pytest.raises(ValueError, match="need features and labels for each of the 2 tasks"):
        TensorSplit(tasks, [torch.zeros(2, 3)], [torch.zeros(2, 1)], source="mem")


def test_multitask_data_container():
    tasks, split = _split()
    data = MultiTaskData("demo", {"seed": 1}, tasks, {"train": split, "val": split, "test": split}, input_shape=(2,))
    assert data.task_names == ["a", "b"]
    assert data.num_tasks == 2
    assert data.input_shape == (2,)
    assert data.ground_truth is None
    assert data.split("val") is split
    assert "train=7" in repr(data)
    with pytest.raises(ValueError, match="split must be one of train, val, test"):
        data.split("dev")


def test_multitask_data_errors():
    tasks, split = _split()
    with pytest.raises(ValueError, match=r"splits \['test'\] are missing"):
        MultiTaskData("demo", {}, tasks, {"train": split, "val": split}, input_shape=(2,))
    with pytest.raises(ValueError, match="task names must be unique"):
        MultiTaskData("demo", {}, [tasks[0], tasks[0]], {"train": split, "val": split, "test": split}, input_shape=(2,))
    empty = TensorSplit(tasks, [torch.zeros(0, 2), torch.zeros(1, 2)], [torch.zeros(0, 2), torch.tensor([0])])
    with pytest.raises(ValueError, match=r"task 0 \('a'\) has no training samples"):
        MultiTaskData("demo", {}, tasks, {"train": empty, "val": split, "test": split}, input_shape=(2,))


@pytest.mark.parametrize("n", [1, 2, 3, 10, 57])
def test_split_indices_partition(n):
    train, val, test = _split_indices(n, 0.2, 0.2, np.random.default_rng(0))
    joined = np.concatenate([train, val, test])
    assert sorted(joined.tolist()) == list(range(n))
    assert train.size >= 1
    assert test.size >= (1 if n >= 2 else 0)
    assert val.size >= (1 if n >= 3 else 0)


def test_registry_and_errors():
    assert set(DATASETS) == {"planted", "digits", "exam", "school", "youtube8m", "omniglot", "npz"}
    with pytest.raises(ValueError, match="unknown data set 'mnist'"):
        load_dataset("mnist")
    with pytest.raises(TypeError, match="data set name must be a str"):
        load_dataset(3)
