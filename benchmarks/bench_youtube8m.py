"""Cost of checking the TFRecord CRCs in the YouTube-8M conversion.

Synthetic video-level TFRecords (``--files`` files of ``--records`` videos each, 1152 floats and
a few labels per video, as in the real data) are read in two ways, interleaved over
``--repeats`` rounds so that load from other processes hits both alike:

- ``unchecked``: the reader used before the CRCs were checked, ``tfrecord.reader.tfrecord_iterator``
  (which reads the CRC fields but never compares them) and the protobuf parse;
- ``checked``: ``taan_core.data._tfrecord._records``, which checks the masked crc32c of every
  length field and every record and bounds each length by what is left of the file.

Two measurements: ``read`` iterates over the parsed records only; ``conversion`` runs the whole
``load_youtube8m`` conversion into a fresh HDF5 cache (read, parse, check features, write). The
ratio is checked over unchecked time (median over rounds); the check is meant to stay under 1.3.

Usage: ``python benchmarks/bench_youtube8m.py [--files N] [--records N] [--repeats N]``; prints JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import struct
import tempfile
import time

import numpy as np

from taan_core.data import youtube8m as yt

VOCABULARY = [(i, ("Games", "Music", "Autos", "Food")[i % 4]) for i in range(40)]


def _unchecked_records(path: str):
    """The reader before CRCs were checked (kept here as the baseline)."""
    from tfrecord import example_pb2
    from tfrecord.reader import tfrecord_iterator

    number = 0
    try:
        for raw in tfrecord_iterator(path):
            example = example_pb2.Example()
            example.ParseFromString(bytes(raw))
            yield number, example
            number += 1
    except (RuntimeError, struct.error) as err:
        raise ValueError(f"{path}: record {number}: truncated or corrupt TFRecord ({err})") from err


def _write_data(root: str, files: int, records: int) -> None:
    from tfrecord.writer import TFRecordWriter

    rng = np.random.default_rng(0)
    for f in range(files):
        writer = TFRecordWriter(os.path.join(root, f"train{f:04d}.tfrecord"))
        for r in range(records):
            labels = sorted(set(rng.integers(0, len(VOCABULARY), size=3).tolist()))
            writer.write({
                "id": (f"v{f:04d}{r:06d}".encode(), "byte"),
                "labels": (labels, "int"),
                "mean_rgb": (rng.standard_normal(yt.RGB_DIM).astype(np.float32), "float"),
                "mean_audio": (rng.standard_normal(yt.AUDIO_DIM).astype(np.float32), "float"),
            })
        writer.close()
    with open(os.path.join(root, "vocabulary.csv"), "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["Index", "Vertical1"])
        out.writerows(VOCABULARY)


def _time_read(reader, paths: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    count = sum(1 for path in paths for _ in reader(path))
    return time.perf_counter() - start, count


def _time_conversion(reader, root: str, cache: str) -> float:
    shutil.rmtree(cache, ignore_errors=True)
    original = yt._records
    yt._records = reader
    try:
        start = time.perf_counter()
        yt.load_youtube8m(root, cache_dir=cache)
        return time.perf_counter() - start
    finally:
        yt._records = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    readers = {"unchecked": _unchecked_records, "checked": yt._records}
    with tempfile.TemporaryDirectory(prefix="taan-bench-y8m-") as root:
        _write_data(root, args.files, args.records)
        paths = sorted(os.path.join(root, p) for p in os.listdir(root) if p.endswith(".tfrecord"))
        megabytes = sum(os.path.getsize(p) for p in paths) / 2**20
        cache = os.path.join(root, "cache")
        read: dict[str, list[float]] = {name: [] for name in readers}
        convert: dict[str, list[float]] = {name: [] for name in readers}
        records = 0
        for _ in range(args.repeats):
            for name, reader in readers.items():
                seconds, records = _time_read(reader, paths)
                read[name].append(seconds)
                convert[name].append(_time_conversion(reader, root, cache))
    result = {"files": args.files, "records": records, "megabytes": round(megabytes, 2), "repeats": args.repeats}
    for label, times in (("read", read), ("conversion", convert)):
        medians = {name: statistics.median(t) for name, t in times.items()}
        result[label] = {
            **{f"{name}_records_per_s": round(records / m) for name, m in medians.items()},
            **{f"{name}_mb_per_s": round(megabytes / m, 1) for name, m in medians.items()},
            "ratio_checked_over_unchecked": round(medians["checked"] / medians["unchecked"], 3),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
