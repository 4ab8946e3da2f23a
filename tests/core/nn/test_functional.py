"""The segment lookup against the naive reference: values, gradients, kinks, dtypes, errors, compile."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from taan_core.nn import _kernels
from taan_core.nn.functional import task_adaptive_activation, task_adaptive_activation_reference
from tests.core.nn.kernel_helpers import BACKENDS, PATHS
from tests.core.nn.kernel_helpers import backend as _backend

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _problem(shape, num_tasks, num_hinges, per_sample, *, device="cpu", dtype=torch.float64, seed=0):
    """Random inputs with some z exactly at 0 and at hinges, and a pair of nearly tied hinges."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=gen, dtype=torch.float64)
    hinges = torch.rand(num_hinges, generator=gen, dtype=torch.float64) * 2 - 1
    if num_hinges >= 2:
        hinges[1] = hinges[0] + 1e-12
    if num_hinges >= 3:
        hinges[2] = 0.0
    alpha = torch.randn(num_tasks, num_hinges, generator=gen, dtype=torch.float64)
    flat = z.view(-1)
    hits = torch.randperm(flat.numel(), generator=gen)[: max(1, flat.numel() // 4)]
    kinks = torch.cat([hinges, torch.zeros(1, dtype=torch.float64)])
    flat[hits] = kinks[torch.arange(len(hits)) % len(kinks)]
    if per_sample:
        task = torch.randint(num_tasks, (shape[0],), generator=gen)
    else:
        task = int(torch.randint(num_tasks, (), generator=gen))
    cast = {"device": device, "dtype": dtype}
    task = task.to(device) if isinstance(task, torch.Tensor) else task
    return z.to(**cast), task, alpha.to(**cast), hinges.to(**cast)


def _value_and_grads(fn, z, task, alpha, hinges, grad_seed=1):
    z, alpha, hinges = (t.detach().clone().requires_grad_() for t in (z, alpha, hinges))
    out = fn(z, task, alpha, hinges)
    gen = torch.Generator().manual_seed(grad_seed)
    g = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out)
    grads = torch.autograd.grad(out, (z, alpha, hinges), g)
    return (out.detach(),) + tuple(grads)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("per_sample", [True, False])
@pytest.mark.parametrize(
    ("shape", "num_tasks", "num_hinges"),
    [((7,), 1, 1), ((9, 5), 3, 4), ((6, 3, 4, 2), 5, 16), ((12, 11), 7, 64), ((5, 6), 2, 0), ((4, 300), 2, 255)],
)
def test_lookup_equals_reference_float64(backend, device, per_sample, shape, num_tasks, num_hinges):
    z, task, alpha, hinges = _problem(shape, num_tasks, num_hinges, per_sample, device=device)
    with _backend(backend):
        fast = _value_and_grads(task_adaptive_activation, z, task, alpha, hinges)
    slow = _value_and_grads(task_adaptive_activation_reference, z, task, alpha, hinges)
    for name, a, b in zip(("out", "dz", "dalpha", "dhinges"), fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_kinks_follow_autograd_of_the_naive_form(backend):
    # relu'(0) = 0, and relu(b - z) is inactive at z = b: at z = 0 with hinges 0 and 1 and
    # alpha = (2, 3), the derivative is -3 (only the hinge at 1 is active).
    z = torch.tensor([0.0, 1.0, 0.5, -0.5], dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor([[2.0, 3.0]], dtype=torch.float64, requires_grad=True)
    hinges = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
    with _backend(backend):
        out = task_adaptive_activation(z, 0, alpha, hinges)
    out.sum().backward()
    torch.testing.assert_close(out.detach(), torch.tensor([3.0, 1.0, 2.0, 5.5], dtype=torch.float64))
    torch.testing.assert_close(z.grad, torch.tensor([-3.0, 1.0, -2.0, -5.0], dtype=torch.float64))
    # dalpha_m = sum relu(b_m - z); dhinges_m = alpha_m * #{z < b_m}
    torch.testing.assert_close(alpha.grad, torch.tensor([[0.5, 3.0]], dtype=torch.float64))
    torch.testing.assert_close(hinges.grad, torch.tensor([2.0, 9.0], dtype=torch.float64))


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_ties_and_crossing_hinges(backend):
    # Duplicated hinges, hinges in decreasing order, and a step that moves one hinge past another.
    z, task, alpha, hinges = _problem((8, 9), 3, 5, True, seed=3)
    hinges = torch.tensor([0.4, 0.4, -0.2, 0.1, -0.7], dtype=torch.float64)
    z[0, :5] = hinges
    for step in (0.0, 0.35, 0.65):
        moved = hinges.clone()
        moved[2] += step
        with _backend(backend):
            fast = _value_and_grads(task_adaptive_activation, z, task, alpha, moved)
        slow = _value_and_grads(task_adaptive_activation_reference, z, task, alpha, moved)
        for a, b in zip(fast, slow):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.floats(-3, 3, allow_nan=False, width=64), min_size=1, max_size=24),
    hinge_values=st.lists(st.floats(-2, 2, allow_nan=False, width=64), min_size=1, max_size=6),
    num_tasks=st.integers(1, 4),
    seed=st.integers(0, 1000),
)
def test_lookup_matches_reference_property(values, hinge_values, num_tasks, seed):
    gen = torch.Generator().manual_seed(seed)
    # draw z partly from the hinges themselves so that ties are common
    pool = torch.tensor(values + hinge_values + [0.0], dtype=torch.float64)
    z = pool[torch.randint(len(pool), (len(values), 2), generator=gen)]
    hinges = torch.tensor(hinge_values, dtype=torch.float64)
    alpha = torch.randn(num_tasks, len(hinge_values), generator=gen, dtype=torch.float64)
    task = torch.randint(num_tasks, (len(values),), generator=gen)
    fast = _value_and_grads(task_adaptive_activation, z, task, alpha, hinges)
    slow = _value_and_grads(task_adaptive_activation_reference, z, task, alpha, hinges)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def _away_from_kinks(shape, num_tasks, num_hinges, device="cpu", seed=0):
    """float64 inputs whose z lie at least 1e-3 from 0 and every hinge, for finite differences."""
    gen = torch.Generator().manual_seed(seed)
    hinges = torch.linspace(-0.9, 0.9, num_hinges, dtype=torch.float64) + 0.05
    hinges = hinges[torch.randperm(num_hinges, generator=gen)]
    z = torch.randn(shape, generator=gen, dtype=torch.float64)
    kinks = torch.cat([hinges, torch.zeros(1, dtype=torch.float64)])
    near = (z.unsqueeze(-1) - kinks).abs().amin(-1) < 1e-3
    z = torch.where(near, z + 3e-3, z)
    alpha = torch.randn(num_tasks, num_hinges, generator=gen, dtype=torch.float64)
    task = torch.randint(num_tasks, (shape[0],), generator=gen)
    cast = {"device": device}
    return (z.to(**cast).requires_grad_(), task.to(**cast), alpha.to(**cast).requires_grad_(),
            hinges.to(**cast).requires_grad_())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_and_gradgradcheck(backend, device):
    z, task, alpha, hinges = _away_from_kinks((5, 3), 3, 4, device=device)
    with _backend(backend):
        fn = lambda z, a, b: task_adaptive_activation(z, task, a, b)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (z, alpha, hinges))
        assert torch.autograd.gradgradcheck(fn, (z, alpha, hinges))
        fn_int = lambda z, a, b: task_adaptive_activation(z, 1, a, b)  # noqa: E731
        assert torch.autograd.gradcheck(fn_int, (z, alpha, hinges))


