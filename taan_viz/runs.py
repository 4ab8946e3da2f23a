"""Which runs the user means: checkpoints, run folders and folders of runs.

``taan-core train --seeds 0,1,2 --out runs/NAME`` writes ``runs/NAME/seed-0/checkpoint.pt``, ...;
every ``taan-viz`` command accepts that folder, a list of checkpoints, or both. :func:`expand_runs`
turns the arguments into one checkpoint path per run and :func:`run_labels` names each run (for
per-run output folders and legends).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

__all__ = ["expand_runs", "run_labels"]

_CHECKPOINT = "checkpoint.pt"


def _natural_key(path: Path) -> list:
    # seed-10 after seed-9, not after seed-1.
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.as_posix())]


def expand_runs(paths: Sequence["str | Path"]) -> list[Path]:
    """One checkpoint path per run, in the order given (runs of a folder in natural order).

    Each argument is

    - a checkpoint file (``.pt``, ``.safetensors``, a reference state_dict): one run;
    - a run folder holding ``checkpoint.pt``: one run;
    - a folder of runs: every ``seed-*/checkpoint.pt`` in it or, when there is none, every
      ``*/checkpoint.pt``.

    Raises
    ------
    ValueError
        No arguments, a folder with no run in it, or a run given twice.
    """
    if not paths:
        raise ValueError("give at least one checkpoint or run folder")
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir() and not (path / _CHECKPOINT).exists():
            found = sorted(path.glob(f"seed-*/{_CHECKPOINT}"), key=_natural_key)
            if not found:
                found = sorted(path.glob(f"*/{_CHECKPOINT}"), key=_natural_key)
            if not found:
                raise ValueError(f"{path}: no {_CHECKPOINT} and no runs in it (seed-*/{_CHECKPOINT} or "
                                 f"*/{_CHECKPOINT}); give a checkpoint, a run folder or a folder of runs")
            out.extend(found)
        elif path.is_dir():
            out.append(path / _CHECKPOINT)
        else:
            # A file, or a missing path that load_checkpoint reports as such.
            out.append(path)
    seen: set[Path] = set()
    for p in out:
        key = p.resolve()
        if key in seen:
            raise ValueError(f"{p}: the same run is given twice")
        seen.add(key)
    return out


def run_labels(checkpoints: Sequence["str | Path"]) -> list[str]:
    """A short distinct name per run: the run folder's name for ``checkpoint.pt`` (``seed-3``),
    else the file's stem; repeated names get the enclosing folders in front (``a/seed-0``)."""
    paths = [Path(p) for p in checkpoints]
    parts = [(p.parent.parts if p.name == _CHECKPOINT else p.with_suffix("").parts) for p in paths]
    depth = 1
    while True:
        labels = ["/".join(q[-depth:]) or str(p) for q, p in zip(parts, paths)]
        if len(set(labels)) == len(labels) or depth >= max(len(q) for q in parts):
            break
        depth += 1
    if len(set(labels)) != len(labels):
        labels = [f"{label}-{k + 1}" for k, label in enumerate(labels)]
    return labels
