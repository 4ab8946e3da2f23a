"""The Triton kernels of the segment lookup against the naive form, the C kernel and the plain path.

Not collected on its own (the name lacks ``test_``): ``triton.jit`` decides when triton is first
imported whether kernels run compiled or in the interpreter, so tests/core/nn/test_triton.py runs this
file in a fresh interpreter with ``TRITON_INTERPRET=1`` (CPU tensors). On a CUDA machine it runs
directly, on CUDA tensors: ``python -m pytest tests/core/nn/triton_cases.py`` (scripts/gpu_check.sh).
"""

from __future__ import annotations

import os

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[gpu]')")

from taan_core.nn import _kernels, _lookup, _triton  # noqa: E402
from taan_core.nn.functional import task_adaptive_activation, task_adaptive_activation_reference  # noqa: E402
from taan_core.nn.layers import TALinear  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET", "") == "1"
DEVICES = (["cpu"] if INTERPRETED else []) + (["cuda"] if torch.cuda.is_available() else [])
if not DEVICES:
    pytest.skip("no CUDA device, and TRITON_INTERPRET=1 was not set before triton was imported "
                "(tests/core/nn/test_triton.py runs this file in the interpreter)", allow_module_level=True)

DTYPES = [torch.float32, torch.float64]
# tolerances of the output and gradients against the naive form, which sums M terms in another order
TOL = {torch.float32: {"rtol": 2e-5, "atol": 2e-5}, torch.float64: {"rtol": 1e-11, "atol": 1e-11}}


@pytest.fixture(autouse=True)
def triton_always():
    """Route every call through the Triton kernels (CPU tensors included, in the interpreter)."""
    assert _triton.available(), _triton.status
    assert _triton.interpreted() == INTERPRETED
    previous = _triton.mode()
    _triton.set_mode("always")
    try:
        yield
    finally:
        _triton.set_mode(previous)


def _problem(shape, num_tasks, num_hinges, *, device, dtype, seed=0):
    """Random z, a third of it exactly at a hinge or at 0; mixed tasks; a near tie of two hinges."""
    gen = torch.Generator().manual_seed(seed)
    hinges = torch.rand(num_hinges, generator=gen, dtype=torch.float64) * 4 - 2
    if num_hinges >= 2:
        hinges[1] = hinges[0] + 1e-6
    if num_hinges >= 3:
        hinges[2] = 0.0
    alpha = torch.randn(num_tasks, num_hinges, generator=gen, dtype=torch.float64)
    z = torch.randn(shape, generator=gen, dtype=torch.float64) * 2
    flat = z.view(-1)
    kinks = torch.cat([hinges, torch.zeros(1, dtype=torch.float64)])
    hits = torch.randperm(flat.numel(), generator=gen)[: flat.numel() // 3]
    flat[hits] = kinks[torch.randint(len(kinks), (len(hits),), generator=gen)]
    task = torch.randint(num_tasks, (shape[0],), generator=gen)
    cast = {"device": device, "dtype": dtype}
    # z, alpha and hinges rounded to dtype first, so that the kinks are exact in that dtype too
    return z.to(**cast), task.to(device), alpha.to(**cast), hinges.to(**cast)


def _value_and_grads(fn, z, task, alpha, hinges):
    z, alpha, hinges = (t.detach().clone().requires_grad_() for t in (z, alpha, hinges))
    out = fn(z, task, alpha, hinges)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(out)
    return (out.detach(), *torch.autograd.grad(out, (z, alpha, hinges), g))


def _launched(kind: str):
    before = _triton.launches[kind]
    return lambda: _triton.launches[kind] - before


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "num_tasks", "num_hinges"),
                         [((9, 5), 3, 4), ((6, 3, 4, 2), 5, 16), ((12, 40), 7, 64), ((5, 6), 2, 0),
                          ((4, 30), 2, 1), ((3, 20), 2, 300)])
