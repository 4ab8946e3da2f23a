"""Tests of taan_core.metrics: definitions against hand computations and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score
from sklearn.metrics import r2_score as sk_r2

from taan_core.data import TaskSpec, TensorSplit
from taan_core.metrics import (
    accuracy,
    average_precision_at_k,
    evaluate,
    headline_metric,
    main_metric,
    mean_average_precision_at_k,
    pooled_regression_metrics,
    r2_score,
    rmse,
    task_metrics,
)


def _reference_ap_at_k(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The reference code's per-sample AP: sklearn AP on each sample's top-k classes."""
    out = []
    for s, y in zip(scores, labels):
        top = np.argsort(-s, kind="stable")[:k]
        if y[top].sum() == 0:
            out.append(0.0)
        else:
            out.append(average_precision_score(y[top], s[top]))
    return np.asarray(out)


def test_ap_at_k_hand_checked():
    # Sample 0: top-3 by score are classes 0 (pos), 1 (neg), 2 (pos): AP = (1/1 + 2/3) / 2.
    # Sample 1: top-3 are 3 (neg), 2 (neg), 1 (pos): AP = 1/3. The positive at class 0 is outside.
    # Sample 2: no positive in the top 3: 0.
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.05, 0.6, 0.7, 0.9], [0.9, 0.8, 0.7, 0.1]], dtype=torch.float64)
    labels = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.float64)
    ap = average_precision_at_k(scores, labels, k=3)
    expected = torch.tensor([(1 + 2 / 3) / 2, 1 / 3, 0.0], dtype=torch.float64)
    torch.testing.assert_close(ap, expected)
    np.testing.assert_allclose(ap.numpy(), _reference_ap_at_k(scores.numpy(), labels.numpy(), 3))
    assert mean_average_precision_at_k(scores, labels, k=3) == pytest.approx(float(expected.mean()))


def test_ap_at_k_ties_are_one_threshold_like_sklearn():
    # Classes 1 and 2 tie: sklearn gives both positives... precision at the end of the tie.
    scores = np.array([[0.9, 0.5, 0.5, 0.1]])
    labels = np.array([[0, 1, 0, 1]])
    ap = average_precision_at_k(torch.tensor(scores), torch.tensor(labels), k=3).numpy()
    # Top 3 = classes 0, 1, 2; the tie run {1, 2} ends at rank 3 with 1 positive: AP = 1/3.
    np.testing.assert_allclose(ap, [1 / 3])
    np.testing.assert_allclose(ap, _reference_ap_at_k(scores, labels, 3))


def test_k_larger_than_classes_uses_all_classes():
    scores = torch.tensor([[0.2, 0.9]])
    labels = torch.tensor([[1.0, 0.0]])
    assert average_precision_at_k(scores, labels, k=10).item() == pytest.approx(0.5)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 12), num_classes=st.integers(1, 15), ties=st.booleans())
def test_ap_at_k_matches_reference_code_definition(seed, k, num_classes, ties):
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((20, num_classes))
    if ties:
        scores = np.round(scores)
    labels = (rng.random((20, num_classes)) < 0.3).astype(np.float64)
    ours = average_precision_at_k(torch.tensor(scores), torch.tensor(labels), k=k).numpy()
    np.testing.assert_allclose(ours, _reference_ap_at_k(scores, labels, min(k, num_classes)), rtol=1e-12, atol=1e-12)


def test_ap_at_k_errors():
    with pytest.raises(ValueError, match="same shape"):
        average_precision_at_k(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"shape \(n, K\)"):
        average_precision_at_k(torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="k must be >= 1"):
        average_precision_at_k(torch.zeros(3, 4), torch.zeros(3, 4), k=0)
    assert average_precision_at_k(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0,)


