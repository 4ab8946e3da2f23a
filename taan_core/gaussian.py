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
    # E[B_i B_j] is symmetric, but the two triangles come from gaps of opposite sign, which round
    # differently for hinges a rounding apart: mirror the upper triangle so G is symmetric bit for bit.
    gmm = torch.triu(gmm) + torch.triu(gmm, 1).transpose(-1, -2)
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


def _needs_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _coordinates(a: Tensor) -> Tensor:
    """(..., T, M) -> (..., T, M + 1): the relu coefficient is fixed at 1."""
    ones = torch.ones(a.shape[:-1] + (1,), dtype=a.dtype, device=a.device)
    return torch.cat([ones, a], dim=-1)


# The T x T results are finished in square blocks of this size. Every element-wise operation on a
# block is a parallel region, which on a machine busy with other work can wait for a thread the
# scheduler has taken away; at T = 10,000 on 2 busy cores blocks of 256 (5,000 regions) made the
# inner products 7 to 12 times the plain product, 512 about 4 times, while with one thread all
# sizes cost about the same. 512^2 float64 (2 MB) still stays in cache while a block is finished.
# Up to 2048 tasks the blocks are half as large: there the regions are few anyway, and at T = 1000
# on one thread 256 was 4.4 times the plain product and 512 5.7 times (a block holding a pair of
# near-identical tasks is masked whole, and smaller blocks mask less).
_BLOCK = 512


