"""The HDF5 cache of the YouTube-8M conversion: one file per split and task, written in shards
of rows (:class:`_ShardWriter`), read back on demand (:class:`HDF5Split`), and the clean-up of
conversions whose process died.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from taan_core._atomic import WriteError, pid_alive
from taan_core.data._tfrecord import AUDIO_DIM, RGB_DIM
from taan_core.data.base import MultiTaskSplit, TaskSpec

__all__ = ["HDF5Split"]

_FLUSH_ROWS = 4096
# Conversion in progress: youtube8m-<key>.tmp-<pid>@<host> of the converting process (without
# @<host> when written by an earlier version).
_TMP_NAME = re.compile(r"youtube8m-[0-9a-f]{16}\.tmp-([0-9]+)(?:@(.*))?")


class _ShardWriter:
    """Appends rows to one HDF5 file: features, CSR labels and ids."""

    def __init__(self, path: str, name: str, num_outputs: int) -> None:
        import h5py

        self.path = path
        # No raw-data cache: every block is on disk when its write returns, so a full disk fails
        # in that write, never later inside close() (see abort).
        self.file = h5py.File(path, "w", rdcc_nbytes=0)
        self.file.attrs["task"] = name
        self.file.attrs["num_outputs"] = num_outputs
        dim = RGB_DIM + AUDIO_DIM
        self.features = self.file.create_dataset(
            "features", shape=(0, dim), maxshape=(None, dim), dtype="f4", chunks=(64, dim)
        )
        self.indices = self.file.create_dataset("label_indices", shape=(0,), maxshape=(None,), dtype="i4", chunks=(4096,))
        self.ids = self.file.create_dataset(
            "ids", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype("utf-8"), chunks=(4096,)
        )
        self.offsets = [0]
        self.buffer: list[tuple[bytes, np.ndarray, np.ndarray]] = []

    def add(self, video_id: bytes, x: np.ndarray, columns: np.ndarray) -> None:
        self.buffer.append((video_id, x, columns))
        if len(self.buffer) >= _FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        with self._naming_failures():
            self._flush()

    @contextlib.contextmanager
    def _naming_failures(self):
        # HDF5 reports a full disk as a RuntimeError or OSError about "raw data"; say which file.
        try:
            yield
        except (OSError, RuntimeError) as err:
            text = str(err)
            full = getattr(err, "errno", None) == errno.ENOSPC or "errno = 28" in text or "No space left" in text
            reason = "no space left on the device" if full else (text.strip().splitlines() or [type(err).__name__])[0]
            raise WriteError(f"cannot write {self.path}: {reason}") from err

    def _flush(self) -> None:
        if not self.buffer:
            return
        n0 = self.features.shape[0]
        n = len(self.buffer)
        self.features.resize(n0 + n, axis=0)
        self.features[n0:] = np.stack([b[1] for b in self.buffer])
        cols = np.concatenate([b[2] for b in self.buffer]).astype(np.int32)
        m0 = self.indices.shape[0]
        self.indices.resize(m0 + cols.size, axis=0)
        self.indices[m0:] = cols
        self.ids.resize(n0 + n, axis=0)
        self.ids[n0:] = [b[0].decode("utf-8", "replace") for b in self.buffer]
        for b in self.buffer:
            self.offsets.append(self.offsets[-1] + b[2].size)
        self.buffer = []

    def close(self) -> int:
        with self._naming_failures():
            self._flush()
            self.file.create_dataset("label_offsets", data=np.asarray(self.offsets, dtype=np.int64))
            n = self.features.shape[0]
            # A write that fails in flush() leaves the file consistent and closable (abort); one
            # that fails inside close() leaves HDF5's objects half closed.
            self.file.flush()
            self.file.close()
        return n

    def empty(self) -> None:
        """Cut the file to nothing: a discarded file gives its disk space back before it is closed."""
        self.buffer = []
        with contextlib.suppress(OSError):
            os.truncate(self.path, 0)

    def abort(self) -> None:
        """Close the file without writing what is buffered (its folder is about to be removed).

        On a full disk HDF5 cannot close a file whose last write failed (it must still write
        its metadata) and keeps it open; the library's clean-up at exit then crashed the
        process (a segmentation fault). Emptying every file of the conversion first
        (:meth:`empty`) frees the space that closing needs.
        """
        self.empty()
        self.features = self.indices = self.ids = None
        with contextlib.suppress(Exception):  # the first error was raised already
            self.file.close()


class HDF5Split(MultiTaskSplit):
    """A split whose tasks live in HDF5 files written by the youtube8m conversion.

    Features are read from disk on every :meth:`get`; the CSR label arrays of every task are
    loaded into memory (a few bytes per video). File handles open lazily, once per process,
    so the split can be used from DataLoader workers.

    Parameters
    ----------
    tasks : sequence of TaskSpec
        Multi-label task specs.
    paths : sequence of str
        One HDF5 file per task.
    """

    def __init__(self, tasks: Sequence[TaskSpec], paths: Sequence[str]) -> None:
        import h5py

        self.tasks = list(tasks)
        self.paths = [str(p) for p in paths]
        self._offsets: list[np.ndarray] = []
        self._indices: list[np.ndarray] = []
        for path in self.paths:
            with h5py.File(path, "r") as f:
                self._offsets.append(f["label_offsets"][...])
                self._indices.append(f["label_indices"][...])
        self._handles: dict[int, object] = {}
        self._pid = os.getpid()

    def num_samples(self, task: int) -> int:
        return int(self._offsets[self._check_task(task)].size - 1)

    def _file(self, task: int):
        import h5py

        if self._pid != os.getpid():
            # h5py handles must not cross fork(); a worker process opens its own.
            self._handles = {}
            self._pid = os.getpid()
        if task not in self._handles:
            self._handles[task] = h5py.File(self.paths[task], "r")
        return self._handles[task]

    def get(self, task: int, index: Tensor) -> tuple[Tensor, Tensor]:
        task = self._check_task(task)
        index = self._check_index(task, index).numpy()
        spec = self.tasks[task]
        y = torch.zeros(index.size, spec.num_outputs, dtype=torch.float32)
        if index.size == 0:
            return torch.zeros(0, RGB_DIM + AUDIO_DIM), y
        # h5py reads only increasing, unique indices; read those and scatter back.
        unique, inverse = np.unique(index, return_inverse=True)
        x = self._file(task)["features"][unique][inverse]
        offsets, indices = self._offsets[task], self._indices[task]
        starts, stops = offsets[index], offsets[index + 1]
        rows = np.repeat(np.arange(index.size), stops - starts)
        cols = indices[np.concatenate([np.arange(a, b) for a, b in zip(starts, stops)])] if rows.size else np.zeros(0, np.int64)
        y[torch.from_numpy(rows), torch.from_numpy(cols.astype(np.int64))] = 1.0
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), y

    def close(self) -> None:
        """Close the open HDF5 files."""
        for handle in self._handles.values():
            handle.close()
        self._handles = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "localhost"


def _remove_stale_conversions(cache_root: str) -> None:
    """Remove ``youtube8m-<key>.tmp-<pid>@<host>`` folders whose converting process no longer runs.

    A conversion killed by SIGKILL (or a power cut) cannot clean up after itself; the next start
    does. A folder of a running conversion (its pid alive) is left alone, and so is one written
    from another host (a cache on a shared file system), whose pid means nothing here.
    """
    try:
        entries = os.listdir(cache_root)
    except OSError:
        return
    for entry in entries:
        match = _TMP_NAME.fullmatch(entry)
        if match is None or match.group(2) not in (None, _host()):
            continue
        pid = int(match.group(1))
        if not pid_alive(pid):
            shutil.rmtree(os.path.join(cache_root, entry), ignore_errors=True)
