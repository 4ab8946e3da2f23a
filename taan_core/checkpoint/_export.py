"""The ``.safetensors`` export of a checkpoint's analysis part (no pickle at all), and its
reading back (``load_checkpoint`` calls :func:`_load_safetensors`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from taan_core._atomic import atomic_write
from taan_core.checkpoint._history import history_value
from taan_core.checkpoint._reference import import_state_dict
from taan_core.checkpoint._schema import (
    _SAFETENSORS_KEY,
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    Checkpoint,
    _fail,
    _first_line,
    _parse,
    _Parsed,
)

__all__ = ["export_safetensors"]


def export_safetensors(checkpoint: Checkpoint, path: str | os.PathLike) -> Path:
    """Write the analysis part of a checkpoint as ``.safetensors`` (no pickle at all).

    Tensors are stored as ``layers.{i}.alpha``, ``layers.{i}.hinges``, ``layers.{i}.preact_mean``,
    ``layers.{i}.preact_std``, and the history stacked as in schema v2, ``history.alphas.{i}``
    (K, T, M) and ``history.hinges.{i}`` (K, M); task and layer names, running statistics, the
    history's epochs and steps, metrics and data (planted groups) travel as JSON in the metadata
    entry ``"taan"``. (Exports of schema v1 stored ``history.{k}.alphas.{i}``; they still load.) ``load_checkpoint`` reads the file back. The write is atomic.

    Parameters
    ----------
    checkpoint : Checkpoint
        A loaded checkpoint.
    path : path-like
        Destination file (``.safetensors``).
    """
    from safetensors.torch import save

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
    history = history_value(checkpoint.history, [tuple(layer.alpha.shape) for layer in checkpoint.layers])
    for i, (a, b) in enumerate(zip(history.pop("alphas"), history.pop("hinges"))):
        tensors[f"history.alphas.{i}"] = a.contiguous()
        tensors[f"history.hinges.{i}"] = b.contiguous()
    history_meta = {key: value.tolist() if isinstance(value, Tensor) else value for key, value in history.items()}
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


def _load_safetensors(path: Path) -> tuple[_Parsed, dict | None]:
    """The checked content of a .safetensors file, and the checkpoint dictionary of a reference
    model it holds (None for taan's own exports, which carry no model)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise _fail(path, "", f"expected a readable .safetensors file ({_first_line(err)})") from err
    if _SAFETENSORS_KEY not in metadata:
        # A safetensors file without our metadata may still be a bare state_dict.
        return import_state_dict(tensors, path)
    try:
        meta = json.loads(metadata[_SAFETENSORS_KEY])
    except json.JSONDecodeError as err:
        raise _fail(path, f"metadata.{_SAFETENSORS_KEY}", f"expected JSON ({_first_line(err)})") from err
    if not isinstance(meta, dict):
        raise _fail(path, f"metadata.{_SAFETENSORS_KEY}", "expected a JSON object")
    raw = {key: meta.get(key) for key in ("format", "version", "task_names", "layer_names", "metrics", "data")}
    layers = []
    for i, layer in enumerate(meta.get("layers") or []):
        entry = dict(layer) if isinstance(layer, dict) else {}
        for key in ("alpha", "hinges", "preact_mean", "preact_std"):
            name = f"layers.{i}.{key}"
            if name in tensors:
                entry[key] = tensors[name]
            elif key in ("alpha", "hinges"):
                raise _fail(path, name, "missing tensor")
        layers.append(entry)
    raw.update(layers=layers, history=_exported_history(meta, tensors, len(layers), path), model={"class": "", "config": {}, "state_dict": {}},
               epoch=meta.get("epoch", 0), step=meta.get("step", 0))
    return _parse(raw, path), None


def _exported_history(meta: dict, tensors: dict[str, Tensor], num_layers: int, path: Path) -> Any:
    """The ``history`` of an export in its schema's layout: stacked (v2), or per epoch (v1)."""
    value = meta.get("history")
    if meta.get("version") == 1:
        history = []
        for k, entry in enumerate(value or []):
            entry = dict(entry) if isinstance(entry, dict) else {}
            for key in ("alphas", "hinges"):
                entry[key] = [tensors.get(f"history.{k}.{key}.{i}") for i in range(num_layers)]
                if any(t is None for t in entry[key]):
                    raise _fail(path, f"history.{k}.{key}", "missing tensor")
            history.append(entry)
        return history
    if not isinstance(value, dict):
        raise _fail(path, f"metadata.{_SAFETENSORS_KEY}.history", "expected a JSON object with epoch and step")
    history = dict(value)
    for key in ("epoch", "step"):
        numbers = history.get(key)
        if not isinstance(numbers, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
            raise _fail(path, f"metadata.{_SAFETENSORS_KEY}.history.{key}", "expected a list of ints")
        history[key] = torch.tensor(numbers, dtype=torch.int64)
    for key in ("alphas", "hinges"):
        history[key] = [tensors.get(f"history.{key}.{i}") for i in range(num_layers)]
        if any(t is None for t in history[key]):
            raise _fail(path, f"history.{key}", "missing tensor")
    return history
