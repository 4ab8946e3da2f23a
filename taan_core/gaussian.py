"""Closed-form Gaussian inner products of the hinge basis of a task-adaptive activation.

A layer with hinges ``b`` (M,) has the basis ``B_0(x) = relu(x)`` and ``B_m(x) = relu(b_m - x)``.
Task ``t``'s activation is ``F_t = B_0 + sum_m alpha[t, m] B_m``. Under ``x ~ N(mu, sigma^2)`` the
Gram matrix ``G[i, j] = E[B_i(x) B_j(x)]`` gives every inner product, norm, distance and cosine
between task activations.

Substituting ``x = mu + sigma * u`` with ``u ~ N(0, 1)`` turns every entry into ``sigma^2`` times
a standard-normal integral of the standardised kink ``c = -mu / sigma`` and hinges
``beta = (b - mu) / sigma``. Those integrals are built from the upper partial moments
``P_k(x) = E[(u - x)_+^k]`` for ``k = 0, 1, 2``, evaluated without cancellation in both tails
(see docs/math.md for the derivation and the error analysis).

All functions take and return torch tensors and are differentiable in ``alpha``, ``hinges``,
``mu`` and ``sigma``. They compute in float64 internally (float32 on devices without float64)
and return the promoted input dtype.
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch
from torch import Tensor

from taan_core._validation import _fmt_shape, check_finite, check_positive, check_tensor

__all__ = [
    "gram_matrix",
    "inner_product_matrix",
    "distance_matrix",
    "cosine_matrix",
    "partial_moments",
]

Scalar = Union[float, Tensor]

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_HALF_PI = math.sqrt(0.5 * math.pi)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)

# Above this point the forward recurrence J_2 = (1 + x^2) r(x) - x of the scaled partial moments
# cancels more than ~3 digits; the continued fraction below is used instead. At 4 it needs
# _CF_TERMS terms for full double precision (checked against mpmath in the tests).
_CF_SWITCH = 4.0
_CF_TERMS = 40

# The relu-hinge entry is an integral of (u - c)(beta - u) phi(u) over [c, beta]. When the
# interval is narrow on the scale of the density's variation, every tail formula cancels (the
# value is O(d^3) while the tail terms are O(d)); Gauss-Legendre quadrature is exact to rounding
# there instead. The switch keeps the tail formulas' cancellation below ~2 digits.
_NARROW = 3.0
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(40)

# Squared distances are quadratic forms of a positive semidefinite matrix; rounding can leave
# values of order eps * |alpha| |G alpha| below zero. They are clamped to zero.


def _phi(x: Tensor) -> Tensor:
    return torch.exp(-0.5 * x * x) * _INV_SQRT_2PI


def _upper_tail(x: Tensor) -> Tensor:
    """Q(x) = P(u > x), stable in both tails through erfc."""
    return 0.5 * torch.special.erfc(x * _INV_SQRT2)


def _scaled_moments_nonneg(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """J_k(x) = P_k(x) / phi(x) for x >= 0, k = 0, 1, 2.

    The J_k satisfy J_k = (k - 1) J_{k-2} - x J_{k-1}, which cancels for large x; the ratios
    rho_k = J_k / J_{k-1} = k / (x + rho_{k+1}) form a continued fraction that converges fast
    exactly there.
    """
    small = x < _CF_SWITCH
    # Each branch sees only inputs in its own domain so that neither produces inf/NaN
    # gradients that a torch.where would multiply by zero into NaN.
    xs = torch.where(small, x, torch.zeros_like(x))
    r = _SQRT_HALF_PI * torch.special.erfcx(xs * _INV_SQRT2)
    j0_s = r
    j1_s = 1.0 - xs * r
    j2_s = (1.0 + xs * xs) * r - xs

    xl = torch.where(small, torch.full_like(x, _CF_SWITCH), x)
    rho = torch.zeros_like(xl)
    for k in range(_CF_TERMS, 1, -1):
        rho = k / (xl + rho)
    rho2 = rho
    rho1 = 1.0 / (xl + rho2)
    j0_l = 1.0 / (xl + rho1)
    j1_l = rho1 * j0_l
    j2_l = rho2 * j1_l

    return (
        torch.where(small, j0_s, j0_l),
        torch.where(small, j1_s, j1_l),
        torch.where(small, j2_s, j2_l),
    )


def partial_moments(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Upper partial moments of the standard normal, ``P_k(x) = E[(u - x)_+^k]``, k = 0, 1, 2.

    Parameters
    ----------
    x : Tensor of any shape
        Evaluation points (floating dtype).

    Returns
    -------
    (P0, P1, P2) : tuple of Tensors with the shape of ``x``
        ``P0 = Q(x)``, ``P1 = phi(x) - x Q(x)``, ``P2 = (1 + x^2) Q(x) - x phi(x)``, each computed
        with relative error near machine precision for every finite ``x`` (no cancellation in
        either tail).
    """
    nonneg = x >= 0
    # Reflection u -> -u: for x < 0, (u - x)_+^k = (u - x)^k - (x - u)_+^k, and the second term
    # is a partial moment at -x > 0, small against the first.
    ax = torch.where(nonneg, x, -x)
    j0, j1, j2 = _scaled_moments_nonneg(ax)
    dens = _phi(ax)
    a1 = dens * j1
    a2 = dens * j2
    p0 = _upper_tail(x)
    p1 = torch.where(nonneg, a1, a1 - x)
    p2 = torch.where(nonneg, a2, 1.0 + x * x - a2)
    return p0, p1, p2


