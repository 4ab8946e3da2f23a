"""Tests of the youtube8m source on small TFRecord files of the video-level format, written here."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import torch

pytest.importorskip("tfrecord")
pytest.importorskip("h5py")
from tfrecord.writer import TFRecordWriter  # noqa: E402

from taan_core.data import HDF5Split, MultiTaskBatchSampler, collate, load_dataset, load_youtube8m  # noqa: E402
from taan_core.data import _tfrecord as tfr  # noqa: E402
from taan_core.data import youtube8m as yt  # noqa: E402

# Entities 0-2 are Games, 3-4 Music, 5 Autos; 6 has no domain.
VOCAB = [(0, "Games"), (1, "Games"), (2, "Games"), (3, "Music"), (4, "Music"), (5, "Autos"), (6, "")]


def _write_vocabulary(path, rows=VOCAB, columns=("Index", "TrainVideoCount", "Name", "Vertical1", "Vertical2")):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for index, vertical in rows:
            values = {"Index": index, "TrainVideoCount": 10, "Name": f"e{index}", "Vertical1": vertical, "Vertical2": ""}
            w.writerow([values.get(c, "") for c in columns])


def _video(i, labels, rng, rgb_dim=1024, audio_dim=128, rgb=None):
    return {
        "id": (f"v{i:03d}".encode(), "byte"),
        "labels": (list(labels), "int"),
        "mean_rgb": (rgb if rgb is not None else rng.standard_normal(rgb_dim).astype(np.float32), "float"),
        "mean_audio": (rng.standard_normal(audio_dim).astype(np.float32), "float"),
    }


def _labels_of(i):
    # Every video has a Games label; every 3rd also Music; every 4th Autos; every 5th only entity 6.
    if i % 5 == 4:
        return [6]
    labels = [i % 3]
    if i % 3 == 0:
        labels.append(3 + i % 2)
    if i % 4 == 0:
        labels.append(5)
    return labels


def _write_records(path, videos):
    writer = TFRecordWriter(str(path))
    for v in videos:
        writer.write(v)
    writer.close()


@pytest.fixture()
def folder(tmp_path):
    rng = np.random.default_rng(0)
    videos = [_video(i, _labels_of(i), rng) for i in range(60)]
    _write_records(tmp_path / "train0000.tfrecord", videos[:35])
    _write_records(tmp_path / "train0001.tfrecord", videos[35:])
    _write_vocabulary(tmp_path / "vocabulary.csv")
    return tmp_path, videos


def _collect(data):
    """{(task name, video id): (features, label vector)} over all splits, read through the splits."""
    out = {}
    for which in ("train", "val", "test"):
        split = data.split(which)
        for t, spec in enumerate(data.tasks):
            n = split.num_samples(t)
            x, y = split.get(t, torch.arange(n))
            import h5py

            with h5py.File(split.paths[t], "r") as f:
                ids = [s.decode() if isinstance(s, bytes) else s for s in f["ids"][...]]
            for vid, xi, yi in zip(ids, x, y):
                out[(spec.name, vid)] = (which, xi, yi)
    return out


def test_tasks_labels_and_features(folder, tmp_path):
    root, videos = folder
    data = load_dataset("youtube8m", data_path=str(root), val_fraction=0.2, test_fraction=0.2, seed=0)
    assert data.task_names == ["Autos", "Games", "Music"]
    assert [(t.kind, t.num_outputs) for t in data.tasks] == [("multilabel", 1), ("multilabel", 3), ("multilabel", 2)]
    assert data.input_shape == (1152,)
    assert isinstance(data.split("train"), HDF5Split)
    got = _collect(data)
    columns = {"Games": [0, 1, 2], "Music": [3, 4], "Autos": [5]}
    expected_keys = set()
    split_of = {}
    for i, v in enumerate(videos):
        vid = f"v{i:03d}"
        feats = np.concatenate([v["mean_rgb"][0], v["mean_audio"][0]])
        for name, ents in columns.items():
            mine = [e for e in v["labels"][0] if e in ents]
            if not mine:
                continue  # a video with no label in a domain is not in that task
            expected_keys.add((name, vid))
            which, x, y = got[(name, vid)]
            split_of.setdefault(vid, set()).add(which)
            np.testing.assert_allclose(x.numpy(), feats)
            assert y.tolist() == [1.0 if e in mine else 0.0 for e in ents]
    assert set(got) == expected_keys
    assert all(len(s) == 1 for s in split_of.values()), "a video's split must not depend on the task"
    assert {w for s in split_of.values() for w in s} == {"train", "val", "test"}


def test_cache_is_reused_and_config_rebuilds(folder, monkeypatch):
    root, _ = folder
    first = load_youtube8m(str(root), val_fraction=0.2, test_fraction=0.2)
    caches = [d for d in os.listdir(root / "taan-cache") if not d.endswith(".tmp")]
    assert len(caches) == 1

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(yt, "_convert", no_conversion)
    again = load_dataset("youtube8m", **first.config)
    assert again.task_names == first.task_names
    sizes = [first.split("train").num_samples(t) for t in range(3)]
    assert [again.split("train").num_samples(t) for t in range(3)] == sizes


def test_streaming_batches_through_sampler(folder, tmp_path):
    root, _ = folder
    data = load_youtube8m(str(root), cache_dir=str(tmp_path / "cache"), domains=["Games", "Music"])
    assert data.task_names == ["Games", "Music"]
    split = data.split("train")
    sampler = MultiTaskBatchSampler(split, batch_size=4, seed=0)
    task, index = next(iter(sampler))
    index[1] = index[0]  # repeated and unsorted indices must read back correctly
    batch = collate(split, task, index)
    assert batch.x.shape == (8, 1152)
    torch.testing.assert_close(batch.x[0], batch.x[1])
    assert batch.targets[0].shape == (4, 3) and batch.targets[1].shape == (4, 2)
    assert torch.all(batch.targets[0].sum(dim=1) >= 1)
    import pickle

    clone = pickle.loads(pickle.dumps(split))
    torch.testing.assert_close(clone.get(0, index[:2])[0], split.get(0, index[:2])[0])
    split.close()


@pytest.mark.parametrize(
    ("video", "match"),
    [
        (lambda rng: _video(7, [0], rng, rgb=np.full(1024, np.nan, np.float32)), r"bad\.tfrecord: record 2 \(id 'v007'\): features hold NaN or inf"),
        (lambda rng: _video(7, [0], rng, rgb=np.full(1024, np.inf, np.float32)), r"record 2 \(id 'v007'\): features hold NaN or inf"),
        (lambda rng: _video(7, [0], rng, rgb_dim=1000), r"record 2 \(id 'v007'\): mean_rgb must have 1024 and mean_audio 128 values, got 1000 and 128"),
        (lambda rng: _video(7, [0], rng, audio_dim=64), r"got 1024 and 64"),
        (lambda rng: _video(7, [0, 99], rng), r"record 2 \(id 'v007'\): label 99 out of range \[0, 7\)"),
        (lambda rng: {k: v for k, v in _video(7, [0], rng).items() if k != "mean_audio"}, r"record 2: feature 'mean_audio' is missing"),
    ],
)
def test_bad_records_name_file_and_record(tmp_path, video, match):
    rng = np.random.default_rng(1)
    _write_records(tmp_path / "bad.tfrecord", [_video(0, [0], rng), _video(1, [3], rng), video(rng)])
    _write_vocabulary(tmp_path / "vocabulary.csv")
    with pytest.raises(ValueError, match=match):
        load_youtube8m(str(tmp_path))
    leftovers = os.listdir(tmp_path / "taan-cache")
    assert leftovers == [], "a failed conversion leaves no cache behind"


def test_truncated_file(tmp_path):
    rng = np.random.default_rng(2)
    _write_records(tmp_path / "t.tfrecord", [_video(i, [0], rng) for i in range(3)])
    data = (tmp_path / "t.tfrecord").read_bytes()
    (tmp_path / "t.tfrecord").write_bytes(data[: len(data) - 100])
    _write_vocabulary(tmp_path / "vocabulary.csv")
    with pytest.raises(ValueError, match=r"t\.tfrecord: record 2: truncated or corrupt"):
        load_youtube8m(str(tmp_path))


def test_vocabulary_errors(folder):
    root, _ = folder
    _write_vocabulary(root / "vocabulary.csv", columns=("Index", "Name", "Vertical2"))
    with pytest.raises(ValueError, match=r"vocabulary\.csv: expected a column 'Vertical1', found columns \['Index', 'Name', 'Vertical2'\]"):
        load_youtube8m(str(root))
    _write_vocabulary(root / "vocabulary.csv", columns=("Name", "Vertical1"))
    with pytest.raises(ValueError, match="expected a column 'Index'"):
        load_youtube8m(str(root))
    with open(root / "vocabulary.csv", "w") as fh:
        fh.write("Index,Vertical1\n0,Games\nzero,Games\n")
    with pytest.raises(ValueError, match=r"row 3: Index must be an int, got 'zero'"):
        load_youtube8m(str(root))
    _write_vocabulary(root / "vocabulary.csv")
    with pytest.raises(ValueError, match=r"domains \['Sports'\] are not Vertical1 values"):
        load_youtube8m(str(root), domains=["Sports"])


def test_empty_task_is_named(tmp_path):
    rng = np.random.default_rng(3)
    # No video has a Music or Autos label.
    _write_records(tmp_path / "a.tfrecord", [_video(i, [i % 3], rng) for i in range(6)])
    _write_vocabulary(tmp_path / "vocabulary.csv")
    with pytest.raises(ValueError, match=r"task 0 \('Autos'\) has no training videos"):
        load_youtube8m(str(tmp_path))
    assert load_youtube8m(str(tmp_path), domains=["Games"]).num_tasks == 1


def test_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="needs data_path"):
        load_youtube8m(None)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_youtube8m(str(tmp_path / "absent"))
    with pytest.raises(ValueError, match=r"no \*\.tfrecord files"):
        load_youtube8m(str(tmp_path))


# --- Integrity of the TFRecords (CRCs, lengths, garbage), the vocabulary and the cache folder ---


def _three_records(tmp_path, name="bad.tfrecord"):
    rng = np.random.default_rng(4)
    path = tmp_path / name
    _write_records(path, [_video(i, [i % 3, 3], rng) for i in range(3)])
    _write_vocabulary(tmp_path / "vocabulary.csv")
    return path


def _record_offsets(data: bytes) -> list[int]:
    offsets, at = [], 0
    while at < len(data):
        offsets.append(at)
        at += 16 + int.from_bytes(data[at:at + 8], "little")
    return offsets


def test_masked_crc_matches_the_tfrecord_writer():
    from crc32c import crc32c

    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720)
    for payload in (b"", b"\x00" * 8, bytes(range(256)) * 5):
        assert tfr._mask(crc32c(payload)).to_bytes(4, "little") == TFRecordWriter.masked_crc(payload)


def test_flipped_feature_bit_fails_the_data_crc(tmp_path):
    path = _three_records(tmp_path)
    data = bytearray(path.read_bytes())
    start = _record_offsets(bytes(data))[1]
    example = bytes(data[start + 12:start + 12 + int.from_bytes(data[start:start + 8], "little")])
    # The first float of record 1's mean_rgb, found by its value; its exponent bit flips.
    rgb = tfr._records(str(path))
    next(rgb)
    _, second = next(rgb)
    first_float = np.float32(second.features.feature["mean_rgb"].float_list.value[0]).tobytes()
    at = start + 12 + example.index(first_float)
    data[at + 3] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"bad\.tfrecord: record 1: truncated or corrupt TFRecord \(the data of the record at byte {start} fail their CRC\)"):
        load_youtube8m(str(tmp_path))
    assert os.listdir(tmp_path / "taan-cache") == [], "a refused file leaves no cache behind"


@pytest.mark.parametrize(("field", "match"), [
    ("length_crc", r"record 2: truncated or corrupt TFRecord \(the length field at byte \d+ fails its CRC\)"),
    ("data_crc", r"record 2: truncated or corrupt TFRecord \(the data of the record at byte \d+ fail their CRC\)"),
    ("length", r"record 2: truncated or corrupt TFRecord \(the length field at byte \d+ fails its CRC\)"),
])
def test_stale_length_or_data_crc_is_refused(tmp_path, field, match):
    path = _three_records(tmp_path)
    data = bytearray(path.read_bytes())
    start = _record_offsets(bytes(data))[2]
    length = int.from_bytes(data[start:start + 8], "little")
    where = {"length": start, "length_crc": start + 8, "data_crc": start + 12 + length}[field]
    data[where] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=match):
        load_youtube8m(str(tmp_path))


def _garbage(kind: str) -> bytes:
    from crc32c import crc32c

    huge = (2**40).to_bytes(8, "little")
    if kind == "huge length, valid CRC":
        return huge + tfr._mask(crc32c(huge)).to_bytes(4, "little") + bytes(100)
    if kind == "huge length, stale CRC":
        return huge + bytes(4) + bytes(100)
    return np.random.default_rng(5).bytes(5000)  # random bytes


@pytest.mark.parametrize(("kind", "match"), [
    ("huge length, valid CRC", r"record 0: truncated or corrupt TFRecord \(the record at byte 0 declares 1099511627776 bytes, but only 96 are left\)"),
    ("huge length, stale CRC", r"record 0: truncated or corrupt TFRecord \(the length field at byte 0 fails its CRC\)"),
    ("random bytes", r"record 0: truncated or corrupt TFRecord"),
])
def test_garbage_tfrecord_gives_one_clear_error(tmp_path, kind, match):
    (tmp_path / "junk.tfrecord").write_bytes(_garbage(kind))
    _write_vocabulary(tmp_path / "vocabulary.csv")
    with pytest.raises(ValueError, match=r"junk\.tfrecord: " + match):
        load_youtube8m(str(tmp_path))


def test_garbage_tfrecord_is_one_line_from_the_cli(tmp_path, capsys):
    from taan_core.cli import main

    (tmp_path / "junk.tfrecord").write_bytes(_garbage("huge length, valid CRC"))
    _write_vocabulary(tmp_path / "vocabulary.csv")
    with pytest.raises(SystemExit) as info:
        main(["train", "--dataset", "youtube8m", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "Traceback" not in err and "SystemError" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert "junk.tfrecord: record 0: truncated or corrupt TFRecord" in err


def test_non_utf8_vocabulary_names_the_file_and_line(tmp_path):
    _three_records(tmp_path)
    (tmp_path / "vocabulary.csv").write_bytes("Index,Vertical1\n0,Games\n1,Música\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"vocabulary\.csv: line 3 is not UTF-8 text"):
        load_youtube8m(str(tmp_path))


def test_index_listed_under_two_domains_is_refused(tmp_path):
    _three_records(tmp_path)
    _write_vocabulary(tmp_path / "vocabulary.csv", rows=[*VOCAB, (3, "Games")])
    with pytest.raises(ValueError, match=r"vocabulary\.csv: row 9: Index 3 \(Vertical1 'Games'\) is already listed in row 5 \(Vertical1 'Music'\)"):
        load_youtube8m(str(tmp_path))


def test_vocabulary_index_is_bounded_before_the_label_tables(tmp_path):
    _three_records(tmp_path)
    _write_vocabulary(tmp_path / "vocabulary.csv", rows=[*VOCAB, (2**40, "Games")])
    with pytest.raises(ValueError, match=r"row 9: Index must be in \[0, 16777216\), got 1099511627776"):
        load_youtube8m(str(tmp_path))


_KILLED_CONVERSION = """
import os, sys, time
from taan_core.data import youtube8m as yt

