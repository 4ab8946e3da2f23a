"""Errata of the published TAAN material (see docs/math.md), each shown by a test the wrong form fails.

The wrong forms are written out here in a few lines each, as printed in the paper's appendix or
as computed by the reference implementation, and compared with quadrature and with
``taan_core.gaussian``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.stats import norm

from taan_core.gaussian import cosine_matrix, gram_matrix

INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _quad(f, mu: float, sigma: float, lo: float, hi: float) -> float:
    """E[f(x) 1(lo < x < hi)] for x ~ N(mu, sigma^2), split at the mean."""
    pts = sorted({lo, hi, *(p for p in (mu - 4 * sigma, mu, mu + 4 * sigma) if lo < p < hi)})
    return sum(
        integrate.quad(lambda x: f(x) * norm.pdf(x, mu, sigma), a, b, epsabs=0, epsrel=1e-12, limit=200)[0]
        for a, b in zip(pts[:-1], pts[1:])
    )


def _relu_hinge_quad(b: float, mu: float, sigma: float) -> float:
    return _quad(lambda x: x * (b - x), mu, sigma, 0.0, b) if b > 0 else 0.0


# --- E[B_0 B_b] as printed in the paper's appendix ------------------------------------------------


def _paper_relu_hinge(b: float, mu: float, sigma: float) -> float:
    """The paper's E[relu(x) relu(b - x)]: its last term reads (b - 3 mu)."""
    if b <= 0:
        return 0.0
    c, m = (b - mu) / sigma, mu / sigma
    return ((b * mu - mu**2 - sigma**2) * (norm.cdf(c) - norm.cdf(-m))
            + sigma * mu * norm.pdf(c) + sigma * (b - 3 * mu) * norm.pdf(m))


def _corrected_relu_hinge(b: float, mu: float, sigma: float) -> float:
    """The same with the last term's factor corrected to (b - mu)."""
    if b <= 0:
        return 0.0
    c, m = (b - mu) / sigma, mu / sigma
    return ((b * mu - mu**2 - sigma**2) * (norm.cdf(c) - norm.cdf(-m))
            + sigma * mu * norm.pdf(c) + sigma * (b - mu) * norm.pdf(m))


@pytest.mark.parametrize(("b", "mu", "sigma"), [(1.5, 0.7, 1.3), (0.4, -0.5, 0.8), (3.0, 1.0, 2.0)])
def test_paper_relu_hinge_entry_is_wrong_for_nonzero_mu(b, mu, sigma):
    ref = _relu_hinge_quad(b, mu, sigma)
    assert abs(_paper_relu_hinge(b, mu, sigma) - ref) > 1e-2 * abs(ref)
    assert _corrected_relu_hinge(b, mu, sigma) == pytest.approx(ref, rel=1e-10)
    g = gram_matrix(torch.tensor([b], dtype=torch.float64), mu, sigma)
    assert g[0, 1].item() == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize(("b", "sigma"), [(1.5, 1.3), (0.4, 0.8), (-1.0, 1.0)])
def test_paper_relu_hinge_entry_holds_at_zero_mean(b, sigma):
    # (b - 3 mu) and (b - mu) coincide at mu = 0, which is the case the paper's experiments use.
    ref = _relu_hinge_quad(b, 0.0, sigma)
    assert _paper_relu_hinge(b, 0.0, sigma) == pytest.approx(ref, rel=1e-10, abs=1e-15)


# --- The reference code's U term ----------------------------------------------------------------


def _reference_u(b: np.ndarray) -> np.ndarray:
    """U[m] = E[relu(x) relu(b_m - x)] at mu = 0, sigma = 1 as the reference code computes it."""
    return (0.4 * b + 0.5 - norm.cdf(b)) * np.maximum(b, 0.0)


def _corrected_u(b: np.ndarray) -> np.ndarray:
    """The same entry with 1/sqrt(2 pi) and the indicator [b > 0] in place of relu(b)."""
    return (INV_SQRT_2PI * b + 0.5 - norm.cdf(b)) * (b > 0)