def _relu_hinge_straddle(c: Tensor, beta: Tensor) -> Tensor:
    """The same integral for c < 0 < beta, where the interval holds the bulk of the density."""
    mass = 1.0 - _upper_tail(beta) - _upper_tail(-c)
    return beta * _phi(c) - c * _phi(beta) - (1.0 + c * beta) * mass


def _relu_hinge_quadrature(c: Tensor, d: Tensor) -> Tensor:
    """The same integral by Gauss-Legendre on [c, c + d]: with u = c + h (1 + t), h = d / 2, the
    integrand is h^2 (1 - t^2) phi(u), positive, so the sum has no cancellation."""
    nodes = torch.as_tensor(_GL_NODES, dtype=c.dtype, device=c.device)
    weights = torch.as_tensor(_GL_WEIGHTS * (1.0 - _GL_NODES**2), dtype=c.dtype, device=c.device)
    h = 0.5 * d
    u = c.unsqueeze(-1) + h.unsqueeze(-1) * (1.0 + nodes)
    return h**3 * (_phi(u) * weights).sum(-1)


Moments = tuple[Tensor, Tensor]  # (P_1, P_2) at some points


def _relu_hinge(c: Tensor, beta: Tensor, d: Tensor, at_c: Moments, at_minus_c: Moments,
                at_beta: Moments, at_minus_beta: Moments) -> Tensor:
    """E[(u - c)_+ (beta - u)_+] for u ~ N(0, 1); all arguments of shape (..., M).

    ``d = beta - c`` is passed in, computed as ``b / sigma`` from the raw hinge: differencing the
    rounded standardised values would lose all relative accuracy for hinges near the kink.
    The partial moments at +-c and +-beta are evaluated once by the caller and shared with the
    other entries of the Gram matrix.
    """
    active = d > 0
    scale = torch.maximum(torch.maximum(c.abs(), beta.abs()), torch.ones_like(c))
    narrow = active & (d * scale <= _NARROW)
    upper = active & ~narrow & (c >= 0)
    lower = active & ~narrow & (beta <= 0)
    straddle = active & ~narrow & ~upper & ~lower

    def pick(mask: Tensor, value: Tensor, default: float) -> Tensor:
        return torch.where(mask, value, torch.full_like(value, default))

    # Both tails, 0 <= c < beta: int_c^beta = [d P_1(c) - P_2(c)] - [-d P_1(beta) - P_2(beta)].
    # Every partial moment is finite for finite arguments, so the unselected entries of these
    # two forms carry finite values whose gradients torch.where zeroes.
    v_upper = d * (at_c[0] + at_beta[0]) - at_c[1] + at_beta[1]
    # beta <= 0: by u -> -u the interval [c, beta] maps to [-beta, -c] on the upper side.
    v_lower = d * (at_minus_beta[0] + at_minus_c[0]) - at_minus_beta[1] + at_minus_c[1]
    # Safe stand-in arguments outside each branch's mask keep its gradients finite.
    v_narrow = _relu_hinge_quadrature(pick(narrow, c, 0.0), pick(narrow, d, 0.5))
    v_straddle = _relu_hinge_straddle(pick(straddle, c, -1.0), pick(straddle, beta, 1.0))
    zero = torch.zeros_like(c)
    out = torch.where(narrow, v_narrow, zero)
    out = torch.where(upper, v_upper, out)
    out = torch.where(lower, v_lower, out)
    return torch.where(straddle, v_straddle, out)


