"""YouTube-8M video-level features: one multi-label task per top-level domain, streamed from HDF5.

Input (``data_path``): a folder with video-level TFRecord files (``*.tfrecord``) and the
data set's ``vocabulary.csv``. Every record is a ``tf.train.Example`` with

- ``id``: bytes, the video id;
- ``labels``: int64 list, entity indices into the vocabulary;
- ``mean_rgb``: 1024 floats; ``mean_audio``: 128 floats (their concatenation, 1152 floats, is
  the model input).

The vocabulary's ``Index`` column names an entity's label index and its ``Vertical1`` column
its top-level domain. As in the paper, every domain is a task (16 in the 2018 vocabulary,
sorted by name) whose labels are the domain's entities (ordered by ``Index``); a video belongs
to a task when at least one of its labels is in that domain, and videos with no label in a
domain are not in that task. ``domains`` restricts the tasks to a chosen list.

A video's split is decided by a seeded hash of its id (``test_fraction`` to test,
``val_fraction`` to val, the rest to train), so any subset of files can be used and a video
never crosses splits. The TFRecords are read once (records parsed with the ``tfrecord``
package's protobuf classes, no TensorFlow; both masked crc32c checksums of every record checked
with the ``crc32c`` package) and converted into one HDF5 file per split and task in
``cache_dir``; later loads with the same files and options reuse it. Training reads features
from HDF5 on demand (only the small label index arrays are held in memory), so a data set
larger than memory trains.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import struct
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from taan_core._atomic import WriteError, write_file
from taan_core._validation import check_int
from taan_core.data.base import SPLITS, MultiTaskData, MultiTaskSplit, TaskSpec, _check_fractions

__all__ = ["load_youtube8m", "HDF5Split", "RGB_DIM", "AUDIO_DIM"]

RGB_DIM = 1024
AUDIO_DIM = 128
_CACHE_VERSION = 1
_FLUSH_ROWS = 4096
# Conversion in progress: youtube8m-<key>.tmp-<pid>@<host> of the converting process (without
# @<host> when written by an earlier version).
_TMP_NAME = re.compile(r"youtube8m-[0-9a-f]{16}\.tmp-([0-9]+)(?:@(.*))?")
# Largest entity Index accepted (the 2018 vocabulary has 3862 entities).
_MAX_ENTITIES = 2**24


def _require(module: str):
    from taan_core.errors import require

    return require(module, package=module, extra="youtube8m", purpose="the youtube8m data set")


def _read_vocabulary(path: str, domains: Sequence[str] | None) -> tuple[list[str], list[list[int]], int]:
    """Return (domain names, entity label indices per domain, one past the largest index)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (the YouTube-8M vocabulary.csv)")
    try:
        # utf-8-sig: a byte order mark (as spreadsheet programs write) is not part of the header.
        with open(path, newline="", encoding="utf-8-sig") as fh:
            members, largest = _vocabulary_rows(path, csv.DictReader(fh))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: line {_first_non_utf8_line(path)} is not UTF-8 text ({err.reason}); "
                         f"the vocabulary.csv must be UTF-8") from err
    names = sorted(members)
    if domains is not None:
        unknown = [d for d in domains if d not in members]
        if unknown:
            raise ValueError(f"{path}: domains {unknown} are not Vertical1 values; found {names}")
        names = list(domains)
    if not names:
        raise ValueError(f"{path}: no entity has a Vertical1 domain")
    return names, [sorted(members[d]) for d in names], largest + 1


def _first_non_utf8_line(path: str) -> int:
    number = 0
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return number


def _vocabulary_rows(path: str, reader: csv.DictReader) -> tuple[dict[str, list[int]], int]:
    columns = reader.fieldnames or []
    for column in ("Index", "Vertical1"):
        if column not in columns:
            raise ValueError(f"{path}: expected a column {column!r}, found columns {columns}")
    members: dict[str, list[int]] = {}
    seen: dict[int, tuple[int, str]] = {}  # Index -> (row, domain) where it was first listed
    largest = -1
    for row_number, row in enumerate(reader, start=2):
        try:
            index = int(row["Index"])
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: row {row_number}: Index must be an int, got {row['Index']!r}") from err
        if not 0 <= index < _MAX_ENTITIES:
            # The label tables are dense in Index, so an absurd Index would allocate absurdly.
            raise ValueError(f"{path}: row {row_number}: Index must be in [0, {_MAX_ENTITIES}), got {index}")
        domain = (row["Vertical1"] or "").strip()
        if index in seen:
            first_row, first_domain = seen[index]
            # One entity in two places would leave one task a label column that is never positive.
            raise ValueError(
                f"{path}: row {row_number}: Index {index} (Vertical1 {domain!r}) is already listed in row "
                f"{first_row} (Vertical1 {first_domain!r}); every entity must appear once"
            )
        seen[index] = (row_number, domain)
        largest = max(largest, index)
        if domain:
            members.setdefault(domain, []).append(index)
    return members, largest


