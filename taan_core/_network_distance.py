"""Whole-network task distances: how far apart the task-specific networks' functions are on data.

A per-layer distance (:func:`taan_core.relatedness.layer_distances`) compares two tasks'
activations at one depth. Which layer carries a task difference is not identified by the data
(a difference can be absorbed by either of two layers feeding one shared head), so per-layer
distances move between training seeds on real data (docs/training.md). What the data do pin
down is each task's whole function ``f_t(x) = model(x, t)``. This module compares those:

    d(s, t) = sqrt( mean over x in X and outputs k of (f_s(x)_k - f_t(x)_k)^2 )

on one shared sample of inputs ``X`` (e.g. the validation inputs of every task pooled), with the
scale ``sqrt(mean_t mean_x,k (f_t(x)_k - fbar(x)_k)^2)`` (the RMS spread of the task functions
around their mean over tasks), so that ``d / scale`` is a relative distance like the per-layer
ones. The public name is :func:`taan_core.relatedness.network_distances`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

__all__ = ["network_distances"]

# Input rows per forward pass unless the caller says otherwise: with T tasks and K outputs the
# per-batch buffer is T * batch_size * K float64 values.
_DEFAULT_BATCH = 512


def _task_outputs(model: nn.Module, x: Tensor, num_tasks: int) -> Tensor:
    """Outputs of every task on one batch, float64 of shape (T, n, K)."""
    import torch

    outs = []
    for t in range(num_tasks):
        y = model(x, t)
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"model(x, {t}) must return a Tensor, got {type(y).__name__}")
        outs.append(y.detach().reshape(x.shape[0], -1).to(torch.float64))
    widths = {o.shape[1] for o in outs}
    if len(widths) != 1:
        raise ValueError(f"every task must have the same number of outputs to compare their functions, "
                         f"got output widths {sorted(widths)}")
    return torch.stack(outs)


def network_distances(
    model: nn.Module,
    inputs: Tensor,
    num_tasks: int | None = None,
    *,
    batch_size: int = _DEFAULT_BATCH,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, float]:
    """Distances between the task-specific networks' functions on a shared sample of inputs.

    ``d(s, t)`` is the root mean square of ``model(x, s) - model(x, t)`` over the inputs and
    the outputs. The inputs are taken in batches of ``batch_size`` rows and only a (T, T)
    accumulator outlives a batch, so memory is ``T^2 + T * batch_size * K`` floats whatever the
    number of inputs. The squared differences are summed directly (``torch.cdist`` without its
    matrix-product shortcut), not as ``|a|^2 + |b|^2 - 2 a.b``, so identical tasks come out at
    exactly 0 and the matrix is symmetric bit for bit.

    Parameters
    ----------
    model : nn.Module
        ``model(x, t)`` with an int task returns a Tensor of shape (n, K), the same K for every
        task (a :mod:`taan_core.models` model), or a network changed by
        :func:`taan_core.taanify`, which is run with each task's id (as ``evaluate_tasks``
        does). Run in eval mode under ``torch.no_grad``; its mode is restored.
    inputs : Tensor of shape (N, *input_shape)
        The shared sample, e.g. every task's validation inputs pooled. N >= 1.
    num_tasks : int, optional
        T; default ``model.num_tasks``.
    batch_size : int, default 512
        Input rows per forward pass; the result does not depend on it beyond rounding.
    device : torch.device or str, optional
        Where the forward passes run; default the device of the model's first parameter.
        Floating inputs are cast to that parameter's dtype.

    Returns
    -------
    distance : ndarray of shape (T, T), float64
        Symmetric, zero diagonal, >= 0, in the model's output units.
    scale : float
        ``sqrt(mean_t mean_{x,k} (f_t(x)_k - fbar(x)_k)^2)`` with ``fbar`` the mean over tasks:
        the RMS spread of the task functions. ``distance / scale`` is the relative distance the
        sharing threshold applies to; 0 when every task computes the same function.

    Raises
    ------
    TypeError
        ``model`` not a module, ``inputs`` not a Tensor, or ``num_tasks``/``batch_size`` not ints.
    ValueError
        Empty inputs, ``num_tasks`` or ``batch_size`` < 1, unequal output widths, non-finite
        outputs.
    """
    # torch is imported here so that importing taan_core.relatedness stays light.
    import torch
    from torch import nn

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a Tensor of shape (N, *input_shape), got {type(inputs).__name__}")
    if inputs.ndim < 1 or inputs.shape[0] < 1:
        raise ValueError(f"inputs must hold at least one row, got shape {tuple(inputs.shape)}")
    if num_tasks is None:
        num_tasks = getattr(model, "num_tasks", None)
        if num_tasks is None:
            raise TypeError(f"num_tasks is required: {type(model).__name__} has no num_tasks attribute")
    for name, value in (("num_tasks", num_tasks), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    num_tasks, batch_size = int(num_tasks), int(batch_size)
    param = next(model.parameters(), None)
    if device is None:
        device = param.device if param is not None else torch.device("cpu")
    # Floating inputs follow the model's dtype (float32 data into a float64 model).
    dtype = param.dtype if param is not None and inputs.is_floating_point() else None
    was_training = model.training
    model.eval()
    from taan_core.nn.adapt import ContextTaskActivation, _TaskForward
    from taan_core.nn.layers import _unwrap

    # A TAAN-ified network's forward(x) takes its task from a context, not an argument.
    call = _TaskForward(model) if any(isinstance(m, ContextTaskActivation) for m in _unwrap(model).modules()) else model
    squared = torch.zeros(num_tasks, num_tasks, dtype=torch.float64)
    spread = 0.0
    count = 0
    try:
        with torch.no_grad():
            for start in range(0, inputs.shape[0], batch_size):
                x = inputs[start:start + batch_size].to(device=device, dtype=dtype)
                out = _task_outputs(call, x, num_tasks).reshape(num_tasks, -1).cpu()
                if not torch.isfinite(out).all():
                    raise ValueError(f"the model's outputs on inputs {start}..{start + x.shape[0] - 1} are not finite")
                squared += torch.cdist(out, out, compute_mode="donot_use_mm_for_euclid_dist").square()
                spread += float((out - out.mean(dim=0)).square().sum())
                count += out.shape[1]
    finally:
        model.train(was_training)
    dist = (squared / count).sqrt()
    # cdist of a row with itself is 0 and the (s, t), (t, s) entries sum the same squares in the
    # same order; the symmetrisation only guards against a backend that does otherwise.
    dist = 0.5 * (dist + dist.T)
    dist.fill_diagonal_(0.0)
    return dist.numpy(), math.sqrt(spread / (num_tasks * count))
