"""The run folder: one training at a time, write failures that tear nothing, leftovers of dead
processes cleaned, plain file modes, and --overwrite that keeps the old run until the new one
has a checkpoint."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from taan_core._atomic import WriteError, atomic_write, remove_stale_temporaries
from taan_core.train._support import LOCK_FILE, _append_jsonl
from taan_core.checkpoint import build_checkpoint, load_checkpoint, save_checkpoint
from taan_core.train import RunLock, RunLockedError, Trainer

from tests.core.reliability_helpers import (  # noqa: F401 - fixtures and helpers
    data,
    npz,
    _ROOT,
    _strict,
    _cli,
    _one_line,
    _npz_args,
    _model,
    _config,
)


# ---------------------------------------------------------------------------------- 3. the run lock


def test_a_locked_run_folder_refuses_a_second_training(npz, tmp_path, capsys, data):
    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out):
        assert (out / LOCK_FILE).read_text().strip() == str(os.getpid())
        for extra in ((), ("--overwrite",)):
            line = _one_line(*_cli(capsys, *_npz_args(npz, out, *extra))[::2])
            assert f"{out} is in use by another training (pid {os.getpid()})" in line
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            Trainer(_model(data), data, _config(out)).fit(overwrite=True)
    assert not (out / LOCK_FILE).exists()
    code, _, err = _cli(capsys, *_npz_args(npz, out, "--quiet"))
    assert code == 0, err
    assert not (out / LOCK_FILE).exists()  # released, and its file removed, at the end


def test_a_stale_lock_of_a_killed_process_never_blocks(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    script = textwrap.dedent(f"""
        import os, signal
        from taan_core.train import RunLock
        RunLock({str(out)!r}).acquire()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    child = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=str(_ROOT)), timeout=120)
    assert child.returncode == -signal.SIGKILL
    assert (out / LOCK_FILE).exists()  # the file stays, the kernel dropped the lock
    with RunLock(out):
        assert (out / LOCK_FILE).read_text().strip() == str(os.getpid())


# ------------------------------------------------------------------------------- 5/6. write failures