def _hinge_hinge(beta: Tensor, gap: Tensor, at_minus_beta: Moments) -> Tensor:
    """E[(beta_i - u)_+ (beta_j - u)_+] for all pairs, (..., M) -> (..., M, M).

    With lo = min(beta_i, beta_j) and hi = max, (beta_i - u)(beta_j - u) = (lo - u)^2 +
    (hi - lo)(lo - u) below lo, so the entry is P_2(-lo) + (hi - lo) P_1(-lo): two positive terms.
    Only the M per-hinge moments are evaluated; the pairs are assembled from them.
    ``gap[..., i, j] = beta_j - beta_i`` is computed from the raw hinges for the same reason as
    ``d`` in :func:`_relu_hinge`.
    """
    p1, p2 = at_minus_beta
    bi = beta.unsqueeze(-1)
    bj = beta.unsqueeze(-2)
    from_i = p2.unsqueeze(-1) + gap * p1.unsqueeze(-1)
    from_j = p2.unsqueeze(-2) - gap * p1.unsqueeze(-2)
    return torch.where(bi <= bj, from_i, from_j)


def _compute_dtype(*tensors: Tensor) -> tuple[torch.dtype, torch.dtype, torch.device]:
    out_dtype = torch.float32
    device = torch.device("cpu")
    for t in tensors:
        if t.is_floating_point():
            out_dtype = torch.promote_types(out_dtype, t.dtype)
        device = t.device if t.device.type != "cpu" else device
    if out_dtype in (torch.float16, torch.bfloat16):
        out_dtype = torch.float32
    work = torch.float32 if device.type == "mps" else torch.float64
    return out_dtype, work, device


def _as_measure_tensor(value: Scalar, name: str) -> Tensor:
    # Python numbers become float64 so that a float32 default dtype cannot round mu or sigma
    # (a rounded mu shifts every standardised hinge by |mu| * 6e-8).
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=torch.float64)
    return check_tensor(value, name)


def _check_measure_value(t: Tensor, name: str, batch_shape: torch.Size) -> Tensor:
    """A scalar, or one value per stacked layer; a one-element tensor counts as a scalar."""
    if t.ndim and t.numel() == 1:
        return t.reshape(())
    if t.ndim and tuple(t.shape) != tuple(batch_shape):
        expected = "a scalar" if not batch_shape else f"a scalar or shape {_fmt_shape(batch_shape)}"
        raise ValueError(f"{name} must be {expected}, got shape {_fmt_shape(t.shape)}")
    return t


def _check_measure(mu: Scalar, sigma: Scalar, batch_shape: torch.Size) -> tuple[Tensor, Tensor]:
    mu_t = check_finite(_as_measure_tensor(mu, "mu"), "mu")
    sigma_t = check_positive(_as_measure_tensor(sigma, "sigma"), "sigma")
    return _check_measure_value(mu_t, "mu", batch_shape), _check_measure_value(sigma_t, "sigma", batch_shape)


def _check_hinges(hinges) -> Tensor:
    h = check_tensor(hinges, "hinges")
    if h.ndim not in (1, 2):
        raise ValueError(
            f"hinges must have shape (M,) or, stacked over layers, (L, M); got {_fmt_shape(h.shape)}"
        )
    if h.shape[-1] == 0:
        raise ValueError("hinges must hold at least one hinge, got shape " + _fmt_shape(h.shape))
    return check_finite(h, "hinges")


def _check_alpha(alpha, h: Tensor) -> Tensor:
    a = check_tensor(alpha, "alpha")
    m = h.shape[-1]
    if h.ndim == 1:
        if a.ndim != 2 or a.shape[1] != m:
            raise ValueError(
                f"alpha must have shape (T, M) with M = len(hinges) = {m}, got {_fmt_shape(a.shape)}"
            )
    else:
        if a.ndim != 3 or a.shape[0] != h.shape[0] or a.shape[2] != m:
            raise ValueError(
                f"alpha must have shape (L, T, M) = ({h.shape[0]}, T, {m}) to match hinges of shape "
                f"{_fmt_shape(h.shape)}, got {_fmt_shape(a.shape)}"
            )
    if a.shape[-2] == 0:
        raise ValueError("alpha must hold at least one task (T >= 1), got shape " + _fmt_shape(a.shape))
    return check_finite(a, "alpha")


