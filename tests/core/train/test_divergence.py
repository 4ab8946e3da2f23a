"""A run that diverges stops with one line, keeps its last good epoch and never saves non-finite
weights; numeric options are bounded."""

from __future__ import annotations


import pytest
import torch

from taan_core.train._support import _json_line
from taan_core.checkpoint import CheckpointError, build_checkpoint, load_checkpoint, save_checkpoint
from taan_core.train import Trainer, TrainingDivergedError

from tests.core.reliability_helpers import (  # noqa: F401 - fixtures and helpers
    data,
    npz,
    _strict,
    _cli,
    _one_line,
    _npz_args,
    _model,
    _config,
)


# ---------------------------------------------------------------------------------- 1. divergence


@pytest.mark.parametrize("model", ["hard", "stl", "mmoe", "taan"])
def test_diverged_training_stops_with_one_line_and_writes_nothing(model, npz, tmp_path, capsys):
    out = tmp_path / "new" / "run"
    args = _npz_args(npz, out, "--model", model, "--lr", "1e6", "--epochs", "3", "--quiet")
    args[args.index("--hidden") + 1] = "8,8,8"
    if model != "taan":
        del args[args.index("--hinges"):args.index("--hinges") + 2]
    line = _one_line(*_cli(capsys, *args)[::2], status=1)
    assert "training diverged at epoch 1, step" in line
    assert "learning rate (lr 1e+06) is probably too high" in line
    assert "nothing was saved" in line
    assert not (tmp_path / "new").exists()  # the folders it created went with the failure


def test_divergence_keeps_the_last_completed_epoch(data, tmp_path):
    def poison(trainer, epoch, batch):
        if (epoch, batch) == (2, 1):
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))

    out = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=r"at epoch 2, step 3 of \d+ \(loss nan\).*keeps epoch 1"):
        Trainer(_model(data), data, _config(out, epochs=3), on_step=poison).fit()
    last = load_checkpoint(out / "last.pt")
    assert last.raw["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last.raw["model"]["state_dict"].values() if v.is_floating_point())
    assert len(_strict((out / "metrics.jsonl").read_text())) == 1


def test_non_finite_weights_with_finite_loss_are_caught_at_the_end_of_the_epoch(data, tmp_path):
    def poison(trainer, epoch, batch):
        if epoch == 1 and batch == len(trainer.sampler) - 1:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("inf"))

    with pytest.raises(TrainingDivergedError, match=r"in epoch 1: the weights \(.*\) became NaN or infinite"):
        Trainer(_model(data), data, _config(tmp_path / "run"), on_step=poison).fit()


@pytest.mark.parametrize("name", ["hard", "stl", "mmoe", "taan"])
@pytest.mark.parametrize("validate", [True, False])
def test_save_checkpoint_refuses_non_finite_weights_of_any_model(data, tmp_path, name, validate):
    kw = {} if name == "taan" else {"hidden": [8]}
    model = _model(data, name, **kw)
    with torch.no_grad():
        list(model.parameters())[-1].view(-1)[0] = float("nan")
    ckpt = build_checkpoint(model, task_names=data.task_names)
    path = tmp_path / "c.pt"
    with pytest.raises(CheckpointError, match=r"c.pt: model.state_dict.*refusing to write non-finite values"):
        save_checkpoint(ckpt, path, validate=validate)
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_save_checkpoint_refuses_non_finite_alpha(data, tmp_path):
    ckpt = build_checkpoint(_model(data), task_names=data.task_names)
    ckpt["layers"][0]["alpha"][0, 0] = float("inf")
    with pytest.raises(CheckpointError, match=r"layers\[0\].alpha: refusing to write non-finite"):
        save_checkpoint(ckpt, tmp_path / "c.pt", validate=False)


def test_metrics_jsonl_is_strict_json_and_the_cli_names_only_files_that_exist(npz, tmp_path, capsys, monkeypatch):
    # Validation that is never finite (as with one validation sample per task): no best epoch.
    def never_finite(self):
        tasks = {t.name: {"accuracy": float("nan")} for t in self.tasks}
        return {"per_task": tasks, "mean": {"accuracy": float("nan")}, "main": float("nan")}

    monkeypatch.setattr(Trainer, "_evaluate", never_finite)
    out = tmp_path / "run"
    code, _, err = _cli(capsys, *_npz_args(npz, out, "--epochs", "2"))
    assert code == 0, err
    assert not (out / "checkpoint.pt").exists()
    assert "checkpoint.pt" not in err.split("wrote", 1)[1]
    assert "val main was never finite" in err and "no checkpoint.pt was written" in err
    assert f"wrote {out / 'last.pt'}, {out / 'metrics.jsonl'}" in err
    records = _strict((out / "metrics.jsonl").read_text())
    assert [r["val"]["main"] for r in records] == [None, None]
    assert records[0]["val"]["per_task"]["reg"]["accuracy"] is None
    assert _json_line({"a": float("inf"), "b": [float("-inf"), 1.5]}) == '{"a": null, "b": [null, 1.5]}\n'


# --------------------------------------------------------------------------------- 6. numeric bounds


@pytest.mark.parametrize("args,match", [
    (["--lr", "1e38"], "--lr must be <= 1e+06, got 1e+38"),
    (["--lr", "0"], "--lr must be > 0"),
    (["--weight-decay", "1e30"], "--weight-decay must be <= 1e+06"),
    (["--reg", "tracenorm", "--c", "1e38"], "--c must be <= 1e+06"),
    (["--seed", "100000000000000000000"], "--seed must be <= 2**63 - 1, got 100000000000000000000"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--threads", "100000"], "--threads must be at most the"),
])
def test_numeric_options_are_bounded_and_named(capsys, tmp_path, args, match):
    line = _one_line(*_cli(capsys, "train", *args, "--out", str(tmp_path / "x"))[::2])
    assert match in line
    assert not (tmp_path / "x").exists()


def test_the_largest_learning_rate_does_not_crash_the_optimiser(data, tmp_path):
    # 1e38 overflowed inside Adam (RuntimeError); at the bound the run trains or diverges cleanly.
    try:
        result = Trainer(_model(data), data, _config(tmp_path / "run", lr=1e6, epochs=1)).fit()
    except TrainingDivergedError as err:
        assert "epoch" in str(err) and "step" in str(err)  # names where it diverged
    else:
        assert result.epochs == 1 and (tmp_path / "run" / "last.pt").is_file()
