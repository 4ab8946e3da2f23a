"""Mixed-task batches: which samples of which tasks go into every batch, and their collation.

Two modes:

- ``balanced`` (as in the paper): every batch holds ``batch_size`` samples of *every* task, so
  ``B = T * batch_size``. An epoch has ``ceil(max_t n_t / batch_size)`` batches: enough to show
  the largest task's every sample once. Smaller tasks are cycled: each task draws from a stream
  of fresh permutations of its samples, so within an epoch a task repeats a sample only after it
  has shown all of them. (Sizing the epoch by the smallest task instead would leave most of a
  large task unseen in each epoch.) ``drop_last=True`` uses ``floor`` instead of ``ceil`` (at
  least one batch); every batch is full in both cases.
- ``proportional``: the samples of all tasks are pooled and shuffled, and every batch takes the
  next ``batch_size`` of them, so tasks appear in proportion to their size. An epoch shows every
  sample once; ``drop_last=True`` drops the final short batch.

The order of an epoch depends only on ``(seed, epoch)``. The sampler also remembers how many
batches of the current epoch it has handed out; :meth:`MultiTaskBatchSampler.state_dict` and
:meth:`MultiTaskBatchSampler.load_state_dict` carry that position, so a resumed run gets exactly
the batches the interrupted one would have got next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from taan_core._validation import check_int
from taan_core.data.base import MultiTaskSplit, TensorSplit

__all__ = ["MultiTaskBatchSampler", "Batch", "collate"]

_MODES = ("balanced", "proportional")
_STREAM_SALT = 0x5A3D


class _TaskStream:
    """An endless stream of one task's sample indices: permutation after fresh permutation."""

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        self.n = n
        self.rng = rng
        self.buffer = np.empty(0, dtype=np.int64)

    def take(self, k: int) -> np.ndarray:
        while self.buffer.size < k:
            self.buffer = np.concatenate([self.buffer, self.rng.permutation(self.n)])
        out, self.buffer = self.buffer[:k], self.buffer[k:]
        return out


