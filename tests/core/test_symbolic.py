"""The sympy derivation of the Gram entries, its mpmath evaluator, and the float64 closed forms."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import sympy as sp
import torch

from taan_core import symbolic
from taan_core.gaussian import gram_matrix

KINDS = list(symbolic.GRAM_ENTRY_KINDS)


def _draw_case(kind: str, rng: np.random.Generator) -> dict:
    """Random (mu, sigma, b_i, b_j) satisfying the kind's condition, hinges on either side of mu."""
    mu = rng.uniform(-3, 3)
    sigma = 10 ** rng.uniform(-1, 1)
    b_i, b_j = mu + sigma * rng.uniform(-4, 4, size=2)
    if kind == "relu-hinge:b>0":
        b_i = abs(b_i) + 1e-3
    elif kind == "relu-hinge:b<=0":
        b_i = -abs(b_i)
    elif kind == "hinge-hinge:bi<=bj":
        b_i, b_j = min(b_i, b_j), max(b_i, b_j)
    elif kind == "hinge-hinge:bi>bj":
        b_i, b_j = max(b_i, b_j) + 1e-3, min(b_i, b_j)
    return {"mu": mu, "sigma": sigma, "b_i": b_i, "b_j": b_j}


def _subs(values: dict) -> dict:
    _, mu, sigma, b_i, b_j = symbolic.gram_symbols()
    return {mu: values["mu"], sigma: values["sigma"], b_i: values["b_i"], b_j: values["b_j"]}


@pytest.mark.slow
def test_kinds_and_cases_cover_the_same_names():
    assert set(symbolic.gram_entry_cases()) == set(KINDS)
    assert set(symbolic.gram_entry_expressions()) == set(KINDS)
    assert set(symbolic.closed_form_expressions()) == set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_case_table_is_the_piecewise_product(kind):
    # The derivation integrates the case's polynomial over its support; that is only right if the
    # piecewise product relu(.) relu(.) equals it there and vanishes elsewhere.
    x, mu, sigma, b_i, b_j = symbolic.gram_symbols()
    case = symbolic.gram_entry_cases()[kind]
    f, g = case.factors
    piecewise = sp.lambdify((x, b_i, b_j), sp.Max(0, f) * sp.Max(0, g))
    poly = sp.lambdify((x, b_i, b_j), f * g)
    rng = np.random.default_rng(1)
    for _ in range(20):
        v = _draw_case(kind, rng)
        if case.support is None:
            lo, hi = 0.0, 0.0
        else:
            lo, hi = (float(e.subs(_subs(v))) for e in case.support)
        for xv in rng.uniform(-8, 8, size=25):
            expected = poly(xv, v["b_i"], v["b_j"]) if lo < xv < hi else 0.0
            assert piecewise(xv, v["b_i"], v["b_j"]) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_derived_entry_minus_closed_form_simplifies_to_zero(kind):
    derived = symbolic.gram_entry_expressions()[kind]
    closed = symbolic.closed_form_expressions()[kind]
    assert sp.simplify((derived - closed).rewrite(sp.erf)) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_derived_entry_agrees_with_closed_form_to_40_digits(kind):
    _, mu, sigma, b_i, b_j = symbolic.gram_symbols()
    args = (mu, sigma, b_i, b_j)
    derived = sp.lambdify(args, symbolic.gram_entry_expressions()[kind], modules="mpmath")
    closed = sp.lambdify(args, symbolic.closed_form_expressions()[kind], modules="mpmath")
    rng = np.random.default_rng(2)
    for _ in range(50):
        v = _draw_case(kind, rng)
        # 50 digits plus those that 1 + erf(z) loses to cancellation far in a tail
        z = max(abs(v[k] - v["mu"]) for k in ("b_i", "b_j")) / v["sigma"]
        z = max(z, abs(v["mu"]) / v["sigma"])
        with mpmath.workdps(50 + math.ceil(z * z / (2 * math.log(10)))):
            p = [mpmath.mpf(v[k]) for k in ("mu", "sigma", "b_i", "b_j")]
            a, b = mpmath.mpf(derived(*p)), mpmath.mpf(closed(*p))
            assert abs(a - b) <= mpmath.mpf(10) ** -40 * abs(b)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "relu-hinge:b<=0"])
