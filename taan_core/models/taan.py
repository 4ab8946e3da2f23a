"""Task Adaptive Activation Networks: the fully connected TAAN and the Omniglot-style TAANConv.

Every hidden layer is a linear (or convolutional) map shared by all tasks followed by the
task-adaptive activation F_t(z) = relu(z) + sum_m alpha[t, m] relu(b_m - z); only the (T, M)
coefficients ``alpha`` and the M hinges ``b`` of each layer are task-specific or new, so a TAAN
has the parameters of a hard-shared network plus L * (T * M + M).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import Tensor, nn

from taan_core._validation import check_int
from taan_core.nn.layers import TAConv2d, TALinear
from taan_core.models.conv_baselines import ConvConfig
from taan_core.models._base import (
    MultiTaskModel,
    _ImageModel,
    _apply_per_task,
    _bool,
    _check_dropout,
    _int_list,
    _linear_heads,
    _task_index,
)

__all__ = ["TAAN", "TAANConfig", "TAANConv", "TAANConvConfig"]


@dataclass
class TAANConfig:
    """Configuration of :class:`TAAN` (plain types, checkpoint-safe).

    Attributes
    ----------
    input_dim : int
        Number of input features; inputs of shape (N, *input_shape) are flattened.
    output_dims : list of int
        Output size of every task's linear head; T = ``len(output_dims)``.
    hidden : list of int
        Widths of the task-adaptive hidden layers (L = ``len(hidden)``).
    num_hinges : int
        Hinges M per layer.
    batch_norm : bool
        BatchNorm between each linear map and its task-adaptive activation.
    batch_norm_affine : bool
        Whether that BatchNorm learns a per-unit scale and shift. False keeps every unit's
        pre-activation standardised, so the activations act on N(0, 1) in every unit.
    hinge_range : float
        Initial hinges are uniform on [-hinge_range, hinge_range].
    shared_head : bool
        One linear head for all tasks (they need equal output sizes): every weight is then
        shared and the tasks differ only in their activations.
    dropout : float
        Dropout probability after each hidden activation.
    """

    input_dim: int
    output_dims: list[int]
    hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    num_hinges: int = 16
    batch_norm: bool = False
    batch_norm_affine: bool = True
    hinge_range: float = 0.5
    shared_head: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.input_dim = check_int(self.input_dim, "input_dim", minimum=1)
        self.output_dims = _int_list(self.output_dims, "output_dims")
        self.hidden = _int_list(self.hidden, "hidden")
        self.num_hinges = check_int(self.num_hinges, "num_hinges", minimum=1)
        self.batch_norm = _bool(self.batch_norm, "batch_norm")
        self.batch_norm_affine = _bool(self.batch_norm_affine, "batch_norm_affine")
        if isinstance(self.hinge_range, bool) or not isinstance(self.hinge_range, (int, float)):
            raise TypeError(f"hinge_range must be a float, got {type(self.hinge_range).__name__}")
        if not math.isfinite(self.hinge_range) or self.hinge_range < 0:
            raise ValueError(f"hinge_range must be finite and >= 0, got {self.hinge_range}")
        self.hinge_range = float(self.hinge_range)
        self.shared_head = _bool(self.shared_head, "shared_head")
        if self.shared_head and len(set(self.output_dims)) > 1:
            raise ValueError(f"shared_head needs every task to have the same output size, got output_dims {self.output_dims}")
        self.dropout = _check_dropout(self.dropout)


class TAAN(MultiTaskModel):
    """Fully connected TAAN: ``L`` :class:`~taan_core.nn.layers.TALinear` layers shared by all tasks
    (each with its per-task activation) and one linear head per task.

    h_0 = flatten(x),  h_l = F^l_task(W_l h_{l-1} + c_l),  y = V_task h_L + d_task
    (one V, d for all tasks with ``shared_head``).

    Parameters
    ----------
    config : TAANConfig

    Examples
    --------
    >>> model = TAAN(TAANConfig(input_dim=20, output_dims=[1, 1, 3], hidden=[32, 32]))
    >>> model(torch.randn(5, 20), task=2).shape
    torch.Size([5, 3])
    """

    config_class = TAANConfig

    def __init__(self, config: TAANConfig) -> None:
        super().__init__(config)
        widths = [config.input_dim, *config.hidden]
        self.blocks = nn.ModuleList(
            TALinear(w_in, w_out, self.num_tasks, config.num_hinges, batch_norm=config.batch_norm,
                     batch_norm_affine=config.batch_norm_affine,
                     hinge_init=(-config.hinge_range, config.hinge_range))
            for w_in, w_out in zip(widths[:-1], widths[1:])
        )
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        # A shared head is heads[0]; the state_dict then holds one head instead of T.
        self.heads = _linear_heads(widths[-1], config.output_dims[:1] if config.shared_head else config.output_dims)

    def _trunk(self, x: Tensor, task: int | Tensor) -> Tensor:
        h = x
        for block in self.blocks:
            h = self.dropout(block(h, task))
        return h

    def _forward_task(self, x: Tensor, task: int) -> Tensor:
        return self.heads[0 if self.config.shared_head else task](self._trunk(x, task))

    def _forward_mixed(self, x: Tensor, task: Tensor, counts: list[int] | None = None) -> list[Tensor]:
        # The trunk takes per-sample task ids directly; only the heads need the grouping.
        h = self._trunk(x, task)
        groups = _task_index(task, self.num_tasks, counts)
        if self.config.shared_head:
            return list(self.heads[0](h.index_select(0, groups.order)).split(groups.counts))
        return _apply_per_task(self.heads, h, groups)


@dataclass
class TAANConvConfig(ConvConfig):
    """Configuration of :class:`TAANConv` (defaults: the Omniglot network of the paper).

    Attributes
    ----------
    output_dims : list of int
        Output size of every task's head; T = ``len(output_dims)``.
    input_shape : list of int
        (C, H, W) of one input image.
    channels : list of int
        Output channels of the task-adaptive conv layers, each followed by a 2x2 max-pool.
    kernel_size, padding : int
        Of every conv layer (stride 1).
    hidden : list of int
        Widths of the task-adaptive dense layers after the conv stack.
    num_hinges : int
        Hinges M per layer.
    batch_norm : bool
        BatchNorm in the conv layers (the dense layers have none).
    dropout : float
        Dropout probability after each dense hidden activation.
    """

    num_hinges: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        self.num_hinges = check_int(self.num_hinges, "num_hinges", minimum=1)


class TAANConv(_ImageModel):
    """Convolutional TAAN: task-adaptive conv layers (conv -> BatchNorm -> F_task -> 2x2 max-pool),
    then task-adaptive dense layers and one linear head per task.

    With the defaults, (1, 105, 105) images go through 1 -> 6 -> 12 -> 24 -> 64 channels to
    64 x 4 x 4 = 1024 features and a 512-wide dense layer, as in the paper's Omniglot network.

    Parameters
    ----------
    config : TAANConvConfig
    """

    config_class = TAANConvConfig

    def __init__(self, config: TAANConvConfig) -> None:
        super().__init__(config)
        channels = [config.input_shape[0], *config.channels]
        self.convs = nn.ModuleList(
            TAConv2d(
                c_in, c_out, config.kernel_size, self.num_tasks, config.num_hinges,
                padding=config.padding, batch_norm=config.batch_norm,
            )
            for c_in, c_out in zip(channels[:-1], channels[1:])
        )
        self.pool = nn.MaxPool2d(2)
        widths = [config.flat_features(), *config.hidden]
        self.blocks = nn.ModuleList(
            TALinear(w_in, w_out, self.num_tasks, config.num_hinges)
            for w_in, w_out in zip(widths[:-1], widths[1:])
        )
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.heads = _linear_heads(widths[-1], config.output_dims)

    def _trunk(self, x: Tensor, task: int | Tensor) -> Tensor:
        h = x
        for conv in self.convs:
            h = self.pool(conv(h, task))
        h = h.flatten(1)
        for block in self.blocks:
            h = self.dropout(block(h, task))
        return h

    def _forward_task(self, x: Tensor, task: int) -> Tensor:
        return self.heads[task](self._trunk(x, task))

    def _forward_mixed(self, x: Tensor, task: Tensor, counts: list[int] | None = None) -> list[Tensor]:
        h = self._trunk(x, task)
        return _apply_per_task(self.heads, h, _task_index(task, self.num_tasks, counts))

