"""Tests of the digits source: 10 binary tasks, disjoint splits, train-only standardisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits as sk_digits

from taan_core.data import load_dataset, load_digits


@pytest.fixture(scope="module")
def data():
    return load_dataset("digits", seed=3)


def _all(split, t):
    return split.get(t, torch.arange(split.num_samples(t)))


def test_tasks_and_shapes(data):
    assert data.task_names == [f"digit_{d}" for d in range(10)]
    assert all(t.kind == "binary" and t.num_outputs == 1 for t in data.tasks)
    assert data.input_shape == (64,)
    x, y = _all(data.split("train"), 4)
    assert x.shape[1] == 64 and y.shape == (x.shape[0], 1)
    # Balanced: as many negatives as positives.
    assert y.sum().item() == pytest.approx(y.numel() / 2)


def test_splits_are_disjoint_images(data):
    seen = {}
    for which in ("train", "val", "test"):
        for t in range(10):
            x, _ = _all(data.split(which), t)
            for row in x.numpy():
                seen.setdefault(row.tobytes(), set()).add(which)
    assert all(len(v) == 1 for v in seen.values()), "an image appears in two splits"


def test_labels_are_one_vs_rest():
    data = load_digits(balanced=False, seed=1)
    counts = np.bincount(sk_digits().target, minlength=10)
    positives = np.zeros(10)
    for which in ("train", "val", "test"):
        split = data.split(which)
        # Unbalanced tasks hold the same images in the same order: each is positive for one task.
        labels = torch.cat([_all(split, t)[1] for t in range(10)], dim=1)
        assert torch.all(labels.sum(dim=1) == 1)
        positives += labels.sum(dim=0).numpy()
        x0, x9 = _all(split, 0)[0], _all(split, 9)[0]
        torch.testing.assert_close(x0, x9)
    np.testing.assert_array_equal(positives, counts)
    # Standardised with training statistics: every training pixel has mean ~0.
    x_train = _all(data.split("train"), 0)[0]
    assert x_train.mean(dim=0).abs().max() < 1e-4


def test_unbalanced_and_reproducible():
    a = load_digits(balanced=False, seed=0)
    n = [a.split("train").num_samples(t) for t in range(10)]
    assert len(set(n)) == 1, "unbalanced tasks all hold every training image"
    b = load_dataset("digits", **a.config)
    torch.testing.assert_close(_all(a.split("val"), 2)[0], _all(b.split("val"), 2)[0])


def test_errors():
    with pytest.raises(ValueError, match="reads no files"):
        load_digits("some/path")
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction must be < 1"):
        load_digits(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(TypeError, match="balanced must be a bool"):
        load_digits(balanced=1)
