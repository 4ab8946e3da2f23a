"""Pieces shared by every multi-task model: the ``forward(x, task)`` contract and its checks.

A model maps a batch ``x`` and task ids to per-task outputs. With one ``int`` task the whole
batch belongs to that task and the output is one tensor; with a ``LongTensor`` of per-sample ids
(a mixed batch) the output is a list of ``T`` tensors, ``out[t]`` holding the rows of the
samples of task ``t`` in their original order. Mixed batches are grouped by task once
(:func:`_task_index`), so a per-task head runs one matmul on all of its rows and the backward
pass scatters into the batch once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from taan_core._validation import check_int, check_probability
from taan_core.nn.layers import TaskAdaptiveActivation, adaptive_layers

__all__: list[str] = []

Task = int | Tensor
Output = Tensor | list[Tensor]


# --------------------------------------------------------------------------- config checks

def _int_list(value: Any, name: str, *, minimum: int = 1, allow_empty: bool = False) -> list[int]:
    """Return ``value`` as a list of ints >= ``minimum`` (tuples become lists: asdict stays plain)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list of ints, got {type(value).__name__}")
    out = [check_int(v, f"{name}[{i}]", minimum=minimum) for i, v in enumerate(value)]
    if not out and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    return out


def _check_dropout(value: Any) -> float:
    value = check_probability(value, "dropout")
    if value == 1.0:
        raise ValueError("dropout must be < 1, got 1.0")
    return value


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


@dataclass
class MLPConfig:
    """Configuration shared by the fully connected models (plain types, checkpoint-safe).

    Attributes
    ----------
    input_dim : int
        Number of input features; inputs of shape (N, *input_shape) are flattened.
    output_dims : list of int
        Output size of every task's head; ``len(output_dims)`` is the number of tasks T.
    hidden : list of int
        Widths of the hidden layers, in depth order.
    batch_norm : bool
        BatchNorm between each hidden linear map and its activation.
    dropout : float
        Dropout probability after each hidden activation.
    """

    input_dim: int
    output_dims: list[int]
    hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    batch_norm: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.input_dim = check_int(self.input_dim, "input_dim", minimum=1)
        self.output_dims = _int_list(self.output_dims, "output_dims")
        self.hidden = _int_list(self.hidden, "hidden")
        self.batch_norm = _bool(self.batch_norm, "batch_norm")
        self.dropout = _check_dropout(self.dropout)


# --------------------------------------------------------------------------- task handling

def _check_task(task: Any, num_samples: int, num_tasks: int, device: torch.device) -> Task:
    """Return ``task`` as an int or a LongTensor (N,) of ids in [0, T), or raise."""
    if isinstance(task, Tensor):
        if task.device != device:
            raise ValueError(f"task must be on the device of x ({device}), got {task.device}")
        if task.dtype.is_floating_point or task.dtype.is_complex or task.dtype == torch.bool:
            raise TypeError(f"task must be an int or an integer tensor, got a tensor of dtype {task.dtype}")
        if task.ndim != 1 or task.shape[0] != num_samples:
            raise ValueError(
                f"task must have shape (N,) with N = x.shape[0] = {num_samples}, got {tuple(task.shape)}"
            )
        # Reading the range back is a host sync and, under torch.compile, a graph break; compiled
        # code leaves the check to the activation op and the per-task indexing, which also fail.
        if task.numel() and not torch.compiler.is_compiling():
            low, high = int(task.min()), int(task.max())
            if low < 0 or high >= num_tasks:
                bad = low if low < 0 else high
                raise IndexError(f"task ids must be in [0, {num_tasks}) (T = {num_tasks}), got {bad}")
        return task.long()
    if isinstance(task, bool) or not isinstance(task, int):
        raise TypeError(f"task must be an int or a LongTensor of shape (N,), got {type(task).__name__}")
    if not 0 <= task < num_tasks:
        raise IndexError(f"task must be in [0, {num_tasks}) (T = {num_tasks}), got {task}")
    return task


class _TaskGroups(NamedTuple):
    """A mixed batch grouped by task: ``order`` lists the rows of task 0, then task 1, ...,
    each group in batch order; ``counts[t]`` is the size of task t's group."""

    order: Tensor
    counts: list[int]


