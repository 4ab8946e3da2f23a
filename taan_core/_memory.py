"""Memory estimated before it is allocated, and the limit it must fit in.

A model's config, a data file's headers or a data config say how large things will be long
before torch or numpy asks the allocator for them. A damaged or hostile file (a checkpoint of
300,000 tasks, an ``.npz`` whose tasks declare a billion outputs, ``--hidden 100000,100000``)
would otherwise take minutes and gigabytes, then end in the allocator's traceback or in the
kernel's out-of-memory killer. The checks here refuse such sizes in one line first.

The limit is the memory available now (``MemAvailable`` of /proc/meminfo), or the environment
variable ``TAAN_MEMORY_LIMIT`` (bytes, or with a suffix: ``512M``, ``64G``, ``1.5T``; binary
units) for machines where that figure is too cautious or unknown. Where neither is known,
nothing is refused.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Sequence

from taan_core.errors import UserError

__all__ = ["MEMORY_LIMIT_ENV", "MemoryLimitError", "check_memory", "check_model", "format_bytes", "memory_available",
           "memory_limit", "model_bytes", "model_parameters", "parse_size"]

MEMORY_LIMIT_ENV = "TAAN_MEMORY_LIMIT"

# Weights, gradients and Adam's two moments: training holds every parameter four times.
TRAINING_COPIES = 4
# float32
_VALUE_BYTES = 4
# The Python side of one module with its parameters (the nn.Module object, its dicts, the
# Parameter objects): about 2.5 KiB measured for an nn.Linear head; per-task modules are counted
# because 300,000 heads cost more there than in their weights (and minutes to build).
_MODULE_BYTES = 4096

_SUFFIXES = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([KMGTP]?)(?:I?B)?\s*", re.IGNORECASE)


class MemoryLimitError(UserError):
    """An estimated size beyond the memory limit; one line saying what needs how much. A
    :class:`~taan_core.errors.UserError` (so a ValueError): a smaller model or data set, or a
    larger ``TAAN_MEMORY_LIMIT``, is the user's to choose."""


def memory_available() -> int | None:
    """Bytes of memory available (``MemAvailable`` of /proc/meminfo), None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def parse_size(text: str) -> int:
    """Bytes from ``"68719476736"``, ``"64G"``, ``"512MiB"``, ``"1.5T"`` (binary units).

    Raises
    ------
    ValueError
        For anything else, or a size of 0.
    """
    match = _SIZE.fullmatch(str(text))
    if match is None:
        raise ValueError(f"{MEMORY_LIMIT_ENV} must be a size in bytes like 68719476736, 64G or 512M, got {text!r}")
    value = float(match[1]) * _SUFFIXES[match[2].upper()]
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"{MEMORY_LIMIT_ENV} must be at least 1 byte, got {text!r}")
    return int(value)


def memory_limit() -> tuple[int | None, str]:
    """The limit in bytes (None: unknown, nothing is refused) and where it comes from, in words."""
    text = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if text:
        return parse_size(text), f"{MEMORY_LIMIT_ENV}={text}"
    available = memory_available()
    return available, "memory available"


def format_bytes(n: float) -> str:
    """``1.5 GiB``-style text of a byte count."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover - the loop returns


def check_memory(needed: int | float, what: str) -> None:
    """Raise MemoryLimitError when ``needed`` bytes exceed the limit.

    Parameters
    ----------
    needed : int or float
        Estimated bytes.
    what : str
        What needs them, to start the message ("the model TAAN (1.2e9 parameters)").
    """
    limit, source = memory_limit()
    if limit is not None and needed > limit:
        raise MemoryLimitError(f"{what} needs about {format_bytes(needed)}, more than the {format_bytes(limit)} "
                               f"of the limit ({source}); use a smaller model or data set, or set "
                               f"{MEMORY_LIMIT_ENV} (e.g. 64G) where the machine has more")


# ----------------------------------------------------------------------------------- models


def _dense(widths: Sequence[int], batch_norm: bool = False) -> int:
    """Parameters of linear maps widths[0] -> widths[1] -> ... (with BatchNorm's scale and shift)."""
    return sum(a * b + b + (2 * b if batch_norm else 0) for a, b in zip(widths[:-1], widths[1:]))


def _heads(width: int, output_dims: Sequence[int]) -> int:
    return sum(width * d + d for d in output_dims)


def _conv(config: Any) -> tuple[int, int]:
    """Parameters of a conv trunk (conv stages and dense layers) and its number of layers."""
    c_in, k = config.input_shape[0], config.kernel_size
    params = 0
    for c_out in config.channels:
        params += c_in * c_out * k * k + c_out + (2 * c_out if config.batch_norm else 0)
        c_in = c_out
    return params + _dense([config.flat_features(), *config.hidden]), len(config.channels) + len(config.hidden)


_KNOWN = ("TAANConfig", "TAANConvConfig", "ConvConfig", "MLPConfig", "SoftOrderConfig", "CrossStitchConfig",
          "MMoEConfig", "BranchedConfig", "SoftOrderConvConfig", "CrossStitchConvConfig", "MMoEConvConfig",
          "BranchedConvConfig")