def _symmetric_blocks(out: Tensor, left: Tensor, right: Tensor, alpha: float = 1.0, init=None,
                      finish=None) -> Tensor:
    """Fill ``out`` (..., T, T) with ``finish(init + alpha left_I right_J^T)`` block by block.

    ``init(block, idx, I, J)`` adds the constant term to a block in place and ``finish(block,
    idx, I, J)`` edits the result in place; ``idx`` indexes the leading (layer) dimensions. Only
    the upper triangle is computed and each block is mirrored into its transposed place, so
    ``out`` is symmetric bit for bit; a diagonal block is averaged with its transpose first (the
    GEMM rounds ``x_s . y_t`` and ``x_t . y_s`` differently), and ``init`` and ``finish`` must
    keep a symmetric block symmetric.

    The products of all row panels are computed first, straight into ``out``, and the blocks
    finished after: MKL's threads spin for a while after each call, and alternating a GEMM per
    block with torch's own parallel element-wise operations made the two thread pools fight for
    the cores (20 times slower on 2 cores). Besides ``out`` no T x T array is made; when ``out``
    is not in the working dtype, each row panel goes through one panel-sized buffer instead.
    """
    t = out.shape[-1]
    size = min(t, _BLOCK if t > 2048 else max(1, _BLOCK // 2))
    starts = range(0, t, size)
    in_place = out.dtype == left.dtype
    buffer = None if in_place else left.new_empty((size, t))
    for idx in np.ndindex(*out.shape[:-2]):
        lhs, rhs, dst = left[idx], right[idx], out[idx]

        def product(i: int) -> Tensor:
            rows = slice(i, min(i + size, t))
            panel = dst[rows, i:] if in_place else buffer[:rows.stop - i, :t - i]
            return panel.addmm_(lhs[rows], rhs[i:].T, beta=0.0, alpha=alpha)

        panels = [product(i) for i in starts] if in_place else None
        for k, i in enumerate(starts):
            panel = panels[k] if in_place else product(i)
            rows = slice(i, min(i + size, t))
            for j in range(i, t, size):
                cols = slice(j, min(j + size, t))
                blk = panel[:, j - i:cols.stop - i]
                if init is not None:
                    init(blk, idx, rows, cols)
                if i == j:
                    torch.mul(blk + blk.T, 0.5, out=blk)
                if finish is not None:
                    finish(blk, idx, rows, cols)
                if not in_place:
                    dst[rows, cols] = blk
                if i != j:
                    dst[cols, rows] = blk.T
    return out


def _inner(a: Tensor, h: Tensor, mu: Tensor, sigma: Tensor, out_dtype: torch.dtype) -> Tensor:
    """K = A G A^T with A = [1, alpha], by GEMM, in ``out_dtype``."""
    g = _gram(h, mu, sigma)
    coords = _coordinates(a)
    right = coords @ g
    if _needs_grad(coords, g):
        k = coords @ right.transpose(-1, -2)
        # Symmetrise so that k[s, t] == k[t, s] bit for bit despite the two matmul orders.
        return (0.5 * (k + k.transpose(-1, -2))).to(out_dtype)
    out = torch.empty(coords.shape[:-1] + coords.shape[-2:-1], dtype=out_dtype, device=coords.device)
    return _symmetric_blocks(out, coords, right)


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
    return _inner(a, h, mu_t, sigma_t, out_dtype)


# Exact recomputations of flagged pairs are formed in chunks of at most this many elements.
_BLOCK_ELEMENTS = 1 << 22

# Entries of the GEMM form q_s + q_t - 2 <x_s, y_t> whose value is below this fraction of its
# error scale are recomputed from the differences (see _squared_distances).
_REFINE_TOL = {torch.float64: 1e-4, torch.float32: 1e-1}


def _exact_pairs(a: Tensor, w: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """(a_s - a_t)^T W (a_s - a_t) for the pairs (rows[k], cols[k]), the difference taken first.

    For tasks close to each other the difference is exact (Sterbenz) and nothing large cancels:
    tasks 1e-9 apart keep the relative accuracy of the quadratic form itself. ``a`` (T, M),
    ``w`` (M, M); rows and cols of shape (n,).
    """
    chunk = max(1, _BLOCK_ELEMENTS // max(1, a.shape[-1]))
    parts = []
    for k in range(0, rows.shape[0], chunk):
        da = a[rows[k:k + chunk]] - a[cols[k:k + chunk]]
        parts.append(((da @ w) * da).sum(-1))
    return torch.cat(parts) if parts else a.new_zeros(0)


def _gram_factor(w: Tensor) -> Tensor:
    """U (..., M, M) with W = U U^T (W's eigenvectors scaled by the roots of its eigenvalues,
    rounding-level negative ones taken as 0). W is tiny, so it is decomposed on the CPU, where
    eigh exists for every dtype. A non-finite W (a measure far too narrow for the hinges) gives a
    NaN factor, so that the distances come out NaN as the Gram matrix does, not as an error."""
    w = w.cpu()
    if not torch.isfinite(w).all():
        return torch.full_like(w, math.nan)
    lam, vec = torch.linalg.eigh(w)
    return vec * lam.clamp_min(0.0).sqrt().unsqueeze(-2)


def _squared_distances(a: Tensor, w: Tensor, out_dtype: torch.dtype, squared: bool) -> Tensor:
    """d2[s, t] = (a_s - a_t)^T W (a_s - a_t) (its square root unless ``squared``), by GEMM on
    centred coordinates, with the entries where the GEMM cancels recomputed exactly.

    Distances do not change under a common shift, and centring the tasks (ac = a - mean) keeps
    the terms of ``q_s + q_t - 2 <x_s, y_t>`` small where the tasks are close to each other.
    Without autograd the GEMM runs on ``z = ac U`` (``W = U U^T``): ``q_t = |z_t|^2`` is a sum
    of squares, and the entry's rounding error is at most about ``4 M eps (q_s + q_t)``. With
    autograd (eigh has no usable gradient at repeated eigenvalues, e.g. tied hinges) it runs on
    ``ac`` and ``y = ac W`` and the scale is ``p_t = |ac_t|^T |W| |ac_t|``. Entries below
    ``_REFINE_TOL`` times their scale are recomputed by :func:`_exact_pairs`, so every GEMM value
    kept is within ``4 M eps / tol`` relative (3e-10 at M = 64 in float64, 1e-14 typically).
    The result is exactly symmetric, exactly zero on the diagonal and clamped at 0.
    """
    tol = _REFINE_TOL.get(a.dtype, 1e-4)
    ac = a - a.mean(dim=-2, keepdim=True)
    if _needs_grad(a, w):
        t = a.shape[-2]
        y = ac @ w
        q = (ac * y).sum(-1)
        scale = ((ac.abs() @ w.abs()) * ac.abs()).sum(-1)
        k = ac @ y.transpose(-1, -2)
        d2 = (q.unsqueeze(-1) + q.unsqueeze(-2)) - (k + k.transpose(-1, -2))
        eye = torch.eye(t, dtype=torch.bool, device=a.device)
        # Pairs s < t only, each value written to both places: exactly symmetric.
        flag = (d2 <= tol * (scale.unsqueeze(-1) + scale.unsqueeze(-2))).triu(1)
        pairs = flag.nonzero(as_tuple=True)
        if pairs[0].numel():
            lead, rows, cols = pairs[:-2], pairs[-2], pairs[-1]
            da = a[lead + (rows,)] - a[lead + (cols,)]
            wp = w if w.ndim == 2 else w[lead]
            exact = ((da.unsqueeze(-2) @ wp).squeeze(-2) * da).sum(-1)
            d2 = d2.index_put(pairs, exact).index_put(lead + (cols, rows), exact)
        d2 = torch.where(eye, torch.zeros_like(d2), d2).clamp_min(0.0)
        return (d2 if squared else _sqrt_safe(d2)).to(out_dtype)

    z = ac @ _gram_factor(w).to(w.device)
    q = (z * z).sum(-1)
    tq = tol * q

    def init(blk: Tensor, idx: tuple, rows: slice, cols: slice) -> None:
        blk.add_(q[idx][rows, None] + q[idx][None, cols])

    flagged: dict[tuple, list[tuple[Tensor, Tensor]]] = {}

    def finish(blk: Tensor, idx: tuple, rows: slice, cols: slice) -> None:
        on_diagonal = rows == cols
        if on_diagonal:
            blk.fill_diagonal_(math.inf)  # not a candidate; set to 0 below
        # One reduction rules out cancellation in most blocks; only the others get the mask.
        tqi = tq[idx]
        if not blk.min() > tqi[rows].max() + tqi[cols].max():
            flag = blk <= tqi[rows, None] + tqi[None, cols]
            if on_diagonal:
                flag.triu_(1)  # pairs s < t only; both places are written below
            r, c = flag.nonzero(as_tuple=True)
            if r.numel():
                flagged.setdefault(idx, []).append((r + rows.start, c + cols.start))
            blk.clamp_min_(0.0)
        if on_diagonal:
            blk.fill_diagonal_(0.0)
        if not squared:
            blk.sqrt_()

    out = torch.empty(a.shape[:-1] + a.shape[-2:-1], dtype=out_dtype, device=a.device)
    _symmetric_blocks(out, z, z, alpha=-2.0, init=init, finish=finish)
    # The flagged entries are recomputed together, after the blocks (one batch of small GEMMs
    # rather than one per block; see _symmetric_blocks for why that matters).
    for idx, found in flagged.items():
        rows = torch.cat([r for r, _ in found])
        cols = torch.cat([c for _, c in found])
        exact = _exact_pairs(a[idx], w[idx], rows, cols).clamp_min_(0.0)
        value = (exact if squared else exact.sqrt_()).to(out_dtype)
        out[idx][rows, cols] = value
        out[idx][cols, rows] = value
    return out


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
    return _squared_distances(a, w, out_dtype, squared)


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
    g = _gram(h, mu_t, sigma_t)
    coords = _coordinates(a)
    right = coords @ g
    # |F_t| > 0 always (F_t = x beyond the last hinge); the floor only guards underflow of the
    # norm for measures far out in the tails.
    norms = torch.sqrt((coords * right).sum(-1).clamp_min(torch.finfo(coords.dtype).tiny))
    if _needs_grad(coords, g):
        k = coords @ right.transpose(-1, -2)
        k = 0.5 * (k + k.transpose(-1, -2))
        cos = (k / (norms.unsqueeze(-1) * norms.unsqueeze(-2))).clamp(-1.0, 1.0)
        eye = torch.eye(cos.shape[-1], dtype=torch.bool, device=cos.device)
        return torch.where(eye, torch.ones_like(cos), cos).to(out_dtype)

    def finish(blk: Tensor, idx: tuple, rows: slice, cols: slice) -> None:
        n = norms[idx]
        blk.div_(n[rows, None] * n[None, cols]).clamp_(-1.0, 1.0)
        if rows == cols:
            blk.fill_diagonal_(1.0)

    out = torch.empty(coords.shape[:-1] + coords.shape[-2:-1], dtype=out_dtype, device=coords.device)
    return _symmetric_blocks(out, coords, right, finish=finish)
