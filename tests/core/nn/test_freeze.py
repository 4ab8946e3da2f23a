"""The shared warm-up in a user's own loop: adaptive_parameters and freeze_adaptive."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import taan_core
from taan_core import TALinear, adaptive_parameters, freeze_adaptive, taanify

T = 3


def _taanified():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
    return taanify(net, num_tasks=T, num_hinges=4)


def test_adaptive_parameters_are_alpha_and_hinges_in_depth_order():
    net = _taanified()
    assert [p.data_ptr() for p in adaptive_parameters(net)] == [
        p.data_ptr() for p in (net[1].alpha, net[1].hinges, net[3].alpha, net[3].hinges)]
    model = taan_core.build_model("taan", (4,), [1] * T, hidden=[8, 8, 8], num_hinges=2)
    assert len(adaptive_parameters(model)) == 6
    assert adaptive_parameters(torch.compile(model)) == adaptive_parameters(model)
    assert adaptive_parameters(nn.Linear(2, 2)) == []


def test_one_relu_used_twice_gives_its_parameters_once():
    relu = nn.ReLU()
    net = taanify(nn.Sequential(nn.Linear(4, 4), relu, nn.Linear(4, 4), relu), num_tasks=T)
    assert len(adaptive_parameters(net)) == 2


def test_frozen_parameters_get_no_gradient_and_adam_leaves_them_alone():
    net = _taanified()
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    x, task = torch.randn(32, 4), torch.randint(0, T, (32,))
    held = [p.detach().clone() for p in adaptive_parameters(net)]
    shared = net[0].weight.detach().clone()
    freeze_adaptive(net)
    for _ in range(3):
        with taan_core.tasks(net, task):
            loss = net(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is None for p in adaptive_parameters(net))
    assert all(torch.equal(p, q) for p, q in zip(adaptive_parameters(net), held))
    assert not torch.equal(net[0].weight, shared)
    # Adam has no state for them: their moments start fresh when they are released.
    assert all(p not in opt.state for p in adaptive_parameters(net))
    freeze_adaptive(net, frozen=False)
    with taan_core.tasks(net, task):
        loss = net(x).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert all(opt.state[p]["step"] == 1 for p in adaptive_parameters(net))
    assert not torch.equal(net[1].alpha, held[0])


def test_as_a_block_it_restores_each_parameters_setting():
    layer = TALinear(4, 4, num_tasks=T, num_hinges=2)
    layer.act.hinges.requires_grad_(False)            # the user's own choice, kept after the block
    with freeze_adaptive(layer):
        assert not layer.act.alpha.requires_grad and not layer.act.hinges.requires_grad
        assert layer.linear.weight.requires_grad
    assert layer.act.alpha.requires_grad and not layer.act.hinges.requires_grad


def test_the_trainers_warmup_and_freeze_adaptive_train_alike():
    # One Adam step on the same batch: dropping the gradient (the Trainer) equals freezing.
    torch.manual_seed(1)
    a = TALinear(4, 3, num_tasks=T, num_hinges=2)
    b = TALinear(4, 3, num_tasks=T, num_hinges=2)
    b.load_state_dict(a.state_dict())
    x, task = torch.randn(16, 4), torch.randint(0, T, (16,))
    opt_a, opt_b = torch.optim.Adam(a.parameters(), lr=0.1), torch.optim.Adam(b.parameters(), lr=0.1)
    a(x, task).square().sum().backward()
    for p in adaptive_parameters(a):
        p.grad = None
    opt_a.step()
    with freeze_adaptive(b):
        b(x, task).square().sum().backward()
        opt_b.step()
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize(("args", "error", "match"), [
    ((nn.Linear(2, 2),), ValueError, "Linear holds no task-adaptive activation to freeze"),
    ((TALinear(2, 2, num_tasks=2), "yes"), TypeError, "frozen must be a bool, got str"),
])
def test_bad_calls_are_refused(args, error, match):
    with pytest.raises(error, match=match):
        freeze_adaptive(*args)
