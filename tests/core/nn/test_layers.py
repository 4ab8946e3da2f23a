"""TaskAdaptiveActivation, TALinear and TAConv2d: shapes, parameters, statistics, gradients, errors."""

from __future__ import annotations

import io

import pytest
import torch

from taan_core.nn import _kernels
from taan_core.nn.functional import task_adaptive_activation_reference
from taan_core.nn.layers import TaskAdaptiveActivation, TAConv2d, TALinear
from tests.core.nn.kernel_helpers import PATHS

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _tasks(n, num_tasks, seed=0, device="cpu"):
    return torch.randint(num_tasks, (n,), generator=torch.Generator().manual_seed(seed)).to(device)


# --------------------------------------------------------------------------------------------
# TaskAdaptiveActivation


def test_activation_parameters_and_init():
    torch.manual_seed(0)
    act = TaskAdaptiveActivation(5, num_hinges=300, hinge_init=(-1.0, 2.0), alpha_std=0.1)
    assert act.alpha.shape == (5, 300) and act.hinges.shape == (300,)
    assert {name for name, _ in act.named_parameters()} == {"alpha", "hinges"}
    assert act.hinges.min() >= -1.0 and act.hinges.max() <= 2.0 and act.hinges.std() > 0.5
    assert 0.08 < act.alpha.std() < 0.12
    buffers = dict(act.named_buffers())
    assert buffers["preact_mean"].shape == (5,) and buffers["preact_var"].shape == (5,)
    assert buffers["preact_mean_overall"].shape == () and buffers["preact_var_overall"].shape == ()
    assert all(b.dtype == torch.float32 for b in buffers.values())
    assert act.measure() == (0.0, 1.0) and act.measure(4) == (0.0, 1.0)


def test_activation_extra_repr_and_reset():
    act = TaskAdaptiveActivation(3, num_hinges=4)
    assert "num_tasks=3, num_hinges=4" in repr(act)
    with torch.no_grad():
        act.alpha.fill_(7.0)
        act.hinges.fill_(9.0)
        act.preact_mean.fill_(3.0)
    act.reset_parameters()
    assert act.alpha.abs().max() < 1.0 and act.hinges.abs().max() <= 0.5
    assert torch.equal(act.preact_mean, torch.zeros(3))


def test_activation_forward_equals_reference():
    act = TaskAdaptiveActivation(4, num_hinges=6, dtype=torch.float64)
    z = torch.randn(10, 3, 2, dtype=torch.float64)
    task = _tasks(10, 4)
    torch.testing.assert_close(act(z, task), task_adaptive_activation_reference(z, task, act.alpha, act.hinges))