def test_accuracy_binary_and_multiclass():
    logits = torch.tensor([[2.0], [-1.0], [0.5], [-0.2]])
    target = torch.tensor([[1.0], [0.0], [0.0], [0.0]])
    assert accuracy(logits, target) == pytest.approx(0.75)
    multi = torch.tensor([[0.1, 2.0, 0.3], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert accuracy(multi, torch.tensor([1, 0, 0])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r"shape \(n, C\)"):
        accuracy(torch.zeros(3), torch.zeros(3))


@pytest.mark.parametrize("outputs", [1, 3])
def test_rmse_and_r2_match_sklearn(outputs):
    rng = np.random.default_rng(outputs)
    y = rng.standard_normal((50, outputs))
    pred = y + 0.3 * rng.standard_normal((50, outputs))
    assert rmse(torch.tensor(pred), torch.tensor(y)) == pytest.approx(np.sqrt(((pred - y) ** 2).mean()))
    assert r2_score(torch.tensor(pred), torch.tensor(y)) == pytest.approx(sk_r2(y, pred))


def test_r2_constant_target_follows_sklearn_force_finite():
    y = torch.ones(5, 2, dtype=torch.float64)
    pred = torch.ones(5, 2, dtype=torch.float64)
    pred[:, 1] += 0.5
    assert r2_score(pred, y) == pytest.approx(sk_r2(y.numpy(), pred.numpy()))
    assert r2_score(pred, y) == pytest.approx(0.5)


def test_task_metrics_keys_and_headline():
    assert set(task_metrics("binary", torch.zeros(4, 1), torch.zeros(4, 1))) == {"accuracy"}
    assert set(task_metrics("multiclass", torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))) == {"accuracy"}
    assert set(task_metrics("multilabel", torch.zeros(4, 3), torch.zeros(4, 3), k=5)) == {"map@5"}
    reg = task_metrics("regression", torch.zeros(4), torch.arange(4.0))
    assert set(reg) == {"rmse", "r2"}
    assert headline_metric("multilabel") == "map@10"
    assert headline_metric("regression") == "r2"
    with pytest.raises(ValueError, match="kind must be one of"):
        task_metrics("ranking", torch.zeros(2, 1), torch.zeros(2, 1))


class _Lookup(torch.nn.Module):
    """A 'model' that returns fixed outputs per task, indexed by the first input column."""

    def __init__(self, outputs: list[torch.Tensor]) -> None:
        super().__init__()
        self.outputs = outputs
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x, task):
        return self.outputs[task][x[:, 0].long()] * self.scale


def test_evaluate_per_task_mean_and_main():
    tasks = [TaskSpec("a", "binary", 1), TaskSpec("b", "regression", 1), TaskSpec("c", "multiclass", 3)]
    n = [4, 5, 3]
    xs = [torch.arange(k, dtype=torch.float32).reshape(-1, 1) for k in n]
    ys = [
        torch.tensor([[1.0], [0.0], [1.0], [1.0]]),
        torch.arange(5.0).reshape(-1, 1),
        torch.tensor([0, 1, 2]),
    ]
    split = TensorSplit(tasks, xs, ys)
    outs = [
        torch.tensor([[1.0], [-1.0], [-1.0], [2.0]]),  # 3 of 4 right
        torch.arange(5.0).reshape(-1, 1) + 0.5,  # rmse 0.5
        torch.eye(3),  # all right
    ]
    model = _Lookup(outs)
    model.train()
    result = evaluate(model, split, tasks, batch_size=2)
    assert model.training, "evaluate must restore the training mode"
    assert result["per_task"]["a"] == {"accuracy": pytest.approx(0.75)}
    assert result["per_task"]["b"]["rmse"] == pytest.approx(0.5)
    r2_b = 1 - 5 * 0.25 / 10.0
    assert result["per_task"]["b"]["r2"] == pytest.approx(r2_b)
    assert result["mean"]["accuracy"] == pytest.approx((0.75 + 1.0) / 2)
    assert result["main"] == pytest.approx((0.75 + r2_b + 1.0) / 3)


def test_evaluate_skips_tasks_without_samples():
    tasks = [TaskSpec("a", "binary", 1), TaskSpec("b", "binary", 1)]
    split = TensorSplit(tasks, [torch.zeros(2, 1), torch.zeros(0, 1)], [torch.ones(2, 1), torch.zeros(0, 1)])
    model = _Lookup([torch.ones(2, 1), torch.ones(1, 1)])
    result = evaluate(model, split, tasks)
    assert list(result["per_task"]) == ["a"]
    assert result["main"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="tasks must list"):
        evaluate(model, split, tasks[:1])


