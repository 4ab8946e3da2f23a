"""Multi-task baselines with the same ``forward(x, task)`` interface as TAAN.

- :class:`SingleTask` (STL): one independent MLP per task, nothing shared.
- :class:`HardShare`: one shared ReLU MLP and per-task linear heads.
- :class:`SoftOrder`: soft layer ordering (Meyerson & Miikkulainen, ICLR 2018): D shared layers
  applied at every depth in a per-task soft order, y_d = sum_k s[t, d, k] f_k(y_{d-1}).
- :class:`CrossStitch`: cross-stitch networks (Misra et al., CVPR 2016): one column per task,
  mixed after every layer by a learned T x T cross-stitch matrix.
- :class:`MMoE`: multi-gate mixture of experts (Ma et al., KDD 2018): E shared experts, a softmax
  gate and a tower per task.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from taan_core._validation import check_int, check_probability
from taan_core.models._base import (
    MLPConfig,
    MultiTaskModel,
    _apply_per_task,
    _check_dropout,
    _ColumnLinear,
    _int_list,
    _linear_heads,
    _mlp,
    _task_index,
)

__all__ = [
    "CrossStitch",
    "CrossStitchConfig",
    "HardShare",
    "MLPConfig",
    "MMoE",
    "MMoEConfig",
    "SingleTask",
    "SoftOrder",
    "SoftOrderConfig",
]



def init_stitch(stitch: Tensor, self_weight: float) -> None:
    """Fill cross-stitch matrices (..., T, T) near the identity: ``self_weight`` on the diagonal,
    the rest shared equally by the other tasks (every row sums to 1)."""
    t = stitch.shape[-1]
    with torch.no_grad():
        if t == 1:
            stitch.fill_(1.0)
        else:
            stitch.fill_((1.0 - self_weight) / (t - 1))
            stitch.diagonal(dim1=-2, dim2=-1).fill_(self_weight)

class SingleTask(MultiTaskModel):
    """Single-task learning: task t has its own ReLU MLP and head; no parameter is shared.

    Parameters
    ----------
    config : MLPConfig
    """

    config_class = MLPConfig

    def __init__(self, config: MLPConfig) -> None:
        super().__init__(config)
        self.columns = nn.ModuleList()
        for out_dim in config.output_dims:
            column = _mlp(config.input_dim, config.hidden, config.batch_norm, config.dropout)
            column.append(nn.Linear(config.hidden[-1], out_dim))
            self.columns.append(column)

    def _forward_task(self, x: Tensor, task: int) -> Tensor:
        return self.columns[task](x)

    def _forward_mixed(self, x: Tensor, task: Tensor, counts: list[int] | None = None) -> list[Tensor]:
        return _apply_per_task(self.columns, x, _task_index(task, self.num_tasks, counts))


class HardShare(MultiTaskModel):
    """Hard parameter sharing: a ReLU MLP shared by all tasks and one linear head per task.

    Parameters
    ----------
    config : MLPConfig
    """

    config_class = MLPConfig

    def __init__(self, config: MLPConfig) -> None:
        super().__init__(config)
        self.trunk = _mlp(config.input_dim, config.hidden, config.batch_norm, config.dropout)
        self.heads = _linear_heads(config.hidden[-1], config.output_dims)

    def _forward_task(self, x: Tensor, task: int) -> Tensor:
        return self.heads[task](self.trunk(x))

    def _forward_mixed(self, x: Tensor, task: Tensor, counts: list[int] | None = None) -> list[Tensor]:
        return _apply_per_task(self.heads, self.trunk(x), _task_index(task, self.num_tasks, counts))


@dataclass
class SoftOrderConfig:
    """Configuration of :class:`SoftOrder`.

    Attributes
    ----------
    input_dim : int
        Number of input features.
    output_dims : list of int
        Output size of every task's head.
    hidden : list of int
        One width per depth; all equal (the shared layers must be interchangeable).
    dropout : float
        Dropout probability after each shared layer's activation.
    """

    input_dim: int
    output_dims: list[int]
    hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.input_dim = check_int(self.input_dim, "input_dim", minimum=1)
        self.output_dims = _int_list(self.output_dims, "output_dims")
        self.hidden = _int_list(self.hidden, "hidden")
        if len(set(self.hidden)) != 1:
            raise ValueError(f"hidden must hold one width repeated (soft-ordered layers are interchangeable), "
                             f"got {self.hidden}")
        self.dropout = _check_dropout(self.dropout)


class SoftOrder(MultiTaskModel):
    """Soft layer ordering: D shared layers f_k(y) = relu(W_k y + c_k), mixed at every depth by
    per-task softmax weights.

    y_0 = E x,  y_d = sum_k s[t, d, k] f_k(y_{d-1}) with s[t, d] = softmax(order_logits[t, d]),
    output = head_t(y_D). All tasks share the input space here, so the encoder E (a linear map to
    the common width) is shared; the heads are the per-task decoders.

    Parameters
    ----------
    config : SoftOrderConfig
    """

    config_class = SoftOrderConfig

    def __init__(self, config: SoftOrderConfig) -> None:
        super().__init__(config)
        width, depth = config.hidden[0], len(config.hidden)
        self.encoder = nn.Linear(config.input_dim, width)
        self.layers = _ColumnLinear(depth, width, width)
        self.order_logits = nn.Parameter(torch.empty(self.num_tasks, depth, depth))
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.heads = _linear_heads(width, config.output_dims)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Start from the uniform mixture at every depth (zero logits)."""
        nn.init.zeros_(self.order_logits)

    def _trunk(self, x: Tensor, mix: Tensor) -> Tensor:
        # mix: (D, D) for one task, or (N, D, D) for per-sample tasks.
        h = self.encoder(x)
        for d in range(mix.shape[-2]):
            outs = self.dropout(torch.relu(self.layers(h)))  # (D, N, H): every layer on the batch
            if mix.ndim == 2:
                h = torch.einsum("k,knh->nh", mix[d], outs)
            else:
                h = torch.einsum("nk,knh->nh", mix[:, d], outs)
        return h

    def _forward_task(self, x: Tensor, task: int) -> Tensor:
        return self.heads[task](self._trunk(x, self.order_logits[task].softmax(-1)))

    def _forward_mixed(self, x: Tensor, task: Tensor, counts: list[int] | None = None) -> list[Tensor]:
        h = self._trunk(x, self.order_logits.softmax(-1)[task])
        return _apply_per_task(self.heads, h, _task_index(task, self.num_tasks, counts))


