"""Closed-form Gaussian inner products: accuracy, gradients, invariants and input checks."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from taan_core.gaussian import (
    cosine_matrix,
    distance_matrix,
    gram_matrix,
    inner_product_matrix,
    partial_moments,
)

F64 = torch.float64


def _basis(x: np.ndarray, hinges: np.ndarray) -> np.ndarray:
    return np.concatenate([np.maximum(x, 0)[None], np.maximum(hinges[:, None] - x[None], 0)])


def _gram_quad(hinges: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    """E[B_i B_j] by adaptive quadrature, split at the kink and the hinges."""
    pdf = stats.norm(mu, sigma).pdf
    lo, hi = mu - 40 * sigma, mu + 40 * sigma
    cuts = sorted({lo, hi, *[p for p in [0.0, *hinges] if lo < p < hi]})
    n = len(hinges) + 1
    g = np.zeros((n, n))
    for i in range(n):
        for j in range(i, n):

            def f(x, i=i, j=j):
                b = _basis(np.array([x]), hinges)[:, 0]
                return b[i] * b[j] * pdf(x)

            total = sum(
                integrate.quad(f, a, b, epsabs=0, epsrel=1e-13, limit=200)[0] for a, b in zip(cuts, cuts[1:])
            )
            g[i, j] = g[j, i] = total
    return g


@pytest.mark.parametrize("seed", range(6))
def test_gram_matches_quadrature(seed):
    rng = np.random.default_rng(seed)
    mu = rng.uniform(-2, 2)
    sigma = 10 ** rng.uniform(-0.5, 0.5)
    hinges = mu + sigma * rng.uniform(-3, 3, size=4)
    g = gram_matrix(torch.tensor(hinges, dtype=F64), mu, sigma).numpy()
    ref = _gram_quad(hinges, mu, sigma)
    np.testing.assert_allclose(g, ref, rtol=1e-9, atol=1e-12 * sigma**2)


# --- 50-digit reference for the branch boundaries of the stable evaluation ---------------------


def _mp_gram(hinges, mu, sigma):
    """Reference Gram matrix in 80-digit arithmetic from the textbook closed forms.

    The forms cancel heavily in the tails, which 80 digits absorb for the points used here.
    Phi is always taken from the side where it is small (Q(-x) instead of 1 - Q(x)).
    """
    with mp.workdps(80):
        q = lambda x: mp.erfc(x / mp.sqrt(2)) / 2  # noqa: E731
        pdf = lambda x: mp.exp(-x * x / 2) / mp.sqrt(2 * mp.pi)  # noqa: E731
        mu, sigma = mp.mpf(mu), mp.mpf(sigma)
        c = -mu / sigma
        betas = [(mp.mpf(b) - mu) / sigma for b in hinges]

        def relu_hinge(b):
            if b <= c:
                return mp.mpf(0)
            mass = q(-b) - q(-c) if b <= 0 else q(c) - q(b)
            return b * pdf(c) - c * pdf(b) - (1 + c * b) * mass

        def hinge_hinge(bi, bj):
            lo, hi = min(bi, bj), max(bi, bj)
            return (1 + bi * bj) * q(-lo) + hi * pdf(lo)

        n = len(betas) + 1
        g = [[mp.mpf(0)] * n for _ in range(n)]
        g[0][0] = (1 + c * c) * q(c) - c * pdf(c)
        for i, bi in enumerate(betas):
            g[0][i + 1] = g[i + 1][0] = relu_hinge(bi)
            for j, bj in enumerate(betas):
                g[i + 1][j + 1] = hinge_hinge(bi, bj)
        return [[x * sigma**2 for x in row] for row in g]


def _max_rel_err(g: torch.Tensor, ref) -> float:
    worst = 0.0
    for i, row in enumerate(ref):
        for j, r in enumerate(row):
            if r == 0:
                assert g[i, j].item() == 0.0
                continue
            worst = max(worst, float(abs((mp.mpf(g[i, j].item()) - r) / r)))
    return worst


@pytest.mark.parametrize("seed", range(8))
def test_gram_relative_error_over_the_standardised_range(seed):
    """rel err <= 1e-10 for standardised hinges in [-30, 30], sigma in [1e-3, 1e3]."""
    rng = np.random.default_rng(100 + seed)
    sigma = 10 ** rng.uniform(-3, 3)
    c = 0.0 if seed % 3 == 0 else rng.uniform(-30, 30)
    mu = -c * sigma
    beta = np.concatenate(
        [
            rng.uniform(-30, 30, 3),
            np.clip(c + rng.choice([-1, 1], 2) * 10 ** rng.uniform(-10, 0.5, 2), -30, 30),  # near the kink
            np.clip(rng.uniform(-30, 30) + 10 ** rng.uniform(-10, 0, 2), -30, 30),  # near ties
        ]
    )
    hinges = mu + sigma * beta
    g = gram_matrix(torch.tensor(hinges, dtype=F64), mu, sigma)
    assert _max_rel_err(g, _mp_gram(list(hinges), mu, sigma)) <= 1e-10


@pytest.mark.parametrize("c", [-30.0, -12.0, -3.5, -1.0, 0.0, 0.5, 2.9, 3.1, 4.0, 9.0, 29.0])
def test_relu_hinge_entry_across_branch_switches(c):
    """Sweep interval widths d across the quadrature / tail-formula switch at every location."""
    scale = max(1.0, abs(c))
    widths = np.concatenate([10.0 ** np.arange(-12, 2), 3.0 / scale * np.array([0.98, 1.02])])
    widths = widths[c + widths <= 30.0]
    g = gram_matrix(torch.tensor(widths, dtype=F64), -c, 1.0)
    ref = _mp_gram(list(widths), -c, 1.0)
    for m in range(len(widths)):
        r = ref[0][m + 1]
        assert float(abs((mp.mpf(g[0, m + 1].item()) - r) / r)) <= 1e-10, (c, widths[m])


def test_partial_moments_match_mpmath_in_both_tails():
    xs = np.concatenate([np.linspace(-30, 30, 241), [3.999999, 4.0, 4.000001, 1e-9, -1e-9, 0.0]])
    p = partial_moments(torch.tensor(xs, dtype=F64))
    with mp.workdps(80):
        for i, x in enumerate(xs):
            x = mp.mpf(x)
            # Closed forms on the side where Q is small; 80 digits absorb their cancellation.
            q, dens = mp.erfc(x / mp.sqrt(2)) / 2, mp.npdf(x)
            if x >= 0:
                ref = [q, dens - x * q, (1 + x * x) * q - x * dens]
            else:
                qm = mp.erfc(-x / mp.sqrt(2)) / 2
                ref = [q, dens + x * qm - x, 1 + x * x - ((1 + x * x) * qm + x * dens)]
            for k in range(3):
                assert float(abs((mp.mpf(p[k][i].item()) - ref[k]) / ref[k])) <= 1e-12, (k, float(x))


# --- dtypes, batching, gradients ----------------------------------------------------------------


def test_float32_agrees_with_float64():
    rng = np.random.default_rng(3)
    alpha = rng.normal(size=(5, 6))
    hinges = rng.uniform(-2, 2, 6)
    for fn in (gram_matrix,):
        g64 = fn(torch.tensor(hinges, dtype=F64), 0.3, 1.2)
        g32 = fn(torch.tensor(hinges, dtype=torch.float32), 0.3, 1.2)
        assert g32.dtype == torch.float32
        torch.testing.assert_close(g32.double(), g64, rtol=1e-6, atol=1e-7)
    for fn in (inner_product_matrix, distance_matrix, cosine_matrix):
        r64 = fn(torch.tensor(alpha, dtype=F64), torch.tensor(hinges, dtype=F64), 0.3, 1.2)
        r32 = fn(torch.tensor(alpha, dtype=torch.float32), torch.tensor(hinges, dtype=torch.float32), 0.3, 1.2)
        assert r32.dtype == torch.float32
        torch.testing.assert_close(r32.double(), r64, rtol=1e-5, atol=1e-6)


def test_output_dtype_follows_tensor_inputs_only():
    h32 = torch.linspace(-1, 1, 4)
    assert gram_matrix(h32, 0.5, 2.0).dtype == torch.float32
    assert gram_matrix(h32, torch.tensor(0.5, dtype=F64)).dtype == F64
    assert gram_matrix(h32.to(torch.bfloat16)).dtype == torch.float32


def test_batched_over_layers_equals_per_layer():
    rng = np.random.default_rng(4)
    alpha = torch.tensor(rng.normal(size=(3, 4, 5)), dtype=F64)
    hinges = torch.tensor(rng.uniform(-2, 2, (3, 5)), dtype=F64)
    mu = torch.tensor([0.0, 0.5, -1.0], dtype=F64)
    sigma = torch.tensor([1.0, 2.0, 0.5], dtype=F64)
    for fn in (inner_product_matrix, distance_matrix, cosine_matrix):
        batched = fn(alpha, hinges, mu, sigma)
        for layer in range(3):
            torch.testing.assert_close(batched[layer], fn(alpha[layer], hinges[layer], mu[layer], sigma[layer]))
    g = gram_matrix(hinges, mu, sigma)
    assert g.shape == (3, 6, 6)
    torch.testing.assert_close(g[1], gram_matrix(hinges[1], mu[1], sigma[1]))


@pytest.mark.parametrize(
    "mu,sigma,spread",
    [(0.0, 1.0, 1.0), (0.7, 0.5, 2.0), (-3.0, 2.0, 0.01), (1.0, 0.05, 1.0), (0.0, 1.0, 25.0)],
)
def test_gradcheck_all_inputs(mu, sigma, spread):
    rng = np.random.default_rng(5)
    alpha = torch.tensor(rng.normal(size=(3, 4)), dtype=F64, requires_grad=True)
    hinges = torch.tensor(mu + sigma * spread * rng.uniform(-1, 1, 4), dtype=F64, requires_grad=True)
    mu_t = torch.tensor(mu, dtype=F64, requires_grad=True)
    sigma_t = torch.tensor(sigma, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(gram_matrix, (hinges, mu_t, sigma_t))
    for fn in (inner_product_matrix, cosine_matrix, distance_matrix):
        assert torch.autograd.gradcheck(fn, (alpha, hinges, mu_t, sigma_t))
    sq = lambda a, h, m, s: distance_matrix(a, h, m, s, squared=True)  # noqa: E731
    assert torch.autograd.gradcheck(sq, (alpha, hinges, mu_t, sigma_t))


def test_gradients_finite_across_the_whole_range():
    """No NaN or inf in values or gradients for standardised hinges in [-30, 30], sigma in
    [1e-3, 1e3], hinges tied, at the kink, and identical tasks (d = 0)."""
    rng = np.random.default_rng(6)
    for sigma in (1e-3, 1.0, 1e3):
        for c in (-30.0, 0.0, 17.0):
            mu = -c * sigma
            beta = np.array([-30.0, -5.0, c, c, 0.0, 1e-12, 5.0, 30.0])
            hinges = torch.tensor(mu + sigma * beta, dtype=F64, requires_grad=True)
            alpha = torch.tensor(rng.normal(size=(3, 8)), dtype=F64)
            alpha[1] = alpha[0]
            alpha.requires_grad_(True)
            mu_t = torch.tensor(mu, dtype=F64, requires_grad=True)
            sigma_t = torch.tensor(sigma, dtype=F64, requires_grad=True)
            total = (
                gram_matrix(hinges, mu_t, sigma_t).sum()
                + distance_matrix(alpha, hinges, mu_t, sigma_t).sum()
                + cosine_matrix(alpha, hinges, mu_t, sigma_t).sum()
                + inner_product_matrix(alpha, hinges, mu_t, sigma_t).sum()
            )
            assert torch.isfinite(total)
            total.backward()
            for t in (hinges, alpha, mu_t, sigma_t):
                assert torch.isfinite(t.grad).all(), (sigma, c)


# --- function-space identities --------------------------------------------------------------------


def _activation(x, alpha_row, hinges):
    return np.maximum(x, 0) + (alpha_row[:, None] * np.maximum(hinges[:, None] - x[None], 0)).sum(0)


def test_inner_products_and_distances_match_direct_integration():
    rng = np.random.default_rng(7)
    alpha = rng.normal(size=(3, 4))
    hinges = rng.uniform(-1.5, 1.5, 4)
    mu, sigma = 0.4, 1.3
    k = inner_product_matrix(torch.tensor(alpha), torch.tensor(hinges), mu, sigma).numpy()
    d = distance_matrix(torch.tensor(alpha), torch.tensor(hinges), mu, sigma).numpy()
    cuts = sorted([mu - 40 * sigma, 0.0, *hinges, mu + 40 * sigma])
    pdf = stats.norm(mu, sigma).pdf
    for s in range(3):
        for t in range(3):
            f = lambda x: _activation(np.array([x]), alpha[s], hinges)[0] * _activation(  # noqa: E731
                np.array([x]), alpha[t], hinges
            )[0] * pdf(x)
            g = lambda x: (  # noqa: E731
                _activation(np.array([x]), alpha[s], hinges)[0] - _activation(np.array([x]), alpha[t], hinges)[0]
            ) ** 2 * pdf(x)
            ip = sum(integrate.quad(f, a, b, epsrel=1e-12)[0] for a, b in zip(cuts, cuts[1:]))
            d2 = sum(integrate.quad(g, a, b, epsrel=1e-12)[0] for a, b in zip(cuts, cuts[1:]))
            assert k[s, t] == pytest.approx(ip, rel=1e-9)
            assert d[s, t] == pytest.approx(math.sqrt(d2), rel=1e-8, abs=1e-12)


finite = st.floats(-3, 3, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(
    hinges=st.lists(finite, min_size=1, max_size=6),
    mu=finite,
    log_sigma=st.floats(-1.5, 1.5),
)
def test_gram_is_symmetric_psd(hinges, mu, log_sigma):
    g = gram_matrix(torch.tensor(hinges, dtype=F64), mu, 10**log_sigma)
    assert torch.equal(g, g.T)
    eig = torch.linalg.eigvalsh(g)
    assert eig.min() >= -1e-12 * eig.abs().max()


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    num_tasks=st.integers(1, 6),
    num_hinges=st.integers(1, 5),
    mu=finite,
    log_sigma=st.floats(-1, 1),
)
def test_distance_and_cosine_invariants(data, num_tasks, num_hinges, mu, log_sigma):
    alpha = torch.tensor(
        data.draw(st.lists(st.lists(finite, min_size=num_hinges, max_size=num_hinges), min_size=num_tasks, max_size=num_tasks)),
        dtype=F64,
    )
    hinges = torch.tensor(data.draw(st.lists(finite, min_size=num_hinges, max_size=num_hinges)), dtype=F64)
    sigma = 10**log_sigma
    d = distance_matrix(alpha, hinges, mu, sigma)
    assert torch.equal(d, d.T)
    assert (d >= 0).all()
    assert (torch.diagonal(d) == 0).all()
    # Triangle inequality d(s, u) <= d(s, t) + d(t, u) up to rounding.
    lhs = d[:, None, :]
    rhs = d[:, :, None] + d[None, :, :]
    assert (lhs <= rhs + 1e-9 * (1 + d.max())).all()
    c = cosine_matrix(alpha, hinges, mu, sigma)
    assert (c.abs() <= 1).all()
    assert (torch.diagonal(c) == 1).all()
    # Identical coordinates: distance exactly 0, cosine 1.
    twin = torch.cat([alpha[:1], alpha[:1]])
    assert distance_matrix(twin, hinges, mu, sigma)[0, 1] == 0
    assert cosine_matrix(twin, hinges, mu, sigma)[0, 1] == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    hinges=st.lists(finite, min_size=1, max_size=5),
    mu=finite,
    log_sigma=st.floats(-1, 1),
    log_scale=st.floats(-2, 2),
)
def test_inner_products_scale_as_sigma_squared(hinges, mu, log_sigma, log_scale):
    """Under x -> s x, every basis function scales by s when the hinges and measure scale too."""
    s = 10**log_scale
    sigma = 10**log_sigma
    h = torch.tensor(hinges, dtype=F64)
    g1 = gram_matrix(h, mu, sigma)
    g2 = gram_matrix(h * s, mu * s, sigma * s)
    torch.testing.assert_close(g2, g1 * s * s, rtol=1e-10, atol=1e-300)


# --- input checks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: gram_matrix(torch.zeros(2, 2, 2)), r"hinges must have shape \(M,\) or.*got \(2, 2, 2\)"),
        (lambda: gram_matrix(torch.tensor(1.0)), r"hinges must have shape \(M,\).*got \(\)"),
        (lambda: gram_matrix(torch.zeros(0)), r"at least one hinge"),
        (lambda: gram_matrix(torch.tensor([0.0, float("nan")])), r"hinges must be finite"),
        (lambda: gram_matrix(torch.zeros(3), sigma=0.0), r"sigma must be > 0"),
        (lambda: gram_matrix(torch.zeros(3), sigma=-1.0), r"sigma must be > 0"),
        (lambda: gram_matrix(torch.zeros(3), mu=float("inf")), r"mu must be finite"),
        (lambda: gram_matrix(torch.zeros(2, 3), mu=torch.zeros(3)), r"mu must be a scalar or shape \(2,\)"),
        (
            lambda: inner_product_matrix(torch.zeros(4, 12), torch.zeros(16)),
            r"alpha must have shape \(T, M\) with M = len\(hinges\) = 16, got \(4, 12\)",
        ),
        (
            lambda: distance_matrix(torch.zeros(4, 3), torch.zeros(2, 3)),
            r"alpha must have shape \(L, T, M\) = \(2, T, 3\)",
        ),
        (lambda: cosine_matrix(torch.zeros(0, 3), torch.zeros(3)), r"at least one task"),
        (lambda: cosine_matrix(torch.full((2, 3), float("inf")), torch.zeros(3)), r"alpha must be finite"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_non_numeric_input_raises_type_error():
    with pytest.raises(TypeError, match="hinges must be a tensor"):
        gram_matrix("0.5")


# --- the GEMM path: blocks, autograd path, near-zero distances ----------------------------------


def _mp_squared_distances(alpha: torch.Tensor, w: torch.Tensor) -> np.ndarray:
    """(a_s - a_t)^T W (a_s - a_t) of the float64 inputs in 40-digit arithmetic."""
    t, m = alpha.shape
    with mp.workdps(40):
        a = [[mp.mpf(x) for x in row] for row in alpha.tolist()]
        wm = [[mp.mpf(x) for x in row] for row in w.tolist()]
        out = np.zeros((t, t))
        for s in range(t):
            for u in range(s + 1, t):
                da = [a[s][k] - a[u][k] for k in range(m)]
                out[s, u] = out[u, s] = float(sum(da[i] * wm[i][j] * da[j] for i in range(m) for j in range(m)))
    return out


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_blocks_agree_with_one_block_and_with_the_autograd_path(monkeypatch, dtype):
    import taan_core.gaussian as gaussian

    rng = np.random.default_rng(11)
    alpha = torch.tensor(rng.normal(size=(2, 11, 5)), dtype=dtype)
    alpha[0, 3] = alpha[0, 7]  # identical tasks in different blocks
    alpha[1, 2] = alpha[1, 9] + 1e-9
    hinges = torch.tensor(rng.uniform(-2, 2, (2, 5)), dtype=dtype)
    fns = (inner_product_matrix, distance_matrix, cosine_matrix,
           lambda *args: distance_matrix(*args, squared=True))
    whole = [fn(alpha, hinges, 0.2, 1.3) for fn in fns]
    grads = [fn(alpha.clone().requires_grad_(True), hinges, 0.2, 1.3).detach() for fn in fns]
    monkeypatch.setattr(gaussian, "_BLOCK", 4)
    for fn, one, autograd_path in zip(fns, whole, grads):
        blocked = fn(alpha, hinges, 0.2, 1.3)
        assert blocked.dtype == dtype and blocked.shape == (2, 11, 11)
        assert torch.equal(blocked, blocked.transpose(-1, -2))
        torch.testing.assert_close(blocked, one, rtol=1e-12 if dtype == F64 else 1e-6, atol=1e-12)
        torch.testing.assert_close(blocked, autograd_path, rtol=1e-10 if dtype == F64 else 1e-6, atol=1e-12)
    d = distance_matrix(alpha, hinges, 0.2, 1.3)
    assert (torch.diagonal(d, dim1=-2, dim2=-1) == 0).all()
    assert d[0, 3, 7] == 0 and d[0, 7, 3] == 0
    assert (torch.diagonal(cosine_matrix(alpha, hinges, 0.2, 1.3), dim1=-2, dim2=-1) == 1).all()


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    num_base=st.integers(2, 5),
    num_hinges=st.integers(1, 6),
    mu=st.floats(-1, 1),
    log_sigma=st.floats(-0.5, 0.5),
    autograd=st.booleans(),
)
def test_tasks_1e9_apart_get_the_exact_forms_distance(data, num_base, num_hinges, mu, log_sigma, autograd):
    """Near-zero distances keep their relative accuracy: where the GEMM form would cancel, the
    entry is recomputed from the difference of the two tasks."""
    gaps = data.draw(st.lists(st.floats(0.2, 1.0), min_size=num_hinges, max_size=num_hinges))
    hinges = torch.tensor(np.cumsum(gaps) - 1.5, dtype=F64)
    base = torch.tensor(
        data.draw(st.lists(st.lists(finite, min_size=num_hinges, max_size=num_hinges),
                           min_size=num_base, max_size=num_base)), dtype=F64)
    seed = data.draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    twins = base + 1e-9 * torch.tensor(rng.normal(size=base.shape), dtype=F64)
    alpha = torch.cat([base, twins, base[:1] + 1e-9 * torch.tensor(rng.normal(size=(1, num_hinges)))])
    sigma = 10**log_sigma
    w = gram_matrix(hinges, mu, sigma)[1:, 1:]
    ref = torch.tensor(_mp_squared_distances(alpha, w))
    a = alpha.clone().requires_grad_(autograd)
    d2 = distance_matrix(a, hinges, mu, sigma, squared=True).detach()
    assert torch.equal(d2, d2.T)
    near = torch.zeros_like(ref, dtype=torch.bool)
    idx = torch.arange(num_base)
    near[idx, idx + num_base] = near[idx + num_base, idx] = True
    near[0, -1] = near[-1, 0] = near[num_base, -1] = near[-1, num_base] = True
    assert (ref[near] > 0).all()
    np.testing.assert_allclose(d2[near].numpy(), ref[near].numpy(), rtol=1e-6, atol=0)
    np.testing.assert_allclose(d2.numpy(), ref.numpy(), rtol=1e-6, atol=1e-12 * float(ref.max()))
    d = distance_matrix(alpha, hinges, mu, sigma)
    np.testing.assert_allclose(d[near].numpy(), ref[near].sqrt().numpy(), rtol=1e-6, atol=0)


def test_gram_is_symmetric_for_hinges_a_rounding_apart():
    # The two triangles of the hinge block come from gaps of opposite sign; here they rounded
    # 1.6e-19 apart before the upper triangle was mirrored.
    g = gram_matrix(torch.tensor([0.0, 2.22e-16], dtype=F64), 3.0, 1.0)
    assert torch.equal(g, g.T)
