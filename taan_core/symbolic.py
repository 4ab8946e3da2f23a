"""Symbolic derivation of the Gaussian Gram entries of the hinge basis, and a high-precision evaluator.

The basis of a layer with hinges ``b`` is ``B_0(x) = relu(x)``, ``B_m(x) = relu(b_m - x)``. For
``x ~ N(mu, sigma^2)`` every Gram entry ``E[B_i(x) B_j(x)]`` falls into one of a few kinds. In each
kind the piecewise-linear product ``B_i(x) B_j(x)`` is a quadratic polynomial on one interval (the
*support*, where both factors are positive) and zero elsewhere, so the entry is the integral of that
polynomial against the Gaussian density over the support. sympy carries out the integral with the
symbols ``mu``, ``sigma > 0``, ``b_i``, ``b_j`` after the substitution ``x = mu + sigma u``; the
result holds for hinges and kink on either side of ``mu`` (the standardised bounds enter only
through ``erf`` and ``exp``, which need no case split).

Kinds (keys of :data:`GRAM_ENTRY_KINDS`):

========================  ===================  ==============================  ===============
kind                      entry                condition                       support
========================  ===================  ==============================  ===============
``relu-relu``             E[relu(x)^2]         none                            (0, inf)
``relu-hinge:b>0``        E[relu(x) B_b(x)]    b_i > 0 (hinge above the kink)  (0, b_i)
``relu-hinge:b<=0``       E[relu(x) B_b(x)]    b_i <= 0 (hinge at/below kink)  empty: entry 0
``hinge-hinge:bi<=bj``    E[B_bi(x) B_bj(x)]   b_i <= b_j                      (-inf, b_i)
``hinge-hinge:bi>bj``     E[B_bi(x) B_bj(x)]   b_i > b_j                       (-inf, b_j)
========================  ===================  ==============================  ===============

This module imports sympy and mpmath at its top; import it lazily (inside the function that needs
it) so that code which never verifies does not pay for sympy. Derivations are cached per process.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from typing import Sequence

import mpmath
import sympy as sp
import torch

from taan_core._validation import check_finite, check_ndim, check_tensor

__all__ = [
    "GRAM_ENTRY_KINDS",
    "GramEntryCase",
    "closed_form_expressions",
    "entry_kind",
    "gram_entry_cases",
    "gram_entry_expressions",
    "gram_entry_mp",
    "gram_matrix_mp",
    "gram_symbols",
]

GRAM_ENTRY_KINDS: dict[str, str] = {
    "relu-relu": "E[relu(x)^2]; no condition",
    "relu-hinge:b>0": "E[relu(x) relu(b_i - x)] for b_i > 0 (hinge above the relu kink)",
    "relu-hinge:b<=0": "E[relu(x) relu(b_i - x)] for b_i <= 0 (hinge at or below the kink): 0",
    "hinge-hinge:bi<=bj": "E[relu(b_i - x) relu(b_j - x)] for b_i <= b_j",
    "hinge-hinge:bi>bj": "E[relu(b_i - x) relu(b_j - x)] for b_i > b_j",
}

# Standardised points further than this from the mean only change entries by terms below
# ~10^-780 of their size; the working precision is not raised beyond what they need.
_Z_CAP = 60.0
_GUARD_DIGITS = 20


@dataclass(frozen=True)
class GramEntryCase:
    """One kind of Gram entry: the two basis factors and the interval where both are positive.

    Attributes
    ----------
    kind : str
        Key of :data:`GRAM_ENTRY_KINDS`.
    condition : str
        The case condition in words.
    factors : tuple of two sympy expressions in ``x``
        The linear pieces of the two basis functions on the support.
    support : tuple (lower, upper) of sympy expressions, or None
        The interval where the product is positive; None when it is empty (the entry is 0).
    """

    kind: str
    condition: str
    factors: tuple
    support: tuple | None


@functools.lru_cache(maxsize=None)
def gram_symbols() -> tuple:
    """Return the sympy symbols ``(x, mu, sigma, b_i, b_j)`` used by every expression here.

    ``sigma`` is declared positive, the others real.
    """
    x = sp.Symbol("x", real=True)
    mu = sp.Symbol("mu", real=True)
    sigma = sp.Symbol("sigma", positive=True)
    b_i, b_j = sp.symbols("b_i b_j", real=True)
    return x, mu, sigma, b_i, b_j


@functools.lru_cache(maxsize=None)
def _cases() -> dict[str, GramEntryCase]:
    x, _, _, b_i, b_j = gram_symbols()
    relu, hinge_i, hinge_j = x, b_i - x, b_j - x
    table = {
        "relu-relu": ((relu, relu), (sp.Integer(0), sp.oo)),
        "relu-hinge:b>0": ((relu, hinge_i), (sp.Integer(0), b_i)),
        "relu-hinge:b<=0": ((relu, hinge_i), None),
        "hinge-hinge:bi<=bj": ((hinge_i, hinge_j), (-sp.oo, b_i)),
        "hinge-hinge:bi>bj": ((hinge_i, hinge_j), (-sp.oo, b_j)),
    }
    return {
        kind: GramEntryCase(kind, GRAM_ENTRY_KINDS[kind], factors, support)
        for kind, (factors, support) in table.items()
    }


def gram_entry_cases() -> dict[str, GramEntryCase]:
    """Return the case table: kind -> :class:`GramEntryCase` (factors and support in ``x``)."""
    return dict(_cases())


def _tidy(expr):
    """Bring an expression in erf/erfc/exp to one canonical, readable form.

    Expanding splits exp(a + b) into products of huge and tiny factors, which is harmless in
    mpmath but unreadable, so exponents are kept whole and factored.
    """
    expr = sp.expand(expr.rewrite(sp.erf), power_exp=False)
    expr = expr.replace(lambda e: isinstance(e, (sp.exp, sp.erf)), lambda e: e.func(sp.factor(e.args[0])))
    atoms = sorted(expr.atoms(sp.erf, sp.exp), key=sp.default_sort_key)
    return sp.collect(expr, atoms, sp.factor)


@functools.lru_cache(maxsize=None)
def _derive(kind: str):
    case = _cases()[kind]
    if case.support is None:
        return sp.Integer(0)
    x, mu, sigma, _, _ = gram_symbols()
    u = sp.Symbol("u", real=True)
    lower, upper = sp.symbols("lower upper", real=True)
    # With x = mu + sigma u the density becomes the standard normal one (dx = sigma du cancels
    # the 1/sigma of the density); finite bounds stay placeholders so that sympy integrates a
    # plain polynomial times exp(-u^2/2) and does not divide by the bounds.
    density = sp.exp(-u**2 / 2) / sp.sqrt(2 * sp.pi)
    integrand = sp.expand(sp.Mul(*case.factors).subs(x, mu + sigma * u) * density)
    lo, hi = case.support
    lo_u = lo if lo.is_infinite else lower
    hi_u = hi if hi.is_infinite else upper
    result = sp.integrate(integrand, (u, lo_u, hi_u))
    result = result.subs({lower: (lo - mu) / sigma, upper: (hi - mu) / sigma})
    return _tidy(result)


def gram_entry_expressions() -> dict[str, sp.Expr]:
    """Derive every kind of Gram entry with sympy: kind -> expression in ``mu, sigma, b_i, b_j``.

    Each expression is the integral of the kind's piecewise product against the density of
    ``N(mu, sigma^2)``, valid under the kind's condition (see :data:`GRAM_ENTRY_KINDS`).
    The first call integrates (a few seconds); later calls return the cached results.

    Returns
    -------
    dict of str to sympy.Expr
    """
    return {kind: _derive(kind) for kind in GRAM_ENTRY_KINDS}


@functools.lru_cache(maxsize=None)
def _closed_forms() -> dict:
    _, mu, sigma, b_i, b_j = gram_symbols()

    def Phi(z):
        return (1 + sp.erf(z / sp.sqrt(2))) / 2

    def phi(z):
        return sp.exp(-z**2 / 2) / sp.sqrt(2 * sp.pi)

    m = mu / sigma  # the kink 0 sits at u = -m
    c_i, c_j = (b_i - mu) / sigma, (b_j - mu) / sigma
    return {
        "relu-relu": sigma**2 * ((1 + m**2) * Phi(m) + m * phi(m)),
        "relu-hinge:b>0": sigma**2 * (c_i * phi(m) + m * phi(c_i) + (m * c_i - 1) * (Phi(c_i) - Phi(-m))),
        "relu-hinge:b<=0": sp.Integer(0),
        "hinge-hinge:bi<=bj": sigma**2 * ((1 + c_i * c_j) * Phi(c_i) + c_j * phi(c_i)),
        "hinge-hinge:bi>bj": sigma**2 * ((1 + c_i * c_j) * Phi(c_j) + c_i * phi(c_j)),
    }


def closed_form_expressions() -> dict[str, sp.Expr]:
    """The closed forms in ``Phi`` and ``phi`` of standardised points, as sympy expressions.

    With ``m = mu / sigma`` and ``c = (b - mu) / sigma`` (``Phi`` and ``phi`` the standard normal
    CDF and density, written with ``erf`` and ``exp``):

    - relu-relu: ``sigma^2 [(1 + m^2) Phi(m) + m phi(m)]``
    - relu-hinge, b > 0: ``sigma^2 [c phi(m) + m phi(c) + (m c - 1)(Phi(c) - Phi(-m))]``
    - hinge-hinge, b_i <= b_j: ``sigma^2 [(1 + c_i c_j) Phi(c_i) + c_j phi(c_i)]``

    These are the formulas ``taan_core.gaussian`` evaluates (in numerically stable forms); the
    tests show they equal :func:`gram_entry_expressions`.
    """
    return dict(_closed_forms())


def entry_kind(i: int, j: int, hinges: Sequence[float]) -> str:
    """Kind of Gram entry ``(i, j)``; index 0 is ``relu(x)``, index m >= 1 the hinge ``hinges[m-1]``."""
    if i == 0 and j == 0:
        return "relu-relu"
    if i == 0 or j == 0:
        b = float(hinges[max(i, j) - 1])
        return "relu-hinge:b>0" if b > 0 else "relu-hinge:b<=0"
    return "hinge-hinge:bi<=bj" if float(hinges[i - 1]) <= float(hinges[j - 1]) else "hinge-hinge:bi>bj"


@functools.lru_cache(maxsize=None)
def _lambdified(kind: str):
    _, mu, sigma, b_i, b_j = gram_symbols()
    return sp.lambdify((mu, sigma, b_i, b_j), _derive(kind), modules="mpmath")


def _check_scalar(value, name: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _check_inputs(hinges, mu, sigma, precision) -> tuple[list[float], float, float, int]:
    if not isinstance(hinges, torch.Tensor) and (isinstance(hinges, (list, tuple)) or hasattr(hinges, "__array__")):
        # as_tensor of Python floats would round through the float32 default dtype first
        try:
            hinges = torch.as_tensor(hinges, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"hinges must be a tensor or array-like of numbers, got {type(hinges).__name__}") from err
    h = check_tensor(hinges, "hinges", dtype=torch.float64)
    check_ndim(h, "hinges", (1,), "(M,)")
    check_finite(h, "hinges")
    mu = _check_scalar(mu, "mu")
    sigma = _check_scalar(sigma, "sigma")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma:g}")
    if isinstance(precision, bool) or not isinstance(precision, int):
        raise TypeError(f"precision must be an int (decimal digits), got {type(precision).__name__}")
    if precision < 1:
        raise ValueError(f"precision must be >= 1 decimal digit, got {precision}")
    return h.tolist(), mu, sigma, precision


def _working_dps(points: Sequence[float], mu: float, sigma: float, precision: int) -> int:
    # erf(z) for z far in a tail is +-1 up to exp(-z^2/2); the sympy forms add it to 1, so
    # the digits lost to that cancellation (z^2 / (2 ln 10)) are added as guard digits.
    z = [abs(p - mu) / sigma for p in points] + [abs(mu) / sigma]
    z_max = min(max(z), _Z_CAP)
    return precision + _GUARD_DIGITS + math.ceil(z_max**2 / (2 * math.log(10)))


def gram_entry_mp(
    kind: str, mu: float, sigma: float, b_i: float = 0.0, b_j: float = 0.0, precision: int = 50
) -> mpmath.mpf:
    """Evaluate one derived Gram entry with mpmath, to ``precision`` significant decimal digits.

    Parameters
    ----------
    kind : str
        Key of :data:`GRAM_ENTRY_KINDS`; the caller is responsible for its condition holding.
    mu, sigma : float
        Mean and standard deviation (> 0) of x.
    b_i, b_j : float
        Hinges (unused ones are ignored). Floats are converted exactly.
    precision : int
        Decimal digits of the result.

    Returns
    -------
    mpmath.mpf
    """
    if kind not in GRAM_ENTRY_KINDS:
        raise ValueError(f"kind must be one of {sorted(GRAM_ENTRY_KINDS)}, got {kind!r}")
    (b_i, b_j), mu, sigma, precision = _check_inputs([b_i, b_j], mu, sigma, precision)
    dps = _working_dps([b_i, b_j], mu, sigma, precision)
    fn = _lambdified(kind)
    with mpmath.workdps(dps):
        value = fn(mpmath.mpf(mu), mpmath.mpf(sigma), mpmath.mpf(b_i), mpmath.mpf(b_j))
        value = mpmath.mpf(value)
    with mpmath.workdps(precision):
        return +value


def gram_matrix_mp(hinges, mu: float = 0.0, sigma: float = 1.0, precision: int = 50) -> mpmath.matrix:
    """The Gram matrix ``G[i, j] = E[B_i(x) B_j(x)]`` from the sympy-derived expressions, in mpmath.

    Parameters
    ----------
    hinges : sequence, array or Tensor of shape (M,)
        The hinges b_1..b_M (converted exactly to binary64 values, then to mpmath).
    mu : float
        Mean of x.
    sigma : float
        Standard deviation of x, > 0.
    precision : int
        Significant decimal digits of every entry. The working precision adds guard digits for
        the cancellation of erf in the Gaussian tails (standardised points up to 60 away from
        the mean are covered in full; beyond that, terms below ~10^-780 of an entry's size are
        not resolved).

    Returns
    -------
    mpmath.matrix of shape (M+1, M+1)
        Basis order ``[relu(x), relu(b_1 - x), ..., relu(b_M - x)]``; symmetric.

    Raises
    ------
    ValueError
        If hinges is not 1-D or not finite, mu not finite, sigma <= 0, precision < 1.
    """
    hinges, mu, sigma, precision = _check_inputs(hinges, mu, sigma, precision)
    dps = _working_dps(hinges, mu, sigma, precision)
    n = len(hinges) + 1
    padded = [0.0] + hinges  # index 0 (relu) has no hinge; its slot is never read
    with mpmath.workdps(dps):
        mu_mp, sigma_mp = mpmath.mpf(mu), mpmath.mpf(sigma)
        b_mp = [mpmath.mpf(b) for b in padded]
        entries = {}
        for i in range(n):
            for j in range(i, n):
                kind = entry_kind(i, j, hinges)
                # relu-hinge entries are stored with the hinge in the b_i slot
                bi, bj = (b_mp[j], b_mp[j]) if i == 0 else (b_mp[i], b_mp[j])
                entries[i, j] = mpmath.mpf(_lambdified(kind)(mu_mp, sigma_mp, bi, bj))
    with mpmath.workdps(precision):
        out = mpmath.matrix(n, n)
        for (i, j), value in entries.items():
            out[i, j] = out[j, i] = +value
    return out
