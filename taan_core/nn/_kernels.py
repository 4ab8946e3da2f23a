"""Fused CPU kernels for the segment lookup, compiled with the system C compiler at first use.

The plain torch path of :mod:`taan_core.nn.functional` takes several passes over memory (a search,
two gathers, a multiply-add, two scatter reductions) and costs about as much as the matrix
product it follows. These kernels do the forward pass (search, lookup, output, one-byte segment
index and per-row sums for the running statistics) in one pass, and the backward pass (gradient
of z and the per-(task, segment) sums of grad and grad * z) in another.

The C source, ``taan_core/nn/_kernels.c`` (package data), is compiled once per machine into a small
shared library (cached under ``$TAAN_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/taan`` or
``~/.cache/taan``, under a name keyed by the source text, compiler, flags and CPU) and called
through ctypes, so nothing beyond a C compiler is needed and nothing is built at install time. It
uses OpenMP; torch's own libgomp is already loaded under the same soname, so the kernels share
torch's thread pool. When no compiler is found, compilation fails, or ``TAAN_NO_KERNELS=1`` is
set, :func:`usable` answers False and the plain torch path runs instead.

Loading a shared library runs its code, so the cache is trusted only if it is the user's own:
the cache folder, every folder above it and the library file must belong to the current user
(folders above may belong to root), and none may be writable by group or others (a folder above
may, if its sticky bit is set, as /tmp's is); the library must be a regular file, not a link.
Otherwise a warning names the folder, nothing is loaded from it, and the plain torch path runs.
A new library is built in a private temporary folder inside the cache and renamed into place, so
no process ever loads a partial file.

The forward pass has two paths in C: AVX-512 (float32 and bfloat16 inputs, at most 94 hinges, on
a CPU with AVX-512F) and portable C (everything else). :func:`set_forward_path` (or
``TAAN_KERNEL_PATH`` = ``auto``, ``portable`` or ``avx512`` at import) chooses between them, so
that tests and benchmarks run each one; :data:`last_forward_path` says which one ran last.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.resources
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

from taan_core._validation import check_choice

__all__: list[str] = []


_FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c11"]
_TAGS = {torch.float32: ("f32", torch.float32), torch.float64: ("f64", torch.float64),
         torch.bfloat16: ("bf16", torch.float32)}

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False
_enabled = os.environ.get("TAAN_NO_KERNELS", "") not in ("1", "true", "yes")
status = "not loaded yet"
last_forward_path = "none"  # which C forward ran last: "avx512" or "portable" (tests, benchmarks)

FORWARD_PATHS = ("auto", "portable", "avx512")
# The AVX-512 forward covers these input dtypes up to this many hinges (its tables fill at most
# six vector registers); the C code applies the same rule.
_AVX512_DTYPES = (torch.float32, torch.bfloat16)
_AVX512_MAX_HINGES = 94


def _check_path(mode: object, name: str) -> str:
    return check_choice(mode, name, FORWARD_PATHS)


_forward_path = _check_path(os.environ.get("TAAN_KERNEL_PATH", "auto"), "TAAN_KERNEL_PATH")


def _source() -> str:
    """The C source shipped with the package."""
    # next to this module, wherever the package puts it
    return importlib.resources.files(__package__).joinpath("_kernels.c").read_text(encoding="utf-8")


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


def _find_compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc") or shutil.which("clang")


def _library_path(source: str, compiler: str) -> Path:
    """Where the library built from ``source`` is cached: a new source text gives a new file."""
    digest = hashlib.sha256("\0".join([source, compiler, *_FLAGS, _machine_key()]).encode()).hexdigest()[:16]
    return _cache_dir() / f"taan_lookup_{digest}.so"


class UntrustedCacheError(RuntimeError):
    """The kernel cache could be written by someone else: its libraries are not loaded."""


def _owner_ok(st: os.stat_result, *, root_ok: bool) -> bool:
    return st.st_uid == os.getuid() or (root_ok and st.st_uid == 0)


def _check_trusted(folder: Path, library: Path | None = None) -> None:
    """Raise UntrustedCacheError unless ``folder`` (and ``library`` in it, when it exists) can be
    changed by no one but the current user (and root)."""
    if not hasattr(os, "getuid"):  # pragma: no cover - Windows: no POSIX owners to check
        return
    folder = Path(os.path.abspath(folder))
    try:
        st = os.stat(folder)
    except OSError as err:
        raise UntrustedCacheError(f"kernel cache folder {folder}: {err.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UntrustedCacheError(f"kernel cache folder {folder} is not a folder")
    if not _owner_ok(st, root_ok=False):
        raise UntrustedCacheError(f"kernel cache folder {folder} belongs to uid {st.st_uid}, not to this user "
                                  f"(uid {os.getuid()}); not loading compiled code from it")
    if st.st_mode & 0o022:
        raise UntrustedCacheError(f"kernel cache folder {folder} is writable by group or others "
                                  f"(mode {stat.S_IMODE(st.st_mode):o}); not loading compiled code from it "
                                  f"(chmod go-w {folder})")
    for above in folder.parents:
        try:
            st = os.stat(above)
        except OSError:
            continue
        sticky = st.st_mode & stat.S_ISVTX
        if not _owner_ok(st, root_ok=True) or (st.st_mode & 0o022 and not sticky):
            raise UntrustedCacheError(f"kernel cache folder {folder}: the folder above it, {above}, can be changed "
                                      "by other users; not loading compiled code from it")
    if library is None:
        return
    try:
        st = os.lstat(library)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise UntrustedCacheError(f"kernel cache folder {folder}: {library.name} is not a regular file; "
                                  "not loading it")
    if not _owner_ok(st, root_ok=False) or st.st_mode & 0o022:
        raise UntrustedCacheError(f"kernel cache folder {folder}: {library.name} belongs to uid {st.st_uid} with "
                                  f"mode {stat.S_IMODE(st.st_mode):o} (expected this user's, writable by no one "
                                  "else); not loading it")


def _build(compiler: str, source: str, workdir: Path, target: Path) -> None:
    """Compile ``source`` in a private folder inside ``workdir`` and rename it to ``target``."""
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".build-") as tmp:  # mode 0700
        src = Path(tmp) / "lookup.c"
        src.write_text(source, encoding="utf-8")
        built = Path(tmp) / "lookup.so"
        proc = subprocess.run([compiler, *_FLAGS, str(src), "-o", str(built)], capture_output=True, text=True)
        if proc.returncode != 0:
            detail = proc.stderr.strip()[:500] or f"exit status {proc.returncode}"
            raise RuntimeError(f"{compiler} failed: {detail}")
        # Writable by no one else whatever the umask, so the next load trusts it.
        os.chmod(built, 0o755)
        os.replace(built, target)  # atomic: concurrent processes never load a partial file


def _make_private_folders(folder: Path) -> None:
    """``folder`` and the folders missing above it, each created with mode 0700 (any umask)."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass


def _compile() -> ctypes.CDLL:
    compiler = _find_compiler()
    if compiler is None:
        raise RuntimeError("no C compiler found (gcc, cc or clang)")
    source = _source()
    target = _library_path(source, compiler)
    try:
        _make_private_folders(target.parent)
    except OSError:
        # No usable cache: build into a private temporary folder, load, and forget it.
        with tempfile.TemporaryDirectory(prefix="taan-kernels-") as tmp:
            private = Path(tmp) / target.name
            _build(compiler, source, Path(tmp), private)
            return _bind(ctypes.CDLL(str(private)))
    _check_trusted(target.parent, target)
    if not target.exists():
        _build(compiler, source, target.parent, target)
        _check_trusted(target.parent, target)
    return _bind(ctypes.CDLL(str(target)))


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    i64, ptr, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    for tag, _ in _TAGS.values():
        fwd = getattr(lib, f"taan_fwd_{tag}")
        fwd.argtypes = [ptr, ptr, i64, i64, ptr, ptr, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr,
                        ctypes.c_double, cint, cint]
        fwd.restype = cint
        bwd = getattr(lib, f"taan_bwd_{tag}")
        bwd.argtypes = [ptr, ptr, ptr, ptr, ptr, i64, i64, ptr, ptr, i64, i64, ptr, ptr, ptr, cint]
        bwd.restype = cint
    lib.taan_has_avx512.argtypes = []
    lib.taan_has_avx512.restype = cint
    return lib


def _load() -> ctypes.CDLL | None:
    global _lib, _tried, status
    if not _tried:
        with _lock:
            if not _tried:
                try:
                    _lib = _compile()
                    status = "compiled C kernel"
                except UntrustedCacheError as err:
                    _lib = None
                    status = f"unavailable: {err}"
                    warnings.warn(f"{err}; the plain torch path runs instead", RuntimeWarning, stacklevel=3)
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


def has_avx512() -> bool:
    """Whether the compiled library holds the AVX-512 forward path (False without a library)."""
    lib = _load()
    return lib is not None and bool(lib.taan_has_avx512())


def forward_path() -> str:
    """The forward path in force: "auto", "portable" or "avx512" (see :func:`set_forward_path`)."""
    return _forward_path


def set_forward_path(mode: str) -> None:
    """Choose the C forward path for this process.

    "auto" takes AVX-512 where the library has it and the call fits it (float32 or bfloat16
    input, at most 94 hinges), else portable C; "portable" always takes portable C; "avx512"
    takes AVX-512 and raises RuntimeError for a call it cannot take, so that a test asking for
    it never runs the other path unnoticed.
    """
    global _forward_path
    _forward_path = _check_path(mode, "forward path")


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
    if _forward_path == "avx512":
        _check_avx512_fits(z, alpha)
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
        int(_forward_path != "portable"),
    )
    if path < 0:
        raise MemoryError("taan forward kernel: could not allocate its tables")
    last_forward_path = "avx512" if path else "portable"
    # the checks above mirror the C rule; a disagreement is a bug, never a user error
    assert _forward_path != "avx512" or path == 1, "AVX-512 forward path forced but not taken"
    return out, segment, stats


def _check_avx512_fits(z: Tensor, alpha: Tensor) -> None:
    if not has_avx512():
        raise RuntimeError("forward path 'avx512' forced, but the kernel library was built without AVX-512 "
                           "(the CPU or the compiler lacks AVX-512F)")
    if z.dtype not in _AVX512_DTYPES or alpha.shape[1] > _AVX512_MAX_HINGES:
        dtype = str(z.dtype).removeprefix("torch.")
        raise RuntimeError(f"forward path 'avx512' forced, but it takes float32 or bfloat16 inputs with at most "
                           f"{_AVX512_MAX_HINGES} hinges, got {dtype} with {alpha.shape[1]} hinges")


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