def _gram(h: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
    """Gram matrix in the working dtype; h (..., M), mu and sigma broadcastable to (...)."""
    mu_b = mu.unsqueeze(-1) if mu.ndim else mu
    sigma_b = sigma.unsqueeze(-1) if sigma.ndim else sigma
    beta = (h - mu_b) / sigma_b
    c = (-mu_b / sigma_b).expand(beta.shape)
    # Every entry needs the partial moments at +-c and +-beta: one evaluation for all of them
    # keeps the op count (and so the cost of a regulariser step) independent of the branches.
    m = beta.shape[-1]
    _, p1, p2 = partial_moments(torch.cat([c, -c, beta, -beta], dim=-1))
    at = [(p1[..., k * m:(k + 1) * m], p2[..., k * m:(k + 1) * m]) for k in range(4)]
    g00 = at[0][1][..., 0]
    g0m = _relu_hinge(c, beta, h / sigma_b, *at)
    sigma_mat = sigma.reshape(sigma.shape + (1, 1))  # broadcasts against (..., M, M)
    gap = (h.unsqueeze(-2) - h.unsqueeze(-1)) / sigma_mat
    gmm = _hinge_hinge(beta, gap, at[3])
    top = torch.cat([g00.unsqueeze(-1), g0m], dim=-1)  # (..., M + 1)
    rest = torch.cat([g0m.unsqueeze(-1), gmm], dim=-1)  # (..., M, M + 1)
    g = torch.cat([top.unsqueeze(-2), rest], dim=-2)
    return g * (sigma_mat * sigma_mat)


def _prepare(alpha, hinges, mu, sigma):
    h = _check_hinges(hinges)
    a = _check_alpha(alpha, h) if alpha is not None else None
    mu_t, sigma_t = _check_measure(mu, sigma, h.shape[:-1])
    # Only tensors the caller passed decide the output dtype; Python numbers do not promote it.
    tensors = [t for t in (a, h) if t is not None]
    tensors += [t for t, given in ((mu_t, mu), (sigma_t, sigma)) if isinstance(given, Tensor)]
    out_dtype, work, device = _compute_dtype(*tensors)
    cast = lambda t: None if t is None else t.to(device=device, dtype=work)  # noqa: E731
    return cast(a), cast(h), cast(mu_t), cast(sigma_t), out_dtype


def gram_matrix(hinges, mu: Scalar = 0.0, sigma: Scalar = 1.0) -> Tensor:
    """Gram matrix of the hinge basis under ``x ~ N(mu, sigma^2)``.

    Parameters
    ----------
    hinges : Tensor of shape (M,) or (L, M)
        Hinge locations ``b``; a 2-D tensor stacks L layers with M hinges each.
    mu : float or Tensor of shape () or (L,), default 0.0
        Mean of the Gaussian measure.
    sigma : float or Tensor of shape () or (L,), default 1.0
        Standard deviation of the Gaussian measure, > 0.

    Returns
    -------
    G : Tensor of shape (M + 1, M + 1) or (L, M + 1, M + 1)
        ``G[i, j] = E[B_i(x) B_j(x)]`` for the basis ``[relu(x), relu(b_1 - x), ...,
        relu(b_M - x)]``; symmetric positive semidefinite.

    Raises
    ------
    ValueError
        If hinges is not (M,) or (L, M), holds non-finite values, or sigma <= 0.
    """
    _, h, mu_t, sigma_t, out_dtype = _prepare(None, hinges, mu, sigma)
    return _gram(h, mu_t, sigma_t).to(out_dtype)


def _inner(a: Tensor, h: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
    g = _gram(h, mu, sigma)
    ones = torch.ones(a.shape[:-1] + (1,), dtype=a.dtype, device=a.device)
    coords = torch.cat([ones, a], dim=-1)  # (..., T, M + 1): the relu coefficient is fixed at 1
    k = coords @ g @ coords.transpose(-1, -2)
    # Symmetrise so that k[s, t] == k[t, s] bit for bit despite the two matmul orders.
    return 0.5 * (k + k.transpose(-1, -2))


def inner_product_matrix(alpha, hinges, mu: Scalar = 0.0, sigma: Scalar = 1.0) -> Tensor:
    """Inner products ``<F_s, F_t> = E[F_s(x) F_t(x)]`` between the task activations of a layer.

    Parameters
    ----------
    alpha : Tensor of shape (T, M) or (L, T, M)
        Task coordinates; ``F_t = relu + sum_m alpha[t, m] relu(b_m - x)``.
    hinges : Tensor of shape (M,) or (L, M)
    mu, sigma : float or Tensor of shape () or (L,)
        The Gaussian measure ``N(mu, sigma^2)``.

    Returns
    -------
    K : Tensor of shape (T, T) or (L, T, T)
        ``K = A G A^T`` with ``A = [1, alpha]``; symmetric positive semidefinite.
    """
    a, h, mu_t, sigma_t, out_dtype = _prepare(alpha, hinges, mu, sigma)
    return _inner(a, h, mu_t, sigma_t).to(out_dtype)


# Pairwise differences are formed in row blocks of at most this many elements, so that T = 1000
# tasks with M = 64 hinges stay within tens of megabytes.
_BLOCK_ELEMENTS = 1 << 22


def _pairwise_quadratic(a: Tensor, w: Tensor) -> Tensor:
    """d2[s, t] = (a_s - a_t)^T W (a_s - a_t), exactly symmetric with an exactly zero diagonal.

    Written as sum_m (a_s - a_t)_m (y_s - y_t)_m with y = a W, which costs O(T^2 M) rather than
    O(T^2 M^2) and never subtracts two large quadratic forms.
    """
    y = a @ w
    t, m = a.shape[-2], a.shape[-1]
    rows = max(1, _BLOCK_ELEMENTS // max(1, t * m))
    blocks = []
    for start in range(0, t, rows):
        sl = slice(start, start + rows)
        da = a[..., sl, None, :] - a[..., None, :, :]
        dy = y[..., sl, None, :] - y[..., None, :, :]
        blocks.append((da * dy).sum(-1))
    return torch.cat(blocks, dim=-2)


def _sqrt_safe(x: Tensor) -> Tensor:
    """sqrt with a zero (sub)gradient at 0 instead of inf, so d(F, F) = 0 has finite gradients."""
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))), torch.zeros_like(x))


