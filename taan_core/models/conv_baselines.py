"""Baselines with the trunk of :class:`~taan_core.models.TAANConv`, for image data sets.

A comparison with TAANConv is fair only when the baselines see the images through the same
network: the same conv stages (conv -> BatchNorm -> activation -> 2x2 max-pool) and dense
layers, with a plain ReLU where TAANConv has its task-adaptive activation.

- :class:`HardShareConv` (``hard-conv``): one such trunk shared by all tasks, a linear head per task.
- :class:`SingleTaskConv` (``stl-conv``): one such network per task, nothing shared.

The stages and dense layers are built here for every conv baseline: soft order, cross-stitch
and MMoE (:mod:`taan_core.models.conv_soft_sharing`) and the branched network
(:mod:`taan_core.models.branched_conv`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from taan_core._validation import check_int
from taan_core.models._base import (
    _ImageModel,
    _apply_per_task,
    _bool,
    _check_dropout,
    _conv_flat_features,
    _int_list,
    _linear_heads,
    _task_index,
)

__all__ = ["ConvConfig", "HardShareConv", "SingleTaskConv"]


@dataclass
class ConvConfig:
    """Configuration of the conv baselines: :class:`~taan_core.models.TAANConvConfig` without hinges.

    Attributes
    ----------
    output_dims : list of int
        Output size of every task's head; T = ``len(output_dims)``.
    input_shape : list of int
        (C, H, W) of one input image.
    channels : list of int
        Output channels of the conv layers, each followed by a 2x2 max-pool.
    kernel_size, padding : int
        Of every conv layer (stride 1).
    hidden : list of int
        Widths of the dense ReLU layers after the conv stack.
    batch_norm : bool
        BatchNorm in the conv layers (the dense layers have none), as in TAANConv.
    dropout : float
        Dropout probability after each dense hidden activation.
    """

    output_dims: list[int]
    input_shape: list[int] = field(default_factory=lambda: [1, 105, 105])
    channels: list[int] = field(default_factory=lambda: [6, 12, 24, 64])
    kernel_size: int = 3
    padding: int = 0
    hidden: list[int] = field(default_factory=lambda: [512])
    batch_norm: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.output_dims = _int_list(self.output_dims, "output_dims")
        self.input_shape = _int_list(self.input_shape, "input_shape")
        if len(self.input_shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W), got {tuple(self.input_shape)}")
        self.channels = _int_list(self.channels, "channels")
        self.kernel_size = check_int(self.kernel_size, "kernel_size", minimum=1)
        self.padding = check_int(self.padding, "padding", minimum=0)
        self.hidden = _int_list(self.hidden, "hidden", allow_empty=True)
        self.batch_norm = _bool(self.batch_norm, "batch_norm")
        self.dropout = _check_dropout(self.dropout)
        self.flat_features()  # raises if the image is too small for the conv stack

    def flat_features(self) -> int:
        """Number of features after the conv and pooling stages."""
        return _conv_flat_features(self.input_shape, self.channels, self.kernel_size, self.padding)

    def out_features(self) -> int:
        """Width of the trunk's output, the heads' input."""
        return self.hidden[-1] if self.hidden else self.flat_features()


def _conv_stage(c_in: int, c_out: int, config: ConvConfig) -> list[nn.Module]:
    """One of TAANConv's conv stages with ReLU: conv -> [BatchNorm ->] ReLU -> 2x2 max-pool."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, config.kernel_size, padding=config.padding)]
    if config.batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    return layers + [nn.ReLU(), nn.MaxPool2d(2)]


def _dense_layer(in_features: int, out_features: int, config: ConvConfig) -> list[nn.Module]:
    """One of TAANConv's dense layers with ReLU: linear -> ReLU [-> dropout]."""
    layers: list[nn.Module] = [nn.Linear(in_features, out_features), nn.ReLU()]
    return layers + ([nn.Dropout(config.dropout)] if config.dropout > 0 else [])


def _dense_layers(config: ConvConfig) -> nn.Sequential:
    """TAANConv's dense layers with ReLU, from the flattened conv output to ``out_features()``."""
    widths = [config.flat_features(), *config.hidden]
    pairs = zip(widths[:-1], widths[1:])
    return nn.Sequential(*(m for w_in, w_out in pairs for m in _dense_layer(w_in, w_out, config)))


def _conv_trunk(config: ConvConfig) -> nn.Sequential:
    """TAANConv's trunk with ReLU: [conv -> BatchNorm -> ReLU -> max-pool] per channel count,
    flatten, [linear -> ReLU -> dropout] per dense width."""
    channels = [config.input_shape[0], *config.channels]
    layers = [m for c_in, c_out in zip(channels[:-1], channels[1:]) for m in _conv_stage(c_in, c_out, config)]
    return nn.Sequential(*layers, nn.Flatten(), *_dense_layers(config))


class HardShareConv(_ImageModel):
    """Hard parameter sharing on images: TAANConv's trunk with ReLU, shared, and a head per task.

    Parameters
    ----------
    config : ConvConfig
    """

    config_class = ConvConfig

    def __init__(self, config: ConvConfig) -> None:
        super().__init__(config)
        self.trunk = _conv_trunk(config)
        self.heads = _linear_heads(config.out_features(), config.output_dims)

    def _forward_task(self, x: Tensor, task: int) -> Tensor:
        return self.heads[task](self.trunk(x))

    def _forward_mixed(self, x: Tensor, task: Tensor, counts: list[int] | None = None) -> list[Tensor]:
        return _apply_per_task(self.heads, self.trunk(x), _task_index(task, self.num_tasks, counts))


class SingleTaskConv(_ImageModel):
    """Single-task learning on images: one network of TAANConv's shape (ReLU) per task.

    Parameters
    ----------
    config : ConvConfig
    """

    config_class = ConvConfig

    def __init__(self, config: ConvConfig) -> None:
        super().__init__(config)
        self.columns = nn.ModuleList(
            nn.Sequential(*_conv_trunk(config), nn.Linear(config.out_features(), out_dim))
            for out_dim in config.output_dims
        )

    def _forward_task(self, x: Tensor, task: int) -> Tensor:
        return self.columns[task](x)

    def _forward_mixed(self, x: Tensor, task: Tensor, counts: list[int] | None = None) -> list[Tensor]:
        return _apply_per_task(self.columns, x, _task_index(task, self.num_tasks, counts))
