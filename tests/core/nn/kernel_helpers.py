"""Run a test on each execution path of the segment lookup, and show the ones this machine lacks.

The fused C kernels compile at first use; where no compiler exists (or the CPU lacks AVX-512 for
that forward path) their cases are reported as skipped, with the reason, instead of vanishing
from the parametrisation. (A uniquely named module rather than conftest, as in tests/viz.)
"""

from __future__ import annotations

import contextlib

import pytest

from taan_core.nn import _kernels

__all__ = ["BACKENDS", "PATHS", "backend", "kernel_param", "needs_kernels"]


def needs_kernels(*, avx512: bool = False) -> pytest.MarkDecorator:
    """Skip, saying why, where the kernels did not compile (or, with ``avx512``, lack that path)."""
    reason = ""
    if not _kernels.available():
        reason = f"fused C kernels not available here ({_kernels.status})"
    elif avx512 and not _kernels.has_avx512():
        reason = "no AVX-512 forward path: the CPU or the C compiler lacks AVX-512F"
    return pytest.mark.skipif(bool(reason), reason=reason)


def kernel_param(name: str, *, avx512: bool = False):
    """``name`` as a pytest parameter, skipped with a reason where the kernels (or AVX-512) are missing."""
    return pytest.param(name, marks=needs_kernels(avx512=avx512))


# "kernel": the fused kernels with their automatic forward path; "portable" and "avx512" force
# one C forward path; "torch" is the plain torch path.
BACKENDS = ["torch", kernel_param("kernel")]
PATHS = ["torch", kernel_param("portable"), kernel_param("avx512", avx512=True)]


@contextlib.contextmanager
def backend(name: str):
    """Run the lookup on ``name``: "torch", "kernel", "portable" or "avx512".

    Resets ``_kernels.last_forward_path`` to "none" on entry, so that a test can assert which C
    forward path ran inside the block.
    """
    if name not in ("torch", "kernel", "portable", "avx512"):
        raise ValueError(f"unknown backend {name!r}")
    previous = _kernels.enabled(), _kernels.forward_path()
    _kernels.set_enabled(name != "torch")
    _kernels.set_forward_path(name if name in ("portable", "avx512") else "auto")
    _kernels.last_forward_path = "none"
    try:
        yield
    finally:
        _kernels.set_enabled(previous[0])
        _kernels.set_forward_path(previous[1])