def distance_matrix(
    alpha, hinges, mu: Scalar = 0.0, sigma: Scalar = 1.0, squared: bool = False
) -> Tensor:
    """Distances ``d(F_s, F_t) = sqrt(E[(F_s(x) - F_t(x))^2])`` between task activations.

    The relu terms cancel, so ``d^2 = (alpha_s - alpha_t)^T W (alpha_s - alpha_t)`` with ``W``
    the hinge block of the Gram matrix.

    Parameters
    ----------
    alpha : Tensor of shape (T, M) or (L, T, M)
    hinges : Tensor of shape (M,) or (L, M)
    mu, sigma : float or Tensor of shape () or (L,)
    squared : bool, default False
        Return ``d^2`` instead of ``d``.

    Returns
    -------
    D : Tensor of shape (T, T) or (L, T, T)
        Symmetric, exactly zero on the diagonal, >= 0 (rounding-level negatives of the quadratic
        form, of order eps * |alpha| |W alpha|, are clamped to 0). The gradient of the
        unsquared distance at 0 is taken as 0.
    """
    a, h, mu_t, sigma_t, out_dtype = _prepare(alpha, hinges, mu, sigma)
    w = _gram(h, mu_t, sigma_t)[..., 1:, 1:]
    d2 = _pairwise_quadratic(a, w).clamp_min(0.0)
    out = d2 if squared else _sqrt_safe(d2)
    return out.to(out_dtype)


def cosine_matrix(alpha, hinges, mu: Scalar = 0.0, sigma: Scalar = 1.0) -> Tensor:
    """Cosine similarities ``<F_s, F_t> / (|F_s| |F_t|)`` between task activations.

    Parameters
    ----------
    alpha : Tensor of shape (T, M) or (L, T, M)
    hinges : Tensor of shape (M,) or (L, M)
    mu, sigma : float or Tensor of shape () or (L,)

    Returns
    -------
    C : Tensor of shape (T, T) or (L, T, T)
        Symmetric, in [-1, 1], exactly 1 on the diagonal.
    """
    a, h, mu_t, sigma_t, out_dtype = _prepare(alpha, hinges, mu, sigma)
    k = _inner(a, h, mu_t, sigma_t)
    # |F_t| > 0 always (F_t = x beyond the last hinge); the floor only guards underflow of the
    # norm for measures far out in the tails.
    norms = torch.sqrt(torch.diagonal(k, dim1=-2, dim2=-1).clamp_min(torch.finfo(k.dtype).tiny))
    cos = (k / (norms.unsqueeze(-1) * norms.unsqueeze(-2))).clamp(-1.0, 1.0)
    eye = torch.eye(cos.shape[-1], dtype=torch.bool, device=cos.device)
    cos = torch.where(eye, torch.ones_like(cos), cos)
    return cos.to(out_dtype)
