"""The shared warm-up: training starts as hard sharing, then the task activations adapt."""

from __future__ import annotations

import pytest
import torch

from taan_core.data import load_dataset
from taan_core.models import build_model
from taan_core.train import TrainConfig, Trainer

TINY = dict(num_tasks=4, groups_per_layer=[2, 4], input_dim=6, hidden=[8, 8], num_hinges=4, num_outputs=2,
            samples_per_task=40)


@pytest.fixture(scope="module")
def data():
    return load_dataset("planted", **TINY)


def _fit(data, tmp_path, **kw):
    torch.manual_seed(0)
    model = build_model("taan", data.input_shape, [t.num_outputs for t in data.tasks], hidden=[8, 8], num_hinges=4)
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    kw.setdefault("epochs", 4)
    config = TrainConfig(out=str(tmp_path / "run"), quiet=True, device="cpu", batch_size=8, lr=1e-2, threads=1, **kw)
    trainer = Trainer(model, data, config)
    return trainer, trainer.fit(), initial


@pytest.mark.parametrize(("fraction", "epochs", "expected"), [
    (0.1, 45, 5), (0.1, 30, 3), (0.1, 10, 1), (0.1, 5, 1), (0.1, 4, 0), (0.1, 1, 0),
    (0.5, 4, 2), (0.5, 1, 0), (0.9, 3, 2), (0.0, 45, 0),
])
def test_warmup_epochs_round_to_the_nearest_epoch_and_leave_one_to_adapt(fraction, epochs, expected):
    assert TrainConfig(epochs=epochs, shared_warmup=fraction).warmup_epochs == expected


@pytest.mark.parametrize(("value", "error", "match"), [
    (1.0, ValueError, r"shared_warmup must be a fraction of the epochs in \[0, 1\), got 1.0"),
    (-0.1, ValueError, "shared_warmup must be a fraction"),
    (float("nan"), ValueError, "shared_warmup must be a fraction"),
    (True, TypeError, "shared_warmup must be a float, got bool"),
    ("0.1", TypeError, "shared_warmup must be a float, got str"),
])
def test_bad_warmup_is_refused(value, error, match):
    with pytest.raises(error, match=match):
        TrainConfig(shared_warmup=value)


def test_coefficients_stay_fixed_during_the_warmup_and_adapt_after(data, tmp_path):
    trainer, result, initial = _fit(data, tmp_path, shared_warmup=0.5)
    assert trainer.config.warmup_epochs == 2 and result.epochs == 4
    for layer, (name, _) in enumerate(trainer.model.adaptive_layers()):
        alpha0, hinges0 = initial[f"{name}.alpha"], initial[f"{name}.hinges"]
        for snap in trainer.history[:2]:
            assert torch.equal(torch.as_tensor(snap["alphas"][layer]), alpha0)
            assert torch.equal(torch.as_tensor(snap["hinges"][layer]), hinges0)
        adapted = trainer.history[3]
        assert not torch.equal(torch.as_tensor(adapted["alphas"][layer]), alpha0)
        assert not torch.equal(torch.as_tensor(adapted["hinges"][layer]), hinges0)
    # The shared weights learn during the warm-up.
    first = trainer.model.blocks[0].linear.weight
    assert not torch.equal(first.detach(), initial["blocks.0.linear.weight"])


def test_without_warmup_the_coefficients_move_in_the_first_epoch(data, tmp_path):
    trainer, _, initial = _fit(data, tmp_path, shared_warmup=0.0, epochs=1)
    assert not torch.equal(torch.as_tensor(trainer.history[0]["alphas"][0]), initial["blocks.0.act.alpha"])


def test_patience_counts_only_the_adaptive_epochs(data, tmp_path):
    # min_delta so large that only the first epoch improves: the run stops after `patience`
    # epochs without improvement, not counting warm-up epochs.
    _, with_warmup, _ = _fit(data, tmp_path / "a", shared_warmup=0.5, patience=1, min_delta=1e9)
    _, without, _ = _fit(data, tmp_path / "b", shared_warmup=0.0, patience=1, min_delta=1e9)
    assert without.epochs == 2 and without.stopped_early
    assert with_warmup.epochs == 3 and with_warmup.stopped_early