class MultiTaskBatchSampler:
    """Yields ``(task, index)`` pairs of LongTensors, one pair per batch of one epoch.

    Parameters
    ----------
    split : MultiTaskSplit
        The split to draw from (every task must have at least one sample).
    batch_size : int
        ``balanced``: samples of each task per batch (a batch holds ``T * batch_size``);
        ``proportional``: samples per batch.
    mode : {"balanced", "proportional"}
    seed : int
        Seed of the shuffling; the batches of epoch ``e`` are a function of ``(seed, e)``.
    drop_last : bool
        See the module docstring.
    num_replicas, rank : int
        For data-parallel training: every replica walks the same global batches and keeps its
        share, the contiguous ``1 / num_replicas`` of every task's block (balanced) or of the
        batch (proportional). ``batch_size`` must be divisible by ``num_replicas``.

    Notes
    -----
    Iterating resumes at the position reached so far in the current epoch; finishing an epoch
    resets the position to 0. :meth:`set_epoch` with a new epoch number also resets it.
    """

    def __init__(
        self,
        split: MultiTaskSplit,
        batch_size: int,
        mode: str = "balanced",
        seed: int = 0,
        drop_last: bool = False,
        *,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if not isinstance(split, MultiTaskSplit):
            raise TypeError(f"split must be a MultiTaskSplit, got {type(split).__name__}")
        check_int(batch_size, "batch_size", minimum=1)
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(_MODES)}, got {mode!r}")
        check_int(seed, "seed", minimum=0)
        check_int(num_replicas, "num_replicas", minimum=1)
        check_int(rank, "rank", minimum=0)
        if rank >= num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas = {num_replicas}), got {rank}")
        if batch_size % num_replicas:
            raise ValueError(
                f"batch_size must be divisible by num_replicas = {num_replicas}, got {batch_size}"
            )
        self.split = split
        self.batch_size = batch_size
        self.mode = mode
        self.seed = seed
        self.drop_last = bool(drop_last)
        self.num_replicas = num_replicas
        self.rank = rank
        self.num_samples = [split.num_samples(t) for t in range(split.num_tasks)]
        empty = [t for t, n in enumerate(self.num_samples) if n == 0]
        if empty:
            names = [split.tasks[t].name for t in empty]
            raise ValueError(f"every task needs at least one sample; tasks {empty} ({names}) have none")
        self.epoch = 0
        self.position = 0

    def __len__(self) -> int:
        if self.mode == "balanced":
            largest = max(self.num_samples)
            if self.drop_last:
                return max(1, largest // self.batch_size)
            return -(-largest // self.batch_size)
        total = sum(self.num_samples)
        if self.drop_last:
            return total // self.batch_size
        return -(-total // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields (position 0 if it changes)."""
        check_int(epoch, "epoch", minimum=0)
        if epoch != self.epoch:
            self.epoch = epoch
            self.position = 0

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, _STREAM_SALT, *key])

    def _shard(self, block: np.ndarray) -> np.ndarray:
        if self.num_replicas == 1:
            return block
        bounds = np.linspace(0, block.size, self.num_replicas + 1).round().astype(np.int64)
        return block[bounds[self.rank]:bounds[self.rank + 1]]

    def _balanced(self, start: int) -> Iterator[tuple[Tensor, Tensor]]:
        streams = [_TaskStream(n, self._rng(t)) for t, n in enumerate(self.num_samples)]
        for stream in streams:
            stream.take(start * self.batch_size)
        for _ in range(start, len(self)):
            blocks = [self._shard(s.take(self.batch_size)) for s in streams]
            task = np.repeat(np.arange(len(streams)), [b.size for b in blocks])
            yield torch.from_numpy(task), torch.from_numpy(np.concatenate(blocks))

    def _proportional(self, start: int) -> Iterator[tuple[Tensor, Tensor]]:
        offsets = np.cumsum([0] + self.num_samples)
        order = self._rng().permutation(offsets[-1])
        for k in range(start, len(self)):
            flat = self._shard(order[k * self.batch_size:(k + 1) * self.batch_size])
            task = np.searchsorted(offsets, flat, side="right") - 1
            yield torch.from_numpy(task), torch.from_numpy(flat - offsets[task])

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        batches = self._balanced if self.mode == "balanced" else self._proportional
        for task, index in batches(self.position):
            # Counted before the batch is used: a state saved after training on it resumes after it.
            self.position += 1
            yield task, index
        self.position = 0

    def state_dict(self) -> dict[str, Any]:
        """Plain-typed state: the epoch, the position inside it and what must match on load."""
        return {
            "mode": self.mode,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "drop_last": self.drop_last,
            "num_samples": list(self.num_samples),
            "epoch": self.epoch,
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; raise ValueError if it belongs to a different sampling plan."""
        if not isinstance(state, dict):
            raise TypeError(f"sampler state must be a dict, got {type(state).__name__}")
        missing = [k for k in ("mode", "batch_size", "seed", "drop_last", "num_samples", "epoch", "position") if k not in state]
        if missing:
            raise ValueError(f"sampler state lacks {missing}")
        for key in ("mode", "batch_size", "seed", "drop_last", "num_samples"):
            mine = getattr(self, key)
            theirs = list(state[key]) if key == "num_samples" else state[key]
            if theirs != mine:
                raise ValueError(
                    f"sampler state has {key} = {theirs!r} but this sampler has {mine!r}; "
                    "resuming would draw different batches"
                )
        epoch, position = state["epoch"], state["position"]
        check_int(epoch, "sampler state epoch", minimum=0)
        check_int(position, "sampler state position", minimum=0)
        if position > len(self):
            raise ValueError(f"sampler state position {position} exceeds the {len(self)} batches of an epoch")
        self.epoch = epoch
        self.position = position


@dataclass
class Batch:
    """A collated mixed-task batch.

    Attributes
    ----------
    x : float32 Tensor of shape (B, *input_shape)
    task : LongTensor of shape (B,)
    targets : list of T Tensors
        ``targets[t]`` holds the labels of the samples with ``task == t`` in batch order,
        matching ``model(x, task)[t]``; a task absent from the batch gets an empty tensor.
    """

    x: Tensor
    task: Tensor
    targets: list[Tensor]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """The batch with every tensor moved to ``device``."""
        return Batch(
            self.x.to(device, non_blocking=non_blocking),
            self.task.to(device, non_blocking=non_blocking),
            [y.to(device, non_blocking=non_blocking) for y in self.targets],
        )


def collate(split: MultiTaskSplit, task: Tensor, index: Tensor) -> Batch:
    """Read the samples ``(task[i], index[i])`` of ``split`` into a :class:`Batch`.

    Parameters
    ----------
    split : MultiTaskSplit
    task, index : LongTensor of shape (B,)
        Per-sample task ids and within-task sample indices, as yielded by the sampler.
    """
    task = torch.as_tensor(task).long()
    index = torch.as_tensor(index).long()
    return _collate(split, task, index, check=True)


def _collate(split: MultiTaskSplit, task: Tensor, index: Tensor, *, check: bool, ordered: bool = False) -> Batch:
    """:func:`collate` for LongTensors. ``check=False`` trusts that every id and index is in
    range (batches of a :class:`MultiTaskBatchSampler` over ``split``), and ``ordered`` that
    the batch is sorted by task (its balanced batches): the Trainer's batches skip the checks,
    a dozen small operations a step that cost a few percent of a small model's step."""
    if not check:
        gathered = split._gather(task, index, check=False, ordered=ordered) if isinstance(split, TensorSplit) else None
        if gathered is not None:
            return Batch(gathered[0], task, gathered[1])
    if task.ndim != 1 or index.shape != task.shape:
        raise ValueError(
            f"task and index must both have shape (B,), got {tuple(task.shape)} and {tuple(index.shape)}"
        )
    if task.numel() and (int(task.min()) < 0 or int(task.max()) >= split.num_tasks):
        raise ValueError(f"task ids must be in [0, {split.num_tasks}), got values in [{int(task.min())}, {int(task.max())}]")
    if task.numel() == 0:
        raise ValueError("cannot collate an empty batch")
    gathered = split._gather(task, index) if isinstance(split, TensorSplit) else None
    if gathered is not None:
        return Batch(gathered[0], task, gathered[1])
    x = None
    targets: list[Tensor] = []
    for t, spec in enumerate(split.tasks):
        rows = torch.nonzero(task == t).flatten()
        if rows.numel() == 0:
            targets.append(spec.empty_labels())
            continue
        x_t, y_t = split.get(t, index[rows])
        if x is None:
            x = torch.empty((task.numel(), *x_t.shape[1:]), dtype=x_t.dtype)
        x[rows] = x_t
        targets.append(y_t)
    if x is None:
        raise ValueError("cannot collate an empty batch")
    return Batch(x, task, targets)
