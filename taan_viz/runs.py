"""Which runs the user means: checkpoints, run folders and folders of runs.

``taan-core train --seeds 0,1,2 --out runs/NAME`` writes ``runs/NAME/seed-0/checkpoint.pt``, ...;
every ``taan-viz`` command accepts that folder, a list of checkpoints, or both. :func:`expand_runs`
turns the arguments into one checkpoint path per run and :func:`run_labels` names each run (for
per-run output folders and legends). :func:`unfinished` says whether a run folder shows that its
training did not end, so that commands combining several runs leave such a run out.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["expand_runs", "run_labels", "unfinished"]

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
        # realpath, not Path.resolve: it never raises (resolve raises RuntimeError on a link
        # loop), and load_checkpoint then names the file in one line.
        key = os.path.realpath(p)
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


def _lock_holder(lock: Path) -> str:
    """"pid N, still running", "pid N, no longer running" or "no pid", read without following a link."""
    try:
        fd = os.open(lock, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return "no pid"
    try:
        text = os.read(fd, 32).decode(errors="replace").strip()
    finally:
        os.close(fd)
    if not text.isdigit():
        return "no pid"
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"pid {pid}, no longer running"
    except OSError:
        pass  # another user's process: alive
    return f"pid {pid}, still running"


def _last_epoch(metrics: Path) -> int | None:
    last = None
    try:
        with open(metrics, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.strip():
                    last = line
        epoch = json.loads(last)["epoch"] if last is not None else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


def unfinished(path: "str | Path", raw: Mapping[str, Any] | None = None) -> str | None:
    """Why the run of checkpoint ``path`` did not finish, or None when nothing says so.

    The rule, from what the run folder holds (``raw`` is the checkpoint's dictionary):

    1. ``.train.lock`` next to ``checkpoint.pt``: a training is writing there, or was killed
       (the trainer removes the file whenever ``fit`` ends, even by an error);
    2. a checkpoint written by the trainer (``extra.train_config``) without ``extra.epochs_run``:
       the trainer adds that field only to the final ``checkpoint.pt``, so this one is a best
       epoch saved on the way;
    3. ``metrics.jsonl`` records a later epoch than ``extra.epochs_run``: a resumed run that has
       not ended (its ``checkpoint.pt`` is still the earlier run's).

    Files other than a run folder's ``checkpoint.pt`` (exports, state_dicts) are judged by 2 only.
    """
    path = Path(path)
    folder = path.parent
    in_run_folder = path.name == _CHECKPOINT
    if in_run_folder and os.path.lexists(folder / ".train.lock"):
        return f"its training has not ended ({folder / '.train.lock'} exists: {_lock_holder(folder / '.train.lock')})"
    extra = (raw or {}).get("extra") if isinstance(raw, Mapping) else None
    if not isinstance(extra, Mapping) or "train_config" not in extra:
        return None
    if "epochs_run" not in extra:
        return "its training stopped before the end (checkpoint.pt has no extra.epochs_run)"
    if in_run_folder:
        last = _last_epoch(folder / "metrics.jsonl")
        if last is not None and isinstance(extra["epochs_run"], int) and last > extra["epochs_run"]:
            return (f"it was resumed and has not ended (metrics.jsonl reaches epoch {last}, checkpoint.pt's run "
                    f"ended at {extra['epochs_run']})")
    return None
