"""The segment lookup as Triton kernels: the default on CUDA when triton imports.

On CUDA the plain torch path takes several passes over memory (a search, two gathers, a
multiply-add, two scatter reductions) and inductor does not fuse them. These kernels do the
forward pass (search, lookup, output, segment index, per-row sums for the running statistics)
in one pass and the backward pass (gradient of z, per-(task, segment) sums of grad and
grad * z) in another, as the C kernels of :mod:`taan_core.nn._kernels` do on CPU. The tables
and the closed-form gradients of ``alpha`` and ``hinges`` stay in :mod:`taan_core.nn._lookup`.

``TAAN_TRITON`` (read at import; or :func:`set_mode`) chooses where they run:

- ``auto`` (default): CUDA tensors, when ``import triton`` succeeds;
- ``off``: never (the plain torch path runs on CUDA);
- ``always``: CUDA and CPU tensors. On CPU, Triton runs kernels only in its interpreter
  (``TRITON_INTERPRET=1``, which must be set before triton is first imported); this is how the
  kernels are tested on machines without a GPU (tests/core/nn/triton_cases.py).

Sums across programs are float64 atomics, so on a GPU the parameter gradients and the row sums
are not bitwise reproducible from run to run (they agree to rounding); the C kernels are.
"""

from __future__ import annotations

import contextlib
import os
import threading

import torch
from torch import Tensor

from taan_core._validation import check_choice

__all__: list[str] = []

MODES = ("auto", "off", "always")
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Elements per program of the backward's (BLOCK, S_PAD) reduction tile: bounded so that the tile
# stays in registers at large M.
_TILE = 8192
_MAX_BLOCK = 1024

_lock = threading.Lock()
_module = None  # taan_core.nn._triton_kernels once imported
_tried = False
status = "not loaded yet"
launches = {"forward": 0, "backward": 0}  # kernel launches so far (tests assert the path ran)


def _check_mode(mode: object, name: str) -> str:
    return check_choice(mode, name, MODES)


_mode = _check_mode(os.environ.get("TAAN_TRITON", "auto"), "TAAN_TRITON")


def mode() -> str:
    """Where the Triton kernels run: "auto", "off" or "always" (see the module docstring)."""
    return _mode


def set_mode(value: str) -> None:
    """Choose where the Triton kernels run: "auto", "off" or "always"."""
    global _mode
    _mode = _check_mode(value, "mode")


def interpreted() -> bool:
    """Whether Triton kernels run in the interpreter (``TRITON_INTERPRET=1`` when triton loaded)."""
    return available() and bool(_module.INTERPRETED)


def available() -> bool:
    """Whether triton imports and the kernels are defined (tried once; see :data:`status`)."""
    global _module, _tried, status
    if _tried:
        return _module is not None
    with _lock:
        if not _tried:
            try:
                from taan_core.nn import _triton_kernels

                if _triton_kernels.triton is None:
                    raise ImportError("triton is not installed (pip install 'taan[gpu]')")
                _module = _triton_kernels
                status = f"triton {_module.triton.__version__}" + (" (interpreter)" if _module.INTERPRETED else "")
            except Exception as err:  # ImportError, or a triton that fails while loading its backends
                status = f"triton not usable: {type(err).__name__}: {err}"
            _tried = True
    return _module is not None


def usable(z: Tensor, alpha: Tensor) -> bool:
    """Whether the Triton kernels handle this call (device, dtype, mode and triton itself)."""
    if _mode == "off" or z.dtype not in _DTYPES or alpha.dtype not in (torch.float32, torch.float64):
        return False
    if z.device.type == "cuda":
        return available()
    # CPU tensors only in the interpreter: compiled Triton kernels need a GPU
    return _mode == "always" and z.device.type == "cpu" and available() and _module.INTERPRETED


def _on_device(z: Tensor):
    # Triton launches on the current CUDA device, which need not be the one holding the tensors
    return torch.cuda.device(z.device) if z.device.type == "cuda" else contextlib.nullcontext()


def _shape(z: Tensor) -> tuple[int, int]:
    rows = z.shape[0]
    return rows, (z.numel() // rows if rows else 0)


def _block(columns: int, cap: int) -> int:
    # tl.arange needs a power of two; 16 is its smallest useful size
    return max(16, min(_next_power_of_2(columns), cap))


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def forward(z: Tensor, task: Tensor, breakpoints: Tensor, slope: Tensor, intercept: Tensor, with_stats: bool,
            segment_dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """(out, segment, row_stats) for contiguous z (N, ...), task LongTensor (N,), the sorted
    breakpoints (M,) and the (T, M + 2) tables in the table dtype; row_stats is (N, 2) float64
    (sum and sum of squares of each row of z) when ``with_stats``, else (0, 2)."""
    # the kernels index rows as row * F + column; a scalar task arrives expanded (stride 0)
    z, task = z.contiguous(), task.contiguous()
    rows, columns = _shape(z)
    out = torch.empty_like(z)
    segment = torch.empty(z.shape, dtype=segment_dtype, device=z.device)
    stats = torch.zeros((rows if with_stats else 0, 2), dtype=torch.float64, device=z.device)
    if rows and columns:
        num_hinges = breakpoints.shape[0]
        block = _block(columns, _MAX_BLOCK)
        grid = (rows, -(-columns // block))
        with _on_device(z):
            # LOG_P: the search runs over P = 2 ** LOG_P >= M + 1 entries, so that a count of M fits
            _module.forward_kernel[grid](
                z, task, breakpoints.contiguous(), slope.contiguous(), intercept.contiguous(), out, segment, stats,
                columns, num_hinges, slope.shape[1],
                WITH_STATS=with_stats, LOG_P=num_hinges.bit_length(), BLOCK=block,
            )
        launches["forward"] += 1
    return out, segment, stats


def backward(grad: Tensor, z: Tensor, task: Tensor, segment: Tensor, slope: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(dz, dslope, dintercept): the gradient of z and the gradients of the (T, M + 2) tables,
    i.e. the per-(task, segment) sums of grad * z and of grad, in the table dtype."""
    grad, z, task, segment = grad.contiguous(), z.contiguous(), task.contiguous(), segment.contiguous()
    rows, columns = _shape(z)
    num_tasks, num_segments = slope.shape
    dz = torch.empty_like(z)
    sum_gz = torch.zeros((num_tasks, num_segments), dtype=torch.float64, device=z.device)
    sum_g = torch.zeros_like(sum_gz)
    if rows and columns:
        pad = _next_power_of_2(num_segments)
        block = _block(columns, min(_MAX_BLOCK, max(16, _TILE // pad)))
        grid = (rows, -(-columns // block))
        with _on_device(z):
            _module.backward_kernel[grid](
                grad, z, task, segment, slope.contiguous(), dz, sum_gz, sum_g,
                columns, num_segments, S_PAD=pad, BLOCK=block,
            )
        launches["backward"] += 1
    return dz, sum_gz.to(slope.dtype), sum_g.to(slope.dtype)