@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("num_hinges", [0, 1, 5, 8, 16, 24, 31, 32, 63, 64, 94, 95, 200])
def test_float32_paths_at_every_search_depth(backend, num_hinges):
    # The vectorised CPU search changes shape with the padded breakpoint count (1 to 128) and
    # the table size (32, 64, 96 segments); rows of 37 elements exercise full vectors and tails.
    z, task, alpha, hinges = _problem((6, 37), 4, num_hinges, True, dtype=torch.float32, seed=num_hinges)
    z[0, :2] = torch.tensor([float("inf"), -float("inf")])
    if backend == "avx512" and num_hinges > 94:
        with _backend(backend), pytest.raises(RuntimeError, match=f"at most 94 hinges, got float32 with {num_hinges}"):
            task_adaptive_activation(z, task, alpha, hinges)
        return
    with _backend(backend):
        fast = _value_and_grads(task_adaptive_activation, z, task, alpha, hinges)
        # the forced C forward path is the one that ran
        assert _kernels.last_forward_path == {"torch": "none"}.get(backend, backend)
    exact = _value_and_grads(task_adaptive_activation_reference, z.double(), task, alpha.double(), hinges.double())
    scale = 1.0 + float(alpha.abs().sum(1).max())
    # at z = +inf every task is relu (slope 1); at -inf the limit of the first segment
    assert fast[0][0, 0] == float("inf")
    if num_hinges == 0:
        assert fast[0][0, 1] == 0.0
    finite = torch.isfinite(z)
    assert torch.isfinite(fast[0][finite]).all()
    torch.testing.assert_close(fast[0][finite].double(), exact[0][finite], rtol=0, atol=1e-5 * scale)
    # the gradient of z is exactly the slope of the segment, so a wrong segment shows at once
    torch.testing.assert_close(fast[1].double(), exact[1], rtol=1e-5, atol=1e-5 * scale)
    torch.testing.assert_close(fast[2].double(), exact[2], rtol=1e-4, atol=1e-4 * scale)
    torch.testing.assert_close(fast[3].double(), exact[3], rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 4e-3)])