def test_values_and_gradients_match_the_naive_form(device, dtype, shape, num_tasks, num_hinges):
    z, task, alpha, hinges = _problem(shape, num_tasks, num_hinges, device=device, dtype=dtype)
    forward, backward = _launched("forward"), _launched("backward")
    fast = _value_and_grads(task_adaptive_activation, z, task, alpha, hinges)
    assert (forward(), backward()) == (1, 1)
    slow = _value_and_grads(task_adaptive_activation_reference, z, task, alpha, hinges)
    for name, a, b in zip(("out", "dz", "dalpha", "dhinges"), fast, slow):
        torch.testing.assert_close(a, b, **TOL[dtype], msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_hinges", [0, 1, 3, 8, 15, 16, 17, 64, 255])
def test_segments_equal_the_c_kernel_and_the_plain_path(device, dtype, num_hinges):
    # The segment decides everything else; it must be the one the other paths pick, every tie at
    # a hinge and at 0 included, at every padded search size.
    z, task, alpha, hinges = _problem((11, 37), 4, num_hinges, device=device, dtype=dtype, seed=num_hinges)
    seg_dtype = _lookup._segment_dtype(num_hinges + 2)
    breakpoints, _, _, slope, intercept = _lookup._segment_tables(alpha, hinges)
    out, segment, stats = _triton.forward(z, task, breakpoints, slope, intercept, True, seg_dtype)
    ref_out, ref_segment, ref_stats = _lookup._forward_torch(z, task, breakpoints, slope, intercept, True)
    assert segment.dtype == ref_segment.dtype == seg_dtype
    assert torch.equal(segment, ref_segment)
    torch.testing.assert_close(out, ref_out, **TOL[dtype])
    torch.testing.assert_close(stats, ref_stats, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=1e-9)
    if _kernels.available():
        c_out, c_segment, c_stats = _kernels.forward(z.cpu(), task.cpu(), alpha.cpu(), hinges.cpu(), True, seg_dtype)
        assert torch.equal(segment.cpu(), c_segment)
        torch.testing.assert_close(out.cpu(), c_out, **TOL[dtype])
        torch.testing.assert_close(stats.cpu(), c_stats, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_equals_the_c_kernel(device, dtype):
    if not _kernels.available():
        pytest.skip(f"fused C kernels not available here ({_kernels.status})")
    z, task, alpha, hinges = _problem((10, 33), 5, 16, device=device, dtype=dtype, seed=4)
    grad = torch.randn(z.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(z)
    breakpoints, _, _, slope, intercept = _lookup._segment_tables(alpha, hinges)
    segment = _lookup._forward_torch(z, task, breakpoints, slope, intercept, False)[1]
    mine = _lookup._backward_fused(grad, z, task, segment, alpha, hinges)
    theirs = _kernels.backward(grad.cpu(), z.cpu(), task.cpu(), segment.cpu(), alpha.cpu(), hinges.cpu())
    for name, a, b in zip(("dz", "dalpha", "dhinges"), mine, theirs):
        torch.testing.assert_close(a.cpu(), b, **TOL[dtype], msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("device", DEVICES)
def test_kinks_follow_autograd_of_the_naive_form(device):
    # relu'(0) = 0 and relu(b - z) is inactive at z = b: at z = 0 with hinges 0 and 1 and
    # alpha = (2, 3) the derivative is -3 (only the hinge at 1 is active).
    cast = {"device": device, "dtype": torch.float64}
    z = torch.tensor([[0.0, 1.0, 0.5, -0.5]], **cast, requires_grad=True)
    alpha = torch.tensor([[2.0, 3.0]], **cast, requires_grad=True)
    hinges = torch.tensor([0.0, 1.0], **cast, requires_grad=True)
    out = task_adaptive_activation(z, 0, alpha, hinges)
    out.sum().backward()
    torch.testing.assert_close(out.detach().cpu(), torch.tensor([[3.0, 1.0, 2.0, 5.5]], dtype=torch.float64))
    torch.testing.assert_close(z.grad.cpu(), torch.tensor([[-3.0, 1.0, -2.0, -5.0]], dtype=torch.float64))
    torch.testing.assert_close(alpha.grad.cpu(), torch.tensor([[0.5, 3.0]], dtype=torch.float64))
    torch.testing.assert_close(hinges.grad.cpu(), torch.tensor([2.0, 9.0], dtype=torch.float64))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's 0 * inf
@pytest.mark.parametrize("device", DEVICES)
def test_infinities_and_nan(device):
    # A flat segment gives its intercept at +-inf (relu(-inf) = 0 with no active hinge), NaN stays NaN.
    cast = {"device": device, "dtype": torch.float32}
    alpha = torch.tensor([[0.5, -1.0], [0.0, 0.0]], **cast)
    hinges = torch.tensor([-1.0, 2.0], **cast)
    z = torch.tensor([[float("-inf"), float("inf"), float("nan"), 3.0]] * 2, **cast)
    task = torch.tensor([0, 1], device=device)
    out = task_adaptive_activation(z, task, alpha, hinges)
    expected = task_adaptive_activation_reference(z[:, [1, 3]], task, alpha, hinges)
    torch.testing.assert_close(out[:, [1, 3]], expected)
    assert out[1, 0].item() == 0.0  # task 1 is relu: flat left of 0, so 0 at -inf, not 0 * inf
    # task 0 left of both hinges: slope -(0.5 - 1.0) = 0.5 > 0, so -inf
    assert out[0, 0].item() == float("-inf")
    assert torch.isnan(out[:, 2]).all()


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_float64(device):
    gen = torch.Generator().manual_seed(5)
    cast = {"device": device, "dtype": torch.float64}
    hinges = torch.tensor([-0.6, -0.1, 0.3, 0.8], **cast).requires_grad_()
    alpha = torch.randn(3, 4, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    # away from the kinks, where F is differentiable and finite differences are meaningful; every
    # segment and every task present, few elements (each costs two interpreted launches)
    z = (torch.tensor([[-0.85, -0.35, 0.1], [0.55, 1.1, -0.35], [0.1, -0.85, 1.1]], dtype=torch.float64)
         + 0.02 * torch.randn(3, 3, generator=gen, dtype=torch.float64)).to(device).requires_grad_()
    task = torch.tensor([0, 2, 1], device=device)
    launched = _launched("backward")
    assert torch.autograd.gradcheck(lambda z, a, b: task_adaptive_activation(z, task, a, b), (z, alpha, hinges))
    assert torch.autograd.gradcheck(lambda z, a, b: task_adaptive_activation(z, 1, a, b), (z, alpha, hinges))
    assert launched() > 0
    # second derivatives come from the plain torch backward, on the Triton forward's segments
    assert torch.autograd.gradgradcheck(lambda z, a, b: task_adaptive_activation(z, task, a, b), (z, alpha, hinges))


@pytest.mark.parametrize("device", DEVICES)
def test_low_precision_inputs(device):
    z, task, alpha, hinges = _problem((6, 24), 3, 8, device=device, dtype=torch.float32, seed=7)
    z = z.to(torch.bfloat16)
    try:
        out = task_adaptive_activation(z, task, alpha, hinges)
    except Exception as err:  # the interpreter's numpy has no bfloat16 on some versions
        if INTERPRETED:
            pytest.skip(f"bfloat16 not supported by this Triton interpreter: {type(err).__name__}: {err}")
        raise
    assert out.dtype == torch.bfloat16
    expected = task_adaptive_activation_reference(z.float(), task, alpha, hinges).to(torch.bfloat16)
    torch.testing.assert_close(out, expected, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch_single_task_and_strided_inputs(device):
    z, task, alpha, hinges = _problem((8, 6), 3, 5, device=device, dtype=torch.float64)
    empty = task_adaptive_activation(z[:0], task[:0], alpha, hinges)
    assert empty.shape == (0, 6)
    for one_task in (2, torch.tensor(2, device=device)):  # an int, and a 0-d tensor expanded to (N,)
        torch.testing.assert_close(task_adaptive_activation(z, one_task, alpha, hinges),
                                   task_adaptive_activation_reference(z, 2, alpha, hinges), **TOL[torch.float64])
    # every other row and column, with the task ids of those rows: strided views of z and task
    zs, ts = z[::2, ::2], task[::2]
    assert not zs.is_contiguous() and not ts.is_contiguous()
    fast = _value_and_grads(task_adaptive_activation, zs, ts, alpha, hinges)
    slow = _value_and_grads(task_adaptive_activation_reference, zs, ts, alpha, hinges)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, **TOL[torch.float64])


@pytest.mark.parametrize("device", DEVICES)
def test_layer_training_step_matches_the_plain_path(device):
    # TALinear in training mode: output, gradients and running statistics as on the plain path.
    torch.manual_seed(0)
    layer = TALinear(12, 20, num_tasks=4, num_hinges=8, batch_norm=True).to(device)
    plain = TALinear(12, 20, num_tasks=4, num_hinges=8, batch_norm=True).to(device)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(16, 12, device=device)
    task = torch.randint(4, (16,), device=device)
    out = layer(x, task)
    out.square().sum().backward()
    _triton.set_mode("off")
    with _kernels_off():
        ref = plain(x, task)
        ref.square().sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for (name, a), b in zip(layer.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
    for (name, a), b in zip(layer.named_buffers(), plain.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


class _kernels_off:
    """The plain torch path on CPU too (the C kernels off) while inside."""

    def __enter__(self):
        self.previous = _kernels.enabled()
        _kernels.set_enabled(False)

    def __exit__(self, *exc):
        _kernels.set_enabled(self.previous)


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_op_runs_the_triton_kernels(device):
    # Under torch.compile the custom operators call the same kernels; one graph, no break.
    torch._dynamo.reset()
    z, task, alpha, hinges = _problem((5, 7), 3, 4, device=device, dtype=torch.float64)
    alpha.requires_grad_()

    def loss(z, task, alpha, hinges):
        return task_adaptive_activation(z, task, alpha, hinges).square().sum()

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    forward, backward = _launched("forward"), _launched("backward")
    (grad,) = torch.autograd.grad(compiled(z, task, alpha, hinges), alpha)
    assert forward() >= 1 and backward() >= 1
    expected_loss = task_adaptive_activation_reference(z, task, alpha, hinges).square().sum()
    (expected,) = torch.autograd.grad(expected_loss, alpha)
    torch.testing.assert_close(grad, expected, **TOL[torch.float64])
