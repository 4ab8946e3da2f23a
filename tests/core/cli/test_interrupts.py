"""Ctrl-C at any moment: one line, and --resume continues."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from taan_core.train._support import LOCK_FILE
from taan_core.checkpoint import load_checkpoint

from tests.core.reliability_helpers import (  # noqa: F401 - fixtures and helpers
    npz,
    _ROOT,
    _cli,
    _one_line,
    _npz_args,
)


# ----------------------------------------------------------------------------------------- 7. SIGINT


def test_sigint_during_start_up_prints_the_line(tmp_path):
    # A Ctrl-C while the command imports its modules (simulated at the import of typer).
    script = textwrap.dedent("""
        import runpy, sys
        class Interrupt:
            def find_spec(self, name, path=None, target=None):
                if name == "typer":
                    raise KeyboardInterrupt
        sys.meta_path.insert(0, Interrupt())
        sys.argv = ["taan-core", "train"]
        runpy.run_module("taan_core.cli", run_name="__main__")
    """)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, PYTHONPATH=str(_ROOT)))
    assert child.returncode == 130
    assert child.stderr.strip() == "taan-core: interrupted"


def test_sigint_before_training_prints_the_line(capsys, monkeypatch, tmp_path):
    import taan_core.data

    def interrupted_load(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler fires at once

    monkeypatch.setattr(taan_core.data, "load_dataset", interrupted_load)
    before = signal.getsignal(signal.SIGINT)
    line = _one_line(*_cli(capsys, "train", "--out", str(tmp_path / "run"))[::2], status=130)
    assert line == "taan-core: interrupted"
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.slow
def test_sigint_during_training_prints_the_line_and_resume_continues(npz, tmp_path):
    out = tmp_path / "run"
    args = _npz_args(npz, out, "--epochs", "100000")
    child = subprocess.Popen([sys.executable, "-m", "taan_core.cli", *args], stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONPATH=str(_ROOT)))
    lines = []
    for line in child.stderr:
        lines.append(line)
        if line.startswith("epoch   2"):
            break
    child.send_signal(signal.SIGINT)
    rest = child.stderr.read()
    child.wait(timeout=120)
    assert child.returncode == 130, "".join(lines) + rest
    assert rest.strip().splitlines()[-1] == "taan-core: interrupted (continue with --resume)"
    assert "Traceback" not in rest
    assert not (out / LOCK_FILE).exists()
    epoch = load_checkpoint(out / "last.pt").raw["epoch"]
    assert epoch >= 1
    code = subprocess.run([sys.executable, "-m", "taan_core.cli", *args[:-2], "--epochs", str(epoch + 1), "--resume",
                           "--quiet"], env=dict(os.environ, PYTHONPATH=str(_ROOT)), timeout=120).returncode
    assert code == 0
    assert load_checkpoint(out / "last.pt").raw["epoch"] == epoch + 1
