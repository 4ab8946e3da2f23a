"""The checkpoint's schema, field by field: the checks behind ``load_checkpoint``.

Schema v2 (written since the history became stacked) differs from v1 only in ``history``: one
(K, T, M) tensor a layer instead of a list of K per-epoch dicts. Both are read.

Every check raises ``CheckpointError`` with one line ``<file>: <field>: <what was expected>``.
The parsers return plain pieces (task names, ``LayerRecord`` objects, history, metrics, data);
``taan_core.checkpoint`` assembles them into a ``Checkpoint``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor

from taan_core.checkpoint._history import History, _decoded
from taan_core.errors import UserError

__all__: list[str] = []

CHECKPOINT_FORMAT = "taan-checkpoint"
CHECKPOINT_VERSION = 2
_READ_VERSIONS = (1, 2)
# Keys every checkpoint carries; the resume-only keys may also be None or absent in
# checkpoints made for analysis only (exports, hand-built files).
_REQUIRED_KEYS = ("format", "version", "task_names", "layer_names", "layers", "history", "model",
                  "epoch", "step", "metrics", "data")
_RESUME_KEYS = ("optimizer", "scheduler", "rng", "sampler")
_SAFETENSORS_KEY = "taan"


class CheckpointError(UserError):
    """A file that is not a valid taan checkpoint; the message is one line naming the file,
    the field and what was expected. A :class:`~taan_core.errors.UserError` (so a ValueError)."""


@dataclass(frozen=True)
class LayerRecord:
    """One task-adaptive layer as stored in a checkpoint.

    Attributes
    ----------
    name : str
        Qualified module name of the layer's activation (e.g. ``"blocks.0.act"``).
    alpha : Tensor of shape (T, M), float64
        Task coordinates on the hinge basis.
    hinges : Tensor of shape (M,), float64
        Hinge positions b.
    mu, sigma : float
        Overall running mean and standard deviation of the layer's pre-activations: the
        Gaussian measure N(mu, sigma^2) of the function space. 0.0 and 1.0 when not recorded.
    preact_mean, preact_std : Tensor of shape (T,), float64, or None
        The same statistics per task, when recorded.
    """

    name: str
    alpha: Tensor
    hinges: Tensor
    mu: float = 0.0
    sigma: float = 1.0
    preact_mean: Tensor | None = None
    preact_std: Tensor | None = None

    @property
    def num_tasks(self) -> int:
        return int(self.alpha.shape[0])

    @property
    def num_hinges(self) -> int:
        return int(self.alpha.shape[1])



class _Parsed(NamedTuple):
    """The checked content of a checkpoint, ready to become a ``Checkpoint``."""

    format_version: int
    task_names: list[str]
    layers: list[LayerRecord]
    history: Sequence[dict]
    metrics: list[dict]
    data: dict
    # For an imported state_dict that is not a whole reference model: why it cannot be rebuilt.
    not_rebuilt: str | None = None


def _fail(path: Path, field: str, expected: str) -> CheckpointError:
    message = f"{path}: {field}: {expected}" if field else f"{path}: {expected}"
    return CheckpointError(" ".join(message.split()))


def _shape(t: Tensor) -> str:
    dims = tuple(int(s) for s in t.shape)
    return "(" + ", ".join(map(str, dims)) + ("," if len(dims) == 1 else "") + ")"


def _first_line(err: BaseException, limit: int = 160) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _tensor(value: Any, path: Path, field: str, ndim: int, expected: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise _fail(path, field, f"expected a tensor of shape {expected}, got {type(value).__name__}")
    if value.ndim != ndim:
        raise _fail(path, field, f"expected shape {expected}, got {_shape(value)}")
    if not value.is_floating_point():
        raise _fail(path, field, f"expected a floating-point tensor, got {value.dtype}")
    value = value.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(value).all()):
        raise _fail(path, field, "expected finite values, got NaN or inf")
    return value


def _int(value: Any, path: Path, field: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(path, field, f"expected an int >= {minimum}, got {value!r}")
    return value


def _float_or_none(value: Any, path: Path, field: str, positive: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(path, field, f"expected a finite float or None, got {value!r}")
    if positive and value < 0:
        raise _fail(path, field, f"expected a float >= 0, got {value!r}")
    return float(value)


def _str_list(value: Any, path: Path, field: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise _fail(path, field, f"expected a list of str, got {type(value).__name__}")
    return list(value)


def _parse_layer(entry: Any, i: int, num_tasks: int, path: Path) -> LayerRecord:
    field = f"layers[{i}]"
    if not isinstance(entry, Mapping):
        raise _fail(path, field, f"expected a dict, got {type(entry).__name__}")
    for key in ("name", "alpha", "hinges"):
        if key not in entry:
            raise _fail(path, f"{field}.{key}", "missing key")
    if not isinstance(entry["name"], str):
        raise _fail(path, f"{field}.name", f"expected a str, got {type(entry['name']).__name__}")
    alpha = _tensor(entry["alpha"], path, f"{field}.alpha", 2, "(T, M)")
    if alpha.shape[0] != num_tasks:
        raise _fail(path, f"{field}.alpha",
                    f"expected shape (T, M) with T = len(task_names) = {num_tasks}, got {_shape(alpha)}")
    m = alpha.shape[1]
    hinges = _tensor(entry["hinges"], path, f"{field}.hinges", 1, "(M,)")
    if hinges.shape[0] != m:
        raise _fail(path, f"{field}.hinges",
                    f"expected shape (M,) with M = alpha.shape[1] = {m}, got {_shape(hinges)}")
    per_task = {}
    for key in ("preact_mean", "preact_std"):
        value = entry.get(key)
        if value is not None:
            value = _tensor(value, path, f"{field}.{key}", 1, "(T,)")
            if value.shape[0] != num_tasks:
                raise _fail(path, f"{field}.{key}", f"expected shape (T,) with T = {num_tasks}, got {_shape(value)}")
        per_task[key] = value
    if per_task["preact_std"] is not None and bool((per_task["preact_std"] < 0).any()):
        raise _fail(path, f"{field}.preact_std", "expected values >= 0")
    mu = _float_or_none(entry.get("preact_mean_overall"), path, f"{field}.preact_mean_overall")
    sigma = _float_or_none(entry.get("preact_std_overall"), path, f"{field}.preact_std_overall", positive=True)
    # A layer that never saw data (or a constant input) has no usable spread; the analysis then
    # falls back to the standard normal measure, as the reference code always does.
    if sigma is None or sigma <= 0.0:
        mu, sigma = (0.0 if mu is None else mu), 1.0
    return LayerRecord(name=entry["name"], alpha=alpha, hinges=hinges, mu=0.0 if mu is None else mu,
                       sigma=sigma, preact_mean=per_task["preact_mean"], preact_std=per_task["preact_std"])


def _parse_history(value: Any, layers: list[LayerRecord], path: Path) -> list[dict]:
    """Schema v2: ``{"epoch": (K,), "step": (K,), "alphas": [(K, T, M)], "hinges": [(K, M)]}``
    and optionally ``"extra"`` (K dicts); returned as a History (float64), which reads like the
    per-epoch dicts of v1."""
    if not isinstance(value, Mapping):
        raise _fail(path, "history", f"expected a dict of stacked snapshots (schema v2), got {type(value).__name__}")
    for key in ("epoch", "step", "alphas", "hinges"):
        if key not in value:
            raise _fail(path, f"history.{key}", "missing key")
    epochs = _int_vector(value["epoch"], path, "history.epoch")
    k = len(epochs)
    steps = _int_vector(value["step"], path, "history.step", k)
    stacked = {key: _layer_tensors(value[key], key, layers, path, "history", stacked=k) for key in ("alphas", "hinges")}
    notes = value.get("extra")
    if notes is None:
        notes = [{}] * k
    elif not isinstance(notes, (list, tuple)) or len(notes) != k or not all(isinstance(n, Mapping) for n in notes):
        raise _fail(path, "history.extra", f"expected a list of {k} dicts (one per snapshot)")
    # Per-epoch dicts are made when they are read: a save's check does not build K of them.
    return History._adopt(epochs, steps, stacked["alphas"], stacked["hinges"], notes)


def _layer_tensors(seq: Any, key: str, layers: list[LayerRecord], path: Path, field: str,
                   stacked: int | None = None) -> list[Tensor]:
    """A snapshot's ``alphas`` or ``hinges``: one tensor a layer, shaped like the layer's
    (T, M) or (M,), behind a leading K when the snapshots are ``stacked`` (schema v2; K given)."""
    lead = () if stacked is None else (stacked,)
    dims = ["K"] * len(lead) + (["T", "M"] if key == "alphas" else ["M"])
    expected = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
    if not isinstance(seq, (list, tuple)) or len(seq) != len(layers):
        got = len(seq) if isinstance(seq, (list, tuple)) else type(seq).__name__
        raise _fail(path, f"{field}.{key}", f"expected a list of {len(layers)} tensors (one per layer), got {got}")
    tensors = []
    for i, (t, layer) in enumerate(zip(seq, layers)):
        want = (*lead, *layer.alpha.shape) if key == "alphas" else (*lead, layer.num_hinges)
        t = _tensor(t, path, f"{field}.{key}[{i}]", len(want), expected)
        # An empty stacked history holds nothing to misread, whatever its trailing shape.
        if tuple(t.shape) != want and stacked != 0:
            like = f"like layers[{i}]" if stacked is None else \
                f"(K = len(history.epoch) = {stacked}, the rest like layers[{i}])"
            raise _fail(path, f"{field}.{key}[{i}]", f"expected shape {want} {like}, got {_shape(t)}")
        tensors.append(t)
    return tensors


def _parse_metrics(value: Any, path: Path) -> list[dict]:
    """JSON text of a list of per-epoch dicts (schema v2), or the list itself (v1)."""
    if isinstance(value, str):
        known = _decoded(value)
        try:
            value = known if known is not None else json.loads(value)
        except (ValueError, RecursionError) as err:  # RecursionError: a hostile nesting depth
            raise _fail(path, "metrics", f"expected the JSON text of a list of per-epoch dicts ({_first_line(err)})") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(m, Mapping) for m in value):
        raise _fail(path, "metrics", "expected a list of per-epoch dicts")
    return [dict(m) for m in value]


def _int_vector(value: Any, path: Path, field: str, length: int | None = None) -> list[int]:
    if not isinstance(value, Tensor) or value.ndim != 1 or value.is_floating_point() or value.is_complex() \
            or value.dtype == torch.bool:
        got = _shape(value) + f" {value.dtype}" if isinstance(value, Tensor) else type(value).__name__
        raise _fail(path, field, f"expected a 1-D integer tensor, got {got}")
    if length is not None and value.shape[0] != length:
        raise _fail(path, field, f"expected {length} values (one per snapshot), got {value.shape[0]}")
    if bool((value < 0).any()):
        raise _fail(path, field, "expected values >= 0")
    return [int(v) for v in value.tolist()]


def _parse_history_v1(value: Any, layers: list[LayerRecord], path: Path) -> list[dict]:
    """Schema v1: a list of per-epoch dicts ``{"epoch", "step", "alphas", "hinges"}``."""
    if not isinstance(value, (list, tuple)):
        raise _fail(path, "history", f"expected a list of dicts, got {type(value).__name__}")
    out = []
    for k, entry in enumerate(value):
        field = f"history[{k}]"
        if not isinstance(entry, Mapping):
            raise _fail(path, field, f"expected a dict, got {type(entry).__name__}")
        for key in ("epoch", "step", "alphas", "hinges"):
            if key not in entry:
                raise _fail(path, f"{field}.{key}", "missing key")
        parsed = dict(entry)
        parsed["epoch"] = _int(entry["epoch"], path, f"{field}.epoch")
        parsed["step"] = _int(entry["step"], path, f"{field}.step")
        for key in ("alphas", "hinges"):
            parsed[key] = _layer_tensors(entry[key], key, layers, path, field)
        out.append(parsed)
    return out


def _parse_data(value: Any, num_tasks: int, path: Path) -> dict:
    if not isinstance(value, Mapping):
        raise _fail(path, "data", f"expected a dict with name, config and groups, got {type(value).__name__}")
    if not isinstance(value.get("name"), str):
        raise _fail(path, "data.name", f"expected a str, got {value.get('name')!r}")
    config = value.get("config", {})
    if not isinstance(config, Mapping):
        raise _fail(path, "data.config", f"expected a dict, got {type(config).__name__}")
    groups = value.get("groups")
    if groups is not None:
        if not isinstance(groups, (list, tuple)):
            raise _fail(path, "data.groups", f"expected a list of per-layer lists or None, got {type(groups).__name__}")
        for l, row in enumerate(groups):
            ok = isinstance(row, (list, tuple)) and all(isinstance(g, int) and not isinstance(g, bool) for g in row)
            if not ok or len(row) != num_tasks:
                raise _fail(path, f"data.groups[{l}]", f"expected a list of {num_tasks} ints (one group id per task)")
        groups = [list(row) for row in groups]
    out = dict(value)
    out["config"] = dict(config)
    out["groups"] = groups
    return out


def _parse(raw: Any, path: Path) -> _Parsed:
    if not isinstance(raw, Mapping):
        raise _fail(path, "", f"expected a checkpoint dictionary, got {type(raw).__name__}")
    if raw.get("format") != CHECKPOINT_FORMAT:
        raise _fail(path, "format", f"expected {CHECKPOINT_FORMAT!r}, got {raw.get('format')!r}")
    version = raw.get("version")
    if isinstance(version, bool) or version not in _READ_VERSIONS:
        raise _fail(path, "version", f"expected format version {CHECKPOINT_VERSION} (or 1), got {version!r} "
                    "(written by a different taan version)")
    for key in _REQUIRED_KEYS:
        if key not in raw:
            raise _fail(path, key, "missing key")
    task_names = _str_list(raw["task_names"], path, "task_names")
    if not task_names:
        raise _fail(path, "task_names", "expected at least one task name")
    if len(set(task_names)) != len(task_names):
        raise _fail(path, "task_names", "expected distinct task names")
    layer_names = _str_list(raw["layer_names"], path, "layer_names")
    if not isinstance(raw["layers"], (list, tuple)):
        raise _fail(path, "layers", f"expected a list of dicts, got {type(raw['layers']).__name__}")
    layers = [_parse_layer(entry, i, len(task_names), path) for i, entry in enumerate(raw["layers"])]
    if layer_names != [layer.name for layer in layers]:
        raise _fail(path, "layer_names", f"expected the names of layers {[layer.name for layer in layers]}, got {layer_names}")
    parse_history = _parse_history_v1 if version == 1 else _parse_history
    history = parse_history(raw["history"], layers, path)
    metrics = _parse_metrics(raw["metrics"], path)
    model = raw["model"]
    if not isinstance(model, Mapping):
        raise _fail(path, "model", f"expected a dict with class, config and state_dict, got {type(model).__name__}")
    for key, kind in (("class", str), ("config", Mapping), ("state_dict", Mapping)):
        if not isinstance(model.get(key), kind):
            raise _fail(path, f"model.{key}", f"expected a {kind.__name__}, got {type(model.get(key)).__name__}")
    _int(raw["epoch"], path, "epoch")
    _int(raw["step"], path, "step")
    for key in _RESUME_KEYS:
        if raw.get(key) is not None and not isinstance(raw[key], Mapping):
            raise _fail(path, key, f"expected a dict or None, got {type(raw[key]).__name__}")
    data = _parse_data(raw["data"], len(task_names), path)
    return _Parsed(version, task_names, layers, history, metrics, data)


@dataclass(frozen=True)
class Checkpoint:
    """A loaded and checked checkpoint.

    Attributes
    ----------
    path : Path
        The file it was read from.
    sha256 : str
        Hex digest of the file's bytes (identifies the exact file in reports).
    format_version : int
        Schema version: 2, or 1 for files written before the history was stacked, or 0 for an
        imported bare reference state_dict.
    task_names : list of str
        T task names.
    layers : list of LayerRecord
        The L task-adaptive layers in depth order.
    history : sequence of dict
        Per-epoch snapshots ``{"epoch", "step", "alphas": [(T, M) per layer], "hinges": [(M,)]}``
        (float64 tensors), oldest first; empty when not recorded. A :class:`History` (its
        tensors are views of one stacked tensor a layer) for schema v2, a list for v1.
    metrics : list of dict
        Per-epoch training and validation metrics, oldest first.
    data : dict
        ``{"name", "config", "groups"}``: the data set and, for planted data, the ground-truth task
        groups of every teacher layer (``groups[l][t]``), else None.
    raw : dict or None
        The loaded schema-v1 dictionary (with model, optimizer, ... for resume); None for imports.
    not_rebuilt : str or None
        For an imported state_dict whose layout is not a whole reference model: why
        ``model_from_checkpoint`` cannot rebuild it.
    """

    path: Path
    sha256: str
    format_version: int
    task_names: list[str]
    layers: list[LayerRecord]
    history: Sequence[dict]
    metrics: list[dict]
    data: dict
    raw: dict | None = None
    not_rebuilt: str | None = None

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @property
    def groups(self) -> list[list[int]] | None:
        """Planted ground-truth groups ``groups[l][t]``, or None."""
        return self.data.get("groups")

    # The schema-v1 dictionary is nested and optional (imports have none); these answer the
    # questions callers ask of it, so nobody reaches into ``raw`` with chains of ``.get``.

    @property
    def epoch(self) -> int | None:
        """Completed epochs when the checkpoint was written, or None for an import."""
        value = (self.raw or {}).get("epoch")
        return None if value is None else int(value)

    @property
    def step(self) -> int | None:
        """Completed optimiser steps, or None for an import."""
        value = (self.raw or {}).get("step")
        return None if value is None else int(value)

    @property
    def model_class(self) -> str | None:
        """Class name of the stored model (``"TAAN"``, ``"TAANConv"``, ...), or None."""
        return self._model().get("class")

    @property
    def model_config(self) -> dict:
        """The model's dataclass config as a dictionary (empty when it has none)."""
        return dict(self._model().get("config") or {})

    @property
    def extra(self) -> dict:
        """The plain entries stored under ``"extra"`` (empty when none)."""
        extra = (self.raw or {}).get("extra")
        return dict(extra) if isinstance(extra, dict) else {}

    @property
    def train_config(self) -> dict | None:
        """The training configuration the run was started with, or None when not recorded."""
        config = self.extra.get("train_config")
        return dict(config) if isinstance(config, dict) else None

    def _model(self) -> dict:
        model = (self.raw or {}).get("model")
        return model if isinstance(model, dict) else {}
