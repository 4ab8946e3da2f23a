"""taanify / tasks: task-adaptive activations in an existing network, forward unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import taan_core
from taan_core import ContextTaskActivation, adaptive_layers, set_tasks, taanify, tasks
from taan_core.nn.functional import task_adaptive_activation_reference

T = 3


def _cnn() -> nn.Module:
    """A torchvision-style small CNN: features (conv/bn/relu/pool) then a classifier."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2),
    )


class _MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.ModuleList([nn.Linear(5, 7), nn.Linear(7, 7)])
        self.act = nn.ReLU()  # one module used after both linear maps: one shared layer
        self.out = nn.Linear(7, 2)

    def forward(self, x):
        for linear in self.body:
            x = self.act(linear(x))
        return self.out(x)


def _randomise(model: nn.Module) -> None:
    # Away from relu, so the per-task activations really differ.
    for _, act in adaptive_layers(model):
        with torch.no_grad():
            act.alpha.normal_(0.0, 0.5)


def test_taanify_cnn_replaces_every_relu_and_keeps_names():
    model = taanify(_cnn(), num_tasks=T, num_hinges=5)
    names = [name for name, _ in adaptive_layers(model)]
    assert names == ["2", "5", "9"]
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    for _, act in adaptive_layers(model):
        assert isinstance(act, ContextTaskActivation) and act.alpha.shape == (T, 5)
    assert set(model.state_dict()) >= {"2.alpha", "2.hinges", "2.preact_mean", "9.preact_var_overall"}


def test_conv_activation_applies_each_sample_task_to_all_channels_and_pixels():
    model = taanify(_cnn(), num_tasks=T).eval()
    _randomise(model)
    act = model[2]
    z = torch.randn(6, 4, 5, 5)
    task = torch.tensor([0, 1, 2, 2, 1, 0])
    with tasks(model, task):
        out = act(z)
    torch.testing.assert_close(out, task_adaptive_activation_reference(z, task, act.alpha, act.hinges))


@pytest.mark.parametrize("make, shape", [(_cnn, (6, 1, 8, 8)), (_MLP, (6, 5))])
def test_mixed_batch_equals_one_task_at_a_time_with_gradients(make, shape):
    torch.manual_seed(0)
    model = taanify(make(), num_tasks=T).eval()
    _randomise(model)
    x = torch.randn(shape)
    task = torch.tensor([2, 0, 1, 1, 0, 2])
    with tasks(model, task):
        mixed = model(x)
    mixed.square().sum().backward()
    grads = [act.alpha.grad.clone() for _, act in adaptive_layers(model)]
    model.zero_grad()
    separate = torch.zeros_like(mixed)
    for t in range(T):
        rows = task == t
        with tasks(model, t):
            separate[rows] = model(x[rows])
    separate.square().sum().backward()
    torch.testing.assert_close(mixed, separate)
    for got, (_, act) in zip(grads, adaptive_layers(model)):
        torch.testing.assert_close(got, act.alpha.grad)
        assert got.abs().sum() > 0
    # Tasks 0 and 1 really compute different functions.
    with tasks(model, 0):
        a = model(x)
    with tasks(model, 1):
        b = model(x)
    assert not torch.allclose(a, b)


def test_shared_module_becomes_one_shared_layer():
    model = taanify(_MLP(), num_tasks=T)
    assert [name for name, _ in adaptive_layers(model)] == ["act"]


def test_training_mode_records_the_data_measure():
    model = taanify(_MLP(), num_tasks=T).train()
    x = torch.randn(64, 5) * 3 + 1
    with tasks(model, torch.arange(64) % T):
        model(x)
    act = model.act
    assert act.preact_var_overall.item() != 1.0 and act.preact_mean.ne(0).all()


@pytest.mark.slow
def test_taanified_cnn_compiles_and_matches_eager():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # reset() keeps the counters of earlier compiles
    torch.manual_seed(3)
    model, twin = taanify(_cnn(), num_tasks=T), taanify(_cnn(), num_tasks=T)
    twin.load_state_dict(model.state_dict())
    compiled = torch.compile(model, backend="aot_eager")
    for step in range(3):  # new task ids every batch must not recompile
        x, task = torch.randn(6, 1, 8, 8), torch.randint(0, T, (6,))
        with tasks(compiled, task):
            loss = compiled(x).square().mean()
        with tasks(twin, task):
            expected = twin(x).square().mean()
        loss.backward()
        expected.backward()
        torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(model[2].alpha.grad, twin[2].alpha.grad)
    torch.testing.assert_close(model[9].hinges.grad, twin[9].hinges.grad)
    torch.testing.assert_close(model[2].preact_var, twin[2].preact_var)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_forward_outside_tasks_block_fails_loudly():
    model = taanify(_MLP(), num_tasks=T)
    with tasks(model, 1):
        model(torch.randn(2, 5))
    with pytest.raises(RuntimeError, match=r"no task ids: run the model inside `with taan_core\.tasks"):
        model(torch.randn(2, 5))


