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
the custom operators ``taan::task_adaptive_activation`` and ``taan::segment_lookup_backward``,
which the compiler treats as opaque calls, so tracing never breaks. On CPU a small fused C kernel
(:mod:`taan_core._kernels`) computes both passes when a C compiler is available; everywhere else,
and as the fallback, plain torch operations do. With ``create_graph=True`` the backward pass is
built from differentiable torch operations, so second derivatives work too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from taan_core import _kernels
from taan_core._validation import _fmt_shape

__all__ = ["task_adaptive_activation", "task_adaptive_activation_reference"]


# --------------------------------------------------------------------------------------------
# validation and table construction


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


def _segment_tables(alpha: Tensor, hinges: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Sorted hinges, their order, q, and the (T, M + 2) slope and intercept tables.

    Segment s of an element is k + [z > 0], where k is the number of hinges <= z. With q the
    number of hinges <= 0, segments 0..q lie left of 0 (relu off, k = s) and q+1..M+1 right of
    it (relu on, k = s - 1). The hinges active on a segment are the sorted ones with index >= k.
    Pure torch operations: differentiable in alpha and hinges when grad mode is on.
    """
    sorted_hinges, order = torch.sort(hinges.detach())
    sorted_alpha = alpha.index_select(1, order)
    num_tasks, num_hinges = alpha.shape
    # suffix[t, k] = sum over sorted hinges i >= k, with a zero column for k = M
    zero = alpha.new_zeros(num_tasks, 1)
    weighted = sorted_alpha * hinges.index_select(0, order)
    slope_sum = torch.cat([sorted_alpha.flip(1).cumsum(1).flip(1), zero], dim=1)
    bias_sum = torch.cat([weighted.flip(1).cumsum(1).flip(1), zero], dim=1)
    segment = torch.arange(num_hinges + 2, device=alpha.device)
    below_zero = (sorted_hinges <= 0).sum()
    relu_on = segment > below_zero
    k = segment - relu_on.long()
    slope = relu_on.to(alpha.dtype) - slope_sum[:, k]
    return sorted_hinges.contiguous(), order, below_zero, slope.contiguous(), bias_sum[:, k].contiguous()


def _table_grads(dslope: Tensor, dintercept: Tensor, alpha: Tensor, hinges: Tensor, order: Tensor,
                 below_zero: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of alpha (T, M) and hinges (M,) from those of the slope and intercept tables.

    Sorted hinge i is active on segments s with k(s) <= i, i.e. s <= i + [i >= q]: a prefix.
    d slope / d alpha_i = -1 and d intercept / d alpha_i = b_i there; d intercept / d b_i = alpha_i.
    """
    num_hinges = alpha.shape[1]
    i = torch.arange(num_hinges, device=alpha.device)
    last = i + (i >= below_zero).long()
    prefix_slope = dslope.cumsum(1).index_select(1, last)
    prefix_intercept = dintercept.cumsum(1).index_select(1, last)
    sorted_alpha = alpha.index_select(1, order)
    sorted_hinges = hinges.index_select(0, order)
    dalpha_sorted = sorted_hinges * prefix_intercept - prefix_slope
    dhinges_sorted = (sorted_alpha * prefix_intercept).sum(0)
    dalpha = torch.zeros_like(dalpha_sorted).index_copy(1, order, dalpha_sorted)
    dhinges = torch.zeros_like(dhinges_sorted).index_copy(0, order, dhinges_sorted)
    return dalpha, dhinges


def _segment_dtype(num_segments: int) -> torch.dtype:
    return torch.uint8 if num_segments <= 256 else torch.int32


def _task_rows(task: Tensor | int, z: Tensor) -> Tensor:
    if isinstance(task, int):
        return torch.full((z.shape[0],), task, dtype=torch.int64, device=z.device)
    return task.to(torch.int64)


def _check_task_range(task: Tensor, num_tasks: int) -> None:
    # Value checks live inside the operator, where tensors are real, so that tracing never
    # needs a data-dependent branch.
    if task.numel() and task.device.type != "cpu":
        # no host synchronisation on accelerators: the device raises asynchronously
        torch._assert_async(((task >= 0) & (task < num_tasks)).all(), f"task ids must be in [0, T) with T = {num_tasks}")
    elif task.numel():
        low, high = int(task.min()), int(task.max())
        if low < 0 or high >= num_tasks:
            raise IndexError(f"task ids must be in [0, T) with T = {num_tasks}, got min {low} and max {high}")


# --------------------------------------------------------------------------------------------
# plain torch path (any device; differentiable, so it also serves double backward)


def _row_view(task: Tensor, z: Tensor) -> Tensor:
    return task.reshape((-1,) + (1,) * (z.ndim - 1))


def _forward_torch(z: Tensor, task: Tensor, breakpoints: Tensor, slope: Tensor, intercept: Tensor, with_stats: bool):
    num_segments = slope.shape[1]
    zc = z.to(slope.dtype).contiguous()
    segment = torch.searchsorted(breakpoints, zc, right=True) + (zc > 0)
    key = segment + _row_view(task, z) * num_segments
    gathered_slope, gathered_intercept = torch.take(slope, key), torch.take(intercept, key)
    # a flat segment gives its intercept even at z = +-inf (not 0 * inf = NaN)
    out = torch.where(gathered_slope == 0, gathered_intercept, gathered_slope * zc + gathered_intercept)
    if with_stats:
        rows = zc.reshape(z.shape[0], -1)
        stats = torch.stack([rows.sum(1, dtype=torch.float64), rows.square().sum(1, dtype=torch.float64)], 1)
    else:
        stats = z.new_empty((0, 2), dtype=torch.float64)
    return out.to(z.dtype), segment.to(_segment_dtype(num_segments)), stats


def _backward_torch(grad: Tensor, z: Tensor, task: Tensor, segment: Tensor, slope: Tensor):
    num_tasks, num_segments = slope.shape
    key = segment.long() + _row_view(task, z) * num_segments
    g = grad.to(slope.dtype)
    dz = (g * torch.take(slope, key)).to(z.dtype)
    flat_key = key.reshape(-1)
    bins = slope.new_zeros(num_tasks * num_segments)
    dslope = bins.index_add(0, flat_key, (g * z.to(slope.dtype)).reshape(-1)).view(num_tasks, num_segments)
    dintercept = bins.index_add(0, flat_key, g.reshape(-1)).view(num_tasks, num_segments)
    return dz, dslope, dintercept


# --------------------------------------------------------------------------------------------
# the operation: shared forward and backward, an eager autograd.Function, and custom operators


def _forward_impl(z: Tensor, task: Tensor, alpha: Tensor, hinges: Tensor, with_stats: bool):
    """(out, segment, row_stats, slope); alpha and hinges already in the table dtype."""
    _check_task_range(task, alpha.shape[0])
    with torch.no_grad():
        breakpoints, _, _, slope, intercept = _segment_tables(alpha, hinges)
    if _kernels.usable(z, slope):
        out, segment, stats = _kernels.forward(
            z, task, breakpoints, slope, intercept, with_stats, _segment_dtype(slope.shape[1])
        )
    else:
        out, segment, stats = _forward_torch(z, task, breakpoints, slope, intercept, with_stats)
    return out, segment, stats, slope


def _backward_impl(grad: Tensor, z: Tensor, task: Tensor, segment: Tensor, alpha: Tensor, hinges: Tensor,
                   slope: Tensor | None, needs: tuple[bool, bool, bool], traced: bool):
    """Gradients of (z, alpha, hinges). With grad mode on (create_graph=True) every step is a
    differentiable torch operation on the saved inputs, so the result can be differentiated again.
    ``traced``: called while torch.compile traces the backward, where the elementwise half must
    be the opaque custom operator."""
    if torch.is_grad_enabled():
        _, order, below_zero, slope, _ = _segment_tables(alpha, hinges)
        dz, dslope, dintercept = _backward_torch(grad, z, task, segment, slope)
    else:
        if slope is None:
            _, order, below_zero, slope, _ = _segment_tables(alpha, hinges)
        else:
            order, below_zero = _sort_order(hinges)
        elementwise = _segment_lookup_backward if traced else _backward_elementwise
        dz, dslope, dintercept = elementwise(grad.contiguous(), z, task, segment, slope)
    dalpha = dhinges = None
    if needs[1] or needs[2]:
        dalpha, dhinges = _table_grads(dslope, dintercept, alpha, hinges, order, below_zero)
    return dz, dalpha, dhinges


def _backward_elementwise(grad: Tensor, z: Tensor, task: Tensor, segment: Tensor, slope: Tensor):
    if _kernels.usable(z, slope):
        return _kernels.backward(grad, z, task, segment, slope)
    return _backward_torch(grad, z, task, segment, slope)


def _sort_order(hinges: Tensor) -> tuple[Tensor, Tensor]:
    sorted_hinges, order = torch.sort(hinges.detach())
    return order, (sorted_hinges <= 0).sum()


class _TaskAdaptiveActivation(torch.autograd.Function):
    """Eager path: the lookup as an autograd.Function (less dispatch overhead than a custom op)."""

    @staticmethod
    def forward(ctx, z, task, alpha, hinges, with_stats):
        out, segment, stats, slope = _forward_impl(z, task, alpha, hinges, with_stats)
        ctx.save_for_backward(z, task, segment, alpha, hinges, slope)
        ctx.mark_non_differentiable(stats)
        return out, stats

    @staticmethod
    def backward(ctx, grad_out, _grad_stats):
        z, task, segment, alpha, hinges, slope = ctx.saved_tensors
        needs = ctx.needs_input_grad
        dz, dalpha, dhinges = _backward_impl(grad_out, z, task, segment, alpha, hinges, slope,
                                             (needs[0], needs[2], needs[3]), traced=False)
        return (dz if needs[0] else None), None, dalpha, dhinges, None


@torch.library.custom_op("taan::task_adaptive_activation", mutates_args=())
def _compiled_op(z: Tensor, task: Tensor, alpha: Tensor, hinges: Tensor, with_stats: bool
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """Compiled path: (out, segment, row_stats); row_stats (N, 2) float64 when with_stats."""
    out, segment, stats, _ = _forward_impl(z, task, alpha, hinges, with_stats)
    return out, segment, stats


@_compiled_op.register_fake
def _(z, task, alpha, hinges, with_stats):
    return (
        torch.empty_like(z, memory_format=torch.contiguous_format),
        torch.empty(z.shape, dtype=_segment_dtype(hinges.shape[0] + 2), device=z.device),
        z.new_empty((z.shape[0] if with_stats else 0, 2), dtype=torch.float64),
    )


def _setup_context(ctx, inputs, output):
    z, task, alpha, hinges, _ = inputs
    ctx.save_for_backward(z, task, output[1], alpha, hinges)


def _compiled_backward(ctx, grad_out, _grad_segment, _grad_stats):
    z, task, segment, alpha, hinges = ctx.saved_tensors
    dz, dalpha, dhinges = _backward_impl(grad_out, z, task, segment, alpha, hinges, None, (True, True, True),
                                         traced=True)
    return dz, None, dalpha, dhinges, None


_compiled_op.register_autograd(_compiled_backward, setup_context=_setup_context)


@torch.library.custom_op("taan::segment_lookup_backward", mutates_args=())
def _segment_lookup_backward(
    grad: Tensor, z: Tensor, task: Tensor, segment: Tensor, slope: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(dz, dslope, dintercept): the elementwise half of the backward pass."""
    return _backward_elementwise(grad, z, task, segment, slope)


@_segment_lookup_backward.register_fake
def _(grad, z, task, segment, slope):
    return (
        torch.empty_like(z, memory_format=torch.contiguous_format),
        torch.empty_like(slope),
        torch.empty_like(slope),
    )


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
    out, _ = _lookup(z, task, alpha, hinges, with_stats=False)
    return out


def _lookup(z, task, alpha, hinges, *, with_stats: bool) -> tuple[Tensor, Tensor]:
    """The activation and, when ``with_stats``, each row's float64 (sum, sum of squares) of z (N, 2).

    The layers use the row sums for their running statistics, which the fused kernel computes in
    the same pass over z.
    """
    z, task, alpha, hinges = _check_inputs(z, task, alpha, hinges)
    table_dtype = _table_dtype(z, alpha, hinges)
    args = (z.contiguous(), _task_rows(task, z), alpha.to(table_dtype), hinges.to(table_dtype), with_stats)
    if torch.compiler.is_compiling():
        out, _, stats = _compiled_op(*args)
    else:
        out, stats = _TaskAdaptiveActivation.apply(*args)
    return out, stats


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
        _check_task_range(task, alpha.shape[0])
        coef = alpha.to(dtype)[task.long()].reshape((z.shape[0],) + (1,) * (z.ndim - 1) + (-1,))
    else:
        coef = alpha.to(dtype)[task]
    zc = z.to(dtype)
    out = F.relu(zc) + (coef * F.relu(hinges.to(dtype) - zc.unsqueeze(-1))).sum(-1)
    return out.to(z.dtype)
