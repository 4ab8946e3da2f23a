"""Multi-task models with one interface: TAAN (MLP and conv) and the baselines.

Every model is an ``nn.Module`` built from a ``@dataclass`` config (``model.config``) with

- ``forward(x, task)``: an int task gives a tensor (N, output_dims[task]); a LongTensor (N,) of
  per-sample task ids gives a list of T tensors, ``out[t]`` the rows of task t in batch order;
- ``num_parameters()`` and ``adaptive_layers()`` (the task-adaptive activations in depth order).

:func:`build_model` makes one by registry name for a data set's input shape and output sizes;
:func:`model_from_config` rebuilds one from ``(type(model).__name__, asdict(model.config))``, the
form a checkpoint stores.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from taan_core.models._base import MLPConfig, MultiTaskModel
from taan_core.models.branched import Branched, BranchedConfig
from taan_core.models.baselines import (
    CrossStitch,
    CrossStitchConfig,
    HardShare,
    MMoE,
    MMoEConfig,
    SingleTask,
    SoftOrder,
    SoftOrderConfig,
)
from taan_core.models.branched_conv import BranchedConv, BranchedConvConfig
from taan_core.models.conv_baselines import ConvConfig, HardShareConv, SingleTaskConv
from taan_core.models.conv_soft_sharing import (
    CrossStitchConv,
    CrossStitchConvConfig,
    MMoEConv,
    MMoEConvConfig,
    SoftOrderConv,
    SoftOrderConvConfig,
)
from taan_core.models.taan import TAAN, TAANConfig, TAANConv, TAANConvConfig

__all__ = [
    "MODELS",
    "Branched",
    "BranchedConfig",
    "BranchedConv",
    "BranchedConvConfig",
    "CrossStitch",
    "ConvConfig",
    "CrossStitchConfig",
    "CrossStitchConv",
    "CrossStitchConvConfig",
    "HardShare",
    "HardShareConv",
    "MLPConfig",
    "MMoE",
    "MMoEConfig",
    "MMoEConv",
    "MMoEConvConfig",
    "MultiTaskModel",
    "SingleTask",
    "SingleTaskConv",
    "SoftOrder",
    "SoftOrderConfig",
    "SoftOrderConv",
    "SoftOrderConvConfig",
    "TAAN",
    "TAANConfig",
    "TAANConv",
    "TAANConvConfig",
    "build_model",
    "conv_variant",
    "model_from_config",
    "trunk_description",
]

MODELS: dict[str, type[MultiTaskModel]] = {
    "taan": TAAN,
    "taan-conv": TAANConv,
    "stl": SingleTask,
    "hard": HardShare,
    "soft-order": SoftOrder,
    "cross-stitch": CrossStitch,
    "mmoe": MMoE,
    "branched": Branched,
    "hard-conv": HardShareConv,
    "stl-conv": SingleTaskConv,
    "soft-order-conv": SoftOrderConv,
    "cross-stitch-conv": CrossStitchConv,
    "mmoe-conv": MMoEConv,
    "branched-conv": BranchedConv,
}

# The conv model with TAANConv's trunk that stands for a fully connected one on images.
_CONV_VARIANTS = {name: f"{name}-conv" for name in ("taan", "hard", "stl", "soft-order", "cross-stitch", "mmoe",
                                                     "branched")}


def conv_variant(name: str, input_shape: Sequence[int]) -> str:
    """The registry name to build for ``name`` on inputs of ``input_shape``.

    On images (a 3-D ``input_shape``, (C, H, W)) a model with a conv variant (``taan``,
    ``hard``, ``stl``, ``soft-order``, ``cross-stitch``, ``mmoe``, ``branched``) becomes that
    variant (``taan-conv``, ``hard-conv``, ...), so every model sees the images through
    TAANConv's trunk; any other name, or any name on flat inputs, stays as it is.
    """
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    return _CONV_VARIANTS.get(name, name) if len(shape) == 3 else name


def trunk_description(model: MultiTaskModel) -> str:
    """The trunk of a model in words: "conv 6,12,24,64 + dense 512" or "mlp 256,256,256"."""
    config = model.config
    hidden = ",".join(str(w) for w in getattr(config, "hidden", []) or [])
    channels = getattr(config, "channels", None)
    if channels is not None:
        return f"conv {','.join(str(c) for c in channels)}" + (f" + dense {hidden}" if hidden else "")
    return f"mlp {hidden}" if hidden else "none"


def build_model(
    name: str, input_shape: Sequence[int], output_dims: Sequence[int], **config_overrides: Any
) -> MultiTaskModel:
    """Build the model registered as ``name`` for inputs of ``input_shape`` and T tasks.

    Parameters
    ----------
    name : str
        A key of :data:`MODELS`.
    input_shape : sequence of int
        Shape of one sample; fully connected models take ``prod(input_shape)`` features, the
        conv model takes (C, H, W).
    output_dims : sequence of int
        Output size of each task's head (T = ``len(output_dims)``).
    **config_overrides
        Fields of the model's config, e.g. ``hidden=[512, 512]``, ``num_hinges=32``.

    Returns
    -------
    MultiTaskModel

    Raises
    ------
    ValueError
        For an unknown model name or config field (the message lists the valid ones), or for a
        config value out of range.
    taan_core._memory.MemoryLimitError
        A ValueError, when the model's estimated size exceeds the memory limit (the memory
        available, or ``TAAN_MEMORY_LIMIT``); nothing is allocated then.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
    cls = MODELS[name]
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    shape = [int(s) for s in input_shape]
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    kwargs: dict[str, Any] = {"output_dims": list(output_dims)}
    if "input_shape" in fields:
        kwargs["input_shape"] = shape
    else:
        kwargs["input_dim"] = math.prod(shape)
    fixed = set(kwargs)
    for key, value in config_overrides.items():
        if key in fixed or key not in fields:
            valid = ", ".join(sorted(fields - fixed))
            raise ValueError(f"unknown config field {key!r} for model {name!r}; valid fields: {valid}")
        kwargs[key] = value
    return _build(cls, cls.config_class(**kwargs))


def _build(cls: type[MultiTaskModel], config: Any) -> MultiTaskModel:
    # The size follows from the config alone: refuse one that cannot fit before allocating it.
    from taan_core._memory import check_model

    check_model(config)
    return cls(config)


def model_from_config(class_name: str, config: dict[str, Any]) -> MultiTaskModel:
    """Rebuild a model from its class name and ``dataclasses.asdict(model.config)``.

    The weights are not restored; load the state_dict into the result.

    Raises
    ------
    ValueError
        For an unknown class name, unknown or missing config fields, a value out of range, or
        a model whose estimated size exceeds the memory limit (``MemoryLimitError``).
    TypeError
        For a config value of the wrong type.
    """
    classes = {cls.__name__: cls for cls in MODELS.values()}
    if class_name not in classes:
        raise ValueError(f"unknown model class {class_name!r}; valid classes: {', '.join(sorted(classes))}")
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    cls = classes[class_name]
    fields = dataclasses.fields(cls.config_class)
    names = {f.name for f in fields}
    required = {f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    unknown = sorted(set(config) - names)
    missing = sorted(required - set(config))
    if unknown or missing:
        raise ValueError(
            f"config does not fit {class_name}: unknown fields {unknown}, missing fields {missing}; "
            f"valid fields: {', '.join(sorted(names))}"
        )
    return _build(cls, cls.config_class(**config))
