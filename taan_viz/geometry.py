"""The geometry of one layer: task activations as points of L2(N(mu, sigma^2)).

Inner products, distances and cosines of the T activations ``F_t`` of a layer under a Gaussian
measure, computed in closed form by :mod:`taan_core.gaussian`, plus the names and definitions
of these metrics and the parsing of the measure the user asks for (see
:mod:`taan_viz.analysis` for the meaning of ``data``, ``standard`` and ``MU,SIGMA``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - only for annotations
    from taan_core.checkpoint import LayerRecord

__all__ = ["METRICS", "LayerGeometry", "Measure", "check_metric", "layer_geometry", "parse_measure"]

# name -> (colour-bar label, definition written into exports and the report). Labels are plain
# Unicode: matplotlib's mathtext costs half a second to start, a quarter of `taan-viz heatmap`.
METRICS: dict[str, tuple[str, str]] = {
    "distance": (
        "distance d(Fₛ, Fₜ)",
        "d(F_s, F_t) = sqrt(E[(F_s(x) - F_t(x))^2]), x ~ N(mu, sigma^2)",
    ),
    "squared-distance": (
        "squared distance d²(Fₛ, Fₜ)",
        "d^2(F_s, F_t) = E[(F_s(x) - F_t(x))^2], x ~ N(mu, sigma^2)",
    ),
    "cosine": (
        "cosine similarity cos(Fₛ, Fₜ)",
        "cos(F_s, F_t) = <F_s, F_t> / (|F_s| |F_t|), <F, G> = E[F(x) G(x)], x ~ N(mu, sigma^2)",
    ),
    "inner-product": (
        "inner product ⟨Fₛ, Fₜ⟩",
        "<F_s, F_t> = E[F_s(x) F_t(x)], x ~ N(mu, sigma^2)",
    ),
}


def check_metric(metric: str) -> str:
    """Return ``metric`` if it names one of :data:`METRICS`, else raise ValueError."""
    if not isinstance(metric, str):
        raise TypeError(f"metric must be a str, got {type(metric).__name__}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    return metric


# ----------------------------------------------------------------------------------------------
# the measure


@dataclass(frozen=True)
class Measure:
    """The Gaussian measure N(mu, sigma^2) under which task activations are compared.

    Attributes
    ----------
    kind : {"data", "standard", "explicit"}
    mu, sigma : float or None
        The explicit parameters (``kind == "explicit"`` only).
    """

    kind: str
    mu: float | None = None
    sigma: float | None = None

    def resolve(self, layer: "LayerRecord | None" = None) -> tuple[float, float]:
        """(mu, sigma) for ``layer``; ``"data"`` needs the layer's recorded statistics."""
        if self.kind == "standard":
            return 0.0, 1.0
        if self.kind == "explicit":
            return float(self.mu), float(self.sigma)
        if layer is None:
            raise ValueError("the 'data' measure needs a layer with recorded pre-activation statistics")
        return float(layer.mu), float(layer.sigma)

    @property
    def spec(self) -> str:
        """The string that :func:`parse_measure` turns back into this measure."""
        if self.kind == "explicit":
            return f"{self.mu:g},{self.sigma:g}"
        return self.kind

    def describe(self) -> str:
        """One line for captions and reports."""
        if self.kind == "standard":
            return "standard normal N(0, 1), as in the paper"
        if self.kind == "explicit":
            return f"N({self.mu:g}, {self.sigma:g}²), given explicitly"
        return "N(μ, σ²) from each layer's recorded pre-activation mean and standard deviation"


def parse_measure(spec: "str | Measure") -> Measure:
    """Turn ``"data"``, ``"standard"`` or ``"MU,SIGMA"`` into a :class:`Measure`.

    Raises
    ------
    TypeError
        When ``spec`` is neither a str nor a Measure.
    ValueError
        For any other string, or sigma <= 0, or non-finite numbers.
    """
    if isinstance(spec, Measure):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"measure must be a str, got {type(spec).__name__}")
    text = spec.strip().lower()
    if text in ("data", "standard"):
        return Measure(text)
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"measure must be 'data', 'standard' or 'MU,SIGMA' (e.g. '0,1'), got {spec!r}")
    try:
        mu, sigma = (float(p) for p in parts)
    except ValueError as err:
        raise ValueError(f"measure must be 'data', 'standard' or 'MU,SIGMA' with numbers, got {spec!r}") from err
    if not (math.isfinite(mu) and math.isfinite(sigma)):
        raise ValueError(f"measure MU,SIGMA must be finite, got {spec!r}")
    if sigma <= 0:
        raise ValueError(f"measure SIGMA must be > 0, got {sigma:g}")
    return Measure("explicit", mu, sigma)


# ----------------------------------------------------------------------------------------------
# geometry of one layer


