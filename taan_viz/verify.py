"""Check the closed-form Gram matrix against three independent evaluations: ``taan-viz verify``.

For every entry ``G[i, j] = E[B_i(x) B_j(x)]`` of the hinge basis under ``x ~ N(mu, sigma^2)``
:func:`verify_gram` puts side by side

- the closed form of :func:`taan_core.gaussian.gram_matrix` in float64,
- the sympy-derived expression evaluated with mpmath (:mod:`taan_core.symbolic`), the reference,
- ``scipy.integrate.quad`` of the piecewise product, split at the hinges, the kink and the mean,
- a Monte Carlo estimate with its standard error.

sympy, scipy and torch are imported inside the functions, so importing this module (which
``taan_viz.cli`` does for every command) stays cheap.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Annotated, Sequence

import typer

__all__ = [
    "VerifyRow",
    "max_relative_error",
    "parse_hinges",
    "verify_command",
    "verify_gram",
]

# Relative errors are taken against max(|reference|, tiny): an entry below the float64 range can
# only be matched in absolute terms.
_TINY = sys.float_info.min


@dataclass(frozen=True)
class VerifyRow:
    """One Gram entry evaluated four ways.

    Attributes
    ----------
    i, j : int
        Entry indices; 0 is ``relu(x)``, m >= 1 the hinge ``hinges[m - 1]``.
    kind : str
        Entry kind, a key of ``taan_core.symbolic.GRAM_ENTRY_KINDS``.
    where : str
        The hinges involved and their side of ``mu``.
    closed_form : float
        ``taan_core.gaussian.gram_matrix`` in float64.
    symbolic : mpmath.mpf
        The sympy-derived expression at the requested precision (the reference).
    quadrature, quadrature_error : float
        ``scipy.integrate.quad`` value and its error estimate.
    monte_carlo, monte_carlo_se : float
        Sample mean of ``B_i(x) B_j(x)`` and its standard error.
    rel_err_closed, rel_err_quadrature : float
        ``|value - symbolic| / max(|symbolic|, tiny)``.
    """

    i: int
    j: int
    kind: str
    where: str
    closed_form: float
    symbolic: object
    quadrature: float
    quadrature_error: float
    monte_carlo: float
    monte_carlo_se: float
    rel_err_closed: float
    rel_err_quadrature: float

    @property
    def monte_carlo_z(self) -> float:
        """(Monte Carlo - reference) / standard error; nan when the standard error is 0."""
        if self.monte_carlo_se == 0:
            return math.nan
        return (self.monte_carlo - float(self.symbolic)) / self.monte_carlo_se


def parse_hinges(text: str) -> list[float]:
    """Parse ``"-1,0.5,2"`` into a list of finite floats; ValueError on anything else."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError as err:
        raise ValueError(f"hinges must be comma-separated numbers like -1,0.5,2, got {text!r}") from err
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"hinges must be finite numbers, got {text!r}")
    return values


def _basis_factors(i: int, hinges: Sequence[float], mu: float, sigma: float):
    """Basis function i in the standardised variable u (x = mu + sigma u), divided by sigma.

    Returns (sign, point): the factor is (sign * (u - point))_+, positive above the kink for the
    relu (sign +1) and below the hinge for a hinge (sign -1).
    """
    if i == 0:
        return 1.0, -mu / sigma
    return -1.0, (hinges[i - 1] - mu) / sigma


