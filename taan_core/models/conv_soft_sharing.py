"""Soft-sharing baselines with the trunk of :class:`~taan_core.models.TAANConv`, for image data sets.

The conv counterparts of :mod:`taan_core.models.baselines`' soft sharing: every network is built
from TAANConv's stages (conv -> BatchNorm -> ReLU -> 2x2 max-pool) and its dense ReLU layers,
where TAANConv has its task-adaptive activation.

- :class:`SoftOrderConv` (``soft-order-conv``): D interchangeable conv stages of one channel count,
  mixed at every depth by per-task softmax weights, then the shared dense layers.
- :class:`CrossStitchConv` (``cross-stitch-conv``): one TAANConv-shaped column per task, the
  columns mixed by a learned T x T cross-stitch matrix after every stage and dense layer.
- :class:`MMoEConv` (``mmoe-conv``): E TAANConv-shaped experts; a softmax gate per task on the
  image picks their mixture, and a tower per task reads it.

Columns and experts are computed together: the conv stages of C columns are one grouped conv
(``groups=C``, initialised like C separate convs) and their dense layers one batched matmul.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from taan_core._validation import check_int, check_probability
from taan_core.models._base import (
    _ColumnLinear,
    _ImageModel,
    _apply_per_task,
    _int_list,
    _linear_heads,
    _mlp,
    _task_index,
)
from taan_core.models.baselines import init_stitch
from taan_core.models.conv_baselines import ConvConfig, _dense_layers

__all__ = [
    "CrossStitchConv",
    "CrossStitchConvConfig",
    "MMoEConv",
    "MMoEConvConfig",
    "SoftOrderConv",
    "SoftOrderConvConfig",
]


@dataclass
class SoftOrderConvConfig(ConvConfig):
    """Configuration of :class:`SoftOrderConv`: a :class:`ConvConfig` whose stages are interchangeable.

    Attributes
    ----------
    channels : list of int
        One channel count repeated, once per soft-ordered stage (D = ``len(channels)``). The
        default, 4 x 32, keeps TAANConv's depth. Every stage runs at every depth, so the
        network costs D times a plain stack of these stages, at full resolution from the first
        depth on; 32 channels (a 512-wide flattened output where TAANConv has 1024) keep that
        affordable at about 0.6 times TAANConv's parameters on Omniglot, whose dense layer
        dominates both. 64 channels would match that layer at four times the compute.

    The other attributes are :class:`ConvConfig`'s.
    """

    channels: list[int] = field(default_factory=lambda: [32, 32, 32, 32])

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(set(self.channels)) != 1:
            raise ValueError(f"channels must hold one count repeated (soft-ordered conv stages are interchangeable), "
                             f"got {self.channels}")


class SoftOrderConv(_ImageModel):
    """Soft layer ordering on images: D shared conv stages applied at every depth in a per-task soft order.

    y_0 = E x (a 1x1 conv to the common channel count),
    y_d = maxpool(sum_k s[t, d, k] relu(BN_{d, k}(conv_k(y_{d-1})))) with s[t, d] = softmax(order_logits[t, d]),
    then the shared dense ReLU layers and head_t. A stage's BatchNorm is kept per depth, as the
    statistics of its input change with the depth it is applied at.

    Parameters
    ----------
    config : SoftOrderConvConfig
    """

    config_class = SoftOrderConvConfig

    def __init__(self, config: SoftOrderConvConfig) -> None:
        super().__init__(config)
        width, depth = config.channels[0], len(config.channels)
        self.encoder = nn.Conv2d(config.input_shape[0], width, 1)
        # The D shared stages as one conv of D * width output channels: one call per depth.
        self.layers = nn.Conv2d(width, depth * width, config.kernel_size, padding=config.padding)
        self.norms = nn.ModuleList(
            nn.BatchNorm2d(depth * width) if config.batch_norm else nn.Identity() for _ in range(depth)
        )
        self.pool = nn.MaxPool2d(2)
        self.dense = _dense_layers(config)
        self.order_logits = nn.Parameter(torch.empty(self.num_tasks, depth, depth))
        self.heads = _linear_heads(config.out_features(), config.output_dims)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Start from the uniform mixture at every depth (zero logits)."""
        nn.init.zeros_(self.order_logits)

    def _trunk(self, x: Tensor, mix: Tensor) -> Tensor:
        # mix: (D, D) for one task, or (N, D, D) for per-sample tasks.
        depth, width = len(self.config.channels), self.config.channels[0]
        h = self.encoder(x)
        for d in range(depth):
            outs = torch.relu(self.norms[d](self.layers(h)))
            outs = outs.unflatten(1, (depth, width))  # (N, D, width, H', W'): every stage on the batch
            if mix.ndim == 2:
                h = torch.einsum("k,nkchw->nchw", mix[d], outs)
            else:
                h = torch.einsum("nk,nkchw->nchw", mix[:, d], outs)
            h = self.pool(h)
        return self.dense(h.flatten(1))

    def _forward_task(self, x: Tensor, task: int) -> Tensor:
        return self.heads[task](self._trunk(x, self.order_logits[task].softmax(-1)))

    def _forward_mixed(self, x: Tensor, task: Tensor, counts: list[int] | None = None) -> list[Tensor]:
        h = self._trunk(x, self.order_logits.softmax(-1)[task])
        return _apply_per_task(self.heads, h, _task_index(task, self.num_tasks, counts))


