"""Evaluation metrics per task kind, and evaluation of a model on a split.

Definitions (``n`` samples, ``K`` outputs):

- **accuracy** (binary, multiclass): fraction of samples whose prediction equals the label; a
  binary prediction is ``logit > 0``, a multiclass one the arg-max of the logits.
- **mAP@k** (multilabel), the definition of the TAAN reference code: for every sample take the
  ``k' = min(k, K)`` classes with the highest scores (ties broken towards the lower class index),
  and compute the average precision of those ``k'`` scores against their labels exactly as
  ``sklearn.metrics.average_precision_score`` does (tied scores form one threshold). A sample
  with no positive label among its top ``k'`` counts 0. The task's mAP@k is the mean over its
  samples; the data set's the mean over tasks. Positives outside the top ``k'`` do not lower the
  score (unlike a recall-normalised AP@k).
- **RMSE** (regression): ``sqrt(mean((output - target)^2))`` over all samples and outputs.
- **R^2** (regression): ``1 - SSE_j / SST_j`` per output ``j``, averaged over outputs (sklearn's
  ``r2_score`` with ``multioutput="uniform_average"``); an output with constant targets scores 1
  if it is predicted exactly and 0 otherwise.
- **Pooled explained variance** (regression, over tasks): ``1 - SSE / SST`` over every output
  of every regression task's samples, with SST taken around the grand mean of those targets;
  on one output per task this is the multi-task literature's ``1 - MSE / Var(y)`` of the pooled
  test set. **Pooled RMSE** is ``sqrt(SSE / n)`` over the same values.

RMSE is reported in the target's units: a task whose labels were standardised
(``TaskSpec.target_scale`` != 1) has its errors multiplied back by that scale.

The headline metric of a task is mAP@k for multilabel, accuracy for binary and multiclass, R^2
for regression. The headline of a split (``"main"``, higher is better; the trainer's early
stopping and checkpoint choice) is the pooled explained variance for regression data sets: a
per-task R^2 on the handful of validation samples of a small task is noise (docs/data.md).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from taan_core._validation import check_int

__all__ = [
    "average_precision_at_k",
    "mean_average_precision_at_k",
    "accuracy",
    "rmse",
    "r2_score",
    "task_metrics",
    "pooled_regression_metrics",
    "headline_metric",
    "main_metric",
    "evaluate",
]


def average_precision_at_k(scores: Tensor, labels: Tensor, k: int = 10) -> Tensor:
    """Per-sample average precision over each sample's top-k scored classes.

    Parameters
    ----------
    scores : Tensor of shape (n, K)
        Scores (logits or probabilities; only their order matters).
    labels : Tensor of shape (n, K)
        0/1 labels.
    k : int
        Number of top classes; ``min(k, K)`` is used.

    Returns
    -------
    float64 Tensor of shape (n,)
        AP of every sample; 0 where no positive is among its top ``k``.
    """
    scores, labels = _check_pair(scores, labels, "scores", "labels")
    check_int(k, "k", minimum=1)
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape (n, K), got {tuple(scores.shape)}")
    n, num_classes = scores.shape
    kk = min(k, num_classes)
    if n == 0:
        return torch.zeros(0, dtype=torch.float64)
    s = scores.detach().to(torch.float64)
    order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :kk]
    top_s = torch.gather(s, 1, order)
    top_y = torch.gather(labels.detach().to(torch.float64), 1, order)
    ranks = torch.arange(1, kk + 1, dtype=torch.float64)
    precision = top_y.cumsum(dim=1) / ranks
    # sklearn evaluates precision only at distinct thresholds: a run of tied scores counts as one
    # step, and each positive in it gets the precision at the run's end.
    is_end = torch.ones_like(top_s, dtype=torch.bool)
    is_end[:, :-1] = top_s[:, :-1] != top_s[:, 1:]
    position = torch.arange(kk).expand(n, kk)
    end_at = torch.where(is_end, position, torch.full_like(position, kk))
    end_at = torch.flip(torch.cummin(torch.flip(end_at, [1]), dim=1).values, [1])
    run_precision = torch.gather(precision, 1, end_at)
    positives = top_y.sum(dim=1)
    ap = (top_y * run_precision).sum(dim=1) / positives.clamp(min=1.0)
    return torch.where(positives > 0, ap, torch.zeros_like(ap))


def mean_average_precision_at_k(scores: Tensor, labels: Tensor, k: int = 10) -> float:
    """Mean over samples of :func:`average_precision_at_k` (0.0 for no samples)."""
    ap = average_precision_at_k(scores, labels, k)
    return float(ap.mean()) if ap.numel() else 0.0


def accuracy(output: Tensor, target: Tensor) -> float:
    """Accuracy of logits ``output`` against labels.

    Parameters
    ----------
    output : Tensor of shape (n, 1) (binary logits) or (n, C) with C >= 2 (multiclass logits)
    target : Tensor of shape (n, 1) in {0, 1} (binary) or LongTensor (n,) (multiclass)
    """
    output = torch.as_tensor(output).detach()
    target = torch.as_tensor(target).detach()
    if output.ndim != 2 or output.shape[0] != target.shape[0]:
        raise ValueError(
            f"output must have shape (n, C) with n = len(target) = {target.shape[0] if target.ndim else 0}, "
            f"got {tuple(output.shape)}"
        )
    if output.shape[0] == 0:
        return 0.0
    if output.shape[1] == 1:
        pred = (output[:, 0] > 0).to(torch.float64)
        correct = pred == target.reshape(-1).to(torch.float64)
    else:
        correct = output.argmax(dim=1) == target.reshape(-1).long()
    return float(correct.to(torch.float64).mean())


def rmse(output: Tensor, target: Tensor) -> float:
    """Root mean squared error over all samples and outputs; output and target (n, K)."""
    output, target = _check_pair(output, target, "output", "target")
    if output.numel() == 0:
        return 0.0
    diff = output.detach().to(torch.float64) - target.detach().to(torch.float64)
    return float(diff.pow(2).mean().sqrt())


def r2_score(output: Tensor, target: Tensor) -> float:
    """Coefficient of determination averaged over outputs; output and target (n, K) or (n,)."""
    output, target = _check_pair(output, target, "output", "target")
    o = output.detach().to(torch.float64).reshape(output.shape[0], -1)
    y = target.detach().to(torch.float64).reshape(target.shape[0], -1)
    if y.shape[0] == 0:
        return 0.0
    sse = (o - y).pow(2).sum(dim=0)
    sst = (y - y.mean(dim=0)).pow(2).sum(dim=0)
    # sklearn's force_finite convention for constant targets: exact prediction 1, otherwise 0.
    r2 = torch.where(sst > 0, 1.0 - sse / torch.where(sst > 0, sst, torch.ones_like(sst)),
                     (sse == 0).to(torch.float64))
    return float(r2.mean())


def headline_metric(kind: str, k: int = 10) -> str:
    """Name of the headline metric of a task kind (higher is better)."""
    names = {"binary": "accuracy", "multiclass": "accuracy", "multilabel": f"map@{k}", "regression": "r2"}
    if kind not in names:
        raise ValueError(f"kind must be one of {', '.join(names)}, got {kind!r}")
    return names[kind]


def main_metric(tasks: Sequence) -> str:
    """Name of a split's headline (``evaluate(...)["main"]``) for the task specs ``tasks``.

    ``"ev"`` (pooled explained variance) when every task is a regression task, the kind's
    headline when all tasks share one, ``"main"`` for a mix of kinds.
    """
    kinds = {t.kind for t in tasks}
    if kinds == {"regression"}:
        return "ev"
    names = {headline_metric(kind) for kind in kinds}
    return names.pop() if len(names) == 1 else "main"


def pooled_regression_metrics(outputs: Sequence[Tensor], targets: Sequence[Tensor],
                              scales: Sequence[float] | None = None) -> dict[str, float]:
    """Explained variance and RMSE over the samples of several regression tasks, pooled.

    Parameters
    ----------
    outputs, targets : sequences of Tensors of shape (n_t, K_t)
        Predictions and targets of each task (``n_t`` may be 0).
    scales : sequence of float, optional
        Each task's ``target_scale``: outputs and targets are multiplied by it first, so the
        RMSE is in the target's units (the explained variance does not depend on it when all
        tasks share one scale).

    Returns
    -------
    dict
        ``{"ev": 1 - SSE / SST, "rmse": sqrt(SSE / n), "n": n}`` with SST around the grand mean
        of all targets; ``ev`` is NaN when there are no samples or the targets are constant.
    """
    if len(outputs) != len(targets):
        raise ValueError(f"outputs and targets must list the same tasks, got {len(outputs)} and {len(targets)}")
    scales = [1.0] * len(outputs) if scales is None else list(scales)
    out_all, y_all = [], []
    for t, (o, y, s) in enumerate(zip(outputs, targets, scales)):
        o, y = _check_pair(o, y, f"outputs[{t}]", f"targets[{t}]")
        out_all.append(o.detach().to(torch.float64).reshape(-1) * s)
        y_all.append(y.detach().to(torch.float64).reshape(-1) * s)
    o = torch.cat(out_all) if out_all else torch.zeros(0, dtype=torch.float64)
    y = torch.cat(y_all) if y_all else torch.zeros(0, dtype=torch.float64)
    n = int(y.numel())
    if n == 0:
        return {"ev": float("nan"), "rmse": float("nan"), "n": 0}
    sse = float((o - y).pow(2).sum())
    sst = float((y - y.mean()).pow(2).sum())
    ev = 1.0 - sse / sst if sst > 0 else float("nan")
    return {"ev": ev, "rmse": (sse / n) ** 0.5, "n": n}


def task_metrics(kind: str, output: Tensor, target: Tensor, *, k: int = 10,
                 target_scale: float = 1.0) -> dict[str, float]:
    """Metrics of one task.

    Parameters
    ----------
    kind : {"binary", "multilabel", "multiclass", "regression"}
    output : Tensor of shape (n, K)
        The model's output for the task (logits or regression values).
    target : Tensor
        Labels in the layout of ``kind`` (see :mod:`taan_core.data.base`).
    k : int
        The k of mAP@k.
    target_scale : float
        Regression: the task's ``TaskSpec.target_scale``; the RMSE is multiplied by it.

    Returns
    -------
    dict
        binary, multiclass: ``{"accuracy"}``; multilabel: ``{"map@k"}``; regression:
        ``{"rmse", "r2"}``.
    """
    headline_metric(kind, k)
    output = torch.as_tensor(output).detach().float()
    if kind in ("binary", "multiclass"):
        return {"accuracy": accuracy(output, target)}
    if kind == "multilabel":
        return {f"map@{k}": mean_average_precision_at_k(output, target, k)}
    target = torch.as_tensor(target)
    if target.ndim == 1:
        target = target.reshape(-1, 1)
    if output.ndim == 1:
        output = output.reshape(-1, 1)
    return {"rmse": rmse(output, target) * float(target_scale), "r2": r2_score(output, target)}


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data_split,
    tasks: Sequence,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    *,
    k: int = 10,
) -> dict:
    """Evaluate ``model`` on every task of a split.

    Parameters
    ----------
    model : nn.Module
        Any model with ``forward(x, task: int) -> (N, num_outputs)``; put in eval mode for the
        call and restored afterwards.
    data_split : MultiTaskSplit
    tasks : sequence of TaskSpec
        The data set's task specs (kind and name of every task).
    batch_size : int
        Samples per forward pass.
    device : torch.device or str
        Where the model lives; inputs are moved there.
    k : int
        The k of mAP@k.

    Returns
    -------
    dict
        ``{"per_task": {name: {metric: value}}, "mean": {metric: mean over tasks}, "main": ...}``
        and, when some task is a regression task, ``"pooled": {"ev", "rmse", "n"}`` over the
        regression tasks' samples (:func:`pooled_regression_metrics`). ``main`` is the mean over
        tasks of each task's headline metric, except that every regression task counts with the
        pooled explained variance: for a regression data set ``main`` is that explained
        variance (:func:`main_metric` names it). Tasks without samples in the split are left
        out.
    """
    check_int(batch_size, "batch_size", minimum=1)
    if len(tasks) != data_split.num_tasks:
        raise ValueError(f"tasks must list the split's {data_split.num_tasks} tasks, got {len(tasks)}")
    was_training = model.training
    model.eval()
    per_task: dict[str, dict[str, float]] = {}
    headline: list[float] = []
    regression: tuple[list, list, list] = ([], [], [])
    try:
        for t, spec in enumerate(tasks):
            n = data_split.num_samples(t)
            if n == 0:
                continue
            outputs, targets = [], []
            for start in range(0, n, batch_size):
                index = torch.arange(start, min(start + batch_size, n))
                x, y = data_split.get(t, index)
                outputs.append(model(x.to(device), t).float().cpu())
                targets.append(y)
            output, target = torch.cat(outputs), torch.cat(targets)
            scale = getattr(spec, "target_scale", 1.0)
            metrics = task_metrics(spec.kind, output, target, k=k, target_scale=scale)
            per_task[spec.name] = metrics
            if spec.kind == "regression":
                for part, value in zip(regression, (output.reshape(n, -1), target.reshape(n, -1), scale)):
                    part.append(value)
            else:
                headline.append(metrics[headline_metric(spec.kind, k)])
    finally:
        model.train(was_training)
    names = sorted({m for v in per_task.values() for m in v})
    mean = {m: sum(v[m] for v in per_task.values() if m in v) / sum(m in v for v in per_task.values()) for m in names}
    result: dict = {"per_task": per_task, "mean": mean}
    if regression[0]:
        pooled = pooled_regression_metrics(*regression)
        result["pooled"] = pooled
        headline += [pooled["ev"]] * len(regression[0])
    result["main"] = sum(headline) / len(headline) if headline else float("nan")
    return result


def _check_pair(a, b, name_a: str, name_b: str) -> tuple[Tensor, Tensor]:
    a = torch.as_tensor(a)
    b = torch.as_tensor(b)
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return a, b
