"""TensorBoard logging through the Trainer's on_epoch hook and `taan-core train --log tensorboard`."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from taan_core.cli import main
from taan_core.data import load_dataset
from taan_core.gaussian import distance_matrix
from taan_core.models import build_model
from taan_core.train import TrainConfig, Trainer

TINY = dict(num_tasks=4, groups_per_layer=[2, 4], input_dim=6, hidden=[8, 8], num_hinges=4, num_outputs=2,
            samples_per_task=40)


def _events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _train(tmp_path, on_epoch, epochs=3):
    data = load_dataset("planted", **TINY)
    torch.manual_seed(0)
    model = build_model("taan", data.input_shape, [t.num_outputs for t in data.tasks], hidden=[8, 8], num_hinges=4)
    config = TrainConfig(out=str(tmp_path / "run"), quiet=True, device="cpu", epochs=epochs, batch_size=8, lr=1e-2,
                         threads=1)
    trainer = Trainer(model, data, config, on_epoch=on_epoch)
    trainer.fit()
    return trainer


def test_on_epoch_hook_gets_each_metrics_record_after_it_is_written(tmp_path):
    seen = []

    def hook(trainer, record):
        lines = (trainer.out / "metrics.jsonl").read_text().splitlines()
        seen.append((record, json.loads(lines[-1]), len(trainer.history)))

    _train(tmp_path, hook, epochs=2)
    assert [r["epoch"] for r, _, _ in seen] == [1, 2]
    for record, line, history in seen:
        assert record == line and history == record["epoch"]


def test_tensorboard_logger_writes_the_run(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed")
    from taan_core import TensorBoardLogger

    logger = TensorBoardLogger(tmp_path / "tb", image_every=2)
    trainer = _train(tmp_path, logger.on_epoch)
    logger.close()
    acc = _events(tmp_path / "tb")
    tags = acc.Tags()
    records = [json.loads(line) for line in (trainer.out / "metrics.jsonl").read_text().splitlines()]
    # metrics.jsonl is the record; the scalars mirror it epoch by epoch.
    loss = acc.Scalars("loss/train")
    assert [e.step for e in loss] == [1, 2, 3]
    assert [e.value for e in loss] == pytest.approx([r["train_loss"] for r in records], rel=1e-6)
    task = trainer.data.task_names[1]
    metric = next(iter(records[0]["val"]["per_task"][task]))
    assert [e.value for e in acc.Scalars(f"val_{metric}/{task}")] == pytest.approx(
        [r["val"]["per_task"][task][metric] for r in records], rel=1e-6)
    assert [e.value for e in acc.Scalars("val/main")] == pytest.approx([r["val"]["main"] for r in records], rel=1e-6)
    names = [name for name, _ in trainer.model.adaptive_layers()]
    last_alpha = trainer.model.adaptive_layers()[0][1].alpha.detach().double().norm().item()
    assert acc.Scalars(f"alpha_norm/L1-{names[0]}")[-1].value == pytest.approx(last_alpha, rel=1e-5)
    # Images on the first epoch and every image_every-th: epochs 1 and 2 of 3.
    images = acc.Images(f"distance/L2-{names[1]}")
    assert [e.step for e in images] == [1, 2]
    assert set(tags["images"]) == {f"distance/L{i}-{n}" for i, n in enumerate(names, start=1)}


def test_distance_image_shows_the_matrix():
    from taan_core.train._tensorboard import _distance_image

    d = distance_matrix(torch.tensor([[0.0, 0.0], [0.0, 0.1], [1.0, -1.0]]), torch.tensor([-0.5, 0.5]))
    img = _distance_image(d, pixels=30)
    assert img.shape == (3, 30, 30) and img.dtype == torch.uint8
    brightness = img.float().sum(0)
    # The diagonal is darkest, the farthest pair (tasks 1 and 2 or 0 and 2) brightest.
    assert brightness[0, 0] < brightness[0, 25] and brightness[5, 15] < brightness[5, 25]


@pytest.mark.slow
def test_cli_log_tensorboard(tmp_path, capsys):
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed")
    out = tmp_path / "run"
    args = ["train", "--epochs", "1", "--hinges", "2", "--batch-size", "128", "--quiet", "--out", str(out),
            "--log", "tensorboard"]
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 0, capsys.readouterr().err
    assert [e.step for e in _events(out / "tensorboard").Scalars("loss/train")] == [1]
    with pytest.raises(SystemExit) as info:
        main([*args, "--overwrite"])
    assert info.value.code == 0
    # The overwritten run's events are gone: one event file, one point.
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_missing_tensorboard_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(SystemExit) as info:
        main(["train", "--quiet", "--out", str(tmp_path / "run"), "--log", "tensorboard"])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1
    assert err[0] == ("taan-core: error: --log tensorboard needs the tensorboard package: "
                      "pip install 'taan[tensorboard]' (or pip install tensorboard)")
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit) as info:
        main(["train", "--quiet", "--out", str(tmp_path / "run"), "--log", "wandb"])
    assert info.value.code == 2 and "Invalid value for '--log': 'wandb' is not one of 'none', 'tensorboard'" in capsys.readouterr().err


def test_an_overwritten_runs_events_stay_until_the_first_epoch_is_logged(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed")
    from types import SimpleNamespace

    from taan_core import TensorBoardLogger

    log_dir = tmp_path / "tensorboard"
    log_dir.mkdir()
    old = log_dir / "events.out.tfevents.1.old-run"
    old.write_bytes(b"old events")
    logger = TensorBoardLogger(log_dir)
    logger.clear(deferred=True)
    assert old.exists()  # a run that fails before its first epoch keeps the old events
    model = build_model("taan", (3,), [1, 1], hidden=[4], num_hinges=2)
    logger.on_epoch(SimpleNamespace(model=model), {"epoch": 1, "train_loss": 0.5, "val": {"main": 0.1}})
    logger.close()
    assert not old.exists()
    assert [e.step for e in _events(log_dir).Scalars("loss/train")] == [1]
