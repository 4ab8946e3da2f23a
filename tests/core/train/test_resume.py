"""Resuming: an interrupted run ends with exactly the coordinates of an uninterrupted one (CPU)."""

from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from taan_core.checkpoint import load_checkpoint

# One definition of the run, used in this process and in the child that gets killed. Dropout and
# a cosine schedule make the comparison sensitive to the RNG and scheduler state as well.
_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from taan_core.data import load_dataset
    from taan_core.models import build_model
    from taan_core.train import TrainConfig, Trainer

    def run(out, epochs=3, resume=False, stop_after=None, kill_at=None):
        data = load_dataset("planted", num_tasks=4, groups_per_layer=[2, 4], input_dim=6, hidden=[8, 8],
                            num_hinges=4, num_outputs=2, samples_per_task=100)
        torch.manual_seed(0)
        model = build_model("taan", data.input_shape, [2] * 4, hidden=[8, 8], num_hinges=4, dropout=0.1)
        config = TrainConfig(epochs=epochs, batch_size=8, lr=3e-2, schedule="cosine", out=str(out),
                             quiet=True, device="cpu", threads=1, starts=1)

        def on_step(trainer, epoch, batch):
            if (epoch, batch) == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

        return Trainer(model, data, config, on_step=on_step).fit(resume=resume, stop_after=stop_after)

    if __name__ == "__main__":
        run(sys.argv[1], kill_at=(int(sys.argv[2]), int(sys.argv[3])))
    """
)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "run_planted.py"
    path.write_text(_SCRIPT)
    return path


def _run(script: Path):
    return runpy.run_path(str(script))["run"]


def _without_time(metrics):
    return [{k: v for k, v in m.items() if k != "seconds"} for m in metrics]


def _assert_same_run(a: Path, b: Path) -> None:
    for name in ("last.pt", "checkpoint.pt"):
        x, y = load_checkpoint(a / name), load_checkpoint(b / name)
        assert x.raw["epoch"] == y.raw["epoch"] and x.raw["step"] == y.raw["step"]
        for lx, ly in zip(x.layers, y.layers, strict=True):
            assert torch.equal(lx.alpha, ly.alpha), f"{name}: alpha of {lx.name} differs"
            assert torch.equal(lx.hinges, ly.hinges), f"{name}: hinges of {lx.name} differ"
            assert (lx.mu, lx.sigma) == (ly.mu, ly.sigma)
        sx, sy = x.raw["model"]["state_dict"], y.raw["model"]["state_dict"]
        assert sx.keys() == sy.keys()
        assert all(torch.equal(sx[k], sy[k]) for k in sx)
        for hx, hy in zip(x.history, y.history, strict=True):
            assert all(torch.equal(p, q) for p, q in zip(hx["alphas"] + hx["hinges"], hy["alphas"] + hy["hinges"]))
        assert _without_time(x.metrics) == _without_time(y.metrics)
    lines = [_without_time([json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]) for d in (a, b)]
    assert lines[0] == lines[1]


@pytest.mark.slow
def test_stop_and_resume_equals_uninterrupted(script, tmp_path):
    run = _run(script)
    whole = run(tmp_path / "whole")
    assert whole.epochs == 3
    first = run(tmp_path / "split", stop_after=1)
    assert first.epochs == 1
    assert load_checkpoint(tmp_path / "split" / "last.pt").raw["epoch"] == 1
    second = run(tmp_path / "split", resume=True)
    assert second.epochs == 3
    _assert_same_run(tmp_path / "whole", tmp_path / "split")


@pytest.mark.slow
def test_resume_after_sigkill_mid_epoch(script, tmp_path):
    run = _run(script)
    run(tmp_path / "whole")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")]))
    # The child must take the same activation path (compiled kernel or plain torch) as this
    # process, whose choice earlier tests may have switched; the two differ in rounding.
    from taan_core.nn import _kernels

    if not (_kernels.enabled() and _kernels.available()):
        env["TAAN_NO_KERNELS"] = "1"
    child = subprocess.run([sys.executable, str(script), str(tmp_path / "killed"), "2", "3"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr
    killed = tmp_path / "killed"
    # The kill came in epoch 2, after epoch 1 had been written completely.
    assert load_checkpoint(killed / "last.pt").raw["epoch"] == 1
    assert len((killed / "metrics.jsonl").read_text().splitlines()) == 1
    assert not list(killed.glob(".*.tmp"))
    result = run(killed, resume=True)
    assert result.epochs == 3
    _assert_same_run(tmp_path / "whole", killed)


@pytest.mark.slow
def test_resuming_a_finished_run_changes_nothing(script, tmp_path):
    run = _run(script)
    run(tmp_path / "done", epochs=2)
    before = (tmp_path / "done" / "last.pt").read_bytes()
    result = run(tmp_path / "done", epochs=2, resume=True)
    assert result.epochs == 2
    assert (tmp_path / "done" / "last.pt").read_bytes() == before


@pytest.mark.slow
def test_resume_can_extend_the_run(script, tmp_path):
    run = _run(script)
    run(tmp_path / "short", epochs=2)
    result = run(tmp_path / "short", epochs=3, resume=True)
    assert result.epochs == 3
    assert [h["epoch"] for h in load_checkpoint(tmp_path / "short" / "last.pt").history] == [1, 2, 3]


@pytest.mark.slow
def test_crash_between_best_and_last_writes(script, tmp_path, monkeypatch):
    import taan_core.train._trainer as train_module

    run = _run(script)
    whole = run(tmp_path / "whole")
    assert whole.metrics[1]["best"], "epoch 2 must improve for this test to bite"
    real_save, real_copy = train_module.save_checkpoint, train_module._copy_file
    saved = {"epoch": 0}

    def crashing_save(obj, path, **kwargs):
        saved["epoch"] = obj["epoch"]
        if path.name == "last.pt" and obj["epoch"] == 2:
            raise RuntimeError("power cut")
        return real_save(obj, path, **kwargs)

    def crashing_copy(src, dst):
        # An improved epoch's last.pt is a copy of the checkpoint.pt just written.
        if dst.name == "last.pt" and saved["epoch"] == 2:
            raise RuntimeError("power cut")
        return real_copy(src, dst)

    monkeypatch.setattr(train_module, "save_checkpoint", crashing_save)
    monkeypatch.setattr(train_module, "_copy_file", crashing_copy)
    with pytest.raises(RuntimeError, match="power cut"):
        run(tmp_path / "cut")
    monkeypatch.undo()
    # checkpoint.pt already holds epoch 2, last.pt still epoch 1
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt").raw["epoch"] == 2
    assert load_checkpoint(tmp_path / "cut" / "last.pt").raw["epoch"] == 1
    run(tmp_path / "cut", resume=True)
    _assert_same_run(tmp_path / "whole", tmp_path / "cut")
