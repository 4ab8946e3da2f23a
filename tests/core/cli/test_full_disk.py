"""A full disk: every writer names the file it could not write, leaves no torn file, and the
process ends normally (the YouTube-8M conversion crashed at exit).

Faults are injected into the write path (OSError ENOSPC after a few bytes) for every writer,
and, where this machine lets a test mount one, the real thing happens on a 1 MiB tmpfs in a
private mount namespace.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from taan_core import _atomic
from taan_core._atomic import WriteError

_ROOT = Path(__file__).resolve().parents[3]
_FULL = r"cannot write {}: no space left on the device"


class _FullFile:
    """A binary file that takes ``room`` bytes, then fails like a full disk."""

    def __init__(self, fh, room: int) -> None:
        self._fh = fh
        self._room = room

    def write(self, data) -> int:
        size = len(memoryview(data).cast("B"))
        if size > self._room:
            self._fh.write(bytes(memoryview(data).cast("B")[: self._room]))
            self._room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= size
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


@pytest.fixture
def full_disk(monkeypatch):
    """Every atomic write gets 100 bytes of room."""
    fdopen = os.fdopen
    monkeypatch.setattr(_atomic.os, "fdopen", lambda fd, *a, **k: _FullFile(fdopen(fd, *a, **k), 100))


def _left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    from taan_core.checkpoint import load_checkpoint, save
    from taan_core.models import build_model
    from taan_viz import analyze

    torch.manual_seed(0)
    path = save(build_model("taan", (4,), [1] * 5, hidden=[6, 6], num_hinges=3),
                tmp_path_factory.mktemp("ckpt") / "checkpoint.pt")
    return analyze(load_checkpoint(path)), path


def _checkpoint(out: Path, analysis) -> Path:
    from taan_core.checkpoint import save
    from taan_core.models import build_model

    return save(build_model("taan", (4,), [1, 1], hidden=[64]), out / "checkpoint.pt")


def _npz(out: Path, analysis) -> Path:
    from taan_core.data import save_npz

    save_npz(out / "data.npz", np.zeros((20, 3)), np.repeat([0, 1], 10), np.zeros(20))
    return out / "data.npz"


def _png(out: Path, analysis) -> Path:
    import matplotlib.pyplot as plt

    from taan_viz.plots import save_figure

    fig, ax = plt.subplots()
    ax.imshow(np.random.default_rng(0).random((50, 50)))
    try:
        return save_figure(fig, out / "figure.png", dpi=50)
    finally:
        plt.close(fig)


def _export(out: Path, analysis) -> Path:
    from taan_viz.export import export_analysis

    export_analysis(analysis[0], out)
    return out


def _report(out: Path, analysis) -> Path:
    from taan_viz.report import build_report

    info = {"path": str(analysis[1]), "sha256": "0" * 64, "format_version": 1, "data_name": "planted", "epoch": 1}
    build_report(analysis[0], out, checkpoint=info, dpi=40)
    return out


def _tables(out: Path, analysis) -> Path:
    from taan_study.tables import BEGIN_MARK, END_MARK, insert_tables

    doc = out / "results.md"
    text = f"# Results\n{BEGIN_MARK}\nold\n{END_MARK}\n"
    doc.write_text(text)
    try:
        # A results.json's tables, as long as the 100 bytes of room would cut them.
        with mock.patch("taan_study.tables.format_tables", lambda results: {"table1": "| x |\n" * 100}):
            insert_tables(doc, {})
    finally:
        assert doc.read_text() == text  # the document is untouched, not cut short
    return doc


@pytest.mark.parametrize("write", [_checkpoint, _npz, _png, _export, _report, _tables],
                         ids=["checkpoint", "npz", "png", "export", "report", "study-tables"])
def test_every_writer_names_the_file_and_leaves_nothing_torn(tmp_path, analysis, full_disk, write):
    out = tmp_path / "out"
    out.mkdir()
    before = _left(out)
    with pytest.raises(WriteError, match=_FULL.format(str(out) + r"/\S+")):
        write(out, analysis)
    after = [name for name in _left(out) if name not in before and name != "results.md"]
    assert after == [], "a torn file or a temporary file stayed behind"


def test_the_cli_names_the_file_in_one_line(tmp_path, capsys, full_disk):
    from taan_core.cli import main

    target = tmp_path / "attributes.csv"
    with pytest.raises(SystemExit) as info:
        main(["attributes", "--dataset", "planted", "-o", str(target)])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2
    assert err == f"taan-core: error: cannot write {target}: no space left on the device; the previous file, " \
                  "if any, is intact"
    assert _left(tmp_path) == []


# ------------------------------------------------------------------------------------ TensorBoard


def test_tensorboard_is_cut_back_to_its_last_complete_epoch(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed")
    from types import SimpleNamespace

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.summary.writer import record_writer

    from taan_core import TensorBoardLogger
    from taan_core.models import build_model

    log_dir = tmp_path / "tensorboard"
    logger = TensorBoardLogger(log_dir)
    trainer = SimpleNamespace(model=build_model("taan", (3,), [1, 1], hidden=[4], num_hinges=2))
    logger.on_epoch(trainer, {"epoch": 1, "train_loss": 0.5, "val": {"main": 0.1}})
    [events] = log_dir.glob("events.out.tfevents.*")
    size = events.stat().st_size
    write = record_writer.RecordWriter.write
    calls = []

    def fill(self, data):
        calls.append(len(data))
        if len(calls) > 1:  # the second record of the epoch fills the disk halfway through
            self._writer.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        write(self, data)

    monkeypatch.setattr(record_writer.RecordWriter, "write", fill)
    with pytest.raises(WriteError, match=_FULL.format(str(events)) + "; the events of the earlier epochs are intact"):
        logger.on_epoch(trainer, {"epoch": 2, "train_loss": 0.4, "val": {"main": 0.2}})
    assert events.stat().st_size == size
    monkeypatch.setattr(record_writer.RecordWriter, "write", write)
    logger.close()
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss/train")] == [1]


# ------------------------------------------------------------------------------------ YouTube-8M


def _youtube8m_folder(root: Path, videos: int = 60) -> Path:
    from tests.core.data.test_youtube8m import _labels_of, _video, _write_records, _write_vocabulary

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    _write_records(root / "train0000.tfrecord", [_video(i, _labels_of(i), rng) for i in range(videos)])
    _write_vocabulary(root / "vocabulary.csv")
    return root


def test_the_youtube8m_conversion_names_the_shard_and_removes_its_folder(tmp_path, monkeypatch):
    pytest.importorskip("tfrecord")
    pytest.importorskip("h5py")
    from taan_core.data import load_youtube8m
    from taan_core.data import youtube8m as yt

    root = _youtube8m_folder(tmp_path / "data")
    cache = tmp_path / "cache"
    flush = yt._ShardWriter._flush

    def full(self):
        if self.buffer and "val" in self.path:
            raise OSError(errno.ENOSPC, "No space left on device")
        flush(self)

    monkeypatch.setattr(yt._ShardWriter, "_flush", full)
    with pytest.raises(WriteError, match=r"cannot write \S*/val/\d{3}\.h5: no space left on the device"):
        load_youtube8m(str(root), cache_dir=str(cache))
    assert _left(cache) == []
    monkeypatch.setattr(yt._ShardWriter, "_flush", flush)
    assert load_youtube8m(str(root), cache_dir=str(cache)).num_tasks == 3


# ------------------------------------------------------------------------------------ a real tmpfs

_ON_TMPFS = textwrap.dedent(r"""
    import json, os, sys
    import numpy as np, torch
    from taan_core._atomic import WriteError

    disk, data = sys.argv[1], sys.argv[2]
    results = {}

    def attempt(name, write):
        folder = os.path.join(disk, name)
        os.makedirs(folder)
        try:
            write(folder)
            results[name] = "written"
        except WriteError as err:
            results[name] = str(err)
        results[name + ".left"] = sorted(os.listdir(folder))
        if name == "metrics":
            with open(os.path.join(folder, "metrics.jsonl")) as fh:
                results["metrics.text"] = fh.read()

    def checkpoint(folder):
        from taan_core.checkpoint import save
        from taan_core.models import build_model
        save(build_model("taan", (4,), [1, 1], hidden=[700, 700]), os.path.join(folder, "checkpoint.pt"))

    def metrics(folder):
        from taan_core.train._support import _append_jsonl
        path = os.path.join(folder, "metrics.jsonl")
        _append_jsonl(path, {"epoch": 1})
        with open(os.path.join(disk, "filler"), "wb", buffering=0) as fh:  # fill the disk up to a few bytes
            try:
                while True:
                    fh.write(b"\0" * 4096)
                    fh.flush()
            except OSError:
                pass
        try:
            _append_jsonl(path, {"epoch": 2, "notes": "x" * 20000})
        finally:
            os.unlink(os.path.join(disk, "filler"))

    def png(folder):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from taan_viz.plots import save_figure
        fig, ax = plt.subplots(figsize=(12, 12))
        ax.imshow(np.random.default_rng(0).random((600, 600)))
        save_figure(fig, os.path.join(folder, "figure.png"), dpi=150)

    def tensorboard(folder):
        from types import SimpleNamespace
        from taan_core import TensorBoardLogger
        from taan_core.models import build_model
        logger = TensorBoardLogger(folder, image_every=1)
        model = build_model("taan", (3,), [1] * 40, hidden=[4, 4, 4], num_hinges=2)
        for epoch in range(1, 10000):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p))
            logger.on_epoch(SimpleNamespace(model=model), {"epoch": epoch, "train_loss": 0.5, "val": {"main": 0.1}})

    def youtube8m(folder):
        from taan_core.data import load_youtube8m
        load_youtube8m(data, cache_dir=folder)

    for name, write in [("checkpoint", checkpoint), ("metrics", metrics), ("png", png),
                        ("tensorboard", tensorboard), ("youtube8m", youtube8m)]:
        attempt(name, write)
        import shutil
        shutil.rmtree(os.path.join(disk, name))  # the next writer starts on an empty disk
    print(json.dumps(results))
