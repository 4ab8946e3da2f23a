"""What the user asks for: which layers, which task names.

Both come from the command line as text and are checked here, with messages that list the valid
choices, so the library functions and the commands report the same errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

__all__ = ["read_task_names", "select_layers"]



def select_layers(layer_names: Sequence[str], spec: "str | Sequence[str | int] | None") -> list[int]:
    """Positions (0-based) of the layers named by ``spec``, in the order given.

    Parameters
    ----------
    layer_names : sequence of str
        The checkpoint's layer names, depth order.
    spec : str, sequence or None
        None or ``"all"``: every layer. Otherwise comma-separated entries (or a sequence), each a
        layer name or a 1-based position (``1`` is the first layer).

    Raises
    ------
    ValueError
        Unknown names, positions out of range, duplicates, or an empty selection.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
        if not layer_names:
            raise ValueError("the checkpoint has no task-adaptive layers")
        return list(range(len(layer_names)))
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    out: list[int] = []
    for item in items:
        if isinstance(item, str) and item in layer_names:
            pos = list(layer_names).index(item)
        else:
            try:
                pos = int(item) - 1
            except (TypeError, ValueError):
                raise ValueError(f"layers: no layer named {item!r}; the layers are "
                                 f"{', '.join(layer_names)} (or positions 1..{len(layer_names)})") from None
            if not 0 <= pos < len(layer_names):
                raise ValueError(f"layers: position {item} is out of range 1..{len(layer_names)}")
        if pos in out:
            raise ValueError(f"layers: {item!r} is selected twice")
        out.append(pos)
    if not out:
        raise ValueError("layers: the selection is empty")
    return out


def read_task_names(path: "str | Path", num_tasks: int) -> list[str]:
    """Task names from a file: one name per line (blank lines ignored) or a JSON list of strings.

    Raises
    ------
    ValueError
        Unreadable file, wrong count (must be ``num_tasks``), empty or duplicate names.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"task names: cannot read {path} ({err.__class__.__name__})") from err
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"task names: {path} is not valid JSON ({err.msg}, line {err.lineno})") from err
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"task names: {path} must hold a JSON list of strings")
        names = [n.strip() for n in names]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != num_tasks:
        raise ValueError(f"task names: {path} must hold {num_tasks} names (one per task), got {len(names)}")
    if any(not n for n in names):
        raise ValueError(f"task names: {path} holds an empty name")
    dupes = sorted({n for n in names if names.count(n) > 1}) if len(set(names)) != len(names) else []
    if dupes:
        raise ValueError(f"task names: {path} repeats {', '.join(repr(d) for d in dupes[:3])}; names must be distinct")
    return names


