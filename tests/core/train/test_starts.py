"""Candidate starts: several initialisations train briefly, the best on validation continues."""

from __future__ import annotations

import json

import pytest
import torch

from taan_core.train._starts import fresh_state, start_seed
from taan_core.checkpoint import load_checkpoint
from taan_core.data import load_dataset
from taan_core.models import build_model
from taan_core.train import TrainConfig, Trainer

TINY = dict(num_tasks=4, groups_per_layer=[2, 4], input_dim=6, hidden=[8, 8], num_hinges=4, num_outputs=2,
            samples_per_task=40)


@pytest.fixture(scope="module")
def data():
    return load_dataset("planted", **TINY)


def _model(data, seed=0):
    torch.manual_seed(seed)
    return build_model("taan", data.input_shape, [t.num_outputs for t in data.tasks], hidden=[8, 8], num_hinges=4)


def _config(out, **kw):
    kw.setdefault("epochs", 5)
    return TrainConfig(out=str(out), quiet=True, device="cpu", batch_size=8, lr=1e-2, threads=1, **kw)


@pytest.mark.parametrize(("starts", "fraction", "epochs", "expected"), [
    (1, 0.2, 45, 0), (3, 0.2, 45, 9), (3, 0.2, 5, 1), (3, 0.2, 1, 1), (2, 1.0, 4, 4), (3, 0.01, 10, 1),
])
def test_trial_epochs(starts, fraction, epochs, expected):
    assert TrainConfig(epochs=epochs, starts=starts, start_epochs=fraction).trial_epochs == expected


@pytest.mark.parametrize(("kw", "error", "match"), [
    ({"starts": 0}, ValueError, "starts must be >= 1, got 0"),
    ({"starts": 2.0}, TypeError, "starts must be an int, got float"),
    ({"start_epochs": 0.0}, ValueError, r"start_epochs must be a fraction of the epochs in \(0, 1\], got 0.0"),
    ({"start_epochs": 1.5}, ValueError, "start_epochs must be a fraction"),
    ({"start_epochs": "0.2"}, TypeError, "start_epochs must be a float, got str"),
])
def test_bad_starts_are_refused(kw, error, match):
    with pytest.raises(error, match=match):
        TrainConfig(**kw)


def test_start_seeds_differ_and_fresh_state_leaves_the_global_random_state(data):
    seeds = {start_seed(s, k) for s in range(5) for k in range(1, 4)}
    assert len(seeds) == 15 and all(0 <= s < 2**63 for s in seeds)
    model = _model(data)
    before = torch.random.get_rng_state()
    a, b = fresh_state(model, 11), fresh_state(model, 11)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(a[k], b[k]) for k in a)
    given = model.state_dict()
    assert not torch.equal(a["blocks.0.linear.weight"], given["blocks.0.linear.weight"])
    # The same draw as building the model under that seed.
    assert torch.equal(a["blocks.0.linear.weight"], _model(data, seed=11).state_dict()["blocks.0.linear.weight"])


def test_the_best_start_continues_as_if_it_had_trained_alone(data, tmp_path):
    trainer = Trainer(_model(data), data, _config(tmp_path / "three", starts=3, start_epochs=0.4))
    result = trainer.fit()
    out = tmp_path / "three"
    starts = load_checkpoint(out / "checkpoint.pt").raw["extra"]["starts"]
    assert [s["start"] for s in starts] == [0, 1, 2] and starts[0]["seed"] == 0
    chosen = [s for s in starts if s["chosen"]]
    assert len(chosen) == 1 and chosen[0]["val_main"] == max(s["val_main"] for s in starts)
    # Every epoch is written once, the chosen start's trial epochs included.
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3, 4, 5] and result.epochs == 5
    assert lines[1]["val"]["main"] == pytest.approx(chosen[0]["val_main"], abs=0)

    # The chosen start trained alone (starts=1) from its own initial weights gives the same run.
    alone = _model(data)
    if chosen[0]["start"]:
        alone.load_state_dict(fresh_state(alone, chosen[0]["seed"]))
    single = Trainer(alone, data, _config(tmp_path / "one", starts=1))
    single.fit()
    assert [m["val"]["main"] for m in single.metrics] == [m["val"]["main"] for m in lines]
    for p, q in zip(trainer.model.parameters(), single.model.parameters()):
        assert torch.equal(p, q)


def test_one_start_trains_the_given_model_only(data, tmp_path):
    steps = []
    trainer = Trainer(_model(data), data, _config(tmp_path, starts=1, epochs=2),
                      on_step=lambda tr, e, b: steps.append(e))
    trainer.fit()
    assert sorted(set(steps)) == [1, 2] and len(steps) == 2 * len(trainer.sampler)
    assert load_checkpoint(tmp_path / "checkpoint.pt").raw["extra"]["starts"] == []


def test_resume_after_the_choice_continues_the_chosen_start(data, tmp_path):
    whole = Trainer(_model(data), data, _config(tmp_path / "whole", starts=2, start_epochs=0.4))
    whole.fit()
    part = Trainer(_model(data), data, _config(tmp_path / "part", starts=2, start_epochs=0.4))
    part.fit(stop_after=3)
    assert part.epoch == 3
    resumed = Trainer(_model(data), data, _config(tmp_path / "part", starts=2, start_epochs=0.4))
    resumed.fit(resume=True)
    for p, q in zip(whole.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)
    assert load_checkpoint(tmp_path / "part" / "last.pt").raw["extra"]["starts"] == \
        load_checkpoint(tmp_path / "whole" / "last.pt").raw["extra"]["starts"]


def test_progress_names_the_candidate_starts(data, tmp_path, capsys):
    config = TrainConfig(epochs=3, batch_size=8, lr=1e-2, out=str(tmp_path), device="cpu", threads=1, starts=2,
                         start_epochs=0.34)
    Trainer(_model(data), data, config).fit()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "2 candidate starts of 1 epoch each, the best continues"
    assert lines[3].startswith("starts: 1 ") and lines[3].endswith(" — best validation of each over its 1 epoch")
    assert lines[3].count("(kept)") == 1
    epochs = [line.split()[:4 if line.startswith("start ") else 2] for line in lines[1:3] + lines[4:]]
    assert epochs == [["start", "1/2", "epoch", "1"], ["start", "2/2", "epoch", "1"], ["epoch", "2"], ["epoch", "3"]]


def test_a_start_is_judged_on_its_best_validation_epoch(data, tmp_path, monkeypatch, capsys):
    # Scripted validation: start 1 peaks at 0.9 then drops to 0.1; start 2 ends highest (0.5).
    # Judged on the last epoch start 2 would win; judged on the best, start 1 does.
    mains = iter([0.9, 0.1, 0.5, 0.5, 0.2, 0.3] + [0.6] * 10)
    monkeypatch.setattr(Trainer, "_evaluate", lambda self: {"main": next(mains), "mean": {}, "per_task": {}})
    config = TrainConfig(epochs=10, batch_size=8, lr=1e-2, out=str(tmp_path), device="cpu", threads=1, starts=3,
                         start_epochs=0.2)
    Trainer(_model(data), data, config).fit()
    starts = load_checkpoint(tmp_path / "checkpoint.pt").raw["extra"]["starts"]
    assert [(s["val_main"], s["chosen"]) for s in starts] == [(0.9, True), (0.5, False), (0.3, False)]
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "3 candidate starts of 2 epochs each, the best continues"
    assert "starts: 1 0.9000 (kept), 2 0.5000, 3 0.3000 — best validation of each over its 2 epochs" in lines
