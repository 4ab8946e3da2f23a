"""`taan-core train --seeds`: one normal run folder per seed, side by side with --workers, and a
failing seed reported without stopping the others."""

from __future__ import annotations

import pytest

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from taan_core import _cli_seeds as seeds_mod
from taan_core._cli_seeds import MAX_SEEDS, parse_seeds
from taan_core.checkpoint import load_checkpoint

from tests.core.cli.test_cli import _FAST, _cli


@pytest.mark.parametrize("text, seeds", [("0,1,2", [0, 1, 2]), ("0-3", [0, 1, 2, 3]), (" 4, 0-1 ,9", [4, 0, 1, 9]),
                                         ("7", [7])])
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text, match", [("", "at least one seed"), ("a,b", "comma-separated ints"),
                                         ("3-1", "ranges like"), ("-1", "each >= 0"), ("1,1", "seed 1 twice")])
def test_parse_seeds_errors(text, match):
    with pytest.raises(ValueError, match=match):
        parse_seeds(text)


def test_parse_seeds_is_linear_and_capped():
    start = time.perf_counter()
    assert parse_seeds(f"0-{MAX_SEEDS - 1}") == list(range(MAX_SEEDS))  # quadratic took seconds
    assert time.perf_counter() - start < 0.5
    with pytest.raises(ValueError, match=r"^--seeds names 100000001 seeds, more than the 10000 one command trains"):
        parse_seeds("0-100000000")  # refused before the list is built
    with pytest.raises(ValueError, match="seed 5 twice"):
        parse_seeds("0-9,5")