@dataclass
class CrossStitchConfig:
    """Configuration of :class:`CrossStitch`.

    Attributes
    ----------
    input_dim : int
        Number of input features.
    output_dims : list of int
        Output size of every task's head.
    hidden : list of int
        Widths of each column's hidden layers.
    dropout : float
        Dropout probability after each hidden activation.
    self_weight : float
        Initial diagonal of every cross-stitch matrix; the rest of each row shares 1 - self_weight
        (Misra et al. start from 0.9 / 0.1).
    """

    input_dim: int
    output_dims: list[int]
    hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    dropout: float = 0.0
    self_weight: float = 0.9

    def __post_init__(self) -> None:
        self.input_dim = check_int(self.input_dim, "input_dim", minimum=1)
        self.output_dims = _int_list(self.output_dims, "output_dims")
        self.hidden = _int_list(self.hidden, "hidden")
        self.dropout = _check_dropout(self.dropout)
        self.self_weight = check_probability(self.self_weight, "self_weight")


class CrossStitch(MultiTaskModel):
    """Cross-stitch network: T ReLU MLP columns; after layer l, column t continues with
    sum_s A_l[t, s] h_s, a learned T x T linear mix of all columns.

    Every sample runs through every column (its task's output depends on all of them); the
    columns are computed together as batched matmuls.

    Parameters
    ----------
    config : CrossStitchConfig
    """

    config_class = CrossStitchConfig

    def __init__(self, config: CrossStitchConfig) -> None:
        super().__init__(config)
        widths = [config.input_dim, *config.hidden]
        self.columns = nn.ModuleList(
            _ColumnLinear(self.num_tasks, w_in, w_out) for w_in, w_out in zip(widths[:-1], widths[1:])
        )
        self.stitch = nn.Parameter(torch.empty(len(config.hidden), self.num_tasks, self.num_tasks))
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.heads = _linear_heads(widths[-1], config.output_dims)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Cross-stitch matrices start near the identity (``self_weight`` on the diagonal)."""
        init_stitch(self.stitch, self.config.self_weight)

    def _columns(self, x: Tensor) -> Tensor:
        h = x
        for layer, mix in zip(self.columns, self.stitch):
            h = self.dropout(torch.relu(layer(h)))  # (T, N, H)
            h = torch.einsum("ts,snh->tnh", mix, h)
        return h

    def _forward_task(self, x: Tensor, task: int) -> Tensor:
        return self.heads[task](self._columns(x)[task])

    def _forward_mixed(self, x: Tensor, task: Tensor, counts: list[int] | None = None) -> list[Tensor]:
        h = self._columns(x)  # (T, N, H); task t's head reads its rows of column t
        groups = _task_index(task, self.num_tasks, counts)
        rows = groups.order + x.shape[0] * task.index_select(0, groups.order)
        return _apply_per_task(self.heads, h.flatten(0, 1), groups._replace(order=rows))


@dataclass
class MMoEConfig:
    """Configuration of :class:`MMoE`.

    Attributes
    ----------
    input_dim : int
        Number of input features.
    output_dims : list of int
        Output size of every task's tower.
    hidden : list of int
        Widths of each expert's layers (the last is the width the gates mix).
    num_experts : int
        Number of experts E.
    tower_hidden : list of int
        Hidden widths of each task's tower (may be empty: a linear head).
    dropout : float
        Dropout probability after each hidden activation.
    """

    input_dim: int
    output_dims: list[int]
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    num_experts: int = 8
    tower_hidden: list[int] = field(default_factory=lambda: [64])
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.input_dim = check_int(self.input_dim, "input_dim", minimum=1)
        self.output_dims = _int_list(self.output_dims, "output_dims")
        self.hidden = _int_list(self.hidden, "hidden")
        self.num_experts = check_int(self.num_experts, "num_experts", minimum=1)
        self.tower_hidden = _int_list(self.tower_hidden, "tower_hidden", allow_empty=True)
        self.dropout = _check_dropout(self.dropout)


class MMoE(MultiTaskModel):
    """Multi-gate mixture of experts: E ReLU MLP experts shared by all tasks; task t mixes them
    with g_t(x) = softmax(G_t x + g_t) and feeds sum_e g_t(x)[e] expert_e(x) to its tower.

    Parameters
    ----------
    config : MMoEConfig
    """

    config_class = MMoEConfig

    def __init__(self, config: MMoEConfig) -> None:
        super().__init__(config)
        widths = [config.input_dim, *config.hidden]
        self.experts = nn.ModuleList(
            _ColumnLinear(config.num_experts, w_in, w_out) for w_in, w_out in zip(widths[:-1], widths[1:])
        )
        # Gates as T columns of shape (E, input_dim): column t holds task t's gate.
        self.gates = _ColumnLinear(self.num_tasks, config.input_dim, config.num_experts)
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        tower_in = config.tower_hidden[-1] if config.tower_hidden else widths[-1]
        self.towers = nn.ModuleList()
        for out_dim in config.output_dims:
            tower = _mlp(widths[-1], config.tower_hidden, False, config.dropout)
            tower.append(nn.Linear(tower_in, out_dim))
            self.towers.append(tower)

    def _experts(self, x: Tensor) -> Tensor:
        h = x
        for layer in self.experts:
            h = self.dropout(torch.relu(layer(h)))
        return h  # (E, N, H)

    def _forward_task(self, x: Tensor, task: int) -> Tensor:
        gate = torch.nn.functional.linear(x, self.gates.weight[task], self.gates.bias[task]).softmax(-1)
        return self.towers[task](torch.einsum("ne,enh->nh", gate, self._experts(x)))

    def _forward_mixed(self, x: Tensor, task: Tensor, counts: list[int] | None = None) -> list[Tensor]:
        # All T gates cost N * input_dim * T * E, small next to the experts; pick each row's own.
        logits = self.gates(x)  # (T, N, E)
        gate = logits[task, torch.arange(x.shape[0], device=x.device)].softmax(-1)
        mixed = torch.einsum("ne,enh->nh", gate, self._experts(x))
        return _apply_per_task(self.towers, mixed, _task_index(task, self.num_tasks, counts))

