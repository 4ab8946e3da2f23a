"""Linear baselines: what a user would fit before a neural network, three ways.

On a :class:`~taan_core.data.MultiTaskData` with regression tasks, ridge regression; with binary
or multiclass tasks, L2-regularised logistic regression (sigmoid for binary, softmax for
multiclass). Inputs are flattened to (n, D) and used as the data set gives them (the study's data
sets standardise their numeric inputs on the training rows already). Three ways to share:

- ``ridge-task``: one model per task, fitted on that task's own samples;
- ``ridge-pooled``: one model on all tasks' training samples pooled; it ignores the task;
- ``ridge-pooled-intercept``: shared slopes on the pooled samples plus one intercept per task,
  the random-intercept-like (fixed-effects) model.

Every intercept is unpenalised, in all three: only the slopes are shrunk. For ridge that is
scikit-learn's ``Ridge(fit_intercept=True)``; with one intercept per task it is the same fit on
the data centred on each task's own training means (the slopes), then
``intercept_t = mean(y_t) - mean(x_t) @ w`` (Frisch-Waugh-Lovell: exactly one-hot task columns
left out of the penalty). Ridge is solved in closed form through one SVD of the centred design,
which gives the whole grid of alpha at once. Logistic regression minimises scikit-learn's
objective ``C * sum_i loss_i + ||W||^2 / 2`` with ``LogisticRegression``'s lbfgs convention of an
unpenalised intercept, here one intercept (per class) per group of samples: the whole data set
for ``*-task`` and ``*-pooled``, each task for ``*-pooled-intercept`` (L-BFGS through scipy, warm
started along the grid).

Selection uses the train and validation splits only; models are refitted on the training split
alone (validation is never merged into it) and the test split is never read:

- regression: the pooled validation mean squared error over every task's validation samples
  (the pooled explained variance, equivalently); ties go to the larger alpha;
- classification: the mean over tasks of the validation accuracy; ties go to the lower mean
  validation log-loss;
- ``*-task``: a task with at least :data:`MIN_TASK_VAL` validation samples gets its own penalty,
  chosen on its own validation samples by the same criterion; the other tasks share one penalty,
  the one that scores best on the pooled criterion when every task uses it.

Multilabel tasks are not supported (one clear ValueError).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from taan_core._validation import check_int

__all__ = ["DEFAULT_LINEAR_GRID", "LINEAR_BASELINES", "MIN_TASK_VAL", "LinearBaseline", "fit_linear",
           "linear_display_name", "linear_family"]

# Name -> (display name with regression tasks, display name with classification tasks).
LINEAR_BASELINES: dict[str, tuple[str, str]] = {
    "ridge-task": ("Ridge per task", "Logistic per task"),
    "ridge-pooled": ("Ridge pooled", "Logistic pooled"),
    "ridge-pooled-intercept": ("Ridge pooled + task intercepts", "Logistic pooled + task intercepts"),
}
# The penalty grid: alpha of ridge, C of logistic regression.
DEFAULT_LINEAR_GRID: tuple[float, ...] = tuple(float(v) for v in np.logspace(-4, 4, 13))
# Fewest validation samples for a task of ``*-task`` to choose its own penalty.
MIN_TASK_VAL = 5
_SHARINGS = ("task", "pooled", "pooled-intercept")
_CLASSIFICATION = ("binary", "multiclass")


class LinearBaseline(nn.Module):
    r"""One affine map per task: :math:`y = x W_t + b_t` on the flattened input.

    The weights are buffers (the model is fitted in closed form or by L-BFGS, not by gradient
    steps); :func:`fit_linear` fills them. With ``sharing="pooled"`` every task holds the same
    ``W`` and ``b``; with ``"pooled-intercept"`` the same ``W`` and its own ``b_t``.

    Parameters
    ----------
    in_features : int
        D, the size of a flattened input.
    output_dims : sequence of int
        K_t of every task (1 for regression with one target and for binary logits, the number of
        classes for multiclass logits); ``len(output_dims)`` is the number of tasks T.
    sharing : {"task", "pooled", "pooled-intercept"}
        What the tasks share (only :meth:`num_parameters` depends on it).

    Attributes
    ----------
    weight : Tensor of shape (T, D, K)
        K = max(output_dims); columns past K_t are zero and not returned.
    bias : Tensor of shape (T, K)
    """

    def __init__(self, in_features: int, output_dims: Sequence[int], sharing: str = "task", *,
                 device=None, dtype=None) -> None:
        super().__init__()
        self.in_features = check_int(in_features, "in_features", minimum=1)
        if isinstance(output_dims, (str, bytes)) or not isinstance(output_dims, Sequence) or not output_dims:
            raise TypeError(f"output_dims must be a non-empty list of ints, got {output_dims!r}")
        self.output_dims = [check_int(k, f"output_dims[{i}]", minimum=1) for i, k in enumerate(output_dims)]
        if sharing not in _SHARINGS:
            raise ValueError(f"sharing must be one of {', '.join(_SHARINGS)}, got {sharing!r}")
        self.sharing = sharing
        kw = {"device": device, "dtype": dtype or torch.float32}
        num_tasks, width = len(self.output_dims), max(self.output_dims)
        self.register_buffer("weight", torch.empty(num_tasks, self.in_features, width, **kw))
        self.register_buffer("bias", torch.empty(num_tasks, width, **kw))
        self.reset_parameters()

    @property
    def num_tasks(self) -> int:
        """Number of tasks T."""
        return len(self.output_dims)

    def reset_parameters(self) -> None:
        """Zero weights and biases (an unfitted baseline predicts 0)."""
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    def num_parameters(self) -> int:
        """Number of distinct fitted values (shared slopes count once)."""
        k = self.output_dims[0]
        if self.sharing == "pooled":
            return (self.in_features + 1) * k
        if self.sharing == "pooled-intercept":
            return self.in_features * k + self.num_tasks * k
        return sum((self.in_features + 1) * k for k in self.output_dims)

    def forward(self, x: Tensor, task: int | Tensor) -> Tensor | list[Tensor]:
        """Outputs of task(s) ``task`` for inputs ``x``.

        Parameters
        ----------
        x : Tensor of shape (N, *input_shape)
            Flattened to (N, D).
        task : int or LongTensor of shape (N,)

        Returns
        -------
        Tensor of shape (N, K_task) for an int task; for a LongTensor a list of T tensors,
        entry t of shape (N_t, K_t) holding the rows of task t's samples in batch order.
        """
        from taan_core.models._base import _check_task, _task_index

        if x.ndim < 1 or x[0].numel() != self.in_features:
            raise ValueError(f"x must have shape (N, ...) with {self.in_features} features per sample, "
                             f"got {tuple(x.shape)}")
        h = x.reshape(x.shape[0], self.in_features).to(self.weight.dtype)
        task = _check_task(task, h.shape[0], self.num_tasks, h.device)
        if isinstance(task, int):
            k = self.output_dims[task]
            return torch.addmm(self.bias[task, :k], h, self.weight[task, :, :k])
        groups = _task_index(task, self.num_tasks)
        parts = h.index_select(0, groups.order).split(groups.counts)
        return [torch.addmm(self.bias[t, :k], part, self.weight[t, :, :k])
                for t, (part, k) in enumerate(zip(parts, self.output_dims))]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, output_dims={self.output_dims}, sharing={self.sharing!r}"


# --------------------------------------------------------------------------- data

def linear_family(data) -> str:
    """The baselines' family on ``data``: "ridge" (regression tasks) or "logistic" (binary and
    multiclass tasks).

    Raises
    ------
    ValueError
        One line, for multilabel tasks or a mix of regression and classification tasks.
    """
    kinds = [t.kind for t in data.tasks]
    for t, kind in enumerate(kinds):
        if kind == "multilabel":
            raise ValueError(f"linear baselines fit regression, binary and multiclass tasks; {data.name} task {t} "
                             f"({data.tasks[t].name!r}) is multilabel")
    if "regression" in kinds and any(k in _CLASSIFICATION for k in kinds):
        raise ValueError(f"linear baselines need tasks of one family; {data.name} mixes regression and "
                         "classification tasks")
    return "ridge" if kinds[0] == "regression" else "logistic"


def _arrays(data, which: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every task's (x (n, D) float64, y) of one split; y (n, K) float64 or (n,) int64 classes."""
    split = data.split(which)
    out = []
    for t, spec in enumerate(data.tasks):
        n = split.num_samples(t)
        if n:
            x, y = split.get(t, torch.arange(n))
        else:
            x, y = torch.zeros(0, *data.input_shape), spec.empty_labels()
        x = x.reshape(n, int(np.prod(data.input_shape))).double().numpy()
        if spec.kind == "regression":
            y = y.reshape(n, spec.num_outputs).double().numpy()
        else:
            y = y.reshape(n).long().numpy()
        out.append((x, y))
    return out