@dataclass(frozen=True)
class LayerGeometry:
    """Gram geometry of the T task activations of one layer under N(mu, sigma^2).

    The (T, T) matrices are computed when first read and the distances kept: at T = 5000 the
    four matrices of five layers held 4 GB, while a figure reads one of them.

    Attributes
    ----------
    name : str
    mu, sigma : float
        The measure used.
    alpha : ndarray of shape (T, M)
    hinges : ndarray of shape (M,)
    inner_product, distance, squared_distance, cosine : ndarray of shape (T, T)
        Symmetric float64 matrices; ``distance`` and ``squared_distance`` have a zero diagonal,
        ``cosine`` a unit one; each is computed when first read, then kept.
    """

    name: str
    mu: float
    sigma: float
    alpha: np.ndarray
    hinges: np.ndarray

    def _tensors(self):
        import torch

        return torch.as_tensor(self.alpha), torch.as_tensor(self.hinges)

    @cached_property
    def inner_product(self) -> np.ndarray:
        import torch
        from taan_core.gaussian import inner_product_matrix

        with torch.no_grad():
            return inner_product_matrix(*self._tensors(), self.mu, self.sigma).numpy()

    def _squared_distances(self) -> np.ndarray:
        import torch
        from taan_core.gaussian import distance_matrix

        with torch.no_grad():
            return distance_matrix(*self._tensors(), self.mu, self.sigma, squared=True).numpy()

    @cached_property
    def squared_distance(self) -> np.ndarray:
        return self._squared_distances()

    @cached_property
    def distance(self) -> np.ndarray:
        # The square root of the squared distances, in place: no second T x T copy is kept.
        if "squared_distance" in self.__dict__:
            return np.sqrt(self.squared_distance)
        sq = self._squared_distances()
        return np.sqrt(sq, out=sq)

    @cached_property
    def cosine(self) -> np.ndarray:
        import torch
        from taan_core.gaussian import cosine_matrix

        with torch.no_grad():
            return cosine_matrix(*self._tensors(), self.mu, self.sigma).numpy()

    @cached_property
    def _squared_norms(self) -> np.ndarray:
        """|F_t|^2 = c_t G c_t^T with c_t = [1, alpha_t], shape (T,), without the T x T matrix."""
        import torch
        from taan_core.gaussian import gram_matrix

        with torch.no_grad():
            a, h = self._tensors()
            g = gram_matrix(h, self.mu, self.sigma)
            coords = torch.cat([torch.ones(a.shape[0], 1, dtype=a.dtype), a], dim=1)
            return ((coords @ g) * coords).sum(1).numpy()

    @property
    def num_tasks(self) -> int:
        return int(self.alpha.shape[0])

    @property
    def norms(self) -> np.ndarray:
        """|F_t| under the measure, shape (T,)."""
        return np.sqrt(np.clip(self._squared_norms, 0.0, None))

    @property
    def rms_norm(self) -> float:
        """sqrt(mean_t |F_t|^2): the scale of the layer's activations, for relative thresholds."""
        return float(np.sqrt(np.clip(self._squared_norms, 0.0, None).mean()))

    def release(self, metric: str) -> None:
        """Drop the kept matrix of ``metric`` (computed again when next read), for a caller done
        with it: five layers of one metric are 1 GB at T = 5000."""
        check_metric(metric)
        vars(self).pop(metric.replace("-", "_"), None)

    def matrix(self, metric: str) -> np.ndarray:
        """The (T, T) matrix of ``metric`` (a key of :data:`METRICS`)."""
        check_metric(metric)
        # By name, so that only the matrix asked for is computed.
        return getattr(self, {"distance": "distance", "squared-distance": "squared_distance",
                              "cosine": "cosine", "inner-product": "inner_product"}[metric])

    def mds(self, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """Classical MDS of the task distances, computed from ``alpha`` and the Gram matrix in
        O(T M^2) (:func:`taan_viz.embedding.layer_mds`); equal to ``classical_mds(self.distance)``
        up to the sign of an axis. Returns (coords (T, n_components), explained (n_components,))."""
        from taan_viz.embedding import layer_mds

        return layer_mds(self, n_components)

    def nearest(self) -> tuple[np.ndarray, np.ndarray]:
        """For each task the index of its nearest other task and that distance, shapes (T,), (T,).

        With a single task the index is -1 and the distance NaN.
        """
        t = self.num_tasks
        if t < 2:
            return np.full(t, -1), np.full(t, np.nan)
        d = self.distance.copy()
        np.fill_diagonal(d, np.inf)
        idx = d.argmin(axis=1)
        return idx, d[np.arange(t), idx]


def layer_geometry(alpha, hinges, mu: float = 0.0, sigma: float = 1.0, name: str = "layer") -> LayerGeometry:
    """Inner products, distances and cosines of the activations of one layer.

    Parameters
    ----------
    alpha : array-like of shape (T, M)
    hinges : array-like of shape (M,)
    mu, sigma : float
        The Gaussian measure N(mu, sigma^2).
    name : str

    Returns
    -------
    LayerGeometry

    Raises
    ------
    ValueError
        When the measure makes the geometry non-finite (sigma far too small for the hinges).
    """
    import torch

    from taan_core.gaussian import gram_matrix

    a = torch.as_tensor(np.asarray(alpha, dtype=np.float64))
    h = torch.as_tensor(np.asarray(hinges, dtype=np.float64))
    geometry = LayerGeometry(name=name, mu=float(mu), sigma=float(sigma), alpha=a.numpy(), hinges=h.numpy())
    # Checked here, not when a matrix is first read: the Gram matrix and the norms are finite
    # exactly when the matrices are (all are sums of products of their entries).
    with torch.no_grad():
        finite = bool(torch.isfinite(gram_matrix(h, mu, sigma)).all())
    finite = finite and bool(np.isfinite(geometry._squared_norms).all())
    if not finite:
        # A tiny sigma (e.g. 1e-300 in a checkpoint or --measure) overflows the standardised hinges.
        lo, hi = h.min().item(), h.max().item()
        # Advise a measure other than the one in use: standard, unless that is it; and always
        # one that spans the hinges.
        spans = f"{(lo + hi) / 2:g},{max((hi - lo) / 2, 1.0):g}"
        advice = f"--measure {spans}, which spans them" if (mu, sigma) == (0.0, 1.0) else \
            f"--measure standard, or {spans}, which spans them"
        raise ValueError(f"layer {name}: the activations' geometry under the measure N({mu:g}, {sigma:g}²) is not "
                         f"finite: sigma is too small (or mu too far) for hinges in [{lo:g}, {hi:g}]; choose "
                         f"another measure ({advice})")
    return geometry
