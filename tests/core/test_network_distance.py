"""Tests of taan_core.relatedness.network_distances: the whole-network task distance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from taan_core.models import TAAN, HardShare, MLPConfig, TAANConfig
from taan_core.nn.layers import adaptive_layers
from taan_core.relatedness import network_distances


def _taan(num_tasks=5, shared_head=True, seed=0, outputs=2):
    torch.manual_seed(seed)
    model = TAAN(TAANConfig(4, [outputs] * num_tasks, [8, 8], num_hinges=3, shared_head=shared_head))
    with torch.no_grad():
        for _, layer in adaptive_layers(model):
            # Large enough coefficients that the tasks' functions clearly differ.
            layer.alpha.normal_(0.0, 0.5)
    # float64, so that a model's own float32 rounding (which depends on the batch) does not
    # hide the function's.
    return model.double()


def _brute_force(model, x, num_tasks):
    with torch.no_grad():
        out = np.stack([model(x, t).double().numpy() for t in range(num_tasks)])  # (T, N, K)
    d = np.sqrt(((out[:, None] - out[None, :]) ** 2).mean(axis=(2, 3)))
    scale = np.sqrt(((out - out.mean(axis=0)) ** 2).mean())
    return d, scale


@pytest.mark.parametrize("shared_head", [True, False])
def test_matches_brute_force(shared_head):
    model = _taan(shared_head=shared_head)
    x = torch.randn(37, 4, dtype=torch.float64)
    d, scale = network_distances(model, x, batch_size=10)
    want, want_scale = _brute_force(model.eval(), x, 5)
    np.testing.assert_allclose(d, want, rtol=1e-10, atol=1e-12)
    assert scale == pytest.approx(want_scale, rel=1e-10)
    assert d.shape == (5, 5) and d.dtype == np.float64
    assert (d[~np.eye(5, dtype=bool)] > 0).all()


def test_symmetric_and_zero_diagonal_bit_for_bit():
    d, _ = network_distances(_taan(num_tasks=7, seed=1), torch.randn(50, 4), batch_size=16)
    assert np.array_equal(d, d.T)
    assert np.array_equal(np.diag(d), np.zeros(7))


def test_identical_tasks_are_exactly_zero_apart():
    model = _taan(num_tasks=4, seed=2)
    with torch.no_grad():
        for _, layer in adaptive_layers(model):
            layer.alpha[3] = layer.alpha[1]
    d, _ = network_distances(model, torch.randn(64, 4))
    assert d[1, 3] == 0.0 and d[3, 1] == 0.0
    assert d[0, 1] > 0


def test_all_tasks_alike_have_zero_scale():
    # Hard sharing computes one function for every task (shared trunk and, here, equal heads).
    torch.manual_seed(3)
    model = HardShare(MLPConfig(4, [1, 1, 1], [8]))
    with torch.no_grad():
        for head in model.heads[1:]:
            head.load_state_dict(model.heads[0].state_dict())
    d, scale = network_distances(model, torch.randn(20, 4))
    assert scale == 0.0 and not d.any()


@pytest.mark.parametrize("batch_size", [1, 7, 50, 1000])
def test_batching_invariance(batch_size):
    model = _taan(seed=4)
    x = torch.randn(50, 4, dtype=torch.float64)
    ref, ref_scale = network_distances(model, x, batch_size=50)
    d, scale = network_distances(model, x, batch_size=batch_size)
    np.testing.assert_allclose(d, ref, rtol=1e-12, atol=1e-14)
    assert scale == pytest.approx(ref_scale, rel=1e-12)


def test_restores_training_mode_and_tasks_argument():
    model = _taan(seed=5).train()
    d, _ = network_distances(model, torch.randn(9, 4), num_tasks=3)
    assert model.training
    assert d.shape == (3, 3)


def test_errors():
    model = _taan()
    x = torch.randn(5, 4)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        network_distances(object(), x)
    with pytest.raises(TypeError, match="inputs must be a Tensor"):
        network_distances(model, x.numpy())
    with pytest.raises(ValueError, match="inputs must hold at least one row"):
        network_distances(model, torch.zeros(0, 4))
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        network_distances(model, x, batch_size=0)
    with pytest.raises(TypeError, match="batch_size must be an int, got bool"):
        network_distances(model, x, batch_size=True)
    with pytest.raises(TypeError, match="num_tasks is required"):
        network_distances(nn.Linear(4, 1), x)
    unequal = TAAN(TAANConfig(4, [1, 2], [8], num_hinges=3))
    with pytest.raises(ValueError, match=r"same number of outputs.*\[1, 2\]"):
        network_distances(unequal, x)
    broken = _taan()
    with torch.no_grad():
        next(broken.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match="outputs on inputs 0..4 are not finite"):
        network_distances(broken, x)


def test_taanified_network_runs_each_task():
    from taan_core import taanify
    from taan_core.nn.adapt import tasks

    torch.manual_seed(6)
    net = taanify(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)),
                  num_tasks=3).double()
    with torch.no_grad():
        for _, layer in adaptive_layers(net):
            layer.alpha.normal_(0.0, 0.5)
    x = torch.randn(20, 4, dtype=torch.float64)
    d, _ = network_distances(net, x, num_tasks=3)
    with torch.no_grad():
        out = []
        for t in range(3):
            with tasks(net, t):
                out.append(net(x))
    want = np.sqrt(((out[0] - out[2]) ** 2).mean().item())
    assert d[0, 2] == pytest.approx(want, rel=1e-12) and d[0, 2] > 0
