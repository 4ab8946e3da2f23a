"""The per-epoch records of a run as schema v2 stores them: the layers' snapshots stacked
(``history``) and the metrics as one JSON text (``metrics``).

A run records every layer's coordinates after each epoch. Schema v1 kept them as a list of
per-epoch dicts, 2L tensors an epoch, so the save of epoch K serialised 2LK tensors: torch.save
spends about 0.1 ms a tensor, and the save's cost grew with the epoch count until it was the
largest cost of a small model's epoch. Schema v2 stacks them, per layer one (K, T, M) tensor of
coordinates and one (K, M) of hinges, with the epochs and steps as two (K,) integer tensors: a
save writes 2L + 2 tensors whatever K is, and only their bytes grow (T M L numbers an epoch).

The metrics had the same problem in another form: K records of nested dicts, every number of
which pickle hands to torch's Python callback. :class:`MetricsLog` keeps each record's JSON
text, encoded once, and a save joins the texts into one string.

:class:`History` and :class:`MetricsLog` are what the Trainer appends to; they read like the
lists of dicts they replaced.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["History", "MetricsLog"]

_SNAPSHOT_KEYS = ("epoch", "step", "alphas", "hinges")


class History(Sequence):
    """The layer snapshots of a run, appended in amortised O(1) and written stacked.

    ``history[k]`` is ``{"epoch": int, "step": int, "alphas": [(T, M) per layer],
    "hinges": [(M,) per layer]}``, views of the stacked buffers (plus any further plain entries
    given to :meth:`append`), oldest first, as the schema-v1 list held.

    Examples
    --------
    >>> h = History()
    >>> h.append(1, 10, [torch.zeros(3, 2)], [torch.zeros(2)])
    >>> len(h), h[0]["epoch"], tuple(h.record()["alphas"][0].shape)
    (1, 1, (1, 3, 2))
    """

    def __init__(self) -> None:
        self._len = 0
        self._epochs: list[int] = []
        self._steps: list[int] = []
        self._alphas: list[Tensor] = []  # per layer (capacity, T, M); rows [:len] are used
        self._hinges: list[Tensor] = []  # per layer (capacity, M)
        self._extra: list[dict] = []

    # ------------------------------------------------------------------ building

    def append(self, epoch: int, step: int, alphas: Sequence[Tensor], hinges: Sequence[Tensor],
               **extra: Any) -> None:
        """Add one snapshot: the layers' alphas (T, M) and hinges (M,), in depth order.

        The values are copied (to CPU) into buffers that double when full, so a run of K epochs
        copies O(K) snapshots in all. Every snapshot must have the first one's shapes.
        """
        alphas, hinges = list(alphas), list(hinges)
        if len(alphas) != len(hinges):
            raise ValueError(f"expected as many hinges as alphas (one per layer), got {len(hinges)} and {len(alphas)}")
        if self._len == 0:  # the first snapshot sets the shapes (an empty history's are void)
            self._alphas = [torch.empty((4, *a.shape), dtype=a.dtype) for a in alphas]
            self._hinges = [torch.empty((4, *b.shape), dtype=b.dtype) for b in hinges]
        shapes = [tuple(a.shape) for a in alphas], [tuple(b.shape) for b in hinges]
        if shapes != ([tuple(a.shape[1:]) for a in self._alphas], [tuple(b.shape[1:]) for b in self._hinges]):
            raise ValueError(f"a snapshot's shapes {shapes} differ from the history's "
                             f"{[tuple(a.shape[1:]) for a in self._alphas]}, {[tuple(b.shape[1:]) for b in self._hinges]}")
        if self._alphas and self._len == self._alphas[0].shape[0]:
            self._alphas = [_grown(a) for a in self._alphas]
            self._hinges = [_grown(b) for b in self._hinges]
        for buf, value in zip(self._alphas + self._hinges, alphas + hinges):
            buf[self._len].copy_(value.detach())
        self._epochs.append(int(epoch))
        self._steps.append(int(step))
        self._extra.append(dict(extra))
        self._len += 1

    @classmethod
    def _adopt(cls, epochs: list[int], steps: list[int], alphas: list[Tensor], hinges: list[Tensor],
               extra: list[dict] | None = None) -> History:
        """A History over stacked tensors (K, T, M) and (K, M) as they are, without a copy."""
        out = cls()
        out._len = len(epochs)
        out._epochs, out._steps = list(epochs), list(steps)
        out._alphas, out._hinges = list(alphas), list(hinges)
        out._extra = [dict(e) for e in extra] if extra is not None else [{} for _ in epochs]
        return out

    @classmethod
    def from_value(cls, value: Any) -> History:
        """A History holding a checkpoint's ``history``: the schema-v2 dict, the schema-v1 list
        of per-epoch dicts, or a History (copied). The value is assumed checked (by the loader)."""
        out = cls()
        if isinstance(value, History):
            value = value.record()
        if isinstance(value, Mapping):
            k = int(value["epoch"].numel())
            notes = value.get("extra") or [{}] * k
            for i in range(k):
                out.append(int(value["epoch"][i]), int(value["step"][i]), [a[i] for a in value["alphas"]],
                           [b[i] for b in value["hinges"]], **notes[i])
            return out
        for entry in value:
            out.append(entry["epoch"], entry["step"], entry["alphas"], entry["hinges"],
                       **{key: v for key, v in entry.items() if key not in _SNAPSHOT_KEYS})
        return out

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._len))]
        k = index + self._len if index < 0 else index
        if not 0 <= k < self._len:
            raise IndexError(f"history index {index} out of range for {self._len} snapshots")
        return {"epoch": self._epochs[k], "step": self._steps[k], "alphas": [a[k] for a in self._alphas],
                "hinges": [b[k] for b in self._hinges], **self._extra[k]}

    def __repr__(self) -> str:
        return f"History({self._len} snapshots of {len(self._alphas)} layers)"

    def record(self, shapes: Sequence[tuple[int, int]] | None = None) -> dict:
        """The schema-v2 ``history`` value: exact-size copies of the stacked snapshots.

        ``{"epoch": int64 (K,), "step": int64 (K,), "alphas": [(K, T, M) per layer],
        "hinges": [(K, M) per layer]}``, and ``"extra"`` (K dicts) when a snapshot has further
        entries. ``shapes`` (the layers' ``(T, M)``) gives an empty history its layers' shapes,
        so that it has one (0, T, M) and one (0, M) tensor a layer like any other.
        """
        k = self._len
        if k == 0 and shapes is not None and not self._alphas:
            alphas = [torch.empty((0, t, m), dtype=torch.float32) for t, m in shapes]
            hinges = [torch.empty((0, m), dtype=torch.float32) for _, m in shapes]
        else:
            alphas = [a[:k].clone() for a in self._alphas]
            hinges = [b[:k].clone() for b in self._hinges]
        out = {"epoch": torch.tensor(self._epochs, dtype=torch.int64),
               "step": torch.tensor(self._steps, dtype=torch.int64), "alphas": alphas, "hinges": hinges}
        if any(self._extra):
            out["extra"] = [dict(e) for e in self._extra]
        return out


def _grown(buffer: Tensor) -> Tensor:
    bigger = torch.empty((2 * buffer.shape[0], *buffer.shape[1:]), dtype=buffer.dtype)
    bigger[: buffer.shape[0]].copy_(buffer)
    return bigger


def history_value(history: Any, shapes: Sequence[tuple[int, int]]) -> dict:
    """The schema-v2 ``history`` of what ``build_checkpoint`` was given: a History, a v2 dict
    or a sequence of v1 per-epoch dicts. ``shapes`` are the layers' ``(T, M)``."""
    if isinstance(history, Mapping):
        history = History.from_value(history)
    elif not isinstance(history, History):
        entries = list(history)
        for k, entry in enumerate(entries):
            if not isinstance(entry, Mapping) or any(key not in entry for key in _SNAPSHOT_KEYS):
                raise ValueError(f"history[{k}] must be a dict with keys {list(_SNAPSHOT_KEYS)}")
        history = History.from_value(entries)
    return history.record(shapes)


# The last texts that MetricsLog.json() returned, with their records: a save checks the dict it
# has just built, and decoding the JSON that was encoded a moment before would cost O(K) a save.
_ENCODED: deque[tuple[str, list[dict]]] = deque(maxlen=4)


def _decoded(text: str) -> list[dict] | None:
    """The records of ``text`` if it is one of the last texts :meth:`MetricsLog.json` made."""
    for encoded, records in _ENCODED:
        if encoded is text:
            return records
    return None


class MetricsLog(list):
    """The per-epoch metrics of a run: a list of dicts that keeps each record's JSON text.

    :meth:`json` is the schema-v2 ``metrics`` value, one JSON array; a record is encoded the
    first time it is saved and its text reused while the list holds the same dict object, so
    change a record before it is first saved, not after.
    """

    def __init__(self, records: Iterable[Mapping[str, Any]] = ()) -> None:
        super().__init__(records)  # each is checked to be a dict when it is encoded
        self._encoded: list[tuple[dict, str]] = []

    def json(self) -> str:
        """The records as one JSON array (NaN and infinities as Python's ``json`` writes them)."""
        texts = []
        for i, record in enumerate(self):
            cached = self._encoded[i] if i < len(self._encoded) else None
            texts.append(cached[1] if cached is not None and cached[0] is record else _encode(record, i))
        self._encoded = list(zip(self, texts))
        text = "[" + ",\n".join(texts) + "]"
        _ENCODED.append((text, list(self)))
        return text


def _encode(record: Any, k: int) -> str:
    if not isinstance(record, Mapping):
        raise TypeError(f"metrics[{k}] must be a dict, got {type(record).__name__}")
    try:
        return json.dumps(record, default=_json_value, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise TypeError(f"metrics[{k}] must hold only numbers, strings, None, lists and dicts ({err})") from None


def _json_value(value: Any) -> Any:
    """Numbers held as tensors or numpy scalars become JSON numbers (or lists of them)."""
    if isinstance(value, Tensor) or hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def metrics_value(metrics: Any) -> str:
    """The schema-v2 ``metrics`` of what ``build_checkpoint`` was given: a MetricsLog, a
    sequence of dicts, or the JSON text itself."""
    if isinstance(metrics, str):
        return metrics
    return (metrics if isinstance(metrics, MetricsLog) else MetricsLog(metrics)).json()


def metrics_records(value: Any) -> list[dict]:
    """The per-epoch dicts of a checked ``metrics`` value: JSON text (v2) or a list (v1)."""
    return json.loads(value) if isinstance(value, str) else [dict(m) for m in value]
