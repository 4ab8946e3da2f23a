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

The TFRecord reader is :mod:`taan_core.data._tfrecord`, the HDF5 cache
:mod:`taan_core.data._hdf5_cache`; this module holds the data set's rules (vocabulary, tasks,
splits) and joins them.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import shutil
import struct
from typing import Sequence

import numpy as np

from taan_core._atomic import write_file
from taan_core._validation import check_int
from taan_core.data._hdf5_cache import HDF5Split, _host, _remove_stale_conversions, _ShardWriter
from taan_core.data._tfrecord import AUDIO_DIM, RGB_DIM, _parse, _records
from taan_core.data.base import SPLITS, MultiTaskData, TaskSpec, _check_fractions

__all__ = ["load_youtube8m", "HDF5Split", "RGB_DIM", "AUDIO_DIM"]

_CACHE_VERSION = 1
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