def _check_counts(counts: Any, task: Task, num_tasks: int) -> list[int] | None:
    """Return ``counts`` as a list of T ints, or raise if it cannot be the task counts of the batch.

    Eager calls compare it with the batch (one host sync, like the range check of the ids);
    compiled code cannot read the batch back without a graph break and trusts it.
    """
    if counts is None:
        return None
    if isinstance(task, int):
        raise ValueError("counts is for mixed batches (task a LongTensor of shape (N,)); got an int task")
    counts = _int_list(counts, "counts", minimum=0)
    if len(counts) != num_tasks:
        raise ValueError(f"counts must have one entry per task (T = {num_tasks}), got {len(counts)}")
    if sum(counts) != task.shape[0]:
        raise ValueError(f"counts must sum to the batch size N = {task.shape[0]}, got {sum(counts)}")
    if task.numel() and not torch.compiler.is_compiling():
        actual = torch.bincount(task, minlength=num_tasks).tolist()
        if actual != counts:
            t = next(t for t, (a, b) in enumerate(zip(actual, counts)) if a != b)
            raise ValueError(f"counts must be the number of samples of each task in the batch: task {t} has "
                             f"{actual[t]}, counts says {counts[t]}")
    return counts


def _task_index(task: Tensor, num_tasks: int, counts: list[int] | None = None) -> _TaskGroups:
    """Group the rows of a mixed batch by task (a stable sort keeps each group in batch order).

    ``counts`` (checked by :func:`_check_counts`) are the group sizes when the caller knows them;
    otherwise they are read back from the device, a host sync that ``torch.compile`` cannot trace
    (the sizes of the groups, hence of the outputs, depend on the data).
    """
    order = torch.argsort(task, stable=True)
    if counts is None:
        counts = torch.bincount(task, minlength=num_tasks).tolist()
    return _TaskGroups(order, counts)


def _apply_per_task(modules: Sequence[nn.Module], h: Tensor, groups: _TaskGroups) -> list[Tensor]:
    """``[modules[t](rows of h of task t)]``: one call per task on all of that task's rows.

    One gather puts the groups side by side and the groups are views of it, so the backward
    pass scatters once into (N, ...) instead of once per task.
    """
    parts = h.index_select(0, groups.order).split(groups.counts)
    return [module(part) for module, part in zip(modules, parts)]


def _linear_heads(in_features: int, output_dims: Sequence[int]) -> nn.ModuleList:
    return nn.ModuleList(nn.Linear(in_features, d) for d in output_dims)


