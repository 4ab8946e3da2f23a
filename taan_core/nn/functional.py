"""The task-adaptive activation as a pure function: a fast segment lookup and the naive reference.

Task ``t``'s activation is

    F_t(z) = relu(z) + sum_m alpha[t, m] * relu(hinges[m] - z).

F_t is piecewise linear. The M hinges and 0 cut the real line into M + 2 segments, and on each
segment every task's F_t is ``slope * z + intercept``. :func:`task_adaptive_activation` builds the
(T, M + 2) slope and intercept tables from ``alpha`` and the sorted ``hinges`` (a few tiny
operations), then evaluates F with one lookup per element: a search among the sorted breakpoints
and a gather from the tables. Its backward pass gathers the slope for the gradient of ``z`` and
sums ``grad`` and ``grad * z`` per (task, segment); the gradients of ``alpha`` and ``hinges``
follow from those (T, M + 2) sums in closed form (prefix sums over the segments). The cost per
element does not grow with M, and the pass saves only ``z`` and a one-byte segment index per
element (plus the tiny parameters).

Kinks follow torch's autograd of the naive form: relu'(0) = 0, so the relu is inactive at z = 0,
and relu(b - z) is inactive at z = b. An element at a breakpoint therefore belongs to the segment
left of 0 and right of each hinge. The breakpoints' positions get no gradient through the choice
of segment (F is continuous), exactly as in the naive form.

In eager mode the lookup runs as a ``torch.autograd.Function``; under ``torch.compile`` it runs as
the custom operators ``taan::task_adaptive_activation`` and ``..._backward``, which the
compiler treats as opaque calls, so tracing never breaks (the machinery is in
:mod:`taan_core.nn._lookup`). On CPU a small fused C kernel
(:mod:`taan_core.nn._kernels`) computes both passes when a C compiler is available; everywhere else,
and as the fallback, plain torch operations do. With ``create_graph=True`` the backward pass is
built from differentiable torch operations, so second derivatives work too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from taan_core.nn import _lookup
from taan_core._validation import _fmt_shape

__all__ = ["task_adaptive_activation", "task_adaptive_activation_reference"]


# --------------------------------------------------------------------------------------------
# validation


def _check_inputs(z, task, alpha, hinges) -> tuple[Tensor, Tensor | int, Tensor, Tensor]:
    for value, name in ((z, "z"), (alpha, "alpha"), (hinges, "hinges")):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if z.ndim < 1:
        raise ValueError(f"z must have shape (N, ...), got {_fmt_shape(z.shape)}")
    if hinges.ndim != 1:
        raise ValueError(f"hinges must have shape (M,), got {_fmt_shape(hinges.shape)}")
    num_hinges = hinges.shape[0]
    if alpha.ndim != 2 or alpha.shape[1] != num_hinges:
        raise ValueError(
            f"alpha must have shape (T, M) with M = len(hinges) = {num_hinges}, got {_fmt_shape(alpha.shape)}"
        )
    num_tasks = alpha.shape[0]
    if num_tasks < 1:
        raise ValueError(f"alpha must have at least one task row, got shape {_fmt_shape(alpha.shape)}")
    if alpha.device != z.device or hinges.device != z.device:
        raise ValueError(f"z, alpha and hinges must be on one device, got {z.device}, {alpha.device}, {hinges.device}")
    if isinstance(task, Tensor):
        if task.dtype in (torch.bool,) or task.is_floating_point() or task.is_complex():
            raise TypeError(f"task must be an int or an integer tensor of shape (N,), got dtype {task.dtype}")
        if task.ndim == 0:
            task = task.reshape(1).expand(z.shape[0])
        if task.shape != (z.shape[0],):
            raise ValueError(
                f"task must have shape (N,) = ({z.shape[0]},) to match z of shape {_fmt_shape(z.shape)}, "
                f"got {_fmt_shape(task.shape)}"
            )
        if task.device != z.device:
            raise ValueError(f"task must be on the device of z ({z.device}), got {task.device}")
    elif isinstance(task, int) and not isinstance(task, bool):
        if not 0 <= task < num_tasks:
            raise IndexError(
                f"task must be in [0, T) with T = {num_tasks} (alpha has shape {_fmt_shape(alpha.shape)}), got {task}"
            )
    else:
        raise TypeError(f"task must be an int or an integer tensor of shape (N,), got {type(task).__name__}")
    return z, task, alpha, hinges


def _table_dtype(z: Tensor, alpha: Tensor, hinges: Tensor) -> torch.dtype:
    # Tables and reductions run in at least float32, so bfloat16 and float16 inputs lose nothing
    # beyond the rounding of z itself and of the output.
    dtype = torch.promote_types(torch.promote_types(z.dtype, alpha.dtype), hinges.dtype)
    return torch.promote_types(dtype, torch.float32)


def _task_rows(task: Tensor | int, z: Tensor) -> Tensor:
    if isinstance(task, int):
        return torch.full((z.shape[0],), task, dtype=torch.int64, device=z.device)
    return task.to(torch.int64)


# --------------------------------------------------------------------------------------------
# public functions


def task_adaptive_activation(z: Tensor, task: Tensor | int, alpha: Tensor, hinges: Tensor) -> Tensor:
    """Apply each sample's task-adaptive activation by segment lookup.

    ``F_t(z) = relu(z) + sum_m alpha[t, m] * relu(hinges[m] - z)`` for the task ``t`` of each sample.

    Parameters
    ----------
    z : Tensor of shape (N, ...)
        Pre-activations; float32, float64, bfloat16 or float16. Any trailing shape.
    task : int or LongTensor of shape (N,)
        One task id for the whole batch, or the task id of every sample (mixed-task batch).
    alpha : Tensor of shape (T, M)
        Per-task hinge coefficients.
    hinges : Tensor of shape (M,)
        Hinge locations, shared by the tasks; any order, ties allowed.

    Returns
    -------
    Tensor of the shape and dtype of z
        Computed with (T, M + 2) tables in float32 or wider; differentiable in z, alpha and hinges
        (twice, through a plain torch backward, when ``create_graph=True``).

    Raises
    ------
    TypeError
        If an argument is not a tensor of the right kind.
    ValueError
        If the shapes of alpha, hinges and task do not agree with z.
    IndexError
        If a task id is outside [0, T).
    """
    out, _ = _apply(z, task, alpha, hinges, with_stats=False)
    return out


def _apply(z, task, alpha, hinges, *, with_stats: bool) -> tuple[Tensor, Tensor]:
    """The activation and, when ``with_stats``, each row's float64 (sum, sum of squares) of z (N, 2).

    The layers use the row sums for their running statistics, which the fused kernel computes in
    the same pass over z.
    """
    z, task, alpha, hinges = _check_inputs(z, task, alpha, hinges)
    table_dtype = _table_dtype(z, alpha, hinges)
    args = (z.contiguous(), _task_rows(task, z), alpha.to(table_dtype), hinges.to(table_dtype), with_stats)
    if torch.compiler.is_compiling():
        out, _, stats = _lookup.compiled_op(*args)
    else:
        out, stats = _lookup.TaskAdaptiveFunction.apply(*args)
    return out, stats


def _lookup_train(z, task, alpha, hinges, running: _lookup.Running, momentum: float) -> Tensor:
    """The activation, also updating the running statistics of z in ``running`` = (mean (T,),
    var (T,), mean overall, var overall): in the fused kernel's forward pass where it applies,
    else with torch operations on the row sums."""
    z, task, alpha, hinges = _check_inputs(z, task, alpha, hinges)
    table_dtype = _table_dtype(z, alpha, hinges)
    zc, rows, alpha_t, hinges_t = z.contiguous(), _task_rows(task, z), alpha.to(table_dtype), hinges.to(table_dtype)
    if _lookup.kernel_updates_running(zc, alpha_t, running):
        out, _ = _lookup.TaskAdaptiveFunction.apply(zc, rows, alpha_t, hinges_t, True, (running, momentum))
        return out
    if torch.compiler.is_compiling():
        out, _, stats = _lookup.compiled_op(zc, rows, alpha_t, hinges_t, True)
    else:
        out, stats = _lookup.TaskAdaptiveFunction.apply(zc, rows, alpha_t, hinges_t, True)
    _lookup.update_running(stats, rows, z[0].numel() if z.shape[0] else 0, running, momentum)
    return out


def task_adaptive_activation_reference(z: Tensor, task: Tensor | int, alpha: Tensor, hinges: Tensor) -> Tensor:
    """The naive form of :func:`task_adaptive_activation`, kept as the reference for tests.

    It materialises ``relu(hinges[m] - z)`` for every hinge, an (N, ..., M) tensor, and computes
    in the promoted dtype of its arguments (at least float32), returned in the dtype of z.

    Parameters
    ----------
    z : Tensor of shape (N, ...)
    task : int or LongTensor of shape (N,)
    alpha : Tensor of shape (T, M)
    hinges : Tensor of shape (M,)

    Returns
    -------
    Tensor of the shape and dtype of z
    """
    z, task, alpha, hinges = _check_inputs(z, task, alpha, hinges)
    dtype = _table_dtype(z, alpha, hinges)
    if isinstance(task, Tensor):
        _lookup._check_task_range(task, alpha.shape[0])
        coef = alpha.to(dtype)[task.long()].reshape((z.shape[0],) + (1,) * (z.ndim - 1) + (-1,))
    else:
        coef = alpha.to(dtype)[task]
    zc = z.to(dtype)
    out = F.relu(zc) + (coef * F.relu(hinges.to(dtype) - zc.unsqueeze(-1))).sum(-1)
    return out.to(z.dtype)
