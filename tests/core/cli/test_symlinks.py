"""Training never writes through a symbolic link it did not create: a link planted in a run
folder (lock, metrics.jsonl, a seed's log, the TensorBoard folder) is refused in one line and its
target is left as it was; atomic writes replace a link instead of following it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taan_core._atomic import WriteError, atomic_write, open_nofollow, write_file
from taan_core.train import RunLock, Trainer
from taan_core.train._support import LOCK_FILE, _append_jsonl, check_run_dir
from tests.core.reliability_helpers import _cli, _config, _model, _npz_args, _one_line, _write_npz, data  # noqa: F401

_SECRET = b"precious, not to be touched\n"


@pytest.fixture
def target(tmp_path) -> Path:
    path = tmp_path / "elsewhere" / "precious.txt"
    path.parent.mkdir()
    path.write_bytes(_SECRET)
    return path


def _plant(link: Path, target: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return link


def test_open_nofollow_refuses_a_link_in_one_line(tmp_path, target):
    link = _plant(tmp_path / "f", target)
    with pytest.raises(WriteError, match=rf"^{link} is a symbolic link; refused to write through it"):
        open_nofollow(link, os.O_WRONLY | os.O_TRUNC)
    dangling = _plant(tmp_path / "g", tmp_path / "missing")
    with pytest.raises(WriteError, match=rf"^{dangling} is a symbolic link"):
        open_nofollow(dangling, os.O_WRONLY | os.O_CREAT)
    assert target.read_bytes() == _SECRET and not (tmp_path / "missing").exists()


def test_atomic_write_replaces_a_link_and_leaves_its_target(tmp_path, target):
    link = _plant(tmp_path / "out.json", target)
    atomic_write(link, lambda fh: fh.write(b"new"))
    assert not link.is_symlink() and link.read_bytes() == b"new"
    assert target.read_bytes() == _SECRET


def test_a_link_planted_as_the_lock_is_refused(tmp_path, target):
    out = tmp_path / "run"
    link = _plant(out / LOCK_FILE, target)
    with pytest.raises(WriteError, match=rf"^{link} is a symbolic link"):
        RunLock(out).acquire()
    with pytest.raises(WriteError, match=rf"^{link} is a symbolic link"):
        check_run_dir(out)
    assert target.read_bytes() == _SECRET and link.is_symlink()


def test_a_link_planted_as_metrics_jsonl_is_refused(tmp_path, target):
    link = _plant(tmp_path / "run" / "metrics.jsonl", target)
    with pytest.raises(WriteError, match=rf"^{link} is a symbolic link"):
        _append_jsonl(link, {"epoch": 1})
    assert target.read_bytes() == _SECRET


@pytest.mark.parametrize("name", [LOCK_FILE, "metrics.jsonl", "last.pt"])
@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
def test_training_into_a_folder_with_a_planted_link_is_one_line(name, dangling, data, tmp_path, target):
    out = tmp_path / "run"
    goal = tmp_path / "would-be-created" if dangling else target
    link = _plant(out / name, goal)
    for overwrite in (False, True):
        with pytest.raises(WriteError, match=rf"^{link} is a symbolic link; refused to write through it"):
            Trainer(_model(data), data, _config(out, epochs=1)).fit(overwrite=overwrite)
    assert target.read_bytes() == _SECRET and not (tmp_path / "would-be-created").exists()
    assert sorted(p.name for p in out.iterdir()) == [name]  # nothing written, the link kept


def test_the_cli_names_a_planted_link_in_one_line(tmp_path, target, capsys):
    npz = _write_npz(tmp_path / "mixed.npz")
    out = tmp_path / "run"
    link = _plant(out / "metrics.jsonl", target)
    line = _one_line(*_cli(capsys, *_npz_args(npz, out))[::2])
    assert line == f"taan-core: error: {link} is a symbolic link; refused to write through it (remove the link, " \
                   "or choose another folder)"
    assert target.read_bytes() == _SECRET


@pytest.mark.slow
def test_a_link_planted_as_a_seed_log_is_refused(tmp_path, target, capsys):
    npz = _write_npz(tmp_path / "mixed.npz")
    out = tmp_path / "runs"
    link = _plant(out / "logs" / "seed-0.log", target)
    args = _npz_args(npz, out)
    args = args[:args.index("--out")]  # --seeds chooses each seed's folder
    code, _, err = _cli(capsys, *args, "--seeds", "0,1", "--workers", "2", "--out", str(out))
    assert code == 1
    assert f"seed 0: failed: {link} is a symbolic link; refused to write through it" in err
    assert target.read_bytes() == _SECRET and not (out / "seed-0").exists()
    assert (out / "seed-1" / "checkpoint.pt").is_file()  # the other seed still trained


def test_a_linked_tensorboard_folder_is_refused(tmp_path):
    pytest.importorskip("tensorboard")
    from taan_core.train._tensorboard import TensorBoardLogger

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "events.out.tfevents.1.host").write_bytes(_SECRET)
    link = _plant(tmp_path / "run" / "tensorboard", elsewhere)
    logger = TensorBoardLogger(link)
    with pytest.raises(WriteError, match=rf"^{link} is a symbolic link"):
        logger.clear()
    with pytest.raises(WriteError, match=rf"^{link} is a symbolic link"):
        logger.log_scalars({"train_loss": 1.0}, 1)
    assert [p.name for p in elsewhere.iterdir()] == ["events.out.tfevents.1.host"]


def test_write_file_writes_text_as_utf8(tmp_path):
    assert write_file(tmp_path / "a.txt", "é\n").read_bytes() == "é\n".encode()