class _ColumnConvTrunk(nn.Module):
    """C copies of TAANConv's trunk with ReLU, run together: (N, C_in, H, W) -> (C, N, out_features).

    The conv stages of all columns are one conv with ``C * channels`` outputs (grouped by column
    after the first, which reads the shared image); the dense layers are :class:`_ColumnLinear`.
    ``stitch``, if given, is (L, C, C) with L = ``len(channels) + len(hidden)``: after layer l,
    column c continues with ``sum_s stitch[l, c, s] h_s``.
    """

    def __init__(self, num_columns: int, config: ConvConfig) -> None:
        super().__init__()
        self.num_columns = num_columns
        self.config = config
        cols, c_in = num_columns, config.input_shape[0]
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i, c_out in enumerate(config.channels):
            # Grouped: column c's filters see only column c's channels, and their fan-in (hence
            # their default initialisation) is that of one column's conv.
            self.convs.append(nn.Conv2d(c_in if i == 0 else cols * c_in, cols * c_out, config.kernel_size,
                                        padding=config.padding, groups=1 if i == 0 else cols))
            self.norms.append(nn.BatchNorm2d(cols * c_out) if config.batch_norm else nn.Identity())
            c_in = c_out
        self.pool = nn.MaxPool2d(2)
        widths = [config.flat_features(), *config.hidden]
        self.dense = nn.ModuleList(_ColumnLinear(cols, w_in, w_out) for w_in, w_out in zip(widths[:-1], widths[1:]))
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()

    def forward(self, x: Tensor, stitch: Tensor | None = None) -> Tensor:
        cols = self.num_columns
        h = x
        for l, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = self.pool(torch.relu(norm(conv(h))))  # (N, C * c, H', W')
            if stitch is not None:
                h = torch.einsum("ts,nschw->ntchw", stitch[l], h.unflatten(1, (cols, -1))).flatten(1, 2)
        h = h.unflatten(1, (cols, -1)).flatten(2).transpose(0, 1)  # (C, N, flat): a column's own flatten
        for l, layer in enumerate(self.dense, start=len(self.convs)):
            h = self.dropout(torch.relu(layer(h)))
            if stitch is not None:
                h = torch.einsum("ts,snh->tnh", stitch[l], h)
        return h

    def extra_repr(self) -> str:
        return f"num_columns={self.num_columns}"


@dataclass
class CrossStitchConvConfig(ConvConfig):
    """Configuration of :class:`CrossStitchConv`: a :class:`ConvConfig` and the cross-stitch start.

    Attributes
    ----------
    self_weight : float
        Initial diagonal of every cross-stitch matrix; the rest of each row shares 1 - self_weight
        (Misra et al. start from 0.9 / 0.1).

    The other attributes are :class:`ConvConfig`'s.
    """

    self_weight: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        self.self_weight = check_probability(self.self_weight, "self_weight")