@pytest.mark.parametrize("backend", PATHS)
def test_running_statistics_per_task_and_overall(backend, monkeypatch):
    # the row sums come from either fused forward path or from plain torch; all must agree
    monkeypatch.setattr(_kernels, "_enabled", backend != "torch")
    monkeypatch.setattr(_kernels, "_forward_path", "auto" if backend == "torch" else backend)
    act = TaskAdaptiveActivation(3, num_hinges=2, momentum=0.5)
    z = torch.randn(8, 5, 3)
    task = torch.tensor([0, 0, 0, 1, 1, 0, 1, 1])  # task 2 absent
    act(z, task)
    for t in (0, 1):
        values = z[task == t].double()
        torch.testing.assert_close(act.preact_mean[t].double(), 0.5 * values.mean(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(act.preact_var[t].double(), 0.5 + 0.5 * values.var(), rtol=1e-5, atol=1e-6)
    assert act.preact_mean[2] == 0.0 and act.preact_var[2] == 1.0
    torch.testing.assert_close(act.preact_mean_overall.double(), 0.5 * z.double().mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(act.preact_var_overall.double(), 0.5 + 0.5 * z.double().var(), rtol=1e-5, atol=1e-6)
    mu, sigma = act.measure(1)
    assert mu == pytest.approx(float(act.preact_mean[1])) and sigma == pytest.approx(float(act.preact_var[1]) ** 0.5)
    # eval mode leaves them alone; an int task updates that task only
    before = act.preact_mean.clone()
    act.eval()
    act(z + 5, task)
    assert torch.equal(act.preact_mean, before)
    act.train()
    act(z + 5, 2)
    assert act.preact_mean[2] > 2.0 and torch.equal(act.preact_mean[:2], before[:2])


def test_running_statistics_converge_to_the_measure():
    act = TaskAdaptiveActivation(2, num_hinges=3, momentum=0.2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        z = torch.randn(64, 16, generator=gen)
        z[32:] = 2.0 + 3.0 * z[32:]
        act(z, torch.tensor([0] * 32 + [1] * 32))
    assert act.measure(0) == pytest.approx((0.0, 1.0), abs=0.05)
    assert act.measure(1) == pytest.approx((2.0, 3.0), abs=0.15)


def test_activation_bad_arguments():
    with pytest.raises(ValueError, match="num_tasks must be >= 1, got 0"):
        TaskAdaptiveActivation(0)
    with pytest.raises(TypeError, match="num_hinges must be an int"):
        TaskAdaptiveActivation(2, num_hinges=2.5)
    with pytest.raises(ValueError, match=r"hinge_init must be \(low, high\) with low <= high"):
        TaskAdaptiveActivation(2, hinge_init=(1.0, -1.0))
    with pytest.raises(ValueError, match=r"momentum must be in \(0, 1\]"):
        TaskAdaptiveActivation(2, momentum=0.0)
    with pytest.raises(ValueError, match="alpha_std must be finite and >= 0"):
        TaskAdaptiveActivation(2, alpha_std=-1.0)
    act = TaskAdaptiveActivation(2)
    with pytest.raises(IndexError, match=r"task must be in \[0, T\) with T = 2, got 2"):
        act.measure(2)
    with pytest.raises(TypeError, match="task must be an int or None"):
        act.measure(1.0)
    with pytest.raises(IndexError, match=r"task ids must be in \[0, T\) with T = 2"):
        act(torch.randn(3, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"task must have shape \(N,\) = \(3,\)"):
        act(torch.randn(3, 4), torch.tensor([0, 1]))


# --------------------------------------------------------------------------------------------
# TALinear and TAConv2d


def _linear_reference(layer: TALinear, x, task):
    z = layer.linear(x)
    if layer.bn is not None:
        z = layer.bn(z)
    return task_adaptive_activation_reference(z, task, layer.alpha, layer.hinges)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_talinear_shapes_and_reference(batch_norm):
    layer = TALinear(6, 5, num_tasks=3, num_hinges=4, batch_norm=batch_norm, dtype=torch.float64)
    x = torch.randn(9, 6, dtype=torch.float64)
    task = _tasks(9, 3)
    layer.eval()
    out = layer(x, task)
    assert out.shape == (9, 5)
    torch.testing.assert_close(out, _linear_reference(layer, x, task))
    assert layer.alpha is layer.act.alpha and layer.hinges is layer.act.hinges
    assert (layer.bn is not None) == batch_norm
    if not batch_norm:
        assert layer(torch.randn(4, 2, 6, dtype=torch.float64), 1).shape == (4, 2, 5)


def test_talinear_parameter_count_and_repr():
    layer = TALinear(6, 5, num_tasks=3, num_hinges=4)
    count = sum(p.numel() for p in layer.parameters())
    assert count == 6 * 5 + 5 + 3 * 4 + 4
    no_bias = TALinear(6, 5, num_tasks=3, num_hinges=4, bias=False, batch_norm=True)
    assert sum(p.numel() for p in no_bias.parameters()) == 6 * 5 + 2 * 5 + 3 * 4 + 4
    text = repr(no_bias)
    assert "in_features=6, out_features=5, num_tasks=3, num_hinges=4, bias=False, batch_norm=True" in text


def test_mixed_batch_equals_per_task_passes():
    torch.manual_seed(1)
    layer = TALinear(7, 4, num_tasks=4, num_hinges=5, dtype=torch.float64).eval()
    with torch.no_grad():
        layer.alpha.normal_()
    x = torch.randn(20, 7, dtype=torch.float64)
    task = _tasks(20, 4, seed=2)
    mixed = layer(x, task)
    for t in range(4):
        rows = task == t
        torch.testing.assert_close(mixed[rows], layer(x[rows], t))


def test_conv_shapes_mixed_batch_and_reference():
    torch.manual_seed(2)
    layer = TAConv2d(2, 3, 3, num_tasks=3, num_hinges=4, padding=1, dtype=torch.float64).eval()
    with torch.no_grad():
        layer.alpha.normal_()
    x = torch.randn(5, 2, 6, 7, dtype=torch.float64)
    task = _tasks(5, 3)
    out = layer(x, task)
    assert out.shape == (5, 3, 6, 7)
    expected = task_adaptive_activation_reference(layer.bn(layer.conv(x)), task, layer.alpha, layer.hinges)
    torch.testing.assert_close(out, expected)
    for t in range(3):
        torch.testing.assert_close(out[task == t], layer(x[task == t], t))
    strided = TAConv2d(2, 4, (3, 2), num_tasks=3, stride=2, batch_norm=False)
    assert strided(x.float(), 0).shape == (5, 4, 2, 3)
    assert "kernel_size=(3, 2), num_tasks=3, num_hinges=16, stride=(2, 2)" in repr(strided)
    assert "batch_norm=False" in repr(strided)


@pytest.mark.parametrize("make", [
    lambda: TALinear(4, 3, num_tasks=2, num_hinges=3, batch_norm=True),
    lambda: TAConv2d(1, 2, 3, num_tasks=2, num_hinges=3),
])
def test_reset_parameters_and_state_dict_round_trip(make):
    torch.manual_seed(3)
    layer = make()
    x = torch.randn(6, 4) if isinstance(layer, TALinear) else torch.randn(6, 1, 5, 5)
    task = _tasks(6, 2)
    layer(x, task)  # train mode: moves the running statistics
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert {"act.alpha", "act.hinges", "act.preact_mean", "act.preact_var", "act.preact_mean_overall",
            "act.preact_var_overall"} <= set(state)
    torch.manual_seed(4)
    other = make()
    other.load_state_dict(state)
    layer.eval(), other.eval()
    torch.testing.assert_close(other(x, task), layer(x, task))
    assert other.act.measure() == layer.act.measure()
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    layer.reset_parameters()
    after = layer.state_dict()
    assert not torch.equal(before["act.alpha"], after["act.alpha"])
    assert torch.equal(after["act.preact_var"], torch.ones(2))


@pytest.mark.parametrize("device", DEVICES)
def test_layers_gradcheck_float64(device):
    torch.manual_seed(5)
    lin = TALinear(3, 4, num_tasks=2, num_hinges=3, device=device, dtype=torch.float64).eval()
    conv = TAConv2d(2, 2, 2, num_tasks=2, num_hinges=3, batch_norm=False, device=device, dtype=torch.float64).eval()
    task = torch.tensor([0, 1, 1], device=device)

    def through_linear(x, weight, alpha, hinges):
        z = torch.nn.functional.linear(x, weight, lin.linear.bias)
        from taan_core.nn.functional import task_adaptive_activation
        return task_adaptive_activation(z, task, alpha, hinges)

    x = torch.randn(3, 3, dtype=torch.float64, device=device, requires_grad=True)
    args = (x, lin.linear.weight, lin.alpha, lin.hinges)
    assert torch.autograd.gradcheck(through_linear, args)
    xc = torch.randn(3, 2, 3, 3, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: conv(x, task), (xc,))
    assert torch.autograd.gradcheck(lambda x: lin(x, 1), (x,))


def test_layer_dtypes():
    x = torch.randn(5, 4)
    task = _tasks(5, 2)
    layer = TALinear(4, 3, num_tasks=2)
    assert layer(x, task).dtype == torch.float32
    layer_bf16 = TALinear(4, 3, num_tasks=2, dtype=torch.bfloat16)
    out = layer_bf16(x.bfloat16(), task)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert layer_bf16.alpha.grad.dtype == torch.bfloat16
    assert layer_bf16.act.preact_mean.dtype == torch.float32


@pytest.mark.slow
def test_compiled_model_with_layers_trains():
    torch._dynamo.reset()
    torch.manual_seed(6)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = TALinear(5, 8, num_tasks=3, num_hinges=4)
            self.b = TAConv2d(1, 2, 3, num_tasks=3, num_hinges=4, padding=1)

        def forward(self, x, img, task):
            return self.a(x, task).sum(1) + self.b(img, task).mean((1, 2, 3))

    model = Tiny()
    twin = Tiny()
    twin.load_state_dict(model.state_dict())
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x, img, task = torch.randn(6, 5), torch.randn(6, 1, 4, 4), _tasks(6, 3)
    loss = compiled(x, img, task).square().mean()
    loss.backward()
    expected = twin(x, img, task).square().mean()
    expected.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(model.a.alpha.grad, twin.a.alpha.grad)
    torch.testing.assert_close(model.b.hinges.grad, twin.b.hinges.grad)
    torch.testing.assert_close(model.a.act.preact_var, twin.a.act.preact_var)
