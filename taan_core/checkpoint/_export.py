"""The ``.safetensors`` export of a checkpoint's analysis part (no pickle at all).

``load_checkpoint`` reads these files back (``_schema._load_safetensors``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from taan_core._atomic import atomic_write
from taan_core.checkpoint._schema import _SAFETENSORS_KEY, CHECKPOINT_FORMAT, CHECKPOINT_VERSION

if TYPE_CHECKING:
    from taan_core.checkpoint import Checkpoint

__all__ = ["export_safetensors"]


def export_safetensors(checkpoint: "Checkpoint", path: str | os.PathLike) -> Path:
    """Write the analysis part of a checkpoint as ``.safetensors`` (no pickle at all).

    Tensors are stored as ``layers.{i}.alpha``, ``layers.{i}.hinges``, ``layers.{i}.preact_mean``,
    ``layers.{i}.preact_std``, ``history.{k}.alphas.{i}`` and ``history.{k}.hinges.{i}``; task and
    layer names, running statistics, metrics and data (planted groups) travel as JSON in the
    metadata entry ``"taan"``. ``load_checkpoint`` reads the file back. The write is atomic.

    Parameters
    ----------
    checkpoint : Checkpoint
        A loaded checkpoint.
    path : path-like
        Destination file (``.safetensors``).
    """
    from safetensors.torch import save

    from taan_core.checkpoint._io import Checkpoint  # here: _io imports this module

    if not isinstance(checkpoint, Checkpoint):
        raise TypeError(f"checkpoint must be a Checkpoint, got {type(checkpoint).__name__}")
    path = Path(path)
    tensors: dict[str, Tensor] = {}
    layers_meta = []
    for i, layer in enumerate(checkpoint.layers):
        tensors[f"layers.{i}.alpha"] = layer.alpha.contiguous()
        tensors[f"layers.{i}.hinges"] = layer.hinges.contiguous()
        if layer.preact_mean is not None:
            tensors[f"layers.{i}.preact_mean"] = layer.preact_mean.contiguous()
        if layer.preact_std is not None:
            tensors[f"layers.{i}.preact_std"] = layer.preact_std.contiguous()
        layers_meta.append({"name": layer.name, "preact_mean_overall": layer.mu, "preact_std_overall": layer.sigma})
    history_meta = []
    for k, entry in enumerate(checkpoint.history):
        for i, (a, b) in enumerate(zip(entry["alphas"], entry["hinges"])):
            tensors[f"history.{k}.alphas.{i}"] = a.contiguous()
            tensors[f"history.{k}.hinges.{i}"] = b.contiguous()
        history_meta.append({key: v for key, v in entry.items() if key not in ("alphas", "hinges")})
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "task_names": checkpoint.task_names,
        "layer_names": checkpoint.layer_names,
        "layers": layers_meta,
        "history": history_meta,
        "metrics": checkpoint.metrics,
        "data": checkpoint.data,
        "source_sha256": checkpoint.sha256,
    }
    content = save(tensors, metadata={_SAFETENSORS_KEY: json.dumps(meta, default=_json_default),
                                      "format": CHECKPOINT_FORMAT})
    return atomic_write(path, lambda fh: fh.write(content))


def _json_default(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in safetensors metadata")