# --------------------------------------------------------------------------- ridge

def _ridge_path(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Ridge slopes of centred ``x`` (n, D), ``y`` (n, K) for every alpha: (G, D, K).

    One thin SVD x = U S V^T gives w(alpha) = V diag(s / (s^2 + alpha)) U^T y.
    """
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    uty = u.T @ y
    shrink = s[None, :] / (s[None, :] ** 2 + grid[:, None])
    return np.einsum("rd,gr,rk->gdk", vt, shrink, uty)


def _fit_ridge(train, val, sharing: str, widths: list[int], grid: np.ndarray):
    """Slopes (G, T, D, K) and intercepts (G, T, K) over the grid, and val predictions per task."""
    num_tasks, width = len(train), max(widths)
    d = train[0][0].shape[1]
    if sharing == "task":
        weight = np.zeros((len(grid), num_tasks, d, width))
        bias = np.zeros((len(grid), num_tasks, width))
        for t, (x, y) in enumerate(train):
            mx, my = x.mean(axis=0), y.mean(axis=0)
            w = _ridge_path(x - mx, y - my, grid)
            weight[:, t, :, :widths[t]] = w
            bias[:, t, :widths[t]] = my[None, :] - np.einsum("d,gdk->gk", mx, w)
    else:
        if sharing == "pooled":
            pooled_x = np.concatenate([x for x, _ in train])
            pooled_y = np.concatenate([y for _, y in train])
            means = [(pooled_x.mean(axis=0), pooled_y.mean(axis=0))] * num_tasks
        else:
            # Each task centred on its own training means: the slopes of the model with one
            # unpenalised intercept per task.
            means = [(x.mean(axis=0), y.mean(axis=0)) for x, y in train]
        xc = np.concatenate([x - mx for (x, _), (mx, _) in zip(train, means)])
        yc = np.concatenate([y - my for (_, y), (_, my) in zip(train, means)])
        w = _ridge_path(xc, yc, grid)
        weight = np.repeat(w[:, None], num_tasks, axis=1)
        bias = np.stack([my[None, :] - np.einsum("d,gdk->gk", mx, w) for mx, my in means], axis=1)
    preds = [np.einsum("nd,gdk->gnk", x, weight[:, t, :, :widths[t]]) + bias[:, t, None, :widths[t]]
             for t, (x, _) in enumerate(val)]
    return weight, bias, preds


# --------------------------------------------------------------------------- logistic

def _logistic_loss(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample loss (n,) and its gradient in the logits (n, K): sigmoid for K = 1, else softmax."""
    if z.shape[1] == 1:
        t = y.astype(np.float64)[:, None]
        loss = np.logaddexp(0.0, z) - t * z
        # expit written through tanh: no overflow warning for large |z|.
        return loss[:, 0], 0.5 * (1.0 + np.tanh(0.5 * z)) - t
    zmax = z.max(axis=1, keepdims=True)
    lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
    grad = np.exp(z - lse[:, None])
    grad[np.arange(z.shape[0]), y] -= 1.0
    return lse - z[np.arange(z.shape[0]), y], grad


def _logistic_path(x: np.ndarray, y: np.ndarray, group: np.ndarray, num_groups: int, width: int,
                   grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """L2 logistic regression over the grid of C: slopes (G, D, K), intercepts (G, num_groups, K).

    Minimises ``mean_i loss_i + ||W||^2 / (2 C n)`` (scikit-learn's objective divided by C n),
    intercepts unpenalised, one per group and class. Warm started from the previous C.
    """
    from scipy.optimize import minimize

    n, d = x.shape
    onehot = np.zeros((n, num_groups))
    onehot[np.arange(n), group] = 1.0
    params = np.zeros(d * width + num_groups * width)
    weights, biases = [], []
    for c in np.sort(grid):
        def objective(p: np.ndarray, c: float = float(c)) -> tuple[float, np.ndarray]:
            w, b = p[:d * width].reshape(d, width), p[d * width:].reshape(num_groups, width)
            loss, g = _logistic_loss(x @ w + onehot @ b, y)
            grad_w = x.T @ g / n + w / (c * n)
            return float(loss.mean() + (w * w).sum() / (2 * c * n)), np.concatenate(
                [grad_w.ravel(), (onehot.T @ g / n).ravel()])

        params = minimize(objective, params, jac=True, method="L-BFGS-B",
                          options={"maxiter": 2000, "gtol": 1e-9, "ftol": 1e-13}).x
        weights.append(params[:d * width].reshape(d, width))
        biases.append(params[d * width:].reshape(num_groups, width))
    order = np.argsort(np.argsort(grid))  # back to the caller's grid order
    return np.stack(weights)[order], np.stack(biases)[order]


def _fit_logistic(train, val, sharing: str, widths: list[int], grid: np.ndarray):
    num_tasks, width = len(train), max(widths)
    d = train[0][0].shape[1]
    if sharing == "task":
        weight = np.zeros((len(grid), num_tasks, d, width))
        bias = np.zeros((len(grid), num_tasks, width))
        for t, (x, y) in enumerate(train):
            w, b = _logistic_path(x, y, np.zeros(len(y), dtype=np.int64), 1, widths[t], grid)
            weight[:, t, :, :widths[t]], bias[:, t, :widths[t]] = w, b[:, 0]
    else:
        if len(set(widths)) > 1:
            raise ValueError(f"pooled logistic regression needs every task to have the same classes, got output "
                             f"sizes {sorted(set(widths))}")
        x_all = np.concatenate([x for x, _ in train])
        y_all = np.concatenate([y for _, y in train])
        task_of = np.concatenate([np.full(len(y), t) for t, (_, y) in enumerate(train)])
        groups = task_of if sharing == "pooled-intercept" else np.zeros_like(task_of)
        w, b = _logistic_path(x_all, y_all, groups, num_tasks if sharing == "pooled-intercept" else 1, width, grid)
        weight = np.repeat(w[:, None], num_tasks, axis=1)
        bias = b if sharing == "pooled-intercept" else np.repeat(b, num_tasks, axis=1)
    preds = [np.einsum("nd,gdk->gnk", x, weight[:, t, :, :widths[t]]) + bias[:, t, None, :widths[t]]
             for t, (x, _) in enumerate(val)]
    return weight, bias, preds


# --------------------------------------------------------------------------- selection

def _scores(family: str, preds: list[np.ndarray], val) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per task and grid value (T, G): sum of squared errors and counts (ridge) or accuracy and
    log-loss (logistic); NaN where a task has no validation samples."""
    num_tasks, g = len(val), preds[0].shape[0]
    first, second = np.full((num_tasks, g), np.nan), np.full((num_tasks, g), np.nan)
    count = np.array([len(y) for _, y in val], dtype=np.float64)
    for t, (p, (_, y)) in enumerate(zip(preds, val)):
        if not len(y):
            continue
        if family == "ridge":
            first[t] = ((p - y[None]) ** 2).sum(axis=(1, 2))
            continue
        for i in range(g):
            loss, _ = _logistic_loss(p[i], y)
            hit = (p[i][:, 0] > 0) == (y == 1) if p.shape[2] == 1 else p[i].argmax(axis=1) == y
            first[t, i], second[t, i] = hit.mean(), loss.mean()
    return first, second, count


def _best(family: str, primary: np.ndarray, secondary: np.ndarray, grid: np.ndarray) -> int:
    """Index of the best grid value: lowest MSE (ties: larger alpha) or highest accuracy (ties:
    lower log-loss, then smaller C)."""
    if family == "ridge":
        keys = [(primary[i], -grid[i]) for i in range(len(grid))]
    else:
        keys = [(-primary[i], secondary[i], grid[i]) for i in range(len(grid))]
    return min(range(len(grid)), key=lambda i: keys[i])


def _check_grid(grid) -> np.ndarray:
    values = np.asarray(DEFAULT_LINEAR_GRID if grid is None else grid, dtype=np.float64)
    if values.ndim != 1 or not values.size or not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError(f"grid must be a non-empty list of finite values > 0, got {np.asarray(grid).tolist()}")
    if len(set(values.tolist())) != values.size:
        raise ValueError(f"grid must not repeat values, got {values.tolist()}")
    return values


def fit_linear(data, kind: str = "ridge-task", *, grid: Sequence[float] | None = None
               ) -> tuple[LinearBaseline, dict[str, Any]]:
    """Fit a linear baseline on the training split, its penalty chosen on the validation split.

    Parameters
    ----------
    data : MultiTaskData
        Regression tasks (ridge) or binary / multiclass tasks (logistic regression).
    kind : {"ridge-task", "ridge-pooled", "ridge-pooled-intercept"}
        How the tasks share the model (module docstring). On classification tasks the same names
        fit logistic regression; ``"logistic-task"`` etc. are accepted as their aliases there.
    grid : sequence of float, optional
        Penalties tried: alpha of ridge, C of logistic regression (default
        :data:`DEFAULT_LINEAR_GRID`, 13 values from 1e-4 to 1e4).

    Returns
    -------
    model : LinearBaseline
        float32 weights (T, D, K) and biases (T, K), in evaluation mode.
    info : dict
        ``kind``, ``model`` (display name), ``family`` ("ridge" or "logistic"), ``penalty``
        ("alpha" or "C"), ``grid``, ``criterion``, ``val_scores`` (the criterion over the grid with
        every task at the same penalty: pooled validation MSE, or mean validation accuracy),
        ``chosen`` (the shared penalty), ``chosen_per_task`` (the penalty of every task: its own
        for ``*-task`` tasks with at least :data:`MIN_TASK_VAL` validation samples, else the
        shared one), ``own_choice`` (which tasks chose their own) and ``fit_seconds``.

    Raises
    ------
    ValueError
        For an unknown kind, multilabel or mixed task families, a bad grid, or no validation
        samples to choose on.
    """
    tic = time.perf_counter()
    names = {**{k: k for k in LINEAR_BASELINES}, **{k.replace("ridge-", "logistic-"): k for k in LINEAR_BASELINES}}
    if kind not in names:
        raise ValueError(f"kind must be one of {', '.join(LINEAR_BASELINES)}, got {kind!r}")
    family = linear_family(data)
    if kind.startswith("logistic-") and family == "ridge":
        raise ValueError(f"{kind} fits classification tasks; {data.name}'s tasks are regression: use {names[kind]}")
    kind = names[kind]
    sharing = kind.split("-", 1)[1]
    values = _check_grid(grid)
    train, val = _arrays(data, "train"), _arrays(data, "val")
    counts = np.array([len(y) for _, y in val])
    if not counts.sum():
        raise ValueError(f"{data.name} has no validation samples to choose the penalty on")
    widths = [t.num_outputs for t in data.tasks]
    if family == "ridge":
        if sharing != "task" and len(set(widths)) > 1:
            raise ValueError(f"pooled ridge needs every task to have the same number of targets, got "
                             f"{sorted(set(widths))}")
        weight, bias, preds = _fit_ridge(train, val, sharing, widths, values)
    else:
        weight, bias, preds = _fit_logistic(train, val, sharing, widths, values)
    primary, secondary, size = _scores(family, preds, val)
    has_val = counts > 0
    if family == "ridge":
        pooled = np.nansum(primary, axis=0) / (size * np.array(widths)).sum()
        curve, tie = pooled, pooled
        task_primary = primary / np.where(has_val, size * np.array(widths), 1)[:, None]
    else:
        curve, tie = primary[has_val].mean(axis=0), secondary[has_val].mean(axis=0)
        task_primary = primary
    shared = _best(family, curve, tie, values)
    pick = np.full(len(train), shared)
    own = (counts >= MIN_TASK_VAL) if sharing == "task" else np.zeros(len(train), dtype=bool)
    for t in np.flatnonzero(own):
        pick[t] = _best(family, task_primary[t], secondary[t], values)
    rows = np.arange(len(train))
    model = LinearBaseline(weight.shape[2], widths, sharing)
    model.weight.copy_(torch.from_numpy(weight[pick, rows]))
    model.bias.copy_(torch.from_numpy(bias[pick, rows]))
    model.eval()
    info = {
        "kind": kind, "model": linear_display_name(kind, family), "family": family,
        "penalty": "alpha" if family == "ridge" else "C", "grid": values.tolist(),
        "criterion": ("pooled validation mean squared error" if family == "ridge"
                      else "mean validation accuracy over tasks (ties: mean validation log-loss)"),
        "val_scores": [float(v) for v in curve], "chosen": float(values[shared]),
        "chosen_per_task": [float(values[i]) for i in pick], "own_choice": own.tolist(),
        "fit_seconds": time.perf_counter() - tic,
    }
    return model, info


def linear_display_name(kind: str, family: str) -> str:
    """The table name of baseline ``kind`` for a ``family`` ("ridge" or "logistic") of tasks."""
    if kind not in LINEAR_BASELINES or family not in ("ridge", "logistic"):
        raise ValueError(f"expected a kind among {', '.join(LINEAR_BASELINES)} and family ridge or logistic, "
                         f"got {kind!r}, {family!r}")
    return LINEAR_BASELINES[kind][family == "logistic"]