def test_derived_entry_matches_mpmath_quadrature(kind):
    # An evaluation that shares nothing with sympy: mpmath.quad of the piecewise product.
    rng = np.random.default_rng(3)
    for _ in range(3):
        v = _draw_case(kind, rng)
        value = symbolic.gram_entry_mp(kind, v["mu"], v["sigma"], v["b_i"], v["b_j"], precision=30)
        with mpmath.workdps(40):
            mu, sigma = mpmath.mpf(v["mu"]), mpmath.mpf(v["sigma"])
            bi, bj = mpmath.mpf(v["b_i"]), mpmath.mpf(v["b_j"])
            f = {"relu-relu": lambda t: t * t,
                 "relu-hinge:b>0": lambda t: t * (bi - t),
                 "hinge-hinge:bi<=bj": lambda t: (bi - t) * (bj - t),
                 "hinge-hinge:bi>bj": lambda t: (bi - t) * (bj - t)}[kind]
            lo, hi = {"relu-relu": (0, mpmath.inf), "relu-hinge:b>0": (0, bi),
                      "hinge-hinge:bi<=bj": (-mpmath.inf, bi), "hinge-hinge:bi>bj": (-mpmath.inf, bj)}[kind]
            pts = sorted({lo, hi, mu, *(mu + sigma * k for k in (-8, -3, -1, 1, 3, 8))},
                         key=lambda p: float(p))
            pts = [p for p in pts if lo <= p <= hi]
            ref = mpmath.quad(lambda t: f(t) * mpmath.npdf(t, mu, sigma), pts)
        assert abs(value - ref) <= mpmath.mpf(10) ** -25 * abs(ref)


def test_relu_hinge_below_kink_is_zero():
    assert symbolic.gram_entry_expressions()["relu-hinge:b<=0"] == 0
    assert symbolic.gram_entry_mp("relu-hinge:b<=0", 0.3, 1.2, -0.5) == 0


def test_derivations_are_cached(monkeypatch):
    first = symbolic.gram_entry_expressions()
    # The work is counted, not timed: a second call integrates nothing and every kind is a hit.
    integrations = []
    integrate = sp.integrate
    monkeypatch.setattr(sp, "integrate", lambda *args, **kw: integrations.append(args) or integrate(*args, **kw))
    before = symbolic._derive.cache_info()
    second = symbolic.gram_entry_expressions()
    after = symbolic._derive.cache_info()
    assert integrations == []
    assert after.misses == before.misses and after.hits == before.hits + len(KINDS)
    assert all(first[k] is second[k] for k in KINDS)


@pytest.mark.parametrize(
    ("i", "j", "kind"),
    [(0, 0, "relu-relu"), (0, 1, "relu-hinge:b<=0"), (2, 0, "relu-hinge:b>0"),
     (1, 2, "hinge-hinge:bi<=bj"), (2, 1, "hinge-hinge:bi>bj"), (1, 1, "hinge-hinge:bi<=bj")],
)
def test_entry_kind(i, j, kind):
    assert symbolic.entry_kind(i, j, [-1.0, 0.5]) == kind


def _draws(n: int, seed: int):
    rng = np.random.default_rng(seed)
    for k in range(n):
        sigma = 10 ** rng.uniform(-3, 3)
        kink = rng.uniform(-30, 30)  # standardised position of the relu kink, -mu / sigma
        beta = rng.uniform(-30, 30, size=4)  # standardised hinges
        if k % 10 == 0:
            beta[:2] = [-30.0, 30.0]  # the ends of the range
        if k % 10 == 1:
            beta[1] = beta[0]  # a repeated hinge
        mu = -kink * sigma
        yield mu + sigma * beta, mu, sigma


