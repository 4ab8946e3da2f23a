"""Input checks shared by the public functions of taan (the sklearn ``check_*`` idiom).

Each helper raises ``TypeError`` for a wrong type and ``ValueError`` for a wrong value, with a
message that says what was expected and what came.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__: list[str] = []


def _fmt_shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def check_tensor(value, name: str, *, dtype: torch.dtype | None = None) -> Tensor:
    """Return ``value`` as a tensor (floating when ``dtype`` is None), or raise TypeError."""
    if isinstance(value, Tensor):
        out = value
    elif isinstance(value, (int, float)) or hasattr(value, "__array__") or isinstance(value, (list, tuple)):
        try:
            # Convert straight to the requested dtype: going through the default float32 first
            # would round a list like [0.05] before it reaches float64.
            out = torch.as_tensor(value, dtype=dtype)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name} must be a tensor or array-like of numbers, got {type(value).__name__}") from err
    else:
        raise TypeError(f"{name} must be a tensor or array-like of numbers, got {type(value).__name__}")
    if dtype is not None:
        out = out.to(dtype)
    elif not out.is_floating_point():
        out = out.to(torch.get_default_dtype())
    return out


def check_finite(t: Tensor, name: str) -> Tensor:
    """Raise ValueError if ``t`` holds NaN or infinite values."""
    if t.numel() and not bool(torch.isfinite(t.detach()).all()):
        bad = (~torch.isfinite(t.detach())).sum().item()
        raise ValueError(f"{name} must be finite, got {bad} non-finite value(s)")
    return t


def check_ndim(t: Tensor, name: str, ndims: Sequence[int], expected: str) -> Tensor:
    """Raise ValueError unless ``t.ndim`` is one of ``ndims``; ``expected`` names the shape."""
    if t.ndim not in ndims:
        raise ValueError(f"{name} must have shape {expected}, got {_fmt_shape(t.shape)}")
    return t


def check_positive(t: Tensor, name: str) -> Tensor:
    """Raise ValueError unless every entry of ``t`` is finite and > 0."""
    check_finite(t, name)
    if t.numel() and not bool((t.detach() > 0).all()):
        raise ValueError(f"{name} must be > 0, got min {t.detach().min().item():g}")
    return t


def check_int(value, name: str, *, minimum: int | None = None) -> int:
    """Return ``value`` as an int, or raise TypeError / ValueError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_probability(value: float, name: str) -> float:
    """Return ``value`` as a float in [0, 1], or raise."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def check_choice(value, name: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of the strings ``choices``; TypeError for a non-str, ValueError
    naming the choices otherwise."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value