def _quad_entry(i: int, j: int, hinges: Sequence[float], mu: float, sigma: float) -> tuple[float, float]:
    import warnings

    from scipy import integrate

    factors = [_basis_factors(k, hinges, mu, sigma) for k in (i, j)]
    lo = max([p for s, p in factors if s > 0], default=-math.inf)
    hi = min([p for s, p in factors if s < 0], default=math.inf)
    if lo >= hi:
        return 0.0, 0.0

    def integrand(u: float) -> float:
        prod = 1.0
        for s, p in factors:
            prod *= max(s * (u - p), 0.0)
        return prod * math.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)

    # Split at the support's ends (hinges and kink), at the density's bulk and, next to each end
    # out in a tail, on the scale 1/|p| over which the density varies there, so that quad sees a
    # smooth integrand with its mass resolved on every piece.
    cuts = {lo, hi, 0.0, 1.0, -1.0, 2.0, -2.0, 4.0, -4.0, 8.0, -8.0}
    for end, inward in ((lo, 1.0), (hi, -1.0)):
        if math.isfinite(end):
            cuts.update(end + inward * k / max(abs(end), 1.0) for k in (0.25, 1.0, 4.0, 16.0))
    cuts = sorted(c for c in cuts if lo <= c <= hi)
    total, error = 0.0, 0.0
    with warnings.catch_warnings():
        # tiny tail pieces can trip quad's roundoff detector while the value is still accurate
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        for a, b in zip(cuts[:-1], cuts[1:]):
            if a == b:
                continue
            value, err = integrate.quad(integrand, a, b, epsabs=0.0, epsrel=1e-13, limit=200)
            total += value
            error += err
    return sigma * sigma * total, sigma * sigma * error