def test_low_precision_inputs(backend, device, dtype, tol):
    z, task, alpha, hinges = _problem((16, 33), 4, 8, True, device=device, seed=5)
    z_low, alpha32, hinges32 = z.to(dtype), alpha.float(), hinges.float()
    with _backend(backend):
        fast = _value_and_grads(task_adaptive_activation, z_low, task, alpha32, hinges32)
        # the C kernels take float32 and bfloat16 on CPU; float16 and CUDA run plain torch
        kernel_path = device == "cpu" and dtype != torch.float16 and backend != "torch"
        assert _kernels.last_forward_path == (backend if kernel_path else "none")
    # the reference in float64 on the same rounded inputs: what remains is the rounding of the
    # output and of dz to the input dtype, and float32 tables
    exact = _value_and_grads(task_adaptive_activation_reference, z_low.double(), task, alpha32.double(),
                             hinges32.double())
    assert fast[0].dtype == dtype and fast[1].dtype == dtype
    assert fast[2].dtype == torch.float32 and fast[3].dtype == torch.float32
    for name, a, b in zip(("out", "dz", "dalpha", "dhinges"), fast, exact):
        assert (a.double() - b).abs().max() <= tol * (1.0 + b.abs().max()), name


@pytest.mark.parametrize("backend", PATHS)
def test_gradients_are_bitwise_reproducible(backend):
    # large enough for the kernel to split the rows across threads; a resumed run must repeat
    # an uninterrupted one exactly
    z, task, alpha, hinges = _problem((64, 2048), 5, 16, True, dtype=torch.float32, seed=11)
    with _backend(backend):
        first = _value_and_grads(task_adaptive_activation, z, task, alpha, hinges)
        for _ in range(3):
            again = _value_and_grads(task_adaptive_activation, z, task, alpha, hinges)
            assert all(torch.equal(a, b) for a, b in zip(first, again))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    z = torch.empty(0, 4, dtype=torch.float64, requires_grad=True)
    alpha = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    hinges = torch.randn(3, dtype=torch.float64, requires_grad=True)
    with _backend(backend):
        out = task_adaptive_activation(z, torch.empty(0, dtype=torch.long), alpha, hinges)
        out.sum().backward()
    assert out.shape == (0, 4)
    assert torch.equal(alpha.grad, torch.zeros_like(alpha))