def test_reference_u_term_multiplies_by_relu_instead_of_indicator():
    b = np.array([-1.0, 0.3, 1.0, 2.0, 3.5])
    ref = np.array([_relu_hinge_quad(v, 0.0, 1.0) for v in b])
    wrong, right = _reference_u(b), _corrected_u(b)
    np.testing.assert_allclose(right, ref, rtol=1e-10, atol=1e-15)
    g = gram_matrix(torch.tensor(b, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(g[0, 1:], ref, rtol=1e-10, atol=1e-15)
    # wrong wherever b > 0 and b != 1 (relu(b) and [b > 0] agree only at b = 1, up to 0.4)
    assert np.all(np.abs(wrong - ref)[[1, 3, 4]] > 1e-2 * ref[[1, 3, 4]])
    # the figures quoted in docs/math.md
    assert round(float(_reference_u(np.array(2.0))), 3) == 0.646
    assert round(float(ref[3]), 3) == 0.321


# --- The reference code's 0.4 for 1/sqrt(2 pi) --------------------------------------------------


def _hinge_gram(b: torch.Tensor, inv_sqrt_2pi: float) -> torch.Tensor:
    """W[m, n] = E[relu(b_m - x) relu(b_n - x)] at mu = 0, sigma = 1 in the reference code's form."""
    lo = torch.minimum(b[:, None], b[None, :])
    hi = torch.maximum(b[:, None], b[None, :])
    return (1 + b[:, None] * b[None, :]) * torch.special.ndtr(lo) + inv_sqrt_2pi * hi * torch.exp(-0.5 * lo**2)


def test_constant_0_4_gives_a_negative_squared_distance():
    b = torch.tensor([0.0, 1e-3], dtype=torch.float64)
    diff = torch.tensor([1.0, -1.0], dtype=torch.float64)  # F_s - F_t for alpha_s = e_1, alpha_t = e_2
    ref = _quad(lambda x: (max(1e-3 - x, 0.0) - max(-x, 0.0)) ** 2, 0.0, 1.0, -math.inf, 1e-3)
    assert diff @ _hinge_gram(b, 0.4) @ diff < 0
    assert (diff @ _hinge_gram(b, INV_SQRT_2PI) @ diff).item() == pytest.approx(ref, rel=1e-6)
    w = gram_matrix(b)[1:, 1:]
    assert (diff @ w @ diff).item() == pytest.approx(ref, rel=1e-6)


def test_constant_0_4_makes_the_gram_matrix_indefinite_at_reference_init():
    # 64 hinges drawn as the reference initialises them, U(-0.5, 0.5): closely spaced pairs
    # expose the first-order error of 0.4, while the exact Gram matrix is PSD.
    gen = torch.Generator().manual_seed(0)
    b = torch.rand(64, generator=gen, dtype=torch.float64) - 0.5
    wrong = torch.linalg.eigvalsh(_hinge_gram(b, 0.4))
    right = torch.linalg.eigvalsh(gram_matrix(b))
    assert wrong[0] < -1e-6 * wrong[-1]
    assert right[0] >= -1e-12 * right[-1]


# --- The reference code's "trace norm" ----------------------------------------------------------


def _reference_trace_norm(alpha: torch.Tensor) -> torch.Tensor:
    """sqrt of the diagonal of alpha alpha^T, summed: a sum of row norms."""
    return torch.sqrt(torch.diag(alpha @ alpha.T)).sum()


def _trace_norm(alpha: torch.Tensor) -> torch.Tensor:
    """trace(sqrt(alpha alpha^T)), the paper's definition, through the eigenvalues."""
    return torch.linalg.eigvalsh(alpha @ alpha.T).clamp_min(0).sqrt().sum()


def test_reference_trace_norm_is_a_sum_of_row_norms():
    alpha = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    nuclear = torch.linalg.matrix_norm(alpha, ord="nuc")
    assert _trace_norm(alpha).item() == pytest.approx(nuclear.item(), rel=1e-12)
    assert _reference_trace_norm(alpha).item() == pytest.approx(2.0)
    assert nuclear.item() == pytest.approx(math.sqrt(2.0))

    gen = torch.Generator().manual_seed(1)
    alpha = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    nuclear = torch.linalg.matrix_norm(alpha, ord="nuc")
    assert _trace_norm(alpha).item() == pytest.approx(nuclear.item(), rel=1e-10)
    # the row-norm sum bounds the nuclear norm from above, with equality only for orthogonal rows
    assert _reference_trace_norm(alpha) > nuclear * (1 + 1e-3)
    q = torch.linalg.qr(alpha.T).Q.T * torch.arange(1.0, 6.0, dtype=torch.float64)[:, None]
    assert _reference_trace_norm(q).item() == pytest.approx(torch.linalg.matrix_norm(q, ord="nuc").item())


# --- The reference code's cosine loss detaches the norms ------------------------------------------


def _detached_cosine_loss(alpha: torch.Tensor, hinges: torch.Tensor) -> torch.Tensor:
    """-mean cosine with the Gram matrix and the norms detached, as the reference code does
    (with the exact Gram matrix, so that only the detaching differs)."""
    g = gram_matrix(hinges).detach()
    ones = torch.ones(alpha.shape[0], 1, dtype=alpha.dtype)
    coords = torch.cat([ones, alpha], dim=1)
    k = coords @ g @ coords.T
    norms = torch.sqrt(torch.diag(k)).detach()
    return -(k / norms[:, None] / norms[None, :]).mean()


def _cosine_loss(alpha: torch.Tensor, hinges: torch.Tensor) -> torch.Tensor:
    return -cosine_matrix(alpha, hinges).mean()


def test_detached_cosine_loss_has_the_wrong_gradient():
    gen = torch.Generator().manual_seed(2)
    alpha0 = 0.5 * torch.randn(4, 3, generator=gen, dtype=torch.float64)
    hinges0 = torch.tensor([-0.4, 0.1, 0.6], dtype=torch.float64)

    grads = {}
    for name, fn in (("detached", _detached_cosine_loss), ("exact", _cosine_loss)):
        alpha = alpha0.clone().requires_grad_(True)
        hinges = hinges0.clone().requires_grad_(True)
        loss = fn(alpha, hinges)
        loss.backward()
        grads[name] = (loss.detach(), alpha.grad, hinges.grad)

    # same value ...
    assert grads["detached"][0].item() == pytest.approx(grads["exact"][0].item(), rel=1e-12)
    # ... but the detached gradient is not the derivative of that value
    direction = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    eps = 1e-6
    numeric = (_cosine_loss(alpha0 + eps * direction, hinges0) - _cosine_loss(alpha0 - eps * direction, hinges0)) / (2 * eps)
    exact = (grads["exact"][1] * direction).sum()
    detached = (grads["detached"][1] * direction).sum()
    assert exact.item() == pytest.approx(numeric.item(), rel=1e-6, abs=1e-10)
    assert abs(detached - numeric) > 1e-2 * abs(numeric)
    # and no gradient reaches the hinges through it
    assert grads["detached"][2] is None
    assert grads["exact"][2].abs().max() > 1e-6
