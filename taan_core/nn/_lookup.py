"""The segment-lookup operation behind :func:`taan_core.nn.functional.task_adaptive_activation`.

Tables, the plain torch path, the eager ``torch.autograd.Function``, the custom operators used
under ``torch.compile``, and the running statistics of the layers' inputs. Arguments arrive
validated, ``z`` contiguous, ``task`` a LongTensor (N,), ``alpha`` and ``hinges`` in the table
dtype (float32 or wider). The fused CPU kernels live in :mod:`taan_core.nn._kernels`, the Triton
kernels (CUDA) in :mod:`taan_core.nn._triton`; either is tried before the plain torch path.
"""

from __future__ import annotations

import torch
from torch import Tensor

from taan_core.nn import _kernels, _triton

__all__: list[str] = []

if not hasattr(torch.library, "custom_op"):
    # The op below needs torch.library.custom_op and register_fake (torch 2.4); without them the
    # import would fail later with an AttributeError that names neither taan nor the fix.
    raise ImportError(f"taan needs torch >= 2.4 (torch.library.custom_op), found torch {torch.__version__}; "
                      "upgrade torch")

Running = tuple[Tensor, Tensor, Tensor, Tensor]  # mean (T,), var (T,), mean overall (), var overall ()


# --------------------------------------------------------------------------------------------
# tables


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


def _check_task_range(task: Tensor, num_tasks: int) -> None:
    # Value checks live inside the operator, where tensors are real, so that tracing never
    # needs a data-dependent branch.
    if task.numel() and task.device.type != "cpu":
        # no host synchronisation on accelerators: the device raises asynchronously
        torch._assert_async(((task >= 0) & (task < num_tasks)).all(), f"task ids must be in [0, T) with T = {num_tasks}")
    elif task.numel():
        low, high = (int(v) for v in torch.aminmax(task))
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


def _forward_impl(z: Tensor, task: Tensor, alpha: Tensor, hinges: Tensor, with_stats: bool,
                  running: tuple[Running, float] | None = None):
    """(out, segment, row_stats). ``running`` = (buffers, momentum) lets the fused kernel update the
    running statistics itself; callers pass it only when :func:`kernel_updates_running` allows."""
    _check_task_range(task, alpha.shape[0])
    # Triton first: it takes CUDA tensors, and CPU ones only when forced in its interpreter
    use_triton = _triton.usable(z, alpha)
    if not use_triton and _kernels.usable(z, alpha):
        return _kernels.forward(z, task, alpha, hinges, with_stats, _segment_dtype(alpha.shape[1] + 2), running)
    with torch.no_grad():
        breakpoints, _, _, slope, intercept = _segment_tables(alpha, hinges)
    if use_triton:
        return _triton.forward(z, task, breakpoints, slope, intercept, with_stats, _segment_dtype(alpha.shape[1] + 2))
    return _forward_torch(z, task, breakpoints, slope, intercept, with_stats)


def _backward_differentiable(grad: Tensor, z: Tensor, task: Tensor, segment: Tensor, alpha: Tensor, hinges: Tensor):
    """Gradients of (z, alpha, hinges) from torch operations on the saved inputs: with grad mode
    on (create_graph=True) they can be differentiated again."""
    _, order, below_zero, slope, _ = _segment_tables(alpha, hinges)
    dz, dslope, dintercept = _backward_torch(grad, z, task, segment, slope)
    dalpha, dhinges = _table_grads(dslope, dintercept, alpha, hinges, order, below_zero)
    return dz, dalpha, dhinges


def _backward_fused(grad: Tensor, z: Tensor, task: Tensor, segment: Tensor, alpha: Tensor, hinges: Tensor):
    """The same gradients, once differentiable: a fused kernel (Triton, C) where one applies."""
    use_triton = _triton.usable(z, alpha)
    if not use_triton and _kernels.usable(z, alpha):
        return _kernels.backward(grad, z, task, segment, alpha, hinges)
    with torch.no_grad():
        if not use_triton:
            return _backward_differentiable(grad, z, task, segment, alpha, hinges)
        _, order, below_zero, slope, _ = _segment_tables(alpha, hinges)
        dz, dslope, dintercept = _triton.backward(grad, z, task, segment, slope)
        return (dz, *_table_grads(dslope, dintercept, alpha, hinges, order, below_zero))