def _mlp(in_features: int, hidden: Sequence[int], batch_norm: bool, dropout: float) -> nn.Sequential:
    """Linear [-> BatchNorm] -> ReLU [-> Dropout] for each width in ``hidden``."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers.append(nn.Linear(in_features, width))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_features = width
    return nn.Sequential(*layers)


def _conv_flat_features(input_shape: Sequence[int], channels: Sequence[int], kernel_size: int, padding: int) -> int:
    """Features left after ``len(channels)`` stages of conv (stride 1) and 2x2 max-pool; raises
    if nothing is left."""
    _, height, width = input_shape
    for i in range(len(channels)):
        height = (height + 2 * padding - kernel_size + 1) // 2
        width = (width + 2 * padding - kernel_size + 1) // 2
        if height < 1 or width < 1:
            raise ValueError(
                f"input_shape {tuple(input_shape)} is too small for {len(channels)} stages of "
                f"{kernel_size}x{kernel_size} conv (padding {padding}) and 2x2 max-pool: "
                f"nothing is left after stage {i + 1}"
            )
    return channels[-1] * height * width


class _ColumnLinear(nn.Module):
    """``C`` independent linear maps applied together: (N, in) or (C, N, in) -> (C, N, out).

    Used for the task columns of cross-stitch networks and the experts of MMoE, where every
    sample passes through every column; one batched matmul replaces ``C`` small ones. Each
    column is initialised like ``nn.Linear``.
    """

    def __init__(self, num_columns: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.num_columns = num_columns
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(num_columns, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(num_columns, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        for c in range(self.num_columns):
            nn.init.kaiming_uniform_(self.weight[c], a=math.sqrt(5))
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, h: Tensor) -> Tensor:
        if h.ndim == 2:
            # A shared input: (N, in) x (C, out, in) -> (C, N, out) without copying h C times.
            return torch.einsum("ni,coi->cno", h, self.weight) + self.bias.unsqueeze(1)
        return torch.baddbmm(self.bias.unsqueeze(1), h, self.weight.transpose(1, 2))

    def extra_repr(self) -> str:
        return f"num_columns={self.num_columns}, in_features={self.in_features}, out_features={self.out_features}"


# --------------------------------------------------------------------------- base class

class MultiTaskModel(nn.Module):
    """Base of every model: checks ``x`` and ``task``, then dispatches to the single-task or
    the mixed-batch path of the subclass.

    Subclasses set ``config_class``, store the config as ``self.config`` and implement
    ``_forward_task(x, task: int)`` and ``_forward_mixed(x, task: LongTensor, counts)`` (``counts``
    the checked task counts or None, for :func:`_task_index`). ``x`` reaches them already checked
    against ``input_shape``.
    """

    config_class: ClassVar[type]

    def __init__(self, config: Any) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config

    @property
    def num_tasks(self) -> int:
        """Number of tasks T (= number of heads)."""
        return len(self.config.output_dims)

    @property
    def output_dims(self) -> list[int]:
        """Output size of each task's head."""
        return list(self.config.output_dims)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample (without the batch dimension)."""
        return (self.config.input_dim,)

    def forward(self, x: Tensor, task: Task, counts: Sequence[int] | None = None) -> Output:
        """Per-task outputs for a batch.

        Parameters
        ----------
        x : Tensor of shape (N, *input_shape)
            Inputs; fully connected models also accept any (N, ...) with the right number of
            features and flatten it.
        task : int or LongTensor of shape (N,)
            One task for the whole batch, or the task of each sample.
        counts : list of T ints, optional
            For a mixed batch, the number of samples of each task, when the caller knows them
            (balanced batches: ``batch_size`` each). Otherwise they are read back from the
            device: a host synchronisation, and under ``torch.compile`` a graph break. With
            ``counts`` the forward has no data-dependent step and compiles with
            ``fullgraph=True``.

        Returns
        -------
        Tensor of shape (N, output_dims[task]) for an int task; otherwise a list of T tensors,
        ``out[t]`` of shape (N_t, output_dims[t]) holding the samples with ``task == t`` in
        their original order (N_t = 0 when task t is absent).
        """
        x = self._check_input(x)
        task = _check_task(task, x.shape[0], self.num_tasks, x.device)
        counts = _check_counts(counts, task, self.num_tasks)
        if isinstance(task, int):
            return self._forward_task(x, task)
        return self._forward_mixed(x, task, counts)

    def _check_input(self, x: Any) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        if x.ndim < 2:
            raise ValueError(f"x must have shape (N, {self.config.input_dim}), got {tuple(x.shape)}")
        x = x.flatten(1)
        if x.shape[1] != self.config.input_dim:
            raise ValueError(
                f"x must have shape (N, {self.config.input_dim}) (input_dim = {self.config.input_dim} "
                f"features per sample), got {x.shape[1]} features"
            )
        return x

    def _forward_task(self, x: Tensor, task: int) -> Tensor:
        raise NotImplementedError

    def _forward_mixed(self, x: Tensor, task: Tensor, counts: list[int] | None = None) -> list[Tensor]:
        raise NotImplementedError

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of scalar parameters (all, or only those with ``requires_grad``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def adaptive_layers(self) -> list[tuple[str, TaskAdaptiveActivation]]:
        """The task-adaptive activations in depth order, with their qualified module names
        (e.g. ``"blocks.0.act"``); empty for models without them."""
        return adaptive_layers(self)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, output_dims={self.output_dims}"


class _ImageModel(MultiTaskModel):
    """A model of images: ``config.input_shape`` is (C, H, W) and inputs are (N, C, H, W)."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.config.input_shape)

    def _check_input(self, x: Any) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            c, h, w = self.input_shape
            raise ValueError(f"x must have shape (N, {c}, {h}, {w}), got {tuple(x.shape)}")
        return x
