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
