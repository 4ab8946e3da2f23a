"""Data-parallel training under torchrun: process group, batch sharding, buffer averaging.

torchrun starts one process per device and sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``.
Every rank draws the same global batch from an identically seeded sampler and keeps its own
shard of it, so no sampler has to be distributed; gradients are all-reduced by
``DistributedDataParallel``; only rank 0 writes files.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__: list[str] = []


@dataclass(frozen=True)
class _World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"environment variable {name} must be an int, got {value!r}") from err


def _setup_world(device_type: str) -> _World:
    """Join the process group torchrun prepared (gloo on CPU, nccl on CUDA), if any."""
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return _World()
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if dist.is_initialized():
        return _World(dist.get_rank(), local_rank, dist.get_world_size(), owns_group=False)
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=rank, world_size=size)
    return _World(rank, local_rank, size, owns_group=True)


def _teardown_world(world: _World) -> None:
    if world.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def _shard_batch(task: Tensor, index: Tensor, num_tasks: int, world: _World) -> tuple[Tensor, Tensor, Tensor]:
    """This rank's part of a global batch and the global number of samples of every task.

    Each task's samples (in batch order) are dealt round-robin over the ranks, so with a
    balanced batch whose per-task size is a multiple of the world size every rank holds the
    same number of samples of every task. The losses divide by the global counts, which makes
    the sum over ranks equal the single-process loss for any sharding.

    Returns
    -------
    task, index : LongTensor of shape (n_local,)
    counts : LongTensor of shape (T,), samples of each task in the global batch
    """
    counts = torch.bincount(task, minlength=num_tasks)
    if not world.distributed:
        return task, index, counts
    # position of each sample among the samples of its own task, in batch order
    order = torch.argsort(task, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    within = torch.empty_like(task)
    within[order] = torch.arange(task.numel()) - starts[task[order]]
    keep = (within % world.size) == world.rank
    return task[keep], index[keep], counts


def _wrap_ddp(model: nn.Module, world: _World, device: torch.device, find_unused: bool) -> nn.Module:
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    # Running statistics are averaged over ranks after each step (see _average_buffers) instead
    # of being overwritten by rank 0's copy at every forward; newer torch renamed the switch.
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        no_sync = {"forward_sync_buffers": False}
    else:
        no_sync = {"broadcast_buffers": False}
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused, **no_sync)


@torch.no_grad()
def _average_buffers(model: nn.Module, world: _World) -> None:
    """Average floating-point buffers (running statistics) over the ranks, in one all-reduce."""
    if not world.distributed:
        return
    buffers = [b for b in model.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.reshape(-1).to(torch.float64) for b in buffers])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for b in buffers:
        n = b.numel()
        b.copy_(flat[offset:offset + n].view_as(b))
        offset += n


def _all_sum(values: list[float], world: _World, device: torch.device) -> list[float]:
    """Sum a few floats over the ranks (for the logged epoch losses)."""
    if not world.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _barrier(world: _World) -> None:
    if world.distributed:
        dist.barrier()