class CrossStitchConv(_ImageModel):
    """Cross-stitch network on images: T columns of TAANConv's trunk with ReLU, mixed after every
    stage (after its pooling, as Misra et al. place the units) and every dense layer.

    After layer l, column t continues with sum_s A_l[t, s] h_s; task t's head reads column t.
    Every sample runs through every column.

    Parameters
    ----------
    config : CrossStitchConvConfig
    """

    config_class = CrossStitchConvConfig

    def __init__(self, config: CrossStitchConvConfig) -> None:
        super().__init__(config)
        self.columns = _ColumnConvTrunk(self.num_tasks, config)
        num_layers = len(config.channels) + len(config.hidden)
        self.stitch = nn.Parameter(torch.empty(num_layers, self.num_tasks, self.num_tasks))
        self.heads = _linear_heads(config.out_features(), config.output_dims)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Cross-stitch matrices start near the identity (``self_weight`` on the diagonal)."""
        init_stitch(self.stitch, self.config.self_weight)

    def _forward_task(self, x: Tensor, task: int) -> Tensor:
        return self.heads[task](self.columns(x, self.stitch)[task])

    def _forward_mixed(self, x: Tensor, task: Tensor, counts: list[int] | None = None) -> list[Tensor]:
        h = self.columns(x, self.stitch)  # (T, N, H); task t's head reads its rows of column t
        groups = _task_index(task, self.num_tasks, counts)
        rows = groups.order + x.shape[0] * task.index_select(0, groups.order)
        return _apply_per_task(self.heads, h.flatten(0, 1), groups._replace(order=rows))


@dataclass
class MMoEConvConfig(ConvConfig):
    """Configuration of :class:`MMoEConv`: a :class:`ConvConfig` for each expert, and the gates' towers.

    Attributes
    ----------
    num_experts : int
        Number of experts E. The default, 4, with linear towers, is the study's MMoE.
    tower_hidden : list of int
        Hidden widths of each task's tower (may be empty: a linear head).

    The other attributes are :class:`ConvConfig`'s.
    """

    num_experts: int = 4
    tower_hidden: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.num_experts = check_int(self.num_experts, "num_experts", minimum=1)
        self.tower_hidden = _int_list(self.tower_hidden, "tower_hidden", allow_empty=True)


class MMoEConv(_ImageModel):
    """Multi-gate mixture of experts on images: E experts of TAANConv's trunk with ReLU; task t mixes
    them with g_t(x) = softmax(G_t vec(x) + g_t) and feeds sum_e g_t(x)[e] expert_e(x) to its tower.

    The gates read the flattened image, as in Ma et al. and in multi-task vision libraries: a
    gate is linear in its input, so it costs T * E * C * H * W parameters.

    Parameters
    ----------
    config : MMoEConvConfig
    """

    config_class = MMoEConvConfig

    def __init__(self, config: MMoEConvConfig) -> None:
        super().__init__(config)
        self.experts = _ColumnConvTrunk(config.num_experts, config)
        pixels = config.input_shape[0] * config.input_shape[1] * config.input_shape[2]
        # Gates as T columns of shape (E, pixels): column t holds task t's gate.
        self.gates = _ColumnLinear(self.num_tasks, pixels, config.num_experts)
        width = config.out_features()
        tower_in = config.tower_hidden[-1] if config.tower_hidden else width
        self.towers = nn.ModuleList()
        for out_dim in config.output_dims:
            tower = _mlp(width, config.tower_hidden, False, config.dropout)
            tower.append(nn.Linear(tower_in, out_dim))
            self.towers.append(tower)

    def _forward_task(self, x: Tensor, task: int) -> Tensor:
        gate = torch.nn.functional.linear(x.flatten(1), self.gates.weight[task], self.gates.bias[task]).softmax(-1)
        return self.towers[task](torch.einsum("ne,enh->nh", gate, self.experts(x)))

    def _forward_mixed(self, x: Tensor, task: Tensor, counts: list[int] | None = None) -> list[Tensor]:
        logits = self.gates(x.flatten(1))  # (T, N, E); each row keeps its own task's gate
        gate = logits[task, torch.arange(x.shape[0], device=x.device)].softmax(-1)
        mixed = torch.einsum("ne,enh->nh", gate, self.experts(x))
        return _apply_per_task(self.towers, mixed, _task_index(task, self.num_tasks, counts))