def test_errors():
    with pytest.raises(ValueError, match=r"Sequential holds no GELU module to replace"):
        taanify(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), num_tasks=2, activation=nn.GELU)
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got str"):
        taanify("net", num_tasks=2)
    with pytest.raises(TypeError, match=r"activation must be an nn\.Module type"):
        taanify(_MLP(), num_tasks=2, activation=torch.relu)
    with pytest.raises(ValueError, match=r"num_tasks must be >= 1"):
        taanify(_MLP(), num_tasks=0)
    with pytest.raises(ValueError, match=r"has no activation taking task ids.*taanify"):
        set_tasks(_MLP(), 0)
    model = taanify(_MLP(), num_tasks=2)
    with pytest.raises(TypeError, match=r"integer tensor of shape \(N,\), got a tensor of dtype torch\.float32"):
        set_tasks(model, torch.zeros(3))
    with pytest.raises(TypeError, match=r"got None"):
        with tasks(model, None):
            pass


def test_top_level_names():
    assert taan_core.taanify is taanify and taan_core.tasks is tasks
    assert callable(taan_core.adaptive_layers) and callable(taan_core.save)


def test_record_statistics_measures_exact_per_task_moments():
    from taan_core import record_statistics

    model = taanify(_MLP(), num_tasks=T).eval()
    x = torch.randn(40, 5)
    task = torch.arange(40) % T
    with record_statistics(model):
        for rows in (slice(0, 16), slice(16, 40)):  # batches of different sizes
            with tasks(model, task[rows]):
                model(x[rows])
    # The shared activation sees both linear maps' outputs.
    with torch.no_grad():
        h1 = model.body[0](x)
        h2 = model.body[1](model.act(h1, task))
    z = torch.cat([h1, h2], 1).double()
    for t in range(T):
        rows = z[task == t].reshape(-1)
        assert model.act.preact_mean[t].item() == pytest.approx(rows.mean().item(), rel=1e-5)
        assert model.act.preact_var[t].item() == pytest.approx(rows.var().item(), rel=1e-5)
    assert model.act.preact_var_overall.item() == pytest.approx(z.reshape(-1).var().item(), rel=1e-5)
    with pytest.raises(ValueError, match=r"Linear holds no task-adaptive activation to measure"):
        with record_statistics(nn.Linear(2, 2)):
            pass


def test_evaluate_tasks_runs_a_taanified_network_with_each_tasks_id():
    from taan_core import evaluate_tasks
    from taan_core.data import TaskSpec, TensorSplit
    from taan_core.metrics import evaluate

    torch.manual_seed(0)
    net = taan_core.taanify(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)), num_tasks=2, num_hinges=2)
    with torch.no_grad():
        net[1].alpha.copy_(torch.tensor([[1.0, -1.0], [-2.0, 0.5]]))
    specs = [TaskSpec("a", "regression", 1), TaskSpec("b", "regression", 1)]
    xs = [torch.randn(10, 3), torch.randn(7, 3)]
    split = TensorSplit(specs, xs, [torch.randn(10, 1), torch.randn(7, 1)])
    net.train()
    result = evaluate_tasks(net, split, specs, batch_size=4)
    assert net.training  # the mode is restored

    class PerTask(nn.Module):  # the same network, called the forward(x, task) way
        def forward(self, x, task):
            with taan_core.tasks(net, task):
                return net(x)

    assert result == evaluate(PerTask(), split, specs, batch_size=4)
    assert set(result["pooled"]) == {"ev", "rmse", "n"} and result["pooled"]["n"] == 17
    # The tasks' activations differ, so does each task's output: the ids reached the layers.
    with taan_core.tasks(net, 0):
        first = net(xs[1])
    with taan_core.tasks(net, 1):
        second = net(xs[1])
    assert not torch.allclose(first, second)


def test_evaluate_tasks_takes_forward_x_task_models_as_they_are():
    from taan_core import evaluate_tasks
    from taan_core.data import load_dataset
    from taan_core.metrics import evaluate

    data = load_dataset("planted", num_tasks=4, groups_per_layer=[2, 4], input_dim=6, hidden=[8, 8],
                        num_hinges=4, num_outputs=2, samples_per_task=40)
    model = taan_core.build_model("taan", data.input_shape, [t.num_outputs for t in data.tasks], hidden=[8])
    assert evaluate_tasks(model, data.split("val"), data.tasks) == evaluate(model, data.split("val"), data.tasks)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got function"):
        evaluate_tasks(lambda x: x, data.split("val"), data.tasks)
