"""A hard-sharing network branched like a tree of task groups.

Layer l of a :class:`Branched` network has one ReLU layer per task group of that depth; a group
reads the output of its parent group one layer up (the input for the first layer), and task t
reads its head from the branch of its group at the last layer. With one group per layer this is
:class:`~taan_core.models.HardShare`; with every task alone from the first layer on it is
:class:`~taan_core.models.SingleTask`. The tree is plain data (``groups[l][t]``, the group of task
t at hidden layer l), so a checkpoint stores it in the config, and it can come from anywhere: the
sharing tree a trained TAAN implies (:func:`taan_core.relatedness.branched_overrides`), the planted
ground truth of the planted benchmark, or :func:`random_assignment` of the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from taan_core._validation import check_int
from taan_core.models._base import MultiTaskModel, _bool, _check_dropout, _int_list, _linear_heads

__all__ = ["Branched", "BranchedConfig", "check_groups", "random_assignment"]


def check_groups(groups: Any, num_tasks: int | None = None) -> list[list[int]]:
    """Check a tree of task groups and return it renumbered, as plain nested lists.

    Parameters
    ----------
    groups : sequence of L sequences of T ints
        ``groups[l][t]`` is the group of task t at hidden layer l. Groups must nest: tasks that
        share a group at layer l share one at every layer before l (a branch never re-joins).
    num_tasks : int, optional
        The expected T.

    Returns
    -------
    list of L lists of T ints
        The same partition with every layer's groups numbered 0, 1, ... by first appearance
        in task order (so equal trees compare equal).

    Raises
    ------
    TypeError
        When ``groups`` is not a sequence of sequences of ints.
    ValueError
        When it is empty, rows differ in length or from ``num_tasks``, an id is negative, or the
        groups do not nest.
    """
    if isinstance(groups, np.ndarray):
        groups = groups.tolist()
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence):
        raise TypeError(f"groups must be a list of per-layer lists of task group ids, got {type(groups).__name__}")
    if len(groups) == 0:
        raise ValueError("groups must hold at least one layer")
    rows = []
    for l, row in enumerate(groups):
        if isinstance(row, np.ndarray):
            row = row.tolist()
        if isinstance(row, (str, bytes)) or not isinstance(row, Sequence):
            raise TypeError(f"groups[{l}] must be a list of ints (one group id per task), got {type(row).__name__}")
        ids = []
        for t, g in enumerate(row):
            if isinstance(g, np.integer):
                g = int(g)
            ids.append(check_int(g, f"groups[{l}][{t}]", minimum=0))
        rows.append(ids)
    expected = len(rows[0]) if num_tasks is None else num_tasks
    for l, row in enumerate(rows):
        if len(row) != expected:
            raise ValueError(f"groups[{l}] must have one group id per task (T = {expected}), got {len(row)}")
    if expected == 0:
        raise ValueError("groups must name at least one task")
    for l in range(1, len(rows)):
        parent: dict[int, int] = {}
        first: dict[int, int] = {}
        for t, (g, p) in enumerate(zip(rows[l], rows[l - 1])):
            if parent.setdefault(g, p) != p:
                raise ValueError(
                    f"groups must nest (a branch never re-joins): tasks {first[g]} and {t} share group {g} at "
                    f"layer {l} but are in groups {parent[g]} and {p} at layer {l - 1}"
                )
            first.setdefault(g, t)
    out = []
    for row in rows:
        mapping: dict[int, int] = {}
        out.append([mapping.setdefault(g, len(mapping)) for g in row])
    return out


def random_assignment(groups: Sequence[Sequence[int]], seed: int = 0) -> list[list[int]]:
    """A tree of the same shape with the tasks assigned to its leaves at random.

    Task t takes the place of task ``perm[t]`` for a seeded random permutation ``perm``: every
    layer keeps its number of groups and their sizes, and the nesting is unchanged, only which
    tasks travel together differs.

    Parameters
    ----------
    groups : sequence of L sequences of T ints
        A tree as :func:`check_groups` accepts it.
    seed : int
        Seed of the permutation.

    Returns
    -------
    list of L lists of T ints
    """
    tree = check_groups(groups)
    check_int(seed, "seed", minimum=0)
    perm = np.random.default_rng([seed, 0xB4A7]).permutation(len(tree[0]))
    return check_groups([[row[int(p)] for p in perm] for row in tree])


@dataclass
class BranchedConfig:
    """Configuration of :class:`Branched` (plain types, checkpoint-safe).

    Attributes
    ----------
    input_dim : int
        Number of input features; inputs of shape (N, *input_shape) are flattened.
    output_dims : list of int
        Output size of every task's linear head; T = ``len(output_dims)``.
    groups : list of L lists of T ints
        ``groups[l][t]``: the branch of task t at hidden layer l (see :func:`check_groups`);
        stored renumbered by first appearance.
    hidden : list of L ints or None
        Width of every branch of each layer; None gives 256 at every layer.
    batch_norm : bool
        BatchNorm between each linear map and its ReLU (statistics per branch).
    dropout : float
        Dropout probability after each hidden activation.
    """

    input_dim: int
    output_dims: list[int]
    groups: list[list[int]]
    hidden: list[int] | None = None
    batch_norm: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.input_dim = check_int(self.input_dim, "input_dim", minimum=1)
        self.output_dims = _int_list(self.output_dims, "output_dims")
        self.groups = check_groups(self.groups, len(self.output_dims))
        if self.hidden is None:
            self.hidden = [256] * len(self.groups)
        self.hidden = _int_list(self.hidden, "hidden")
        if len(self.hidden) != len(self.groups):
            raise ValueError(
                f"hidden must give one width per layer of groups (L = len(groups) = {len(self.groups)}), "
                f"got {len(self.hidden)}: {self.hidden}"
            )
        self.batch_norm = _bool(self.batch_norm, "batch_norm")
        self.dropout = _check_dropout(self.dropout)

    @property
    def num_groups(self) -> list[int]:
        """Number of branches at each layer."""
        return [max(row) + 1 for row in self.groups]


class _BranchRouting:
    """The forward pass of a network branched like a tree of task groups (:class:`Branched`,
    :class:`~taan_core.models.branched_conv.BranchedConv`). The network holds ``branches``
    (per depth, one module per group), ``heads``, ``_position`` (each task's place in the tree
    order), ``_order`` (the tasks in that order), ``_blocks`` (per depth, ``(group, tasks)``
    in tree order), set up by ``_init_routing``, and says the output shape of a depth's branches
    (``_branch_shape``)."""

    def _init_routing(self, groups: list[list[int]]) -> None:
        # A task order in which every branch of every layer is a contiguous run of tasks: the
        # rows of a mixed batch sorted this way split into branches with one split per layer.
        order = np.lexsort([np.arange(self.num_tasks), *np.asarray(groups)[::-1]])
        self.register_buffer("_position", torch.from_numpy(np.argsort(order)).long(), persistent=False)
        self._order = [int(t) for t in order]
        # Per layer, the branches as they appear along that order, each with its tasks.
        self._blocks: list[list[tuple[int, list[int]]]] = []
        for row in groups:
            blocks: dict[int, list[int]] = {}
            for t in self._order:
                blocks.setdefault(row[t], []).append(t)
            self._blocks.append(list(blocks.items()))

    def _forward_task(self, x: Tensor, task: int) -> Tensor:
        h = x
        for l, branches in enumerate(self.branches):
            h = branches[self.config.groups[l][task]](h)
        return self.heads[task](h)

    def _forward_mixed(self, x: Tensor, task: Tensor, counts: list[int] | None = None) -> list[Tensor]:
        # Sort rows by the task order (stable: each task's rows stay in batch order); then every
        # branch of every layer reads one contiguous block of rows.
        perm = torch.argsort(self._position[task], stable=True)
        if counts is None:
            counts = torch.bincount(task, minlength=self.num_tasks).tolist()
        h = x.index_select(0, perm)
        for l, branches in enumerate(self.branches):
            sizes = [sum(counts[t] for t in tasks) for _, tasks in self._blocks[l]]
            # A branch without rows is skipped: BatchNorm cannot take an empty batch in training.
            parts = [branches[g](part) if part.shape[0] else part.new_zeros(0, *self._branch_shape(l))
                     for (g, _), part in zip(self._blocks[l], h.split(sizes))]
            h = torch.cat(parts)
        rows = h.split([counts[t] for t in self._order])
        out: list[Tensor] = [torch.empty(0)] * self.num_tasks
        for t, part in zip(self._order, rows):
            out[t] = self.heads[t](part)
        return out


class Branched(_BranchRouting, MultiTaskModel):
    """Hard sharing along a tree: one ReLU layer per task group and depth, one head per task.

    For task t with group g_l = groups[l][t] at layer l:
    h_0 = flatten(x),  h_l = relu(W_{l, g_l} h_{l-1} + c_{l, g_l}),  y = V_t h_L + d_t.

    Parameters
    ----------
    config : BranchedConfig

    Examples
    --------
    >>> model = Branched(BranchedConfig(input_dim=8, output_dims=[1, 1, 1, 1],
    ...                                 groups=[[0, 0, 0, 0], [0, 0, 1, 1]], hidden=[16, 16]))
    >>> model(torch.randn(5, 8), task=2).shape
    torch.Size([5, 1])
    """

    config_class = BranchedConfig

    def __init__(self, config: BranchedConfig) -> None:
        super().__init__(config)
        widths = [config.input_dim, *config.hidden]
        self.branches = nn.ModuleList()
        for l, count in enumerate(config.num_groups):
            self.branches.append(nn.ModuleList(
                self._branch(widths[l], widths[l + 1], config) for _ in range(count)
            ))
        self.heads = _linear_heads(widths[-1], config.output_dims)
        self._init_routing(config.groups)

    @staticmethod
    def _branch(in_features: int, out_features: int, config: BranchedConfig) -> nn.Sequential:
        layers: list[nn.Module] = [nn.Linear(in_features, out_features)]
        if config.batch_norm:
            layers.append(nn.BatchNorm1d(out_features))
        layers.append(nn.ReLU())
        if config.dropout > 0:
            layers.append(nn.Dropout(config.dropout))
        return nn.Sequential(*layers)

    def _branch_shape(self, depth: int) -> tuple[int, ...]:
        return (self.config.hidden[depth],)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, num_groups={self.config.num_groups}, hidden={self.config.hidden}"


def __getattr__(name: str):
    # branched_overrides reads a checkpoint, which a model must not do (models sit below
    # checkpoint and relatedness); it lives in taan_core.relatedness now. The old path keeps
    # working, with one warning.
    if name == "branched_overrides":
        import importlib
        import warnings

        warnings.warn("taan_core.models.branched.branched_overrides moved to "
                      "taan_core.relatedness.branched_overrides", DeprecationWarning, stacklevel=2)
        return importlib.import_module("taan_core.relatedness").branched_overrides
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