def _split_of(video_id: bytes, seed: int, val_fraction: float, test_fraction: float) -> int:
    digest = hashlib.blake2b(video_id, digest_size=8, key=struct.pack("<Q", seed)).digest()
    u = int.from_bytes(digest, "little") / 2.0**64
    if u < test_fraction:
        return 2
    if u < test_fraction + val_fraction:
        return 1
    return 0


# TFRecord framing: u64 length, masked crc32c of those 8 bytes, the data, masked crc32c of the data.
_HEADER = struct.Struct("<QI")
_CRC = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8


def _mask(crc: int) -> int:
    """TFRecord's masking of a crc32c: rotated right by 15 bits plus a constant, mod 2**32."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _record_payloads(path: str):
    """Yield (record number, bytes) of one uncompressed TFRecord file, checking both CRCs.

    A length field is trusted only once its own CRC matches and it fits in what is left of the
    file, so a damaged header can neither allocate a huge buffer nor be read as data.
    """
    from crc32c import crc32c

    def corrupt(detail: str) -> ValueError:
        return ValueError(f"{path}: record {number}: truncated or corrupt TFRecord ({detail})")

    size = os.path.getsize(path)
    number, offset = 0, 0
    with open(path, "rb") as fh:
        while offset < size:
            header = fh.read(_HEADER.size)
            if len(header) < _HEADER.size:
                raise corrupt(f"the file ends inside the header at byte {offset}")
            length, length_crc = _HEADER.unpack(header)
            if _mask(crc32c(header[:8])) != length_crc:
                raise corrupt(f"the length field at byte {offset} fails its CRC")
            left = size - offset - _HEADER.size - _CRC.size
            if length > left:
                raise corrupt(f"the record at byte {offset} declares {length} bytes, but only {max(left, 0)} are left")
            payload = fh.read(length)
            footer = fh.read(_CRC.size)
            if len(payload) != length or len(footer) != _CRC.size:
                raise corrupt(f"the file ends inside the record at byte {offset}")
            if _mask(crc32c(payload)) != _CRC.unpack(footer)[0]:
                raise corrupt(f"the data of the record at byte {offset} fail their CRC")
            yield number, payload
            offset += _HEADER.size + length + _CRC.size
            number += 1


def _records(path: str):
    """Yield (record number, parsed Example) of one TFRecord file; errors name file and record."""
    from google.protobuf.message import DecodeError
    from tfrecord import example_pb2

    for number, payload in _record_payloads(path):
        example = example_pb2.Example()
        try:
            example.ParseFromString(payload)
        except DecodeError as err:
            raise ValueError(f"{path}: record {number}: not a tf.train.Example ({err})") from err
        yield number, example


def _parse(example, path: str, number: int, num_entities: int):
    feature = example.features.feature
    for key in ("id", "labels", "mean_rgb", "mean_audio"):
        if key not in feature:
            raise ValueError(f"{path}: record {number}: feature {key!r} is missing")
    ids = feature["id"].bytes_list.value
    video_id = bytes(ids[0]) if ids else b""
    labels = np.asarray(feature["labels"].int64_list.value, dtype=np.int64)
    rgb = np.asarray(feature["mean_rgb"].float_list.value, dtype=np.float32)
    audio = np.asarray(feature["mean_audio"].float_list.value, dtype=np.float32)
    where = f"{path}: record {number} (id {video_id.decode('utf-8', 'replace')!r})"
    if rgb.size != RGB_DIM or audio.size != AUDIO_DIM:
        raise ValueError(
            f"{where}: mean_rgb must have {RGB_DIM} and mean_audio {AUDIO_DIM} values, got {rgb.size} and {audio.size}"
        )
    x = np.concatenate([rgb, audio])
    if not np.isfinite(x).all():
        raise ValueError(f"{where}: features hold NaN or inf")
    bad = labels[(labels < 0) | (labels >= num_entities)]
    if bad.size:
        raise ValueError(f"{where}: label {int(bad[0])} out of range [0, {num_entities}) of the vocabulary")
    return video_id, x, labels


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


def _convert(files: list[str], names: list[str], members: list[list[int]], num_entities: int,
             out: str, seed: int, val_fraction: float, test_fraction: float) -> list[list[int]]:
    """Write ``out/<split>/<task>.h5`` for every split and task; return the counts [split][task]."""
    # column[entity] = (task, column within the task); an entity lies in one domain only.
    owner = np.full(num_entities, -1, dtype=np.int64)
    column = np.full(num_entities, -1, dtype=np.int64)
    for t, entities in enumerate(members):
        owner[entities] = t
        column[entities] = np.arange(len(entities))
    writers: list[list[_ShardWriter]] = []
    try:
        for which in SPLITS:
            os.makedirs(os.path.join(out, which), exist_ok=True)
            writers.append([])
            for t, name in enumerate(names):
                writers[-1].append(_ShardWriter(os.path.join(out, which, f"{t:03d}.h5"), name, len(members[t])))
        for path in files:
            for number, example in _records(path):
                video_id, x, labels = _parse(example, path, number, num_entities)
                tasks = owner[labels]
                present = np.unique(tasks[tasks >= 0])
                if present.size == 0:
                    continue
                split = _split_of(video_id, seed, val_fraction, test_fraction)
                for t in present:
                    cols = np.unique(column[labels[tasks == t]])
                    writers[split][int(t)].add(video_id, x, cols)
        return [[w.close() for w in row] for row in writers]
    except BaseException:
        every = [w for row in writers for w in row]
        for w in every:
            w.empty()
        for w in every:
            w.abort()
        raise


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process, or not a pid we can test: leave its files alone
    return True


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
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(os.path.join(cache_root, entry), ignore_errors=True)


def _fingerprint(files: list[str], vocabulary: str, options: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"version": _CACHE_VERSION, **options}, sort_keys=True).encode())
    for path in [vocabulary, *files]:
        st = os.stat(path)
        h.update(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def load_youtube8m(
    data_path: str | None = None,
    *,
    vocabulary: str | None = None,
    cache_dir: str | None = None,
    domains: Sequence[str] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> MultiTaskData:
    """Load YouTube-8M video-level data as one multi-label task per Vertical1 domain.

    Parameters
    ----------
    data_path : str
        Folder with the ``*.tfrecord`` files (and by default ``vocabulary.csv``).
    vocabulary : str or None
        Path of vocabulary.csv; default ``data_path/vocabulary.csv``.
    cache_dir : str or None
        Where the HDF5 shards go; default ``data_path/taan-cache``.
    domains : list of str or None
        Vertical1 domains to use as tasks, in this order; default all, sorted.
    val_fraction, test_fraction : float
        Fractions of the videos (by id hash) in val and test.
    seed : int
        Key of the id hash.

    Returns
    -------
    MultiTaskData
        Multi-label tasks named by domain, input shape (1152,), splits of :class:`HDF5Split`.

    Raises
    ------
    ValueError
        Naming the file and record (or row or line) for a vocabulary without ``Index`` or
        ``Vertical1``, not in UTF-8, or listing an Index twice; a record whose length or data
        fail their CRC, whose length runs past the end of the file, or that is not a
        ``tf.train.Example``; a record with a missing feature, wrong feature lengths, NaN/inf
        features, or a label out of the vocabulary's range; naming the task when a domain has
        no training videos.
    ImportError
        If ``tfrecord``, ``h5py`` or ``crc32c`` is missing.
    """
    if data_path is None:
        raise ValueError("the youtube8m data set needs data_path, the folder with the *.tfrecord files")
    _check_fractions(val_fraction, test_fraction)
    check_int(seed, "seed", minimum=0)
    _require("h5py")
    _require("tfrecord")
    _require("crc32c")
    root = str(data_path)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such folder")
    vocabulary = str(vocabulary) if vocabulary is not None else os.path.join(root, "vocabulary.csv")
    files = sorted(glob.glob(os.path.join(root, "*.tfrecord")))
    if not files:
        raise ValueError(f"{root}: no *.tfrecord files")
    if domains is not None:
        if isinstance(domains, str) or not all(isinstance(d, str) for d in domains):
            raise TypeError(f"domains must be a list of str, got {domains!r}")
        domains = list(domains)
    names, members, num_entities = _read_vocabulary(vocabulary, domains)

    cache_root = str(cache_dir) if cache_dir is not None else os.path.join(root, "taan-cache")
    options = {"domains": names, "seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction}
    key = _fingerprint(files, vocabulary, options)
    folder = os.path.join(cache_root, f"youtube8m-{key}")
    manifest_path = os.path.join(folder, "manifest.json")
    _remove_stale_conversions(cache_root)
    if not os.path.isfile(manifest_path):
        os.makedirs(cache_root, exist_ok=True)
        tmp = f"{folder}.tmp-{os.getpid()}@{_host()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            counts = _convert(files, names, members, num_entities, tmp, seed, val_fraction, test_fraction)
            write_file(os.path.join(tmp, "manifest.json"),
                       json.dumps({"version": _CACHE_VERSION, "files": files, "tasks": names, "counts": counts,
                                   **options}))
            # Publish the finished cache in one step; an interrupted conversion leaves only tmp.
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    with open(manifest_path) as fh:
        manifest = json.load(fh)

    tasks = [TaskSpec(name, "multilabel", len(m)) for name, m in zip(names, members)]
    for t, name in enumerate(names):
        if manifest["counts"][0][t] == 0:
            raise ValueError(
                f"{root}: task {t} ({name!r}) has no training videos; pass domains=[...] to leave it out"
            )
    splits = {
        which: HDF5Split(tasks, [os.path.join(folder, which, f"{t:03d}.h5") for t in range(len(tasks))])
        for which in SPLITS
    }
    config = {
        "data_path": root,
        "vocabulary": vocabulary,
        "cache_dir": cache_root,
        "domains": names if domains is not None else None,
        "val_fraction": float(val_fraction),
        "test_fraction": float(test_fraction),
        "seed": seed,
    }
    return MultiTaskData("youtube8m", config, tasks, splits, input_shape=(RGB_DIM + AUDIO_DIM,))