@pytest.mark.parametrize("error,reason", [
    (RuntimeError("unexpected pos 64 vs 0"), "unexpected pos 64 vs 0 (is the disk full?)"),
    (RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file data/0"),
     "PytorchStreamWriter failed writing file"),
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on the device"),
])
def test_a_failure_inside_torch_save_is_one_line_and_keeps_the_previous_file(data, tmp_path, monkeypatch, error,
                                                                             reason):
    path = tmp_path / "c.pt"
    save_checkpoint(build_checkpoint(_model(data), task_names=data.task_names), path)
    before = path.read_bytes()

    def full_disk(obj, fh):
        fh.write(b"PK\x03\x04 partial")
        raise error

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(WriteError) as info:
        save_checkpoint(build_checkpoint(_model(data, hidden=[8, 8]), task_names=data.task_names), path)
    message = str(info.value)
    assert "\n" not in message and f"cannot write {path}" in message and reason in message
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_the_cli_reports_a_failed_write_in_one_line(npz, tmp_path, capsys, monkeypatch):
    def full_disk(obj, fh):
        raise RuntimeError("unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "run"
    line = _one_line(*_cli(capsys, *_npz_args(npz, out, "--quiet"))[::2])
    assert f"cannot write {out}" in line and "unexpected pos 64 vs 0" in line


def test_a_failed_metrics_append_leaves_no_torn_line(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    _append_jsonl(path, {"epoch": 1})
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(WriteError, match="cannot write .*metrics.jsonl: no space left on the device"):
        _append_jsonl(path, {"epoch": 2, "val": {"main": 0.5}})
    monkeypatch.undo()
    assert _strict(path.read_text()) == [{"epoch": 1}]


# -------------------------------------------------------------------------------------- 8. leftovers


def test_stale_temporaries_of_dead_processes_are_removed_at_the_next_start(data, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    names = {
        f".last.pt.{dead.pid}.abc123_x.tmp": False,  # a dead writer's: removed
        ".checkpoint.pt.q1w2e3r4.tmp": False,  # no pid (older name) of a run file: removed under the lock
        f".last.pt.{os.getpid()}.live1234.tmp": True,  # a live writer's: kept
        ".notes.txt.q1w2e3r4.tmp": True,  # not ours, no pid: kept
    }
    for name in names:
        (out / name).write_bytes(b"x")
    Trainer(_model(data), data, _config(out, epochs=1)).fit()
    for name, kept in names.items():
        assert (out / name).exists() == kept, name
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_atomic_write_names_temporaries_with_the_pid(tmp_path, monkeypatch):
    seen = []

    def spy(fh):
        seen.extend(p.name for p in tmp_path.iterdir())
        fh.write(b"x")

    atomic_write(tmp_path / "f.bin", spy)
    assert len(seen) == 1
    assert seen[0].startswith(f".f.bin.{os.getpid()}.") and seen[0].endswith(".tmp")


def test_a_failed_command_removes_only_the_folders_it_created(npz, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    for out in (tmp_path / "a" / "b", mine):
        args = _npz_args(npz, out, "--model", "hard", "--lr", "1e6", "--epochs", "2")
        del args[args.index("--hinges"):args.index("--hinges") + 2]
        args[args.index("--hidden") + 1] = "8,8,8"
        code, _, err = _cli(capsys, *args)
        assert code == 1, err
    assert not (tmp_path / "a").exists()
    assert mine.is_dir() and list(mine.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_run_files_get_the_modes_of_plain_files(data, tmp_path, umask):
    old = os.umask(umask)
    try:
        out = tmp_path / "run"
        Trainer(_model(data), data, _config(out, epochs=1)).fit()
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert modes == {name: 0o666 & ~umask for name in ("checkpoint.pt", "last.pt", "metrics.jsonl")}


# ---------------------------------------------------------------------- --overwrite keeps the old run


def _files(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in ("checkpoint.pt", "last.pt", "metrics.jsonl")}


class _Crash(Exception):
    pass


def _crash(trainer, epoch, batch):
    raise _Crash


@pytest.mark.parametrize("starts", [1, 2])
def test_overwrite_keeps_the_old_run_until_the_new_one_has_a_checkpoint(data, tmp_path, starts, monkeypatch):
    out = tmp_path / "run"
    Trainer(_model(data), data, _config(out, epochs=1)).fit()
    old = _files(out)
    # A crash in the new run's first epoch (or its candidate starts), before anything is saved,
    # leaves the old run as it was.
    trainer = Trainer(_model(data), data, _config(out, epochs=2, starts=starts, start_epochs=0.5))
    with monkeypatch.context() as patch:
        patch.setattr(trainer, "_evaluate", lambda: _crash(trainer, 1, 0))
        with pytest.raises(_Crash):
            trainer.fit(overwrite=True)
    assert _files(out) == old
    assert not list(out.glob(".overwrite-*")) and trainer.out == out
    # A run that completes replaces every file; its metrics are its own epochs only.
    result = Trainer(_model(data, hidden=[8, 4]), data, _config(out, epochs=2, starts=starts, start_epochs=0.5)).fit(
        overwrite=True)
    assert result.out == out and not list(out.glob(".overwrite-*"))
    assert all(_files(out)[name] != old[name] for name in old)
    assert [r["epoch"] for r in _strict((out / "metrics.jsonl").read_text())] == [1, 2]
    assert load_checkpoint(out / "last.pt").raw["model"]["config"]["hidden"] == [8, 4]


def test_overwrite_swaps_at_the_first_saved_epoch(data, tmp_path):
    out = tmp_path / "run"
    Trainer(_model(data), data, _config(out, epochs=1)).fit()
    old = _files(out)
    seen = []

    def look(trainer, epoch, batch):
        if batch == 0:
            seen.append((epoch, (out / "last.pt").read_bytes() == old["last.pt"], sorted(
                p.name for p in out.glob(".overwrite-*/*"))))

    Trainer(_model(data), data, _config(out, epochs=2), on_step=look).fit(overwrite=True)
    # Epoch 1 runs while the old run is in place (the new one writes nothing yet); by epoch 2 the
    # new run's files have taken its place.
    assert seen == [(1, True, []), (2, False, [])]


def test_a_staging_folder_of_a_killed_run_is_removed_by_the_next(data, tmp_path):
    out = tmp_path / "run"
    Trainer(_model(data), data, _config(out, epochs=1)).fit()
    leftover = out / ".overwrite-dead1234"
    leftover.mkdir()
    (leftover / "last.pt").write_bytes(b"half")
    Trainer(_model(data), data, _config(out, epochs=1)).fit(overwrite=True)
    assert not leftover.exists()


def test_the_cli_overwrite_interrupted_before_its_first_epoch_keeps_the_old_run(npz, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    code, _, err = _cli(capsys, *_npz_args(npz, out))
    assert code == 0, err
    old = _files(out)
    from taan_core.train import _trainer

    def interrupted(self, world, progress):
        raise KeyboardInterrupt

    monkeypatch.setattr(_trainer.Trainer, "_run_epoch", interrupted)
    code, _, err = _cli(capsys, *_npz_args(npz, out, "--overwrite"))
    assert code == 130
    # The old run is whole, so --resume can still continue it.
    assert err.strip().splitlines()[-1] == "taan-core: interrupted (continue with --resume)"
    assert _files(out) == old and not list(out.glob(".overwrite-*"))
