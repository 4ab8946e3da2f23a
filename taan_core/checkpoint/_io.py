"""Build, save and load checkpoint files; rebuild their models (the package docstring says what a
checkpoint is)."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from taan_core._atomic import atomic_write
from taan_core.checkpoint._export import _load_safetensors
from taan_core.checkpoint._history import history_value, metrics_records, metrics_value
from taan_core.checkpoint._schema import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    Checkpoint,
    _fail,
    _first_line,
    _parse,
    _Parsed,
)

__all__ = ["Checkpoint", "build_checkpoint", "layer_snapshot", "load_checkpoint", "model_from_checkpoint", "save",
           "save_checkpoint", "validate_checkpoint"]

_PLAIN_SCALARS = (str, int, float, bool, type(None))
# The first bytes of the file formats that load_checkpoint tells apart.
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"


# ----------------------------------------------------------------------------------------------
# building and saving


def _cpu(t: Tensor) -> Tensor:
    return t.detach().to("cpu", copy=True).contiguous()


def layer_snapshot(model: nn.Module, *, copy: bool = True) -> tuple[list[Tensor], list[Tensor]]:
    """Copies of every adaptive layer's alpha (T, M) and hinges (M,), on CPU, in depth order.

    ``model`` is any module holding task-adaptive activations (:func:`adaptive_layers`).
    ``copy=False`` gives the detached parameters themselves, on their device, for a caller that
    copies them at once (``History.append``).
    """
    from taan_core.nn.layers import _layers_of

    layers = _layers_of(model)
    take = _cpu if copy else Tensor.detach
    return [take(act.alpha) for _, act in layers], [take(act.hinges) for _, act in layers]


def _layer_dict(name: str, act: nn.Module) -> dict:
    record: dict[str, Any] = {"name": name, "alpha": _cpu(act.alpha), "hinges": _cpu(act.hinges),
                              "preact_mean": None, "preact_std": None,
                              "preact_mean_overall": None, "preact_std_overall": None}
    if hasattr(act, "preact_mean") and hasattr(act, "preact_var"):
        record["preact_mean"] = _cpu(act.preact_mean).float()
        record["preact_std"] = _cpu(act.preact_var).float().clamp_min(0).sqrt()
    if hasattr(act, "measure"):
        mu, sigma = act.measure(None)
        record["preact_mean_overall"] = float(mu)
        record["preact_std_overall"] = float(sigma)
    return record


def _model_record(model: nn.Module) -> tuple[dict, str | None]:
    """``{"class", "module", "config", "state_dict"}`` of a model, and why it cannot be rebuilt
    (None when ``model_from_checkpoint`` can rebuild it)."""
    from taan_core.models import MODELS

    cls = type(model)
    config = getattr(model, "config", None)
    is_config = dataclasses.is_dataclass(config) and not isinstance(config, type)
    record = {"class": cls.__name__, "module": cls.__module__,
              "config": dataclasses.asdict(config) if is_config else {},
              "state_dict": {k: _cpu(v) for k, v in model.state_dict().items()}}
    why = None
    if cls not in MODELS.values():
        why = f"{cls.__module__}.{cls.__qualname__} is not a model of taan_core.models"
    elif not is_config:
        why = f"{cls.__name__} has no dataclass config"
    return record, why


def build_checkpoint(
    model: nn.Module,
    *,
    task_names: Sequence[str] | None = None,
    data: Mapping[str, Any] | None = None,
    history: Sequence[Mapping[str, Any]] = (),
    metrics: Sequence[Mapping[str, Any]] = (),
    epoch: int = 0,
    step: int = 0,
    optimizer: Mapping[str, Any] | None = None,
    scheduler: Mapping[str, Any] | None = None,
    rng: Mapping[str, Any] | None = None,
    sampler: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """Gather a checkpoint dictionary from any module with task-adaptive activations.

    Parameters
    ----------
    model : nn.Module
        Any module; its task-adaptive activations are found by type (:func:`adaptive_layers`)
        and its ``state_dict()`` is stored whole. A model of :mod:`taan_core.models` (with its
        dataclass ``config``) can be rebuilt from the file by ``model_from_checkpoint``; for any
        other module a ``UserWarning`` says that only the weights and the activations are kept.
        A ``torch.compile`` or DDP wrapper is looked through.
    task_names : sequence of str, optional
        T task names; must match the number of tasks of every adaptive layer. Default
        ``task_0``, ``task_1``, ... after the layers' T.
    data : mapping, optional
        ``{"name": str, "config": dict, "groups": list of lists of int or None}``.
    history : History, or sequence of dicts
        Per-epoch layer snapshots (see ``docs/checkpoint-format.md``): a :class:`History`, or the
        dicts ``{"epoch", "step", "alphas": [(T, M) per layer], "hinges": [(M,) per layer]}``;
        stored stacked (schema v2).
    metrics : MetricsLog, or sequence of dicts
        Per-epoch metrics; stored as one JSON text (schema v2), so numbers held as tensors
        become JSON numbers and the dicts must hold only JSON values.
    epoch, step : int
        Completed epochs and optimiser steps.
    optimizer, scheduler, rng, sampler : mappings, optional
        State for resuming training (``state_dict()`` outputs and RNG states).
    extra : mapping, optional
        Further plain entries stored under ``"extra"`` (e.g. the training configuration).

    Returns
    -------
    dict
        Only tensors and plain types; pass it to ``save_checkpoint``.
    """
    return _build(model, task_names=task_names, data=data, history=history, metrics=metrics, epoch=epoch,
                  step=step, optimizer=optimizer, scheduler=scheduler, rng=rng, sampler=sampler, extra=extra,
                  stacklevel=3)


def _build(model: nn.Module, *, task_names, data, history, metrics, epoch, step, optimizer, scheduler, rng,
           sampler, extra, stacklevel: int) -> dict:
    from taan_core.nn.layers import _layers_of, _unwrap

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    acts = _layers_of(model)
    model = _unwrap(model)
    layers = [_layer_dict(name, act) for name, act in acts]
    model_record, why = _model_record(model)
    if why is not None and not layers:
        raise ValueError(f"{type(model).__name__} holds no task-adaptive activation (TaskAdaptiveActivation, "
                         "TALinear, TAConv2d or taan_core.taanify), so there is nothing for taan-viz to read")
    if task_names is None:
        if not layers:
            raise ValueError(f"task_names is needed: {type(model).__name__} has no task-adaptive activations "
                             "to count the tasks from")
        task_names = [f"task_{t}" for t in range(int(layers[0]["alpha"].shape[0]))]
    if why is not None:
        warnings.warn(f"{why}: the checkpoint keeps its weights and task-adaptive activations (taan-viz reads "
                      "them), but taan-core eval and model_from_checkpoint cannot rebuild it; rebuild it in your "
                      "code and load checkpoint.raw['model']['state_dict']", UserWarning, stacklevel=stacklevel)
    data = dict(data) if data is not None else {"name": "unknown", "config": {}, "groups": None}
    data.setdefault("config", {})
    data.setdefault("groups", None)
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "task_names": [str(n) for n in task_names],
        "layer_names": [layer["name"] for layer in layers],
        "layers": layers,
        "history": history_value(history, [tuple(layer["alpha"].shape) for layer in layers]),
        "model": model_record,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "rng": rng,
        "sampler": sampler,
        "epoch": int(epoch),
        "step": int(step),
        "metrics": metrics_value(metrics),
        "data": data,
    }
    if extra is not None:
        ckpt["extra"] = dict(extra)
    return ckpt


def _current_layout(raw: dict) -> dict:
    """A loaded checkpoint dictionary in this schema's layout (v1's history and metrics become
    v2's), so that a run resumed from an older file writes only current files."""
    if raw.get("version") == CHECKPOINT_VERSION:
        return raw
    shapes = [tuple(layer["alpha"].shape) for layer in raw["layers"]]
    return dict(raw, version=CHECKPOINT_VERSION, history=history_value(raw["history"], shapes),
                metrics=metrics_value(metrics_records(raw["metrics"])))


