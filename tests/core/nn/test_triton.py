"""The Triton path: its interpreter-mode tests (in a fresh interpreter), its switch, its fallback."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from taan_core.nn import _triton
from taan_core.nn.functional import task_adaptive_activation, task_adaptive_activation_reference

ROOT = Path(__file__).resolve().parents[3]
HAS_TRITON = importlib.util.find_spec("triton") is not None


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (pip install -e '.[gpu]'); "
                                          "the Triton kernels are tested in its interpreter")
def test_triton_kernels_pass_in_interpret_mode():
    # TRITON_INTERPRET must be set before triton is first imported (triton.jit reads it at
    # decoration time), and setting it here would change every later test of this session: the
    # cases run in their own interpreter, on CPU tensors.
    env = {**os.environ, "TRITON_INTERPRET": "1", "TAAN_TRITON": "auto"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "tests/core/nn/triton_cases.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    tail = (done.stdout + done.stderr)[-6000:]
    assert done.returncode == 0, tail
    passed = re.search(r"(\d+) passed", done.stdout)
    assert passed and int(passed.group(1)) >= 30, tail
    # only the C-kernel comparisons may skip (no C compiler); the Triton cases themselves may not
    for line in done.stdout.splitlines():
        if line.startswith("SKIPPED"):
            assert "C kernels not available" in line, tail


def test_mode_switch_validates():
    with pytest.raises(ValueError, match="mode must be one of auto, off, always, got 'gpu'"):
        _triton.set_mode("gpu")
    with pytest.raises(TypeError, match="mode must be a str, got int"):
        _triton.set_mode(1)
    assert _triton.mode() in _triton.MODES


@pytest.mark.slow
def test_bad_environment_value_is_reported():
    code = "import taan_core.nn._triton"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "TAAN_TRITON": "yes"})
    assert done.returncode != 0
    assert "TAAN_TRITON must be one of auto, off, always, got 'yes'" in done.stderr


def test_cpu_tensors_do_not_take_the_triton_path_by_default():
    # "auto" and "off" never route CPU tensors to Triton, and decide so without importing it.
    z = torch.randn(4, 3)
    alpha = torch.randn(2, 5)
    previous = _triton.mode()
    try:
        for mode in ("auto", "off"):
            _triton.set_mode(mode)
            assert not _triton.usable(z, alpha)
    finally:
        _triton.set_mode(previous)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (pip install -e '.[gpu]')")
def test_always_without_the_interpreter_falls_back_on_cpu():
    # Compiled Triton kernels need a GPU: outside the interpreter, "always" leaves CPU tensors to
    # the C kernel or the plain path, with the same results.
    code = (
        "import torch\n"
        "from taan_core.nn import _triton\n"
        "from taan_core.nn.functional import task_adaptive_activation as f, task_adaptive_activation_reference as r\n"
        "z, a = torch.randn(5, 4, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)\n"
        "b = torch.randn(6, dtype=torch.float64)\n"
        "t = torch.tensor([0, 2, 1, 1, 0])\n"
        "torch.testing.assert_close(f(z, t, a, b), r(z, t, a, b))\n"
        "print(_triton.mode(), _triton.usable(z, a), _triton.launches['forward'])\n"
    )
    env = {**os.environ, "TAAN_TRITON": "always"}
    env.pop("TRITON_INTERPRET", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["always", "False", "0"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_falls_back_to_the_plain_path_when_off():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(8, 6, generator=gen, dtype=torch.float64).cuda()
    task = torch.randint(3, (8,), generator=gen).cuda()
    alpha = torch.randn(3, 4, generator=gen, dtype=torch.float64).cuda()
    hinges = torch.randn(4, generator=gen, dtype=torch.float64).cuda()
    previous = _triton.mode()
    try:
        _triton.set_mode("off")
        before = dict(_triton.launches)
        out = task_adaptive_activation(z, task, alpha, hinges)
        assert _triton.launches == before
    finally:
        _triton.set_mode(previous)
    torch.testing.assert_close(out, task_adaptive_activation_reference(z, task, alpha, hinges))
