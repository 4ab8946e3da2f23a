"""Pieces of a training run that are not the loop: devices, run folders and their lock, losses,
random states, the data fingerprint.

``taan_core.train`` re-exports the public ones (``resolve_device``, ``prepare_run_dir``,
``RUN_FILES``, ``RunLock``, ``RunLockedError``, ``data_fingerprint``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from taan_core._atomic import WriteError, _reason, atomic_write, open_nofollow, refuse_link

__all__ = ["LOCK_FILE", "RUN_FILES", "RunLock", "RunLockedError", "check_run_dir", "data_fingerprint",
           "prepare_run_dir", "resolve_device"]

RUN_FILES = ("last.pt", "checkpoint.pt", "metrics.jsonl")
LOCK_FILE = ".train.lock"


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


def _run_files(out: Path, *, overwrite: bool, resume: bool) -> list[str]:
    """The run files already in ``out``, after refusing a folder that cannot take the run."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    # A link where training writes would make it write (truncate, append, replace) elsewhere.
    for name in (*RUN_FILES, LOCK_FILE):
        refuse_link(out / name)
    if resume:
        if not (out / "last.pt").is_file():
            raise FileNotFoundError(f"{out / 'last.pt'}: no such file, nothing to resume (run without --resume)")
        return []
    present = [name for name in RUN_FILES if (out / name).exists()]
    if present and not overwrite:
        raise FileExistsError(f"{out} already holds a run ({', '.join(present)}); pass --overwrite to replace "
                              "it or --resume to continue it")
    return present


