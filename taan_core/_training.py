"""Pieces of a training run that are not the loop: devices, run folders, losses, random states.

``taan_core.train`` re-exports the public ones (``resolve_device``, ``prepare_run_dir``,
``RUN_FILES``).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from taan_core._atomic import atomic_write

__all__ = ["RUN_FILES", "prepare_run_dir", "resolve_device"]

RUN_FILES = ("last.pt", "checkpoint.pt", "metrics.jsonl")


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` gives cuda if available, then mps, then cpu; other names must be available.

    Raises
    ------
    ValueError
        For an unknown device string or a device this machine does not have.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {name!r}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} is not available: torch.cuda.is_available() is False")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} is not available: this machine has {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r} is not available: torch.backends.mps.is_available() is False")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    return device


def prepare_run_dir(out: str | os.PathLike, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Make sure ``out`` can take a new run (or holds one to resume).

    A fresh run refuses a folder that already holds run files unless ``overwrite`` is set, in
    which case it deletes only those files (and stale temporary files), nothing else.

    Raises
    ------
    FileExistsError
        A fresh run into a folder holding a run, without ``overwrite``.
    FileNotFoundError
        ``resume`` without ``out/last.pt``.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if resume:
        if not (out / "last.pt").is_file():
            raise FileNotFoundError(f"{out / 'last.pt'}: no such file, nothing to resume (run without --resume)")
        return out
    present = [name for name in RUN_FILES if (out / name).exists()]
    if present and not overwrite:
        raise FileExistsError(f"{out} already holds a run ({', '.join(present)}); pass --overwrite to replace "
                              "it or --resume to continue it")
    if present:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        for stale in out.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


# ------------------------------------------------------------------------------ losses and states


def _per_sample_loss(kind: str, output: Tensor, target: Tensor) -> Tensor:
    """Loss of every sample of one task, shape (n,); losses run in float32 even under bf16."""
    output = output.float()
    if kind in ("binary", "multilabel"):
        loss = F.binary_cross_entropy_with_logits(output, target.float().reshape(output.shape), reduction="none")
        return loss.reshape(output.shape[0], -1).mean(1)
    if kind == "multiclass":
        return F.cross_entropy(output, target.long().reshape(-1), reduction="none")
    if kind == "regression":
        loss = F.mse_loss(output, target.float().reshape(output.shape), reduction="none")
        return loss.reshape(output.shape[0], -1).mean(1)
    raise ValueError(f"unknown task kind {kind!r}")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state(device: torch.device) -> dict:
    bit_generator, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"bit_generator": str(bit_generator), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
    }


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["bit_generator"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and state.get("cuda"):
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value: Any) -> Any:
    """Metrics as JSON-able plain values (tensors and numpy scalars become floats)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (Tensor, np.generic)):
        return value.item()
    return value


def _write_jsonl(path: Path, records: list[dict]) -> None:
    text = "".join(json.dumps(record) + "\n" for record in records)
    atomic_write(path, lambda fh: fh.write(text.encode()))
