"""Fused CPU kernels for the segment lookup, compiled with the system C compiler at first use.

The plain torch path of :mod:`taan_core.functional` takes several passes over memory (a search,
two gathers, a multiply-add, two scatter reductions) and costs about as much as the matrix
product it follows. These kernels do the forward pass (search, lookup, output, one-byte segment
index and per-row sums for the running statistics) in one pass, and the backward pass (gradient
of z and the per-(task, segment) sums of grad and grad * z) in another.

The C source (:mod:`taan_core._kernels_source`) is compiled once per machine into a small shared library (cached under
``$TAAN_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/taan`` or ``~/.cache/taan``) and called through
ctypes, so nothing beyond a C compiler is needed and nothing is built at install time. It uses
OpenMP; torch's own libgomp is already loaded under the same soname, so the kernels share torch's
thread pool. When no compiler is found, compilation fails, or ``TAAN_NO_KERNELS=1`` is set,
:func:`usable` answers False and the plain torch path runs instead.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
from torch import Tensor

from taan_core._kernels_source import SOURCE as _SOURCE

__all__: list[str] = []


_FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c11"]
_TAGS = {torch.float32: ("f32", torch.float32), torch.float64: ("f64", torch.float64),
         torch.bfloat16: ("bf16", torch.float32)}

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False
_enabled = os.environ.get("TAAN_NO_KERNELS", "") not in ("1", "true", "yes")
status = "not loaded yet"
last_forward_path = "none"  # which C forward ran last: "avx512" or "portable" (for benchmarks)


def _cache_dir() -> Path:
    if os.environ.get("TAAN_KERNEL_CACHE"):
        return Path(os.environ["TAAN_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "taan"


def _machine_key() -> str:
    # -march=native ties the library to this CPU; key it by the CPU's feature flags.
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return platform.machine() + flags


def _compile() -> ctypes.CDLL:
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc") or shutil.which("clang")
    if compiler is None:
        raise RuntimeError("no C compiler found (gcc, cc or clang)")
    digest = hashlib.sha256("\0".join([_SOURCE, compiler, *_FLAGS, _machine_key()]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"taan_lookup_{digest}.so"
    if not target.exists():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            workdir = target.parent
        except OSError:
            workdir = Path(tempfile.gettempdir())
            target = workdir / target.name
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            src = Path(tmp) / "lookup.c"
            src.write_text(_SOURCE)
            built = Path(tmp) / "lookup.so"
            proc = subprocess.run([compiler, *_FLAGS, str(src), "-o", str(built)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{compiler} failed: {proc.stderr.strip()[:500]}")
            os.replace(built, target)  # atomic: concurrent processes never load a partial file
    lib = ctypes.CDLL(str(target))
    i64, ptr, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    for tag, _ in _TAGS.values():
        fwd = getattr(lib, f"taan_fwd_{tag}")
        fwd.argtypes = [ptr, ptr, i64, i64, ptr, ptr, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr,
                        ctypes.c_double, cint]
        fwd.restype = cint
        bwd = getattr(lib, f"taan_bwd_{tag}")
        bwd.argtypes = [ptr, ptr, ptr, ptr, ptr, i64, i64, ptr, ptr, i64, i64, ptr, ptr, ptr, cint]
        bwd.restype = cint
    return lib


def _load() -> ctypes.CDLL | None:
    global _lib, _tried, status
    if not _tried:
        with _lock:
            if not _tried:
                try:
                    _lib = _compile()
                    status = "compiled C kernel"
                except (OSError, RuntimeError, subprocess.SubprocessError) as err:
                    _lib = None
                    status = f"unavailable: {err}"
                _tried = True
    return _lib


def available() -> bool:
    """Whether the fused kernels compiled and loaded on this machine (compiles on first call)."""
    return _load() is not None


def enabled() -> bool:
    return _enabled


def set_enabled(flag: bool) -> None:
    """Switch the fused kernels on or off for this process (tests compare both paths)."""
    global _enabled
    _enabled = bool(flag)


def usable(z: Tensor, alpha: Tensor) -> bool:
    """Whether the fused kernel handles this call: CPU, float32/float64/bfloat16 z, alpha in its table dtype."""
    if not _enabled or z.device.type != "cpu" or z.dtype not in _TAGS:
        return False
    if alpha.dtype != _TAGS[z.dtype][1] or alpha.device.type != "cpu":
        return False
    return available()


def _threads(numel: int) -> int:
    # Small inputs run on one thread: waking a team costs more than it saves, and much more when
    # the machine is oversubscribed.
    return max(1, min(torch.get_num_threads(), numel // (1 << 16)))


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def forward(z: Tensor, task: Tensor, alpha: Tensor, hinges: Tensor, with_stats: bool,
            segment_dtype: torch.dtype, running: tuple[tuple[Tensor, ...], float] | None = None
            ) -> tuple[Tensor, Tensor, Tensor]:
    """(out, segment, row_stats) for z (N, ...), task (N,), alpha (T, M), hinges (M,).

    ``running`` = ((mean (T,), var (T,), mean overall, var overall), momentum), contiguous float32
    CPU buffers, which the kernel updates in place from the row sums.
    """
    global last_forward_path
    z = z.contiguous()
    alpha, hinges = alpha.detach().contiguous(), hinges.detach().contiguous()
    task = task.to(torch.int64).contiguous()
    n = z.shape[0]
    per_row = z.numel() // n if n else 0
    out = torch.empty_like(z, memory_format=torch.contiguous_format)
    segment = torch.empty(z.shape, dtype=segment_dtype)
    with_stats = with_stats or running is not None
    stats = torch.empty((n, 2) if with_stats else (0, 2), dtype=torch.float64)
    buffers, momentum = running if running is not None else ((None,) * 4, 0.0)
    small = segment_dtype == torch.uint8
    path = getattr(_lib, f"taan_fwd_{_TAGS[z.dtype][0]}")(
        _ptr(z), _ptr(task), n, per_row, _ptr(alpha), _ptr(hinges), alpha.shape[0], alpha.shape[1], _ptr(out),
        _ptr(segment) if small else None, None if small else _ptr(segment),
        _ptr(stats) if with_stats else None, *(_ptr(b) for b in buffers), float(momentum), _threads(z.numel()),
    )
    if path < 0:
        raise MemoryError("taan forward kernel: could not allocate its tables")
    last_forward_path = "avx512" if path else "portable"
    return out, segment, stats


def backward(grad: Tensor, z: Tensor, task: Tensor, segment: Tensor, alpha: Tensor,
             hinges: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(dz, dalpha, dhinges) for the forward pass that wrote ``segment``."""
    grad = grad.to(z.dtype).contiguous()
    z = z.contiguous()
    alpha, hinges = alpha.detach().contiguous(), hinges.detach().contiguous()
    task = task.to(torch.int64).contiguous()
    n = z.shape[0]
    per_row = z.numel() // n if n else 0
    dz = torch.empty_like(z)
    dalpha, dhinges = torch.empty_like(alpha), torch.empty_like(hinges)
    small = segment.dtype == torch.uint8
    failed = getattr(_lib, f"taan_bwd_{_TAGS[z.dtype][0]}")(
        _ptr(grad), _ptr(z), _ptr(segment) if small else None, None if small else _ptr(segment), _ptr(task),
        n, per_row, _ptr(alpha), _ptr(hinges), alpha.shape[0], alpha.shape[1], _ptr(dz), _ptr(dalpha),
        _ptr(dhinges), _threads(z.numel()),
    )
    if failed:
        raise MemoryError("taan backward kernel: could not allocate its accumulators")
    return dz, dalpha, dhinges