def check_run_dir(out: str | os.PathLike, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Raise what ``prepare_run_dir`` would raise, changing nothing (and whether another training
    holds the folder's lock right now)."""
    out = Path(out)
    _run_files(out, overwrite=overwrite, resume=resume)
    if os.path.lexists(out / LOCK_FILE):
        RunLock(out).acquire().release()
    return out


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
    present = _run_files(out, overwrite=overwrite, resume=resume)
    if resume:
        return out
    if present:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        for stale in out.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


# The folder inside a run folder where an --overwrite run writes until its first epoch is saved.
_STAGING_PREFIX = ".overwrite-"


def stage_run_dir(out: str | os.PathLike, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Like ``prepare_run_dir``, but a run already in ``out`` is kept until the new one has saved.

    Call it holding the folder's lock. With ``overwrite`` and run files present, nothing is
    deleted: the new run is written into a private folder ``out/.overwrite-XXXX`` (returned)
    until :func:`publish_run_dir` puts its files in place of the old ones, so a run that fails
    or is killed before its first epoch is saved leaves the old run as it was. Otherwise
    returns ``out``. Staging folders of earlier runs that died are removed (under the lock, no
    live run has one).
    """
    out = Path(out)
    present = _run_files(out, overwrite=overwrite, resume=resume)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(_STAGING_PREFIX + "*"):
        if stale.is_symlink() or not stale.is_dir():
            stale.unlink(missing_ok=True)
        else:
            shutil.rmtree(stale, ignore_errors=True)
    if not present:
        return out
    return Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=out))


def publish_run_dir(staging: Path, out: Path) -> Path:
    """Put the run files written in ``staging`` (from :func:`stage_run_dir`) in place of those
    in ``out``, delete the old ones it has no counterpart for, remove ``staging``; returns
    ``out``. Nothing to do when ``staging`` is ``out``.

    Each file moves with one ``os.replace``; a crash within the few renames can leave files of
    both runs, never a torn file.
    """
    if staging == out:
        return out
    for name in RUN_FILES:
        if not (staging / name).exists():
            (out / name).unlink(missing_ok=True)
    for name in ("checkpoint.pt", "metrics.jsonl", "last.pt"):
        if (staging / name).exists():
            os.replace(staging / name, out / name)
    discard_staging(staging, out)
    return out


def discard_staging(staging: Path, out: Path) -> None:
    """Remove the staging folder of a run that ends before it was published (``out`` untouched)."""
    if staging != out and staging.parent == out and staging.name.startswith(_STAGING_PREFIX):
        shutil.rmtree(staging, ignore_errors=True)


class RunLockedError(OSError):
    """Another live process trains into the run folder."""


class RunLock:
    """An exclusive ``fcntl.flock`` on ``<folder>/.train.lock`` while a training writes there.

    The lock file holds the owner's pid, for the message of a refused second training. The
    kernel drops the lock when its process ends, however it ends, so the file a killed run
    leaves behind never blocks. Where ``fcntl`` does not exist (Windows) the lock does nothing.
    A symbolic link planted as the lock file is never followed (a one-line ``WriteError``):
    opening it would truncate its target.

    Parameters
    ----------
    folder : path-like
        The run folder; it must exist.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        """Take the lock, or raise ``RunLockedError`` naming the holder's pid."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        while self._fd is None:
            fd = open_nofollow(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunLockedError(f"{self.path.parent} is in use by another training (pid {holder}); wait for "
                                     "it to end or train into another folder") from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                # The previous holder unlinked the file between our open and our lock: the lock
                # we hold is on a dead inode, try again on the current file.
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (unlink first, so no one locks a dead file)."""
        if self._fd is None:
            return
        import fcntl

        self.path.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def data_fingerprint(data, samples: int = 64) -> str:
    """A short hash of a data set: its tasks, split sizes and the first ``samples`` samples of
    every task and split (all of a small in-memory data set, a cheap sample of a large one).

    Stored in checkpoints (``extra.data_fingerprint``) so that ``--resume`` notices changed data,
    and in the reproduction study's records.
    """
    digest = hashlib.sha256(json.dumps([data.name, list(data.task_names), list(data.input_shape)]).encode())
    for which in ("train", "val", "test"):
        split = data.split(which)
        for t in range(split.num_tasks):
            n = split.num_samples(t)
            digest.update(f"{which}/{t}/{n}".encode())
            if n:
                x, y = split.get(t, torch.arange(min(n, samples)))
                digest.update(x.contiguous().numpy().tobytes())
                digest.update(y.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


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


def _json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None, so that strict JSON parsers read it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _json_line(record: dict) -> str:
    return json.dumps(_json_safe(record), allow_nan=False) + "\n"


def _write_jsonl(path: Path, records: list[dict]) -> None:
    text = "".join(_json_line(record) for record in records)
    atomic_write(path, lambda fh: fh.write(text.encode()))


def _append_jsonl(path: Path, record: dict) -> None:
    """Append one line; on failure cut the file back to its old end, so no torn line stays.

    A symbolic link at ``path`` is refused (one-line WriteError), never appended through.
    """
    line = memoryview(_json_line(record).encode())
    try:
        fd = open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except WriteError:
        raise
    except OSError as err:
        raise WriteError(f"cannot write {path}: {_reason(err)}") from err
    try:
        end = os.lseek(fd, 0, os.SEEK_END)
        try:
            while line:
                line = line[os.write(fd, line):]
        except OSError as err:
            try:
                os.ftruncate(fd, end)
            except OSError:
                pass
            raise WriteError(f"cannot write {path}: {_reason(err)}; its earlier lines are intact") from err
    finally:
        os.close(fd)


def physical_cores() -> int:
    """CPU cores this process may run on, counting each physical core once.

    Hyper-threads share a core's arithmetic units, so a second thread per core gains little in
    torch's kernels and costs synchronisation. Read from /proc/cpuinfo (the ``physical id`` and
    ``core id`` of every processor in this process's affinity mask); where that is not known,
    the usable logical CPUs.
    """
    try:
        usable = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = set(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            processor, physical = None, "0"
            for line in fh:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "processor":
                    processor, physical = int(value), "0"
                elif key == "physical id":
                    physical = value
                elif key == "core id" and processor in usable:
                    cores.add((physical, value))
    except (OSError, ValueError):
        cores = set()
    return max(1, len(cores) or len(usable))


# Multiply-adds of a training step per thread below which another thread costs more in
# synchronisation than it gains (measured on planted: 1 thread beats 2 at ~1e6 per step).
_WORK_PER_THREAD = 4_000_000


def default_threads(num_parameters: int, rows_per_step: int, cores: int | None = None) -> int:
    """Torch threads for a run that did not choose: at most the physical cores, and no more
    than the work of a step needs (about one thread per 4 million multiply-adds).

    Parameters
    ----------
    num_parameters : int
        The model's parameters (one multiply-add per parameter and row, forward).
    rows_per_step : int
        Samples in one optimiser step.
    cores : int, optional
        The physical cores (default :func:`physical_cores`).
    """
    cores = physical_cores() if cores is None else cores
    need = -(-max(1, num_parameters) * max(1, rows_per_step) // _WORK_PER_THREAD)
    return int(max(1, min(cores, need)))


def run_threads(config, model, num_tasks: int, cores: int | None = None) -> int:
    """The threads a run uses: ``config.threads``, or :func:`default_threads` of the model and
    the rows of one step (``batch_size`` per task for balanced batches, in all for proportional)."""
    if config.threads:
        return int(config.threads)
    rows = config.batch_size * (num_tasks if config.sampler == "balanced" else 1)
    return default_threads(sum(p.numel() for p in model.parameters()), rows, cores)