def _check_plain(obj: Any, where: str) -> None:
    """Raise TypeError if ``obj`` holds anything torch.load(weights_only=True) would refuse."""
    if isinstance(obj, Tensor):
        return
    if isinstance(obj, _PLAIN_SCALARS):
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"checkpoint key at {where} must be str or int, got {type(key).__name__}")
            _check_plain(value, f"{where}.{key}" if where else str(key))
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
        return
    raise TypeError(f"checkpoint field {where or '<root>'} must hold only tensors and plain types, "
                    f"got {type(obj).__module__}.{type(obj).__name__}")


def _plain_copy(obj: Any) -> Any:
    """Turn Mapping subclasses (OrderedDict, defaultdict) into dicts, so the file is plain."""
    if isinstance(obj, Mapping):
        return {k: _plain_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain_copy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain_copy(v) for v in obj)
    return obj


def _check_finite_weights(obj: Mapping[str, Any], path: Path) -> None:
    """Refuse NaN or inf in the model's weights and the layers' coordinates, whatever the model:
    a diverged run must never leave a checkpoint that looks like a result."""
    model = obj.get("model")
    state = model.get("state_dict") if isinstance(model, Mapping) else None
    tensors = [(f"model.state_dict.{name}", value) for name, value in (state or {}).items()]
    layers = obj.get("layers")
    for i, layer in enumerate(layers if isinstance(layers, (list, tuple)) else []):
        if isinstance(layer, Mapping):
            tensors += [(f"layers[{i}].{key}", layer.get(key)) for key in ("alpha", "hinges")]
    for field, value in tensors:
        if isinstance(value, Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise _fail(path, field, "refusing to write non-finite values (NaN or inf): the training diverged")


def save_checkpoint(obj: Mapping[str, Any], path: str | os.PathLike, *, validate: bool = True) -> Path:
    """Write a checkpoint dictionary atomically.

    The dictionary is written to a temporary file in the destination folder, flushed, fsynced,
    and moved over ``path`` with ``os.replace``: readers see the old file or the new one, never a
    partial one, even if the process dies mid-write.

    Parameters
    ----------
    obj : mapping
        A checkpoint dictionary (see ``build_checkpoint``); only tensors and plain types.
    path : path-like
        Destination; its folder is created if missing.
    validate : bool
        Check the schema before writing (default), so an invalid file is never produced.
        Non-finite model weights or layer coordinates are refused either way.

    Returns
    -------
    Path
        The destination path.
    """
    path = Path(path)
    _check_plain(obj, "")
    _check_finite_weights(obj, path)
    obj = _plain_copy(obj)
    if validate:
        _parse(obj, path)
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def _plain_metrics(value: Any, where: str) -> Any:
    """Metrics as plain values: 0-d tensors and numpy scalars become Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _plain_metrics(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_metrics(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    if isinstance(value, _PLAIN_SCALARS):
        return value
    raise TypeError(f"{where} must hold numbers, strings, lists and dicts, got {type(value).__name__}")


def save(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    task_names: Sequence[str] | None = None,
    epoch: int = 0,
    step: int = 0,
    metrics: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    data: Mapping[str, Any] | None = None,
) -> Path:
    """Save a checkpoint of any module with task-adaptive activations, in one call.

    Meant for a training loop of your own: ``taan_core.save(model, "run/checkpoint.pt",
    task_names=names, epoch=epoch, metrics={"val_loss": 0.31})``; then ``taan-viz heatmap
    run/checkpoint.pt`` draws its layers. The file is a checkpoint written atomically
    (``build_checkpoint`` then ``save_checkpoint``); the module's whole ``state_dict()`` is in it.

    Parameters
    ----------
    model : nn.Module
        Any module holding task-adaptive activations (``TALinear``, ``TAConv2d``,
        ``TaskAdaptiveActivation`` or a network changed by :func:`taan_core.taanify`); a
        ``torch.compile`` or DDP wrapper is looked through. For a module that is not a model of
        :mod:`taan_core.models` a ``UserWarning`` says that ``taan-core eval`` cannot rebuild it.
    path : path-like
        Destination ``.pt`` file; its folder is created if missing.
    task_names : sequence of str, optional
        T task names (default ``task_0``, ``task_1``, ...).
    epoch, step : int
        Completed epochs and optimiser steps.
    metrics : mapping or sequence of mappings, optional
        This epoch's metrics (a dict, stored as ``{"epoch": epoch, **metrics}``) or the list of
        every epoch's; numbers, strings, lists and dicts (tensors of one element and numpy
        scalars become numbers).
    data : mapping, optional
        ``{"name": str, "config": dict}`` of the data set, when it is one of ``taan_core.data``.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ValueError
        If the module holds no task-adaptive activation, or task_names does not fit its layers.
    """
    if metrics is None:
        records = []
    elif isinstance(metrics, Mapping):
        records = [{"epoch": int(epoch), **_plain_metrics(metrics, "metrics")}]
    elif isinstance(metrics, (list, tuple)) and all(isinstance(m, Mapping) for m in metrics):
        records = _plain_metrics(metrics, "metrics")
    else:
        raise TypeError(f"metrics must be a dict or a list of dicts, got {type(metrics).__name__}")
    from taan_core.nn.layers import _layers_of, _unwrap

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not _layers_of(model):
        raise ValueError(f"{type(_unwrap(model)).__name__} holds no task-adaptive activation (TaskAdaptiveActivation, "
                         "TALinear, TAConv2d or taan_core.taanify), so there is nothing for taan-viz to read")
    obj = _build(model, task_names=task_names, data=data, history=(), metrics=records, epoch=epoch, step=step,
                 optimizer=None, scheduler=None, rng=None, sampler=None, extra=None, stacklevel=3)
    return save_checkpoint(obj, path)


# ----------------------------------------------------------------------------------------------
# loading


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _unsafe_reason(err: BaseException) -> str:
    # torch's message is a paragraph; the line naming the refused global is the useful part.
    for line in str(err).splitlines():
        if "GLOBAL" in line or "Unsupported" in line:
            return line.strip().rstrip(".")
    return _first_line(err, 100)


def _checkpoint(parsed: _Parsed, raw: dict | None, path: Path, sha: str) -> Checkpoint:
    return Checkpoint(path=path, sha256=sha, format_version=parsed.format_version, task_names=parsed.task_names,
                      layers=parsed.layers, history=parsed.history, metrics=parsed.metrics, data=parsed.data, raw=raw,
                      not_rebuilt=parsed.not_rebuilt)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and check a checkpoint without running any code from the file.

    Parameters
    ----------
    path : path-like
        A ``.pt`` checkpoint (schema v2 or v1), a ``.safetensors`` export (``export_safetensors``), a bare
        state_dict of the reference TAAN code (``<layer>.alpha`` (T, M) and ``<layer>.basis``
        (1, M); tasks are then named task_0, task_1, ...), or a run folder holding
        ``checkpoint.pt``.

    Returns
    -------
    Checkpoint

    Raises
    ------
    CheckpointError
        One line naming the file, the field and what was expected: missing or unreadable
        files, other formats, other schema versions, missing keys, wrong types or shapes.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists():
        if path.is_symlink():
            # exists() is False for a link loop and a dangling link alike; say which.
            try:
                os.stat(path)
            except OSError as err:
                if err.errno == errno.ELOOP:
                    raise _fail(path, "", "a loop of symbolic links, which leads to no file") from None
            raise _fail(path, "", f"a symbolic link to {os.readlink(path)}, which does not exist")
        raise _fail(path, "", "no such file")
    if not path.is_file():
        raise _fail(path, "", "expected a regular file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
        sha = _sha256(path)
    except OSError as err:
        raise _fail(path, "", f"cannot read the file ({_first_line(err)})") from err
    if not head:
        raise _fail(path, "", "expected a checkpoint, got an empty file")
    if head.lstrip()[:1] in (b"{", b"["):
        raise _fail(path, "", "expected a torch checkpoint (.pt) or .safetensors file, got a JSON/text file")
    if not head.startswith(_ZIP_MAGIC) and _looks_like_safetensors(head, path):
        return _checkpoint(*_load_safetensors(path), path, sha)
    if head.startswith(_ZIP_MAGIC) and not zipfile.is_zipfile(path):
        raise _fail(path, "", "expected a complete torch checkpoint, got a truncated or damaged zip archive")
    if not head.startswith(_ZIP_MAGIC) and head[:1] != _PICKLE_MAGIC:
        raise _fail(path, "", "expected a torch checkpoint (.pt) or .safetensors file, got an unrecognised format")
    try:
        with warnings.catch_warnings():
            # Old pickle protocols draw a harmless warning from the restricted unpickler.
            warnings.simplefilter("ignore", UserWarning)
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _fail(path, "", "refused to load: the file holds objects other than tensors and plain "
                    f"types, which could run code when unpickled ({_unsafe_reason(err)})") from err
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, UnicodeDecodeError) as err:
        raise _fail(path, "", f"expected a torch checkpoint, could not read it ({_first_line(err, 100)})") from err
    except Exception as err:  # noqa: BLE001 - any other failure of a foreign file is still a user error
        raise _fail(path, "", f"expected a torch checkpoint, could not read it ({type(err).__name__}: "
                    f"{_first_line(err, 100)})") from err
    _check_storages(raw, path)
    if isinstance(raw, Mapping) and "format" in raw:
        return _checkpoint(_parse(raw, path), dict(raw), path, sha)
    if isinstance(raw, Mapping):
        from taan_core.checkpoint._reference import import_state_dict

        return _checkpoint(*import_state_dict(raw, path), path, sha)
    raise _fail(path, "", f"expected a checkpoint dictionary, got {type(raw).__name__}")


def _tensors(obj: Any, where: str):
    """(field, tensor) of every tensor in a loaded object, depth first."""
    stack = [(where, obj)]
    while stack:
        where, obj = stack.pop()
        if isinstance(obj, Tensor):
            yield where, obj
        elif isinstance(obj, Mapping):
            stack += [(f"{where}.{k}" if where else str(k), v) for k, v in obj.items()]
        elif isinstance(obj, (list, tuple)):
            stack += [(f"{where}[{i}]", v) for i, v in enumerate(obj)]


def _check_storages(raw: Any, path: Path) -> None:
    """Refuse tensors that declare more elements than their storage holds, before any is used.

    A file may store a tensor as a view of a storage of a few bytes with a shape of billions of
    elements (stride 0); the view costs nothing until something copies it (``.to``,
    ``.contiguous``, ``load_state_dict``), then it asks for the declared size. Every tensor must
    have a byte of storage for each byte it declares, and what views of shared storages would
    add when copied must fit in the memory limit.
    """
    from taan_core._memory import format_bytes, memory_limit

    declared = 0
    storages: dict[int, int] = {}
    for field, t in _tensors(raw, ""):
        size = t.numel() * t.element_size()
        storage = t.untyped_storage()
        have = storage.nbytes() - t.storage_offset() * t.element_size()
        if size > have:
            raise _fail(path, field, f"expected a tensor whose storage holds its {t.numel():,} elements of shape "
                        f"{tuple(t.shape)}, got a view of {max(have, 0):,} bytes declaring {size:,}")
        declared += size
        storages[storage.data_ptr() if storage.nbytes() else id(storage)] = storage.nbytes()
    extra = declared - sum(storages.values())
    limit, source = memory_limit()
    if limit is not None and extra > limit:
        raise _fail(path, "", f"expected tensors with storages of their own, got views of shared storages that "
                    f"declare {format_bytes(extra)} more than they hold, beyond the limit of {format_bytes(limit)} "
                    f"({source})")


def _looks_like_safetensors(head: bytes, path: Path) -> bool:
    # A safetensors file starts with an 8-byte little-endian header length, then a JSON object.
    if len(head) < 9:
        return False
    size = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < size <= path.stat().st_size - 8


def validate_checkpoint(obj: Mapping[str, Any], name: str = "<checkpoint>") -> None:
    """Check a checkpoint dictionary in memory; raise CheckpointError like ``load_checkpoint``."""
    _parse(obj, Path(name))


# ----------------------------------------------------------------------------------------------
# model rebuilding


def model_from_checkpoint(checkpoint: Checkpoint) -> nn.Module:
    """Rebuild the trained model of a checkpoint (CPU, eval mode).

    Works for checkpoints of :mod:`taan_core.models` models and for imported state_dicts of the
    reference TAAN code whose layout is a whole model (see ``docs/checkpoint-format.md``).

    Raises
    ------
    CheckpointError
        One line: for exports and imports that carry no model, for a module that is not a model
        of :mod:`taan_core.models` (saved from a user's own network), or when the stored config
        or weights do not fit.
    """
    from taan_core.models import model_from_config

    raw = checkpoint.raw
    if raw is None or not raw.get("model", {}).get("class"):
        why = f" (not a whole reference model: {checkpoint.not_rebuilt})" if checkpoint.not_rebuilt else ""
        raise _fail(checkpoint.path, "model", "expected a full taan checkpoint with a model; imports and "
                    f".safetensors exports hold only the activation coordinates{why}")
    info = raw["model"]
    # Files written before "module" was stored hold taan_core models only.
    module = info.get("module", "taan_core.models")
    if not (isinstance(module, str) and module.startswith("taan_core.")):
        raise _fail(checkpoint.path, "model.class", f"cannot rebuild {module}.{info['class']}, which is not a model "
                    "of taan_core.models; build it in your code and load checkpoint.raw['model']['state_dict']")
    try:
        model = model_from_config(info["class"], dict(info["config"]))
    except (KeyError, TypeError, ValueError) as err:
        raise _fail(checkpoint.path, "model.config", f"cannot rebuild {info['class']} ({_first_line(err, 120)})") from err
    try:
        model.load_state_dict(info["state_dict"])
    except RuntimeError as err:
        raise _fail(checkpoint.path, "model.state_dict", f"does not fit {info['class']} ({_first_line(err, 120)})") from err
    return model.eval()