def test_noncontiguous_input():
    z, task, alpha, hinges = _problem((6, 8), 3, 5, True, seed=9)
    zt = z.t().contiguous().t()  # same values, column-major
    assert not zt.is_contiguous()
    torch.testing.assert_close(
        task_adaptive_activation(zt, task, alpha, hinges), task_adaptive_activation_reference(z, task, alpha, hinges)
    )


# --------------------------------------------------------------------------------------------
# bad input


def _ok():
    return torch.randn(4, 3), torch.randn(2, 5), torch.randn(5)


@pytest.mark.parametrize("fn", [task_adaptive_activation, task_adaptive_activation_reference])
def test_task_out_of_range(fn):
    z, alpha, hinges = _ok()
    with pytest.raises(IndexError, match=r"task must be in \[0, T\) with T = 2"):
        fn(z, 2, alpha, hinges)
    with pytest.raises(IndexError, match=r"task must be in \[0, T\) with T = 2"):
        fn(z, -1, alpha, hinges)
    with pytest.raises(IndexError, match=r"task ids must be in \[0, T\) with T = 2, got min 0 and max 3"):
        fn(z, torch.tensor([0, 1, 3, 1]), alpha, hinges)
    with pytest.raises(IndexError, match=r"got min -1"):
        fn(z, torch.tensor([0, -1, 1, 1]), alpha, hinges)


@pytest.mark.parametrize("fn", [task_adaptive_activation, task_adaptive_activation_reference])
def test_bad_shapes_and_types(fn):
    z, alpha, hinges = _ok()
    with pytest.raises(ValueError, match=r"task must have shape \(N,\) = \(4,\) to match z of shape \(4, 3\), got \(3,\)"):
        fn(z, torch.tensor([0, 1, 1]), alpha, hinges)
    with pytest.raises(ValueError, match=r"alpha must have shape \(T, M\) with M = len\(hinges\) = 5, got \(2, 4\)"):
        fn(z, 0, alpha[:, :4], hinges)
    with pytest.raises(ValueError, match=r"alpha must have shape \(T, M\) with M = len\(hinges\) = 5, got \(5,\)"):
        fn(z, 0, hinges, hinges)
    with pytest.raises(ValueError, match=r"hinges must have shape \(M,\), got \(1, 5\)"):
        fn(z, 0, alpha, hinges[None])
    with pytest.raises(ValueError, match=r"z must have shape \(N, \.\.\.\), got \(\)"):
        fn(torch.tensor(1.0), 0, alpha, hinges)
    with pytest.raises(TypeError, match="task must be an int or an integer tensor"):
        fn(z, torch.zeros(4), alpha, hinges)
    with pytest.raises(TypeError, match="task must be an int or an integer tensor"):
        fn(z, 0.5, alpha, hinges)
    with pytest.raises(TypeError, match="task must be an int or an integer tensor"):
        fn(z, True, alpha, hinges)
    with pytest.raises(TypeError, match="z must be a torch.Tensor"):
        fn([1.0, 2.0], 0, alpha, hinges)
    with pytest.raises(TypeError, match="alpha must be a floating-point tensor"):
        fn(z, 0, alpha.long(), hinges)


# --------------------------------------------------------------------------------------------
# torch.compile


@pytest.mark.slow
def test_compiled_model_runs_without_graph_breaks():
    torch._dynamo.reset()
    z, task, alpha, hinges = _away_from_kinks((6, 4), 3, 5)
    lin = torch.nn.Linear(4, 4, dtype=torch.float64)

    def step(x, task, alpha, hinges):
        return task_adaptive_activation(lin(x), task, alpha, hinges).square().sum()

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    args = (z.detach(), task, alpha, hinges)
    loss = compiled(*args)
    grads = torch.autograd.grad(loss, (alpha, hinges))
    expected_loss = task_adaptive_activation_reference(lin(z.detach()), task, alpha, hinges).square().sum()
    expected = torch.autograd.grad(expected_loss, (alpha, hinges))
    torch.testing.assert_close(loss, expected_loss)
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b)