def test_workers_are_capped_by_cores_and_memory(monkeypatch, tmp_path):
    monkeypatch.setattr(seeds_mod.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(seeds_mod, "_memory_available", lambda: 64 * 2**30)
    assert seeds_mod.max_workers() == 4
    monkeypatch.setattr(seeds_mod, "_memory_available", lambda: 2**30)  # two workers' worth
    assert seeds_mod.max_workers() == 2
    with pytest.raises(ValueError, match=r"^--workers 3 is more than this machine runs side by side \(2: one per CPU "
                                         r"core \(4\), 512 MiB of available memory each\); use --workers 2 or fewer"):
        seeds_mod.train_seeds([0, 1, 2], tmp_path / "runs", [], entry=print, workers=3)
    assert not (tmp_path / "runs").exists()


_ROOT = Path(__file__).resolve().parents[3]


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(line.split()[1] for line in fh if line.startswith("State:"))
    except (FileNotFoundError, ProcessLookupError, StopIteration):
        return "gone"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_seed_dies_with_its_parent_even_by_sigkill(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing, os, sys, time
        from taan_core._cli_seeds import _die_with_parent

        def child(parent, path):
            _die_with_parent(parent)
            with open(path + ".tmp", "w") as fh:
                fh.write(str(os.getpid()))
            os.replace(path + ".tmp", path)
            time.sleep(120)

        if __name__ == "__main__":
            proc = multiprocessing.get_context("spawn").Process(target=child, args=(os.getpid(), sys.argv[1]))
            proc.start()
            proc.join()
    """))
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file)], env=dict(os.environ, PYTHONPATH=str(_ROOT)))
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert _state(child) not in ("gone", "Z")
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while _state(child) not in ("gone", "Z") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _state(child) in ("gone", "Z"), "the seed outlived its killed parent"


@pytest.mark.parametrize("args, match", [
    (["--seeds", "0,x"], "--seeds must be comma-separated ints"),
    (["--workers", "2"], "--workers applies only with --seeds"),
    (["--seeds", "0,1", "--seed", "3"], "--seed and --seeds exclude each other"),
    (["--seeds", "0,1", "--workers", "0"], "--workers must be an int >= 1, got 0"),
    (["--seeds", "0", "--dataset", "nope"], "Invalid value for '--dataset': 'nope' is not one of"),
])
def test_seed_option_errors_are_one_line(capsys, tmp_path, args, match):
    code, out, err = _cli(capsys, "train", *args, "--out", str(tmp_path / "runs"))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("taan-core: error: ") and match in lines[0], err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_seeds_write_one_run_per_seed_and_report_a_failing_one(capsys, tmp_path):
    out = tmp_path / "runs"
    # seed 2's folder already holds a run: that seed fails, the others still train.
    (out / "seed-2").mkdir(parents=True)
    (out / "seed-2" / "last.pt").write_bytes(b"taken")
    code, _, err = _cli(capsys, "train", *_FAST, "--seeds", "0,2,1", "--workers", "2", "--out", str(out))
    assert code == 1
    for seed in (0, 1):
        ckpt = load_checkpoint(out / f"seed-{seed}" / "checkpoint.pt")
        config = ckpt.raw["extra"]["train_config"]
        assert config["seed"] == seed and config["epochs"] == 1 and config["batch_size"] == 128
        assert [layer.num_hinges for layer in ckpt.layers] == [2] * len(ckpt.layers)
        assert (out / "logs" / f"seed-{seed}.log").is_file()
    first = load_checkpoint(out / "seed-0" / "checkpoint.pt").layers[0].alpha
    other = load_checkpoint(out / "seed-1" / "checkpoint.pt").layers[0].alpha
    assert not bool((first == other).all())  # different seeds, different runs
    assert not (out / "seed-2" / "checkpoint.pt").exists()
    assert "already holds a run" in (out / "logs" / "seed-2.log").read_text()
    assert "seed 2: failed with exit status 2" in err
    assert "2 of 3 seeds trained" in err and "failed: 2" in err


@pytest.mark.slow
def test_sigint_stops_every_seed_at_once(tmp_path):
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "taan_core.cli", "train", "--dataset", "planted", "--epochs", "100000", "--hinges", "2",
           "--starts", "1", "--quiet", "--seeds", "0,1,2", "--out", str(out)]
    parent = subprocess.Popen(cmd, env=dict(os.environ, PYTHONPATH=str(_ROOT)), stderr=subprocess.PIPE, text=True,
                              start_new_session=True)  # SIGINT below reaches the parent alone, not its group
    try:
        deadline = time.monotonic() + 120
        while not (out / "seed-0" / "last.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (out / "seed-0" / "last.pt").exists()
        child = int((out / "seed-0" / ".train.lock").read_text())
        sent = time.monotonic()
        parent.send_signal(signal.SIGINT)
        _, err = parent.communicate(timeout=30)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert parent.returncode == 130 and time.monotonic() - sent < 15
    assert err.strip().splitlines()[-1] == "taan-core: interrupted"
    assert _state(child) in ("gone", "Z")
    assert not (out / "seed-1").exists()  # no further seed started


class _RecordingContext:
    """A multiprocessing context whose processes record their argv and succeed at once."""

    def __init__(self):
        self.argvs: list[list[str]] = []

    def Process(self, target, args, name):  # noqa: N802 - the multiprocessing name
        ctx = self

        class _Done:
            exitcode = 0
            pid = None

            def start(self):
                ctx.argvs.append(list(args[1]))  # (entry, argv, log, parent)

            def join(self, timeout=None):
                pass

            def is_alive(self):
                return False

        return _Done()


def test_resume_starts_the_seeds_that_never_started(monkeypatch, tmp_path):
    context = _RecordingContext()
    monkeypatch.setattr(seeds_mod.multiprocessing, "get_context", lambda method: context)
    out = tmp_path / "runs"
    (out / "seed-0").mkdir(parents=True)
    (out / "seed-0" / "last.pt").write_bytes(b"an epoch")
    lines: list[str] = []
    results = seeds_mod.train_seeds([0, 1], out, ["--epochs", "3", "--resume", "--allow-data-change"], entry=print,
                                    echo=lines.append)
    assert [r.code for r in results] == [0, 0]
    resumed, started = context.argvs
    assert "--resume" in resumed and "--allow-data-change" in resumed and resumed[-1] == str(out / "seed-0")
    assert "--resume" not in started and "--allow-data-change" not in started and "--epochs" in started
    assert started[-1] == str(out / "seed-1")
    assert f"seed 1: nothing to resume in {out / 'seed-1'}, training it from the start" in lines


@pytest.mark.slow
def test_seeds_resume_after_an_interruption_before_some_seeds_started(capsys, tmp_path):
    out = tmp_path / "runs"
    code, _, err = _cli(capsys, "train", *_FAST, "--seeds", "0", "--out", str(out))
    assert code == 0, err
    epoch = load_checkpoint(out / "seed-0" / "last.pt").raw["epoch"]
    # As if the command had been stopped before seed 1 started: resuming both trains seed 1 afresh.
    fast = [a if a != "1" else "2" for a in _FAST]  # two epochs
    code, _, err = _cli(capsys, "train", *fast, "--seeds", "0,1", "--resume", "--out", str(out))
    assert code == 0, err
    assert load_checkpoint(out / "seed-0" / "last.pt").raw["epoch"] == epoch + 1
    assert load_checkpoint(out / "seed-1" / "last.pt").raw["epoch"] == 2
    assert "seed 1: nothing to resume" in err and "2 of 2 seeds trained" in err