class TaskAdaptiveFunction(torch.autograd.Function):
    """Eager path: the lookup as an autograd.Function (less dispatch overhead than a custom op).

    apply(z, task, alpha, hinges, with_stats, running=None) -> (out, row_stats)."""

    @staticmethod
    def forward(ctx, z, task, alpha, hinges, with_stats, running=None):
        out, segment, stats = _forward_impl(z, task, alpha, hinges, with_stats, running)
        ctx.save_for_backward(z, task, segment, alpha, hinges)
        ctx.mark_non_differentiable(stats)
        return out, stats

    @staticmethod
    def backward(ctx, grad_out, _grad_stats):
        z, task, segment, alpha, hinges = ctx.saved_tensors
        backward = _backward_differentiable if torch.is_grad_enabled() else _backward_fused
        dz, dalpha, dhinges = backward(grad_out, z, task, segment, alpha, hinges)
        return dz, None, dalpha, dhinges, None, None


@torch.library.custom_op("taan::task_adaptive_activation", mutates_args=())
def compiled_op(z: Tensor, task: Tensor, alpha: Tensor, hinges: Tensor, with_stats: bool
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """Compiled path: (out, segment, row_stats); row_stats (N, 2) float64 when with_stats."""
    return _forward_impl(z, task, alpha, hinges, with_stats)


@compiled_op.register_fake
def _(z, task, alpha, hinges, with_stats):
    return (
        torch.empty_like(z, memory_format=torch.contiguous_format),
        torch.empty(z.shape, dtype=_segment_dtype(hinges.shape[0] + 2), device=z.device),
        z.new_empty((z.shape[0] if with_stats else 0, 2), dtype=torch.float64),
    )


@torch.library.custom_op("taan::task_adaptive_activation_backward", mutates_args=())
def _compiled_backward_op(grad: Tensor, z: Tensor, task: Tensor, segment: Tensor, alpha: Tensor, hinges: Tensor
                          ) -> tuple[Tensor, Tensor, Tensor]:
    """Compiled path: the gradients of (z, alpha, hinges)."""
    return _backward_fused(grad, z, task, segment, alpha, hinges)


@_compiled_backward_op.register_fake
def _(grad, z, task, segment, alpha, hinges):
    return torch.empty_like(z, memory_format=torch.contiguous_format), torch.empty_like(alpha), torch.empty_like(hinges)


def _setup_context(ctx, inputs, output):
    z, task, alpha, hinges, _ = inputs
    ctx.save_for_backward(z, task, output[1], alpha, hinges)


def _compiled_backward(ctx, grad_out, _grad_segment, _grad_stats):
    z, task, segment, alpha, hinges = ctx.saved_tensors
    backward = _backward_differentiable if torch.is_grad_enabled() else _compiled_backward_op
    dz, dalpha, dhinges = backward(grad_out.contiguous(), z, task, segment, alpha, hinges)
    return dz, None, dalpha, dhinges, None


compiled_op.register_autograd(_compiled_backward, setup_context=_setup_context)

# --------------------------------------------------------------------------------------------
# running statistics of the input (the layers' pre-activations)


def kernel_updates_running(z: Tensor, alpha: Tensor, running: Running) -> bool:
    """Whether the eager fused kernel can update ``running`` in place during its forward pass."""
    return (
        not torch.compiler.is_compiling()
        and not _triton.usable(z, alpha)
        and _kernels.usable(z, alpha)
        and all(b.device.type == "cpu" and b.dtype == torch.float32 and b.is_contiguous() for b in running)
    )


@torch.no_grad()
def update_running(row_stats: Tensor, task: Tensor, per_row: int, running: Running, momentum: float) -> None:
    """Update ``running`` from each row's (sum, sum of squares) of z (N, 2) with torch operations.

    The fused kernel does the same arithmetic in C (``ema_step`` in the kernel source).
    """
    mean, var, mean_all, var_all = running
    rows = torch.cat([torch.full_like(row_stats[:, :1], float(per_row)), row_stats], 1)
    per_task = row_stats.new_zeros(mean.shape[0], 3).index_add_(0, task, rows)
    _ema_step(mean, var, *per_task.unbind(1), momentum)
    _ema_step(mean_all, var_all, *per_task.sum(0).unbind(0), momentum)


def _ema_step(mean: Tensor, var: Tensor, count: Tensor, total: Tensor, total_sq: Tensor, m: float) -> None:
    # Tasks absent from the batch keep their statistics; a task with a single element
    # updates its mean only (no unbiased variance exists).
    safe = count.clamp(min=1.0)
    batch_mean = total / safe
    batch_var = (total_sq / safe - batch_mean.square()).clamp(min=0.0) * safe / (safe - 1.0).clamp(min=1.0)
    mean.copy_(torch.where(count > 0, (1 - m) * mean.double() + m * batch_mean, mean.double()))
    var.copy_(torch.where(count > 1, (1 - m) * var.double() + m * batch_var, var.double()))