def convert(files, names, members, num_entities, out, *args):
    os.makedirs(os.path.join(out, "train"))
    with open(os.path.join(out, "train", "000.h5"), "wb") as fh:
        fh.write(b"half a shard")
    print("converting", flush=True)
    time.sleep(60)

yt._convert = convert
yt.load_youtube8m(sys.argv[1], cache_dir=sys.argv[2])
"""


@pytest.mark.slow
def test_conversion_killed_by_sigkill_is_cleaned_at_the_next_start(folder, tmp_path):
    import signal
    import subprocess
    import sys

    root, _ = folder
    cache = tmp_path / "cache"
    child = subprocess.Popen([sys.executable, "-c", _KILLED_CONVERSION, str(root), str(cache)], stdout=subprocess.PIPE,
                             text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        assert child.stdout.readline().strip() == "converting"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    stale = os.listdir(cache)
    assert len(stale) == 1 and f".tmp-{child.pid}@{yt._host()}" in stale[0], "SIGKILL leaves the folder"
    final = stale[0].split(".tmp-")[0]
    # Folders of a process still running here (this test's parent) and of another host stay; a
    # folder named the earlier way (pid only) of a dead process goes.
    keep = [f"{final}.tmp-{os.getppid()}@{yt._host()}", f"{final}.tmp-{child.pid}@another-host"]
    for name in [*keep, f"{final}.tmp-{child.pid}"]:
        (cache / name).mkdir()
    data = load_youtube8m(str(root), cache_dir=str(cache))
    assert data.num_tasks == 3
    assert sorted(os.listdir(cache)) == sorted([final, *keep])


def test_a_vocabulary_with_a_byte_order_mark_is_read(tmp_path):
    plain, marked = tmp_path / "plain.csv", tmp_path / "marked.csv"
    _write_vocabulary(plain)
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())  # as spreadsheet programs save UTF-8
    assert yt._read_vocabulary(str(marked), None) == yt._read_vocabulary(str(plain), None)