def test_pooled_explained_variance_is_sklearns_r2_of_the_pooled_samples():
    rng = np.random.default_rng(3)
    ys = [rng.normal(m, 1.0, (n, 1)) for m, n in ((0.0, 5), (3.0, 40), (-2.0, 7))]
    preds = [y + rng.normal(0, 0.5, y.shape) for y in ys]
    pooled = pooled_regression_metrics([torch.tensor(p) for p in preds], [torch.tensor(y) for y in ys])
    y_all, p_all = np.concatenate(ys), np.concatenate(preds)
    assert pooled["ev"] == pytest.approx(sk_r2(y_all, p_all), rel=1e-12)
    assert pooled["rmse"] == pytest.approx(float(np.sqrt(((y_all - p_all) ** 2).mean())), rel=1e-12)
    assert pooled["n"] == 52
    # It is not the mean of the per-task R^2, which the small tasks' noise dominates.
    per_task = np.mean([sk_r2(y, p) for y, p in zip(ys, preds)])
    assert abs(pooled["ev"] - per_task) > 0.05


def test_pooled_metrics_edge_cases():
    empty = pooled_regression_metrics([torch.zeros(0, 1)], [torch.zeros(0, 1)])
    assert empty["n"] == 0 and math.isnan(empty["ev"])
    constant = pooled_regression_metrics([torch.ones(3, 1)], [torch.ones(3, 1)])
    assert math.isnan(constant["ev"]) and constant["rmse"] == 0.0
    with pytest.raises(ValueError, match="same tasks"):
        pooled_regression_metrics([torch.ones(3, 1)], [])
    with pytest.raises(ValueError, match=r"outputs\[0\] and targets\[0\] must have the same shape"):
        pooled_regression_metrics([torch.ones(3, 1)], [torch.ones(2, 1)])


def test_evaluate_headline_of_regression_is_the_pooled_explained_variance_in_target_units():
    # Two tasks standardised with scale 10: RMSE comes back in the target's units, EV is unit-free.
    tasks = [TaskSpec("a", "regression", 1, target_scale=10.0), TaskSpec("b", "regression", 1, target_scale=10.0)]
    ys = [torch.tensor([[0.0], [1.0], [2.0]]), torch.tensor([[5.0], [6.0]])]
    outs = [y + 0.1 for y in ys]
    split = TensorSplit(tasks, [torch.arange(len(y), dtype=torch.float32).reshape(-1, 1) for y in ys], ys)
    result = evaluate(_Lookup(outs), split, tasks)
    y_all, o_all = torch.cat(ys).numpy(), torch.cat(outs).numpy()
    assert result["main"] == pytest.approx(sk_r2(y_all, o_all)) == pytest.approx(result["pooled"]["ev"])
    assert result["pooled"]["rmse"] == pytest.approx(1.0)  # 0.1 standardised units x 10
    assert result["per_task"]["a"]["rmse"] == pytest.approx(1.0)
    assert result["per_task"]["a"]["r2"] == pytest.approx(sk_r2(ys[0].numpy(), outs[0].numpy()))
    assert main_metric(tasks) == "ev"


def test_evaluate_main_of_mixed_kinds_counts_regression_tasks_with_the_pooled_ev():
    tasks = [TaskSpec("a", "binary", 1), TaskSpec("b", "regression", 1), TaskSpec("c", "regression", 1)]
    ys = [torch.tensor([[1.0], [0.0]]), torch.tensor([[0.0], [2.0]]), torch.tensor([[4.0], [6.0]])]
    outs = [torch.tensor([[1.0], [1.0]]), ys[1] + 1.0, ys[2]]
    split = TensorSplit(tasks, [torch.arange(2, dtype=torch.float32).reshape(-1, 1)] * 3, ys)
    result = evaluate(_Lookup(outs), split, tasks)
    ev = sk_r2(torch.cat(ys[1:]).numpy(), torch.cat(outs[1:]).numpy())
    assert result["pooled"]["ev"] == pytest.approx(ev)
    assert result["main"] == pytest.approx((0.5 + 2 * ev) / 3)
    assert main_metric(tasks) == "main" and main_metric(tasks[:1]) == "accuracy"


def test_task_spec_target_scale_is_checked():
    with pytest.raises(ValueError, match="target_scale must be finite and > 0"):
        TaskSpec("a", "regression", 1, target_scale=0.0)
    with pytest.raises(ValueError, match="applies to regression tasks"):
        TaskSpec("a", "binary", 1, target_scale=2.0)
    with pytest.raises(TypeError, match="target_scale must be a float"):
        TaskSpec("a", "regression", 1, target_scale="2")