def test_float64_gram_matrix_matches_mpmath_to_1e_10():
    worst = 0.0
    for hinges, mu, sigma in _draws(50, seed=4):
        got = gram_matrix(torch.tensor(hinges, dtype=torch.float64), mu, sigma)
        ref = symbolic.gram_matrix_mp(hinges, mu, sigma, precision=30)
        assert torch.isfinite(got).all()
        for i in range(5):
            for j in range(5):
                r = ref[i, j]
                if r == 0:
                    assert got[i, j].item() == 0.0
                    continue
                err = float(abs(mpmath.mpf(got[i, j].item()) - r) / abs(r))
                worst = max(worst, err)
                assert err <= 1e-10, (i, j, hinges, mu, sigma, err)
    assert worst > 0  # the comparison did compare something


def test_float64_gram_matrix_matches_mpmath_next_to_the_kink():
    # A hinge just above the kink makes the relu-hinge entry O(b^3): relative accuracy there
    # needs the hinge itself, not the difference of two rounded standardised points.
    sigma = 0.7
    for mu in (-2.0, 0.0, 1.5):
        hinges = [1e-9, 1e-4, 0.05]
        got = gram_matrix(torch.tensor(hinges, dtype=torch.float64), mu, sigma)
        ref = symbolic.gram_matrix_mp(hinges, mu, sigma, precision=30)
        for m in range(1, 4):
            assert float(abs(mpmath.mpf(got[0, m].item()) - ref[0, m]) / ref[0, m]) <= 1e-10


def test_mp_matrix_is_symmetric_and_precise_in_the_tails():
    hinges, mu, sigma = [-30.0, -29.5, 0.25, 30.0], 0.0, 1.0
    lo = symbolic.gram_matrix_mp(hinges, mu, sigma, precision=50)
    hi = symbolic.gram_matrix_mp(hinges, mu, sigma, precision=80)
    assert lo.rows == lo.cols == 5
    for i in range(5):
        for j in range(5):
            assert lo[i, j] == lo[j, i]
            if hi[i, j] != 0:
                with mpmath.workdps(80):
                    assert abs(lo[i, j] - hi[i, j]) <= mpmath.mpf(10) ** -48 * abs(hi[i, j])
    assert mpmath.mpf(10) ** -210 < hi[1, 1] < mpmath.mpf(10) ** -190  # far in the lower tail


def test_mp_matrix_accepts_tensors_and_arrays():
    a = symbolic.gram_matrix_mp(torch.tensor([0.5, -1.0], dtype=torch.float64), 0.2, 1.5, precision=20)
    b = symbolic.gram_matrix_mp(np.array([0.5, -1.0]), 0.2, 1.5, precision=20)
    c = symbolic.gram_matrix_mp([0.5, -1.0], torch.tensor(0.2, dtype=torch.float64), 1.5, precision=20)
    assert a == b == c


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"hinges": [[0.0, 1.0]]}, ValueError, r"hinges must have shape \(M,\)"),
        ({"hinges": [0.0, math.nan]}, ValueError, "hinges must be finite"),
        ({"hinges": "abc"}, TypeError, "hinges must be a tensor"),
        ({"sigma": 0.0}, ValueError, "sigma must be > 0"),
        ({"sigma": -1.0}, ValueError, "sigma must be > 0"),
        ({"mu": math.inf}, ValueError, "mu must be finite"),
        ({"mu": "0"}, TypeError, "mu must be a real number"),
        ({"mu": torch.zeros(2)}, ValueError, "mu must be a scalar"),
        ({"precision": 0}, ValueError, "precision must be >= 1"),
        ({"precision": 50.0}, TypeError, "precision must be an int"),
    ],
)
def test_gram_matrix_mp_rejects_bad_input(kwargs, error, match):
    args = {"hinges": [0.0, 1.0], "mu": 0.0, "sigma": 1.0, "precision": 20} | kwargs
    with pytest.raises(error, match=match):
        symbolic.gram_matrix_mp(**args)


def test_gram_entry_mp_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind must be one of"):
        symbolic.gram_entry_mp("hinge-relu", 0.0, 1.0, 0.5)
