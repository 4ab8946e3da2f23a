"""Multi-task regularisers on the task-adaptive activations of a layer.

With alpha (T, M) the per-task coefficients of a layer and b (M,) its hinges:

- :func:`trace_norm`: the nuclear norm ||alpha||_* = sum of singular values = tr(sqrt(alpha alpha^T)),
  the paper's L_tn (low rank: tasks share few directions).
- :func:`row_norm`: sum_t ||alpha_t||_2, what the reference code computes under the name "trace
  norm" (group sparsity of the tasks' coefficients); named for what it is.
- :func:`cosine_regularizer`: L_cos = -(1/T^2) sum_ij cos(F_i, F_j), with the cosine of the
  Gaussian inner product <F, G> = E[F(x) G(x)], x ~ N(mu, sigma^2).
- :func:`distance_regularizer`: L_dis = (1/T^2) sum_ij d^2(F_i, F_j), d^2(F, G) = E[(F - G)^2].

The functional ones use the closed forms of :mod:`taan_core.gaussian`, so they are exact and
differentiable in alpha and in the hinges. Every function also takes stacked layers (alpha
(L, T, M), hinges (L, M), mu and sigma scalars or (L,)) and then returns one value per layer.
:func:`functional_penalty` sums a chosen regulariser over a model's task-adaptive layers.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from taan_core._names import MEASURE_NAMES

from taan_core._validation import check_ndim, check_tensor
from taan_core.gaussian import cosine_matrix, distance_matrix

__all__ = [
    "REGULARIZERS",
    "cosine_regularizer",
    "distance_regularizer",
    "functional_penalty",
    "row_norm",
    "trace_norm",
]

# A layer whose pre-activations are (nearly) constant has a degenerate Gaussian measure; this
# floor on its running std keeps the "data" penalty defined instead of failing mid-training.
_SIGMA_FLOOR = 1e-6


def _check_alpha(alpha: Any) -> Tensor:
    alpha = check_tensor(alpha, "alpha")
    return check_ndim(alpha, "alpha", (2, 3), "(T, M) or stacked (L, T, M)")


def trace_norm(alpha: Tensor) -> Tensor:
    """Nuclear norm of alpha: the sum of its singular values.

    Parameters
    ----------
    alpha : Tensor of shape (T, M) or (L, T, M)

    Returns
    -------
    Tensor of shape () or (L,)

    Notes
    -----
    Computed with ``torch.linalg.svdvals``, whose gradient U V^T stays finite at repeated
    singular values (the full SVD's gradient divides by their differences). At a zero singular
    value the norm has a subgradient; autograd returns one of them.
    """
    alpha = _check_alpha(alpha)
    return torch.linalg.svdvals(alpha).sum(-1)


def row_norm(alpha: Tensor) -> Tensor:
    """Sum over tasks of the L2 norm of each task's coefficients, sum_t ||alpha[t]||_2.

    Parameters
    ----------
    alpha : Tensor of shape (T, M) or (L, T, M)

    Returns
    -------
    Tensor of shape () or (L,)
    """
    alpha = _check_alpha(alpha)
    return torch.linalg.vector_norm(alpha, dim=-1).sum(-1)


def cosine_regularizer(
    alpha: Tensor, hinges: Tensor, mu: float | Tensor = 0.0, sigma: float | Tensor = 1.0
) -> Tensor:
    """L_cos = -(1/T^2) sum_{i,j} cos(F_i, F_j) under x ~ N(mu, sigma^2).

    Parameters
    ----------
    alpha : Tensor of shape (T, M) or (L, T, M)
    hinges : Tensor of shape (M,) or (L, M)
    mu, sigma : float or Tensor of shape () or (L,)
        The Gaussian measure of the layer's pre-activations.

    Returns
    -------
    Tensor of shape () or (L,), in [-1, 1]; minimising it makes the tasks' activations alike.
    """
    alpha = _check_alpha(alpha)
    return -cosine_matrix(alpha, hinges, mu, sigma).mean(dim=(-2, -1))


def distance_regularizer(
    alpha: Tensor, hinges: Tensor, mu: float | Tensor = 0.0, sigma: float | Tensor = 1.0
) -> Tensor:
    """L_dis = (1/T^2) sum_{i,j} d^2(F_i, F_j) under x ~ N(mu, sigma^2).

    Parameters
    ----------
    alpha : Tensor of shape (T, M) or (L, T, M)
    hinges : Tensor of shape (M,) or (L, M)
    mu, sigma : float or Tensor of shape () or (L,)

    Returns
    -------
    Tensor of shape () or (L,), >= 0.
    """
    alpha = _check_alpha(alpha)
    return distance_matrix(alpha, hinges, mu, sigma, squared=True).mean(dim=(-2, -1))


REGULARIZERS: dict[str, Callable[..., Tensor]] = {
    "tracenorm": trace_norm,
    "rownorm": row_norm,
    "cosine": cosine_regularizer,
    "distance": distance_regularizer,
}

# Regularisers of the functions F_t (they need the hinges and a measure), not of alpha alone.
_FUNCTIONAL = frozenset({"cosine", "distance"})
_MEASURES = MEASURE_NAMES


def functional_penalty(model: torch.nn.Module, name: str, c: float, measure: str = "standard") -> Tensor:
    """``c`` times the sum of regulariser ``name`` over the model's task-adaptive layers.

    Parameters
    ----------
    model : nn.Module
        Any module; its task-adaptive activations are found by type
        (:func:`taan_core.nn.layers.adaptive_layers`).
    name : str
        "none" or a key of :data:`REGULARIZERS`.
    c : float
        Coefficient, >= 0.
    measure : {"standard", "data"}
        Gaussian measure of the functional regularisers: N(0, 1) as in the paper, or each
        layer's running mean and std of its pre-activations (``act.measure()``, detached).

    Returns
    -------
    Tensor of shape (), on the model's device; 0 for "none", c = 0 or a model without
    task-adaptive layers.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name != "none" and name not in REGULARIZERS:
        raise ValueError(f"unknown regulariser {name!r}; valid names: none, {', '.join(REGULARIZERS)}")
    if isinstance(c, bool) or not isinstance(c, (int, float)):
        raise TypeError(f"c must be a float, got {type(c).__name__}")
    if not math.isfinite(c) or c < 0:
        raise ValueError(f"c must be finite and >= 0, got {c}")
    if measure not in _MEASURES:
        raise ValueError(f"measure must be one of {', '.join(_MEASURES)}, got {measure!r}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    from taan_core.nn.layers import _layers_of

    layers = [act for _, act in _layers_of(model)]
    first = next(iter(model.parameters()), None)
    zero = torch.zeros((), device=first.device if first is not None else None,
                       dtype=first.dtype if first is not None and first.is_floating_point() else None)
    if name == "none" or c == 0 or not layers:
        return zero

    # Layers of equal (T, M) are stacked so the penalty costs a few batched ops, not L sets.
    groups: dict[tuple[int, ...], list[Any]] = {}
    for act in layers:
        groups.setdefault(tuple(act.alpha.shape), []).append(act)
    total = zero
    fn = REGULARIZERS[name]
    for acts in groups.values():
        alpha = torch.stack([act.alpha for act in acts])
        if name not in _FUNCTIONAL:
            total = total + fn(alpha).sum()
            continue
        hinges = torch.stack([act.hinges for act in acts])
        if measure == "standard":
            mu, sigma = 0.0, 1.0
        else:
            stats = [act.measure() for act in acts]
            mu = torch.tensor([m for m, _ in stats], dtype=alpha.dtype, device=alpha.device)
            sigma = torch.tensor([max(s, _SIGMA_FLOOR) for _, s in stats], dtype=alpha.dtype, device=alpha.device)
        total = total + fn(alpha, hinges, mu, sigma).sum()
    return c * total