def model_parameters(config: Any) -> tuple[int, int]:
    """Parameters of the model a config builds, and its modules that exist once per task.

    Arithmetic on the config only; nothing is allocated. Exact for the models of
    :mod:`taan_core.models` (tests/core/test_memory.py compares with ``num_parameters()``).

    Parameters
    ----------
    config : dataclass
        A checked config of :mod:`taan_core.models` (``TAANConfig``, ``MLPConfig``, ...).

    Returns
    -------
    (int, int)
        Parameters, and per-task modules (heads, columns, towers); (0, 0) for a config it does
        not know (a model of the user's own, which :func:`check_model` then lets pass).
    """
    name = type(config).__name__
    if name not in _KNOWN:
        return 0, 0
    dims = list(config.output_dims)
    tasks = len(dims)
    if name == "TAANConvConfig":
        trunk, layers = _conv(config)
        m = config.num_hinges
        width = config.out_features()
        return trunk + layers * (tasks * m + m) + _heads(width, dims), tasks
    if name == "SoftOrderConvConfig":
        width, depth, k = config.channels[0], len(config.channels), config.kernel_size
        stages = width * depth * width * k * k + depth * width + (depth * 2 * depth * width if config.batch_norm else 0)
        return (config.input_shape[0] * width + width + stages + _dense([config.flat_features(), *config.hidden])
                + tasks * depth * depth + _heads(config.out_features(), dims)), tasks
    if name == "CrossStitchConvConfig":
        trunk, layers = _conv(config)
        return tasks * trunk + layers * tasks * tasks + _heads(config.out_features(), dims), tasks
    if name == "MMoEConvConfig":
        trunk, _ = _conv(config)
        e, width = config.num_experts, config.out_features()
        pixels = math.prod(config.input_shape)
        towers = sum(_dense([width, *config.tower_hidden, d]) for d in dims)
        return e * trunk + tasks * (pixels * e + e) + towers, tasks * (len(config.tower_hidden) + 1)
    if name == "BranchedConvConfig":
        c_in, k = config.input_shape[0], config.kernel_size
        params = 0
        for g, c_out in zip(config.num_groups, config.channels):
            params += g * (c_in * c_out * k * k + c_out + (2 * c_out if config.batch_norm else 0))
            c_in = c_out
        widths = [config.flat_features(), *config.hidden]
        params += sum(g * _dense([a, b]) for g, a, b in zip(config.num_groups[len(config.channels):], widths[:-1],
                                                           widths[1:]))
        return params + _heads(config.out_features(), dims), tasks
    if name == "ConvConfig":
        trunk, _ = _conv(config)
        width = config.out_features()
        # hard-conv shares the trunk; stl-conv has one per task. The larger is the safe estimate.
        return tasks * trunk + _heads(width, dims), tasks * (len(config.channels) + len(config.hidden) + 1)
    widths = [config.input_dim, *config.hidden]
    if name == "TAANConfig":
        m = config.num_hinges
        affine = config.batch_norm and config.batch_norm_affine
        adaptive = len(config.hidden) * (tasks * m + m)
        heads = _heads(widths[-1], dims[:1] if config.shared_head else dims)
        return _dense(widths, affine) + adaptive + heads, 0 if config.shared_head else tasks
    if name == "MLPConfig":
        # HardShare shares the trunk; SingleTask has one per task. The larger is the safe estimate.
        return tasks * _dense(widths, config.batch_norm) + _heads(widths[-1], dims), tasks * (len(widths) + 1)
    if name == "SoftOrderConfig":
        width, depth = config.hidden[0], len(config.hidden)
        return (config.input_dim * width + width + depth * (width * width + width) + tasks * depth * depth
                + _heads(width, dims)), tasks
    if name == "CrossStitchConfig":
        return tasks * _dense(widths) + len(config.hidden) * tasks * tasks + _heads(widths[-1], dims), tasks
    if name == "MMoEConfig":
        e = config.num_experts
        towers = sum(_dense([widths[-1], *config.tower_hidden, d]) for d in dims)
        return e * _dense(widths) + tasks * (config.input_dim * e + e) + towers, tasks * (len(config.tower_hidden) + 1)
    if name == "BranchedConfig":
        branches = sum(g * _dense([a, b], config.batch_norm)
                       for g, a, b in zip(config.num_groups, widths[:-1], widths[1:]))
        return branches + _heads(widths[-1], dims), tasks
    return 0, 0


def model_bytes(config: Any, *, training: bool = False) -> int:
    """Estimated bytes of the model a config builds: float32 parameters (four copies when
    ``training``: weights, gradients, Adam's two moments) plus the Python side of its per-task
    modules and its layers."""
    params, modules = model_parameters(config)
    if params:
        # Layers are modules too: --hidden 1,1,...,1 with a million entries is a million of them.
        modules += len(getattr(config, "hidden", None) or []) + len(getattr(config, "channels", None) or [])
    return params * _VALUE_BYTES * (TRAINING_COPIES if training else 1) + modules * _MODULE_BYTES


def check_model(config: Any, *, training: bool = False, where: str = "") -> None:
    """Raise MemoryLimitError when the model of ``config`` would not fit (see :func:`model_bytes`).

    ``where`` starts the message (a file and a field) when the config was read from a file.
    """
    params, _ = model_parameters(config)
    if not params:
        return  # a config of a model of the user's own, whose size is not known here
    name = type(config).__name__.removesuffix("Config") or "the model"
    what = (f"{where}: " if where else "") + (
        f"the model ({name}, {len(config.output_dims):,} tasks, {params:.3g} parameters"
        + (", trained with Adam)" if training else ")"))
    check_memory(model_bytes(config, training=training), what)
