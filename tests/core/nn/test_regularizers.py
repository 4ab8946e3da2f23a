"""Tests of taan_core.nn.regularizers against brute force: Monte Carlo and SVD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from taan_core.models import build_model
from taan_core.nn.regularizers import (
    REGULARIZERS,
    cosine_regularizer,
    distance_regularizer,
    functional_penalty,
    row_norm,
    trace_norm,
)

NUM_SAMPLES = 1_000_000
NUM_CHUNKS = 25


def _problem(num_tasks=4, num_hinges=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    alpha = 0.7 * torch.randn(num_tasks, num_hinges, generator=gen, dtype=torch.float64)
    hinges = 2 * torch.rand(num_hinges, generator=gen, dtype=torch.float64) - 1
    return alpha, hinges


def _activations(x, alpha, hinges):
    """F_t(x) for every sample and task, the naive way: (n, T)."""
    return torch.relu(x).unsqueeze(1) + torch.relu(hinges - x.unsqueeze(1)) @ alpha.T


def _cosine_functional(f):
    gram = f.T @ f / f.shape[0]
    norms = gram.diagonal().sqrt()
    return -(gram / torch.outer(norms, norms)).mean()


def _monte_carlo(alpha, hinges, mu, sigma, functional, seed=1):
    """Estimate and standard error: the functional on all samples, the error from chunk spread."""
    gen = torch.Generator().manual_seed(seed)
    x = mu + sigma * torch.randn(NUM_SAMPLES, generator=gen, dtype=torch.float64)
    f = _activations(x, alpha, hinges)
    chunks = torch.stack([functional(c) for c in f.chunk(NUM_CHUNKS)])
    return functional(f).item(), (chunks.std() / NUM_CHUNKS**0.5).item()


MEASURES = [(0.0, 1.0), (0.4, 1.7), (-0.8, 0.5)]


@pytest.mark.parametrize(("mu", "sigma"), MEASURES)
def test_distance_regularizer_matches_monte_carlo(mu, sigma):
    alpha, hinges = _problem()

    def functional(f):
        # (1/T^2) sum_ij (f_i - f_j)^2 = 2 * (population variance over tasks), per sample.
        return 2 * f.var(dim=1, correction=0).mean()

    estimate, stderr = _monte_carlo(alpha, hinges, mu, sigma, functional)
    value = distance_regularizer(alpha, hinges, mu, sigma).item()
    assert abs(value - estimate) < 5 * stderr + 1e-12, (value, estimate, stderr)
    assert stderr < 0.02 * abs(estimate)  # the check is sharp enough to mean something


@pytest.mark.parametrize(("mu", "sigma"), MEASURES)
def test_cosine_regularizer_matches_monte_carlo(mu, sigma):
    alpha, hinges = _problem(seed=2)
    estimate, stderr = _monte_carlo(alpha, hinges, mu, sigma, _cosine_functional)
    value = cosine_regularizer(alpha, hinges, mu, sigma).item()
    assert abs(value - estimate) < 5 * stderr + 1e-12, (value, estimate, stderr)
    assert -1.0 <= value < -0.1  # not trivially -1: the tasks' functions differ


def test_functional_regularizers_of_identical_tasks():
    alpha = torch.tensor([[0.3, -0.2, 0.5]], dtype=torch.float64).repeat(4, 1)
    hinges = torch.tensor([-0.4, 0.1, 0.6], dtype=torch.float64)
    assert distance_regularizer(alpha, hinges).item() == 0.0
    torch.testing.assert_close(cosine_regularizer(alpha, hinges), torch.tensor(-1.0, dtype=torch.float64))


def test_stacked_layers_give_one_value_per_layer():
    layers = [_problem(seed=s) for s in range(3)]
    alpha = torch.stack([a for a, _ in layers])
    hinges = torch.stack([h for _, h in layers])
    mu = torch.tensor([0.0, 0.5, -0.3], dtype=torch.float64)
    sigma = torch.tensor([1.0, 2.0, 0.7], dtype=torch.float64)
    for fn in (cosine_regularizer, distance_regularizer):
        stacked = fn(alpha, hinges, mu, sigma)
        assert stacked.shape == (3,)
        for l, (a, h) in enumerate(layers):
            torch.testing.assert_close(stacked[l], fn(a, h, mu[l].item(), sigma[l].item()))
    for fn in (trace_norm, row_norm):
        stacked = fn(alpha)
        assert stacked.shape == (3,)
        torch.testing.assert_close(stacked, torch.stack([fn(a) for a, _ in layers]))


# --------------------------------------------------------------------------- norms

@pytest.mark.parametrize("shape", [(4, 6), (6, 4), (1, 5), (16, 64)])
def test_trace_norm_is_the_sum_of_singular_values(shape):
    alpha = torch.randn(*shape, dtype=torch.float64)
    expected = np.linalg.svd(alpha.numpy(), compute_uv=False).sum()
    assert trace_norm(alpha).item() == pytest.approx(expected, rel=1e-12)


def test_trace_norm_differs_from_row_norm():
    alpha = torch.randn(5, 7, dtype=torch.float64)
    expected_rows = sum(np.linalg.norm(row) for row in alpha.numpy())
    assert row_norm(alpha).item() == pytest.approx(expected_rows, rel=1e-12)
    # The nuclear norm is at most the sum of row norms, strictly so for non-orthogonal rows.
    assert trace_norm(alpha).item() < row_norm(alpha).item() - 1e-3
    # They agree for a single task (one singular value = the row's norm) and orthogonal rows.
    one = alpha[:1]
    assert trace_norm(one).item() == pytest.approx(row_norm(one).item(), rel=1e-12)
    orthogonal = torch.diag(torch.tensor([3.0, -2.0, 0.5], dtype=torch.float64))
    assert trace_norm(orthogonal).item() == pytest.approx(5.5, rel=1e-12)


@pytest.mark.parametrize(
    "alpha",
    [
        torch.eye(3, 5, dtype=torch.float64),  # repeated singular values
        torch.ones(4, 2, dtype=torch.float64),  # rank deficient
        torch.zeros(3, 4, dtype=torch.float64),  # all singular values zero
    ],
)
def test_norm_gradients_are_finite_at_degenerate_points(alpha):
    for fn in (trace_norm, row_norm):
        a = alpha.clone().requires_grad_(True)
        fn(a).backward()
        assert torch.isfinite(a.grad).all(), fn.__name__


def test_trace_norm_gradient_is_u_vt():
    alpha = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    trace_norm(alpha).backward()
    u, _, vh = torch.linalg.svd(alpha.detach(), full_matrices=False)
    torch.testing.assert_close(alpha.grad, u @ vh)


def test_norms_gradcheck():
    alpha = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(trace_norm, (alpha,))
    assert torch.autograd.gradcheck(row_norm, (alpha,))


# --------------------------------------------------------------------------- gradients of the functionals

@pytest.mark.parametrize("fn", [cosine_regularizer, distance_regularizer])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_reach_alpha_and_hinges(fn, dtype):
    alpha, hinges = _problem()
    alpha = alpha.to(dtype).requires_grad_(True)
    hinges = hinges.to(dtype).requires_grad_(True)
    fn(alpha, hinges, 0.2, 1.3).backward()
    for name, p in (("alpha", alpha), ("hinges", hinges)):
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().min() > 0, name


@pytest.mark.parametrize("fn", [cosine_regularizer, distance_regularizer])
def test_functional_regularizers_gradcheck(fn):
    alpha, hinges = _problem(num_tasks=3, num_hinges=4)
    alpha.requires_grad_(True)
    hinges.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, h: fn(a, h, 0.3, 1.2), (alpha, hinges))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(1, 6), st.integers(0, 10_000), st.permutations(range(5)))
def test_functional_regularizers_are_symmetric_in_tasks(num_tasks, num_hinges, seed, perm):
    alpha, hinges = _problem(num_tasks, num_hinges, seed)
    order = torch.tensor([p for p in perm if p < num_tasks])
    dist = distance_regularizer(alpha, hinges)
    cos = cosine_regularizer(alpha, hinges)
    assert dist.item() >= 0.0 and -1.0 - 1e-12 <= cos.item() <= 1.0 + 1e-12
    torch.testing.assert_close(distance_regularizer(alpha[order], hinges), dist)
    torch.testing.assert_close(cosine_regularizer(alpha[order], hinges), cos)


# --------------------------------------------------------------------------- over a model

def _taan(**overrides):
    torch.manual_seed(0)
    model = build_model("taan", (6,), [1, 2, 1], hidden=[8, 8, 5], num_hinges=4, **overrides).double()
    with torch.no_grad():
        for _, act in model.adaptive_layers():
            act.alpha.normal_(0.0, 0.5)
    return model


@pytest.mark.parametrize("name", sorted(REGULARIZERS))
def test_penalty_sums_the_layers(name):
    model = _taan()
    fn = REGULARIZERS[name]
    expected = 0.0
    for _, act in model.adaptive_layers():
        expected = expected + (fn(act.alpha) if name in ("tracenorm", "rownorm") else fn(act.alpha, act.hinges))
    penalty = functional_penalty(model, name, 0.3)
    assert penalty.shape == ()
    torch.testing.assert_close(penalty, 0.3 * expected)
    penalty.backward()
    for _, act in model.adaptive_layers():
        assert torch.isfinite(act.alpha.grad).all() and act.alpha.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["cosine", "distance"])
def test_data_measure_uses_each_layers_running_statistics(name):
    model = _taan()
    model.train()
    task = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1])
    for _ in range(5):
        model(3.0 * torch.randn(8, 6, dtype=torch.float64) + 1.0, task)
    fn = REGULARIZERS[name]
    expected = 0.0
    for _, act in model.adaptive_layers():
        mu, sigma = act.measure()
        assert (mu, sigma) != (0.0, 1.0)
        expected = expected + fn(act.alpha, act.hinges, mu, sigma)
    data = functional_penalty(model, name, 0.5, measure="data")
    torch.testing.assert_close(data, 0.5 * expected)
    assert not torch.allclose(data, functional_penalty(model, name, 0.5))


def test_penalty_groups_layers_of_different_sizes():
    model = build_model("taan-conv", (1, 20, 20), [2, 3], channels=[3, 4], hidden=[8], num_hinges=3).double()
    model.blocks[0].act.alpha.data = torch.randn(2, 3, dtype=torch.float64)
    expected = sum(distance_regularizer(act.alpha, act.hinges) for _, act in model.adaptive_layers())
    torch.testing.assert_close(functional_penalty(model, "distance", 1.0), expected)


def test_penalty_is_zero_without_layers_or_regulariser():
    model = _taan()
    for penalty in (functional_penalty(model, "none", 0.3), functional_penalty(model, "cosine", 0.0),
                    functional_penalty(build_model("hard", (6,), [1, 1]), "distance", 0.3)):
        assert penalty.shape == () and penalty.item() == 0.0
    assert functional_penalty(model, "none", 0.3).dtype == torch.float64


def test_penalty_errors():
    model = _taan()
    with pytest.raises(ValueError, match="unknown regulariser 'l2'; valid names: none, tracenorm, rownorm, cosine, distance"):
        functional_penalty(model, "l2", 0.1)
    with pytest.raises(ValueError, match=r"c must be finite and >= 0, got -0.1"):
        functional_penalty(model, "cosine", -0.1)
    with pytest.raises(ValueError, match="c must be finite and >= 0, got nan"):
        functional_penalty(model, "cosine", float("nan"))
    with pytest.raises(TypeError, match="c must be a float, got str"):
        functional_penalty(model, "cosine", "0.1")
    with pytest.raises(ValueError, match="measure must be one of standard, data, got 'empirical'"):
        functional_penalty(model, "cosine", 0.1, measure="empirical")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got list"):
        functional_penalty([], "cosine", 0.1)
    with pytest.raises(TypeError, match="name must be a str"):
        functional_penalty(model, None, 0.1)


def test_alpha_shape_errors():
    with pytest.raises(ValueError, match=r"alpha must have shape \(T, M\) or stacked \(L, T, M\), got \(5,\)"):
        trace_norm(torch.zeros(5))
    with pytest.raises(ValueError, match=r"alpha must have shape \(T, M\) or stacked \(L, T, M\)"):
        row_norm(torch.zeros(1, 2, 3, 4))
    with pytest.raises(TypeError, match="alpha must be a tensor"):
        cosine_regularizer("alpha", torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(T, M\)"):
        distance_regularizer(torch.zeros(2, 4), torch.zeros(3))