def _monte_carlo(hinges: Sequence[float], mu: float, sigma: float, samples: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(mu, sigma, size=samples)
    basis = np.empty((samples, len(hinges) + 1))
    basis[:, 0] = np.maximum(x, 0.0)
    basis[:, 1:] = np.maximum(np.asarray(hinges)[None, :] - x[:, None], 0.0)
    mean = basis.T @ basis / samples
    second = (basis**2).T @ (basis**2) / samples
    se = np.sqrt(np.maximum(second - mean**2, 0.0) / max(samples - 1, 1))
    return mean, se


def _where(i: int, j: int, hinges: Sequence[float], mu: float) -> str:
    def side(b: float) -> str:
        return "<" if b < mu else (">" if b > mu else "=")

    parts = [f"b{k}={hinges[k - 1]:g}{side(hinges[k - 1])}mu" for k in sorted({i, j}) if k > 0]
    if i == 0 and j == 0:
        parts = [f"kink 0{side(0.0)}mu"]
    return ", ".join(parts)


def _relative(value: float, reference) -> float:
    return float(abs(value - reference) / max(abs(reference), _TINY))


def verify_gram(
    hinges: Sequence[float],
    mu: float = 0.0,
    sigma: float = 1.0,
    precision: int = 50,
    samples: int = 200_000,
    seed: int = 0,
) -> list[VerifyRow]:
    """Evaluate every Gram entry (upper triangle) by closed form, sympy/mpmath, quadrature and Monte Carlo.

    Parameters
    ----------
    hinges : sequence of float, length M >= 1
    mu : float
        Mean of x.
    sigma : float
        Standard deviation of x, > 0.
    precision : int
        Decimal digits of the mpmath reference.
    samples : int
        Monte Carlo sample size, >= 2.
    seed : int
        Seed of the Monte Carlo generator.

    Returns
    -------
    list of VerifyRow, length (M + 1)(M + 2) / 2
        In row-major order of the upper triangle.

    Raises
    ------
    ValueError
        For empty or non-finite hinges, sigma <= 0, non-finite mu, precision < 1, samples < 2.
    """
    hinges = [float(b) for b in hinges]
    if not hinges:
        raise ValueError("hinges must hold at least one hinge, got none")
    if isinstance(samples, bool) or not isinstance(samples, int):
        raise TypeError(f"samples must be an int, got {type(samples).__name__}")
    if samples < 2:
        raise ValueError(f"samples must be >= 2 to estimate a standard error, got {samples}")

    import torch

    from taan_core import symbolic
    from taan_core.gaussian import gram_matrix

    reference = symbolic.gram_matrix_mp(hinges, mu, sigma, precision=precision)  # validates
    mu, sigma = float(mu), float(sigma)
    closed = gram_matrix(torch.tensor(hinges, dtype=torch.float64), mu, sigma).numpy()
    mc_mean, mc_se = _monte_carlo(hinges, mu, sigma, samples, seed)

    rows = []
    n = len(hinges) + 1
    for i in range(n):
        for j in range(i, n):
            ref = reference[i, j]
            quad, quad_err = _quad_entry(i, j, hinges, mu, sigma)
            rows.append(
                VerifyRow(
                    i=i,
                    j=j,
                    kind=symbolic.entry_kind(i, j, hinges),
                    where=_where(i, j, hinges, mu),
                    closed_form=float(closed[i, j]),
                    symbolic=ref,
                    quadrature=quad,
                    quadrature_error=quad_err,
                    monte_carlo=float(mc_mean[i, j]),
                    monte_carlo_se=float(mc_se[i, j]),
                    rel_err_closed=_relative(float(closed[i, j]), ref),
                    rel_err_quadrature=_relative(quad, ref),
                )
            )
    return rows


def max_relative_error(rows: Sequence[VerifyRow], against: str = "closed") -> float:
    """Largest relative error to the sympy reference of the closed form (``"closed"``) or quadrature."""
    if against not in ("closed", "quadrature"):
        raise ValueError(f"against must be 'closed' or 'quadrature', got {against!r}")
    attr = "rel_err_closed" if against == "closed" else "rel_err_quadrature"
    return max((getattr(r, attr) for r in rows), default=0.0)


def _render(rows: Sequence[VerifyRow], tolerance: float, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        # piped output should keep one table row per line
        console = Console(width=200)
    table = Table(title=title, title_justify="left")
    for name in ("G\\[i,j]", "kind", "where", "closed form", "sympy (mpmath)", "quadrature",
                 "Monte Carlo ± s.e.", "rel err closed", "rel err quad"):
        text = name in ("kind", "where")
        table.add_column(name, justify="left" if text else "right", no_wrap=not text)
    for r in rows:
        bad = r.rel_err_closed > tolerance
        table.add_row(
            f"G\\[{r.i},{r.j}]",
            r.kind,
            r.where,
            f"{r.closed_form:.15g}",
            f"{float(r.symbolic):.15g}",
            f"{r.quadrature:.12g}",
            f"{r.monte_carlo:.5g} ± {r.monte_carlo_se:.2g}",
            f"[red]{r.rel_err_closed:.2e}[/red]" if bad else f"{r.rel_err_closed:.2e}",
            f"{r.rel_err_quadrature:.2e}",
        )
    console.print(table)
    z = [abs(r.monte_carlo_z) for r in rows if not math.isnan(r.monte_carlo_z)]
    console.print(f"max relative error, closed form vs sympy: {max_relative_error(rows):.3e} "
                  f"(tolerance {tolerance:g})")
    console.print(f"max relative error, quadrature vs sympy:  {max_relative_error(rows, 'quadrature'):.3e}")
    if z:
        console.print(f"max |Monte Carlo - sympy| / s.e.:        {max(z):.2f}")


def verify_command(
    hinges: Annotated[str, typer.Option(help="Comma-separated hinges, e.g. -1,0.5,2 (write --hinges=-1,0.5,2).")] = "-1,0.5,2",
    mu: Annotated[float, typer.Option(help="Mean of the Gaussian measure.")] = 0.0,
    sigma: Annotated[float, typer.Option(help="Standard deviation of the Gaussian measure (> 0).")] = 1.0,
    precision: Annotated[int, typer.Option(help="Decimal digits of the sympy/mpmath reference.")] = 50,
    samples: Annotated[int, typer.Option(help="Monte Carlo sample size.")] = 200_000,
    seed: Annotated[int, typer.Option(help="Seed of the Monte Carlo sample.")] = 0,
    tolerance: Annotated[float, typer.Option(help="Largest accepted relative error, closed form vs sympy.")] = 1e-10,
) -> None:
    """Check the closed-form Gram matrix against sympy, quadrature and Monte Carlo; exit 1 on disagreement."""
    from taan_core._cli_runner import user_input

    with user_input():  # the checks of the hinges, the measure and the sizes come first in verify_gram
        values = parse_hinges(hinges)
        if not (tolerance > 0 and math.isfinite(tolerance)):
            raise ValueError(f"--tolerance must be a finite number > 0, got {tolerance:g}")
        rows = verify_gram(values, mu=mu, sigma=sigma, precision=precision, samples=samples, seed=seed)
    _render(rows, tolerance, f"Gram entries E[B_i B_j], x ~ N({mu:g}, {sigma:g}^2), hinges {hinges}")
    if max_relative_error(rows) > tolerance:
        raise typer.Exit(1)
