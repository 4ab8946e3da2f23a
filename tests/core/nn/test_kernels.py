"""The fused C kernels: each forward path forced and checked, the compile cache, the fallback
without a compiler, and torch.library.opcheck of the two custom operators."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from taan_core.nn import _kernels, _lookup
from taan_core.nn.functional import task_adaptive_activation, task_adaptive_activation_reference
from tests.core.nn.kernel_helpers import BACKENDS, backend, kernel_param
from tests.core.nn.kernel_helpers import needs_kernels as _needs

C_PATHS = [kernel_param("portable"), kernel_param("avx512", avx512=True)]
needs_kernels = _needs()
needs_avx512 = _needs(avx512=True)


def _tables(num_tasks, num_hinges, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    hinges = (torch.rand(num_hinges, generator=gen, dtype=torch.float64) * 4 - 2).to(dtype)
    alpha = torch.randn(num_tasks, num_hinges, generator=gen, dtype=torch.float64).to(dtype)
    return alpha, hinges


def _inputs_on_the_kinks(shape, hinges, seed):
    """Random z with a third of the elements exactly at a hinge or at 0 (the ties of the search)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=gen, dtype=torch.float64) * 2
    flat = z.view(-1)
    kinks = torch.cat([hinges.double(), torch.zeros(1, dtype=torch.float64)])
    hits = torch.randperm(flat.numel(), generator=gen)[: flat.numel() // 3]
    flat[hits] = kinks[torch.randint(len(kinks), (len(hits),), generator=gen)]
    return z


# --------------------------------------------------------------------------------------------
# forward paths


@needs_avx512
@pytest.mark.parametrize("num_hinges", [0, 1, 2, 3, 7, 8, 15, 16, 30, 31, 32, 33, 62, 63, 64, 65, 94])
def test_avx512_and_portable_paths_choose_the_same_segments(num_hinges):
    # The segment decides the output, dz and the parameter gradients; the AVX-512 search (a
    # permute-based binary search over padded breakpoints) must pick the one portable C picks,
    # ties at hinges and at 0 included, at every padded size and table size. 40 columns: two
    # full vectors of 16 and a tail of 8.
    alpha, hinges = _tables(5, num_hinges, seed=num_hinges)
    z = _inputs_on_the_kinks((33, 40), hinges, seed=num_hinges).float()
    task = torch.randint(5, (33,), generator=torch.Generator().manual_seed(1))
    results = {}
    for path in ("portable", "avx512"):
        with backend(path):
            results[path] = _kernels.forward(z, task, alpha, hinges, True, torch.uint8)
            assert _kernels.last_forward_path == path
    (out_p, seg_p, stats_p), (out_a, seg_a, stats_a) = results["portable"], results["avx512"]
    assert torch.equal(seg_a, seg_p)
    # the same slope and intercept, one fused multiply-add apart
    torch.testing.assert_close(out_a, out_p, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(stats_a, stats_p, rtol=1e-12, atol=1e-9)
    reference = task_adaptive_activation_reference(z.double(), task, alpha.double(), hinges.double())
    scale = 1.0 + float(alpha.abs().sum(1).max()) * 4
    torch.testing.assert_close(out_a.double(), reference, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("path", C_PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_each_path_on_nan_inf_and_huge_inputs(path, dtype):
    alpha, hinges = _tables(3, 6, seed=2)
    z = torch.tensor([[float("nan"), float("inf"), -float("inf"), 1e30, -1e30, 0.0, -0.0, float(hinges[0])] * 3] * 4)
    z = z.to(dtype)
    task = torch.tensor([0, 1, 2, 1])
    with backend(path):
        out = task_adaptive_activation(z, task, alpha, hinges)
        assert _kernels.last_forward_path == path
    expected = task_adaptive_activation_reference(z.double(), task, alpha.double(), hinges.double())
    # at -inf: the first segment's slope times -inf; the reference's 0 * inf terms give NaN there
    expected[:, 2::8] = torch.where(_lookup._segment_tables(alpha.double(), hinges.double())[3][task, 0] < 0,
                                    float("inf"), -float("inf"))[:, None]
    assert torch.equal(out.isnan(), expected.isnan())
    infinite = expected.isinf()
    assert torch.equal(out.double()[infinite], expected[infinite])
    finite = expected.isfinite()
    torch.testing.assert_close(out.double()[finite], expected[finite], rtol=1e-2 if dtype == torch.bfloat16 else 1e-6,
                               atol=1e-5)


@needs_kernels
@pytest.mark.parametrize("path", ["auto", "portable"])
def test_portable_takes_every_call_and_auto_prefers_avx512(path):
    alpha, hinges = _tables(2, 8, seed=0)
    z = torch.randn(4, 16)
    with backend("kernel" if path == "auto" else path):
        task_adaptive_activation(z, 1, alpha, hinges)
        expected = "avx512" if path == "auto" and _kernels.has_avx512() else "portable"
        assert _kernels.last_forward_path == expected
        # float64 and more than 94 hinges are portable C on every CPU
        task_adaptive_activation(z.double(), 1, alpha.double(), hinges.double())
        assert _kernels.last_forward_path == "portable"
        wide_alpha, wide_hinges = _tables(2, 95, seed=0)
        task_adaptive_activation(z, 1, wide_alpha, wide_hinges)
        assert _kernels.last_forward_path == "portable"


@needs_avx512
def test_forcing_avx512_refuses_inputs_it_cannot_take():
    alpha, hinges = _tables(2, 8, seed=0)
    with backend("avx512"), pytest.raises(RuntimeError, match="takes float32 or bfloat16 inputs with at most 94 "
                                                              "hinges, got float64 with 8 hinges"):
        task_adaptive_activation(torch.randn(4, 16, dtype=torch.float64), 0, alpha.double(), hinges.double())


@needs_kernels
def test_forcing_avx512_without_it_raises(monkeypatch):
    alpha, hinges = _tables(2, 8, seed=0)
    monkeypatch.setattr(_kernels, "has_avx512", lambda: False)
    with backend("avx512"), pytest.raises(RuntimeError, match="forward path 'avx512' forced, but the kernel library "
                                                              "was built without AVX-512"):
        task_adaptive_activation(torch.randn(4, 16), 0, alpha, hinges)


def test_set_forward_path_checks_its_argument():
    previous = _kernels.forward_path()
    with pytest.raises(ValueError, match="forward path must be one of auto, portable, avx512, got 'fast'"):
        _kernels.set_forward_path("fast")
    with pytest.raises(TypeError, match="forward path must be a str, got int"):
        _kernels.set_forward_path(1)
    assert _kernels.forward_path() == previous
    try:
        _kernels.set_forward_path("portable")
        assert _kernels.forward_path() == "portable"
    finally:
        _kernels.set_forward_path(previous)


@pytest.mark.slow
@needs_kernels
def test_environment_variable_chooses_the_path_at_import():
    script = """
import importlib, os, torch
from taan_core.nn import _kernels
from taan_core.nn.functional import task_adaptive_activation
task_adaptive_activation(torch.randn(3, 20), 0, torch.randn(1, 4), torch.randn(4))
print(_kernels.forward_path(), _kernels.last_forward_path)
os.environ["TAAN_KERNEL_PATH"] = "fast"
try:
    importlib.reload(_kernels)
except ValueError as err:
    print(err)
"""
    env = dict(os.environ, TAAN_KERNEL_PATH="portable", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "portable portable", "TAAN_KERNEL_PATH must be one of auto, portable, avx512, got 'fast'"]


# --------------------------------------------------------------------------------------------
# compilation and its cache


def test_shipped_source_is_the_c_file_next_to_the_module():
    source = _kernels._source()
    assert source == Path(_kernels.__file__).with_name("_kernels.c").read_text(encoding="utf-8")
    assert "int taan_has_avx512(void)" in source


def test_cache_file_is_keyed_by_the_source_text(monkeypatch, tmp_path):
    monkeypatch.setenv("TAAN_KERNEL_CACHE", str(tmp_path))
    source = _kernels._source()
    first = _kernels._library_path(source, "gcc")
    assert first.parent == tmp_path and first.name.startswith("taan_lookup_") and first.suffix == ".so"
    assert _kernels._library_path(source, "gcc") == first
    assert _kernels._library_path(source + "\n/* edited */\n", "gcc") != first
    assert _kernels._library_path(source, "clang") != first


@needs_kernels
def test_loaded_library_is_the_cached_build_of_the_shipped_source():
    expected = _kernels._library_path(_kernels._source(), _kernels._find_compiler())
    assert Path(_kernels._lib._name).name == expected.name


@pytest.fixture
def fresh_load(monkeypatch, tmp_path):
    """Let _kernels load again, into an empty cache; the loaded library comes back afterwards."""
    monkeypatch.setattr(_kernels, "_tried", False)
    monkeypatch.setattr(_kernels, "_lib", None)
    monkeypatch.setattr(_kernels, "status", "not loaded yet")
    monkeypatch.setenv("TAAN_KERNEL_CACHE", str(tmp_path))
    return monkeypatch


def test_without_a_compiler_the_torch_path_runs(fresh_load):
    fresh_load.delenv("CC", raising=False)
    fresh_load.setattr(_kernels.shutil, "which", lambda name: None)
    assert not _kernels.available()
    assert _kernels.status == "unavailable: no C compiler found (gcc, cc or clang)"
    assert not _kernels.has_avx512()
    alpha, hinges = _tables(3, 5, seed=4, dtype=torch.float64)
    z, task = torch.randn(6, 7, dtype=torch.float64), torch.tensor([0, 1, 2, 2, 1, 0])
    with backend("kernel"):
        out = task_adaptive_activation(z, task, alpha, hinges)
        assert _kernels.last_forward_path == "none"
    torch.testing.assert_close(out, task_adaptive_activation_reference(z, task, alpha, hinges))


def test_a_failing_compiler_is_reported(fresh_load):
    fresh_load.setenv("CC", "false")
    assert not _kernels.available()
    assert _kernels.status == "unavailable: false failed: exit status 1"


# --------------------------------------------------------------------------------------------
# the cache is trusted only if it is the user's own


def _plain_path_runs():
    alpha, hinges = _tables(2, 3, seed=5, dtype=torch.float64)
    z, task = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 1, 0])
    with backend("kernel"):
        out = task_adaptive_activation(z, task, alpha, hinges)
        assert _kernels.last_forward_path == "none"
    torch.testing.assert_close(out, task_adaptive_activation_reference(z, task, alpha, hinges))


def test_a_group_writable_cache_folder_is_refused(fresh_load, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o775)
    cache.chmod(0o775)
    fresh_load.setenv("TAAN_KERNEL_CACHE", str(cache))
    with pytest.warns(RuntimeWarning, match=rf"kernel cache folder {cache} is writable by group or others") as rec:
        assert not _kernels.available()
    assert len(str(rec[0].message).splitlines()) == 1
    assert list(cache.iterdir()) == []  # nothing built, nothing loaded
    _plain_path_runs()


@pytest.mark.skipif(_kernels._find_compiler() is None, reason="needs a C compiler")
def test_a_library_writable_by_others_is_not_loaded(fresh_load, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    fresh_load.setenv("TAAN_KERNEL_CACHE", str(cache))
    planted = _kernels._library_path(_kernels._source(), _kernels._find_compiler())
    planted.write_bytes(b"not a library")
    planted.chmod(0o666)
    with pytest.warns(RuntimeWarning, match=rf"kernel cache folder {cache}: {planted.name} belongs to uid \d+ "
                                            r"with mode 666"):
        assert not _kernels.available()
    assert planted.read_bytes() == b"not a library"
    _plain_path_runs()


def test_a_cache_owned_by_another_user_is_refused(fresh_load, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    fresh_load.setenv("TAAN_KERNEL_CACHE", str(cache))
    real_stat = os.stat

    def stat(path, *args, **kwargs):
        st = real_stat(path, *args, **kwargs)
        if Path(path) == cache:  # as if another user had made it
            values = list(st)
            values[4] = os.getuid() + 1
            return os.stat_result(values)
        return st

    fresh_load.setattr(_kernels.os, "stat", stat)
    with pytest.warns(RuntimeWarning, match=rf"kernel cache folder {cache} belongs to uid \d+, not to this user"):
        assert not _kernels.available()
    _plain_path_runs()


def test_a_library_that_is_a_link_is_not_loaded(fresh_load, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    fresh_load.setenv("TAAN_KERNEL_CACHE", str(cache))
    fresh_load.setenv("CC", "gcc")
    (tmp_path / "elsewhere.so").write_bytes(b"x")
    _kernels._library_path(_kernels._source(), "gcc").symlink_to(tmp_path / "elsewhere.so")
    with pytest.warns(RuntimeWarning, match=rf"kernel cache folder {cache}: taan_lookup_\w+\.so is not a regular"):
        assert not _kernels.available()


@pytest.mark.skipif(_kernels._find_compiler() is None, reason="needs a C compiler")
def test_a_fresh_build_is_private_and_trusted_next_time(fresh_load, tmp_path):
    cache = tmp_path / "new" / "cache"
    fresh_load.setenv("TAAN_KERNEL_CACHE", str(cache))
    old = os.umask(0o002)  # a umask that would leave the library group-writable
    try:
        assert _kernels.available()
    finally:
        os.umask(old)
    assert oct(cache.stat().st_mode & 0o777) == oct(0o700)
    (library,) = cache.iterdir()  # the build folder is gone
    assert library.stat().st_mode & 0o022 == 0
    _kernels._check_trusted(cache, library)


# --------------------------------------------------------------------------------------------
# torch.library.opcheck of the custom operators


def _op_inputs(dtype, layout):
    gen = torch.Generator().manual_seed(7)
    z = torch.randn(6, 5, generator=gen, dtype=torch.float64).to(dtype)
    alpha, hinges = _tables(3, 4, seed=7, dtype=dtype)
    if layout == "mixed":
        task = torch.tensor([2, 0, 1, 1, 0, 2])
    else:  # how functional passes an int task: one id per row
        task = torch.full((6,), 1, dtype=torch.int64)
    return z, task, alpha, hinges


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("layout", ["mixed", "single"])
def test_opcheck_forward_operator(backend_name, dtype, layout):
    z, task, alpha, hinges = _op_inputs(dtype, layout)
    z, alpha, hinges = (t.requires_grad_() for t in (z, alpha, hinges))
    with backend(backend_name):
        for with_stats in (True, False):
            torch.library.opcheck(torch.ops.taan.task_adaptive_activation.default, (z, task, alpha, hinges, with_stats))


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("layout", ["mixed", "single"])
def test_opcheck_backward_operator(backend_name, dtype, layout):
    z, task, alpha, hinges = _op_inputs(dtype, layout)
    grad = torch.randn(z.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64).to(dtype)
    with backend(backend_name):
        _, segment, _ = torch.ops.taan.task_adaptive_activation(z, task, alpha, hinges, False)
        torch.library.opcheck(torch.ops.taan.task_adaptive_activation_backward.default,
                              (grad, z, task, segment, alpha, hinges))
        # and the operator computes the gradients of the reference
        dz, dalpha, dhinges = torch.ops.taan.task_adaptive_activation_backward(grad, z, task, segment, alpha, hinges)
    leaves = [t.detach().double().requires_grad_() for t in (z, alpha, hinges)]
    expected = torch.autograd.grad(task_adaptive_activation_reference(leaves[0], task, *leaves[1:]), leaves,
                                   grad.double())
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    for got, want in zip((dz, dalpha, dhinges), expected):
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), want, **tol)
