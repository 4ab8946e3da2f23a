"""What the user asks for: which layers, which task names.

Both come from the command line as text and are checked here, with messages that list the valid
choices, so the library functions and the commands report the same errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

__all__ = ["parse_layers", "read_task_names", "select_layers"]



def select_layers(layer_names: Sequence[str], spec: "str | int | Sequence[str | int] | None") -> list[int]:
    """Positions (0-based) of the layers named by ``spec``, in the order given.

    The Python rule, as in torch: a layer is its name or its 0-based index (negative counts from
    the end). The command line's 1-based positions are read by :func:`parse_layers`.

    Parameters
    ----------
    layer_names : sequence of str
        The checkpoint's layer names, depth order.
    spec : str, int, sequence or None
        None or ``"all"``: every layer. A name, an int index, or a sequence of them; a string may
        list several names separated by commas.

    Raises
    ------
    ValueError
        Unknown names, indices out of range, duplicates, or an empty selection.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
        if not layer_names:
            raise ValueError("the checkpoint has no task-adaptive layers")
        return list(range(len(layer_names)))
    if isinstance(spec, str):
        items: list = [s.strip() for s in spec.split(",")]
    elif isinstance(spec, int) and not isinstance(spec, bool):
        items = [spec]
    else:
        items = list(spec)
    names = list(layer_names)
    out: list[int] = []
    for item in items:
        if isinstance(item, str):
            if item not in names:
                hint = (" (in Python a layer is its name or its 0-based int index; 1-based positions are "
                        "the command line's)") if item.lstrip("-").isdigit() else ""
                raise ValueError(f"layers: no layer named {item!r}; the layers are {', '.join(names)}{hint}")
            pos = names.index(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            if not -len(names) <= item < len(names):
                raise ValueError(f"layers: index {item} is out of range for {len(names)} layers "
                                 f"(0-based: 0..{len(names) - 1})")
            pos = item % len(names)
        else:
            raise TypeError(f"layers: expected layer names or int indices, got {type(item).__name__}")
        if pos in out:
            raise ValueError(f"layers: {item!r} is selected twice")
        out.append(pos)
    if not out:
        raise ValueError("layers: the selection is empty")
    return out


def parse_layers(text: "str | None", layer_names: Sequence[str]) -> list[int]:
    """The command line's ``--layers``: comma-separated layer names or 1-based positions
    (``1`` is the first layer), as 0-based positions. None or ``"all"``: every layer.

    Raises
    ------
    ValueError
        Unknown names, positions out of range, duplicates, or an empty selection.
    """
    if text is None or text.strip().lower() in ("", "all"):
        return select_layers(layer_names, None)
    names = list(layer_names)
    items: list = []
    for item in (s.strip() for s in text.split(",")):
        if item in names or not item.lstrip("-").isdigit():
            items.append(item)
            continue
        position = int(item)
        if not 1 <= position <= len(names):
            raise ValueError(f"layers: position {item} is out of range 1..{len(names)}")
        items.append(position - 1)
    return select_layers(names, items)


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