""")


def _tmpfs_command(mountpoint: Path, *command: str) -> list[str] | None:
    """The command run inside a private mount namespace with a 1 MiB tmpfs at ``mountpoint``,
    or None where this machine does not allow it."""
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux"):
        return None
    for flags in (["-m"], ["-r", "-m"]):  # as root, or in a user namespace
        probe = subprocess.run([unshare, *flags, "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {mountpoint}"],
                               capture_output=True)
        if probe.returncode == 0:
            script = f'mount -t tmpfs -o size=1m tmpfs "$0" && exec "$@"'
            return [unshare, *flags, "sh", "-c", script, str(mountpoint), *command]
    return None


@pytest.mark.slow
def test_every_writer_on_a_full_tmpfs(tmp_path):
    pytest.importorskip("tfrecord")
    pytest.importorskip("h5py")
    pytest.importorskip("tensorboard")
    disk = tmp_path / "disk"
    disk.mkdir()
    command = _tmpfs_command(disk, sys.executable, "-c", _ON_TMPFS, str(disk), str(_youtube8m_folder(
        tmp_path / "data", videos=600)))
    if command is None:
        pytest.skip("this machine does not let a test mount a tmpfs (unshare -m / -r -m and mount -t tmpfs refused)")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(_ROOT), OMP_NUM_THREADS="1", TAAN_MEMORY_LIMIT="64G"))
    # A segmentation fault ends the process with -11 (or 139 through a shell).
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Exception in thread" not in done.stderr, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    folder = str(disk)
    assert results["checkpoint"] == f"cannot write {folder}/checkpoint/checkpoint.pt: no space left on the device; " \
                                    "the previous file, if any, is intact"
    assert results["checkpoint.left"] == []
    assert results["metrics"].startswith(f"cannot write {folder}/metrics/metrics.jsonl: no space left on the device")
    assert results["metrics.left"] == ["metrics.jsonl"] and results["metrics.text"] == '{"epoch": 1}\n'
    assert results["png"].startswith(f"cannot write {folder}/png/figure.png: no space left on the device")
    assert results["png.left"] == []
    assert results["tensorboard"].startswith(f"cannot write {folder}/tensorboard/events.out.tfevents.")
    assert results["tensorboard"].endswith("no space left on the device; the events of the earlier epochs are intact")
    assert len(results["tensorboard.left"]) == 1
    assert results["youtube8m"].startswith(f"cannot write {folder}/youtube8m/youtube8m-")
    assert results["youtube8m"].endswith(".h5: no space left on the device")
    assert results["youtube8m.left"] == []
