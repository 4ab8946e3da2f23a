"""Triton kernels of the segment lookup (imported by :mod:`taan_core.nn._triton` on first use).

Kept apart from :mod:`taan_core.nn._triton` because ``triton.jit`` decides at decoration time
whether a kernel is compiled for the GPU or run by the interpreter (``TRITON_INTERPRET=1``), and
importing triton costs about a second: neither should happen when ``taan_core.nn`` is imported.

One program handles ``BLOCK`` consecutive elements of one row of z (N, F): every element of a
row shares its task, so the task id is one scalar load and the per-(task, segment) sums of the
backward pass reduce inside the program before they meet other programs in the atomics.
"""

from __future__ import annotations

import os

try:
    import triton
    import triton.language as tl
except ImportError:
    # Every taan_core module imports without the optional dependencies (tests/test_layering.py
    # imports them all); taan_core.nn._triton reads ``triton is None`` and runs the plain path.
    triton = None

__all__: list[str] = []

# The interpreter runs kernels on CPU tensors with numpy; it is chosen when triton is imported.
INTERPRETED = triton is not None and (
    bool(triton.knobs.runtime.interpret) if hasattr(triton, "knobs")
    else os.environ.get("TRITON_INTERPRET", "") in ("1", "true"))


def _jit(fn):
    # Without triton the functions stay plain (never called); their ``tl.constexpr`` annotations
    # are strings (postponed evaluation), so defining them needs no triton either.
    return fn if triton is None else triton.jit(fn)


@_jit
def forward_kernel(z_ptr, task_ptr, breakpoints_ptr, slope_ptr, intercept_ptr, out_ptr, segment_ptr, stats_ptr,
                   F, M, S, WITH_STATS: tl.constexpr, LOG_P: tl.constexpr, BLOCK: tl.constexpr):
    """out, segment (and the row's sum and sum of squares) of BLOCK elements of one row.

    The search is branchless over the M sorted breakpoints padded to P = 2 ** LOG_P > M entries:
    the padding loads NaN, and NaN <= z is false, so it is never counted (z = +inf included).
    """
    row = tl.program_id(0)
    col = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = col < F
    # int64 offsets: N * F may exceed 2 ** 31 elements
    offset = row.to(tl.int64) * F + col
    z = tl.load(z_ptr + offset, mask=mask, other=0.0).to(slope_ptr.dtype.element_ty)
    task = tl.load(task_ptr + row)

    count = tl.zeros([BLOCK], dtype=tl.int32)
    for level in tl.static_range(LOG_P):
        probe = count + ((1 << (LOG_P - 1 - level)) - 1)
        b = tl.load(breakpoints_ptr + probe, mask=probe < M, other=float("nan"))
        count = tl.where(b <= z, count + (1 << (LOG_P - 1 - level)), count)
    # relu'(0) = 0: an element at 0 lies on the segment left of it
    segment = count + (z > 0).to(tl.int32)

    key = task * S + segment
    slope = tl.load(slope_ptr + key, mask=mask, other=0.0)
    intercept = tl.load(intercept_ptr + key, mask=mask, other=0.0)
    # a flat segment gives its intercept even at z = +-inf (not 0 * inf = NaN); NaN stays NaN
    out = tl.where(slope == 0, intercept, slope * z + intercept)
    out = tl.where(z != z, z, out)
    tl.store(out_ptr + offset, out.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(segment_ptr + offset, segment.to(segment_ptr.dtype.element_ty), mask=mask)

    if WITH_STATS:
        # float64 as in the C kernel: the running variance is sum_sq / n - mean ** 2, which
        # cancels when the mean is large; two float64 operations per element cost little even
        # where float64 runs at 1/64 of float32
        zs = tl.where(mask, z, 0.0).to(tl.float64)
        tl.atomic_add(stats_ptr + row * 2, tl.sum(zs, axis=0))
        tl.atomic_add(stats_ptr + row * 2 + 1, tl.sum(zs * zs, axis=0))


@_jit
def backward_kernel(grad_ptr, z_ptr, task_ptr, segment_ptr, slope_ptr, dz_ptr, sum_gz_ptr, sum_g_ptr,
                    F, S, S_PAD: tl.constexpr, BLOCK: tl.constexpr):
    """dz of BLOCK elements of one row, and their sums of grad * z and grad per segment, added
    to the (T, S) float64 bins of the row's task."""
    row = tl.program_id(0)
    col = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = col < F
    offset = row.to(tl.int64) * F + col
    acc_dtype = slope_ptr.dtype.element_ty
    grad = tl.load(grad_ptr + offset, mask=mask, other=0.0).to(acc_dtype)
    z = tl.load(z_ptr + offset, mask=mask, other=0.0).to(acc_dtype)
    segment = tl.load(segment_ptr + offset, mask=mask, other=0).to(tl.int32)
    task = tl.load(task_ptr + row)

    slope = tl.load(slope_ptr + task * S + segment, mask=mask, other=0.0)
    tl.store(dz_ptr + offset, (grad * slope).to(dz_ptr.dtype.element_ty), mask=mask)

    # per-segment sums as a masked (BLOCK, S_PAD) reduction; where() rather than a product with
    # the one-hot mask, so that an infinite grad * z in one segment does not give 0 * inf = NaN
    # in the others. Masked-off lanes carry grad = 0 into segment 0.
    segments = tl.arange(0, S_PAD)
    hit = segment[:, None] == segments[None, :]
    sum_gz = tl.sum(tl.where(hit, (grad * z)[:, None], 0.0), axis=0)
    sum_g = tl.sum(tl.where(hit, grad[:, None], 0.0), axis=0)
    bins = task * S + segments
    tl.atomic_add(sum_gz_ptr + bins, sum_gz.to(tl.float64), mask=segments < S)
    tl.atomic_add(sum_g_ptr + bins, sum_g.to(tl.float64), mask=segments < S)
