"""Trainer: losses per task kind, run files, early stopping, configuration checks."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from taan_core.checkpoint import load_checkpoint
from taan_core.data import load_dataset
from taan_core.models import build_model
from taan_core.train._support import _per_sample_loss
from taan_core.train import RUN_FILES, TrainConfig, Trainer, prepare_run_dir, resolve_device

TINY = dict(num_tasks=4, groups_per_layer=[2, 4], input_dim=6, hidden=[8, 8], num_hinges=4, num_outputs=2,
            samples_per_task=60)


@pytest.fixture(scope="module")
def data():
    return load_dataset("planted", **TINY)


def _model(data, name="taan", **overrides):
    torch.manual_seed(0)
    overrides.setdefault("hidden", [8, 8])
    if name == "taan":
        overrides.setdefault("num_hinges", 4)
    return build_model(name, data.input_shape, [t.num_outputs for t in data.tasks], **overrides)


def _config(tmp_path, **kw):
    kw.setdefault("epochs", 2)
    kw.setdefault("batch_size", 8)
    kw.setdefault("lr", 1e-2)
    kw.setdefault("threads", 1)
    kw.setdefault("starts", 1)  # one start: these tests follow the run's own steps and epochs
    return TrainConfig(out=str(tmp_path / "run"), quiet=True, device="cpu", **kw)


@pytest.mark.slow
def test_fit_writes_run_files_history_and_best_checkpoint(data, tmp_path):
    steps = []
    trainer = Trainer(_model(data), data, _config(tmp_path, epochs=3), on_step=lambda tr, e, b: steps.append((e, b)))
    result = trainer.fit()
    out = tmp_path / "run"
    assert sorted(p.name for p in out.iterdir()) == sorted(RUN_FILES)
    per_epoch = len(trainer.sampler)
    assert steps == [(e, b) for e in (1, 2, 3) for b in range(per_epoch)]
    assert result.epochs == 3 and result.steps == 3 * per_epoch

    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3]
    mains = [m["val"]["main"] for m in lines]
    assert result.best_epoch == 1 + max(range(3), key=lambda i: mains[i])
    assert result.best_main == pytest.approx(max(mains))
    assert set(lines[0]["val"]["per_task"]) == set(data.task_names)

    last = load_checkpoint(out / "last.pt")
    best = load_checkpoint(out / "checkpoint.pt")
    assert last.raw["epoch"] == 3 and best.raw["epoch"] == result.best_epoch
    # checkpoint.pt: the best epoch's coordinates, with the history and metrics of the whole run
    assert [h["epoch"] for h in best.history] == [1, 2, 3]
    assert len(best.metrics) == 3
    for i, layer in enumerate(best.layers):
        torch.testing.assert_close(layer.alpha, best.history[result.best_epoch - 1]["alphas"][i])
    for i, (name, act) in enumerate(trainer.model.adaptive_layers()):
        assert last.layers[i].name == name
        torch.testing.assert_close(last.layers[i].alpha, act.alpha.detach().double())
        assert last.layers[i].sigma == pytest.approx(act.measure()[1])
    assert best.groups == data.ground_truth["groups"]
    assert best.data["config"] == data.config
    assert last.raw["extra"]["train_config"]["lr"] == pytest.approx(1e-2)


@pytest.mark.slow
def test_training_reduces_the_loss_and_moves_alpha(data, tmp_path):
    model = _model(data)
    before = [act.alpha.detach().clone() for _, act in model.adaptive_layers()]
    result = Trainer(model, data, _config(tmp_path, epochs=4, lr=2e-2)).fit()
    losses = [m["train_loss"] for m in result.metrics]
    assert losses[-1] < losses[0]
    assert all(not torch.equal(b, act.alpha.detach()) for b, (_, act) in zip(before, model.adaptive_layers()))


@pytest.mark.slow
def test_regulariser_enters_the_loss(data, tmp_path):
    result = Trainer(_model(data), data, _config(tmp_path, epochs=1, reg="distance", c=0.5)).fit()
    assert result.metrics[0]["train_reg"] > 0
    assert result.metrics[0]["train_loss"] == pytest.approx(
        result.metrics[0]["train_task_loss"] + result.metrics[0]["train_reg"])


@pytest.mark.slow
def test_early_stopping_after_patience_epochs(data, tmp_path, monkeypatch):
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.69, 0.9])
    monkeypatch.setattr(Trainer, "_evaluate", lambda self: {"per_task": {}, "mean": {}, "main": next(scores)})
    result = Trainer(_model(data), data, _config(tmp_path, epochs=6, patience=3)).fit()
    assert result.stopped_early
    assert result.epochs == 5
    assert result.best_epoch == 2 and result.best_main == pytest.approx(0.7)
    assert [m["best"] for m in result.metrics] == [True, True, False, False, False]
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt").raw["epoch"] == 2


@pytest.mark.slow
def test_baseline_without_adaptive_layers_trains(data, tmp_path):
    result = Trainer(_model(data, "hard"), data, _config(tmp_path, epochs=1)).fit()
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt.layers == [] and ckpt.raw["model"]["class"] == "HardShare"


@pytest.mark.slow
def test_binary_tasks_train_on_digits(tmp_path):
    digits = load_dataset("digits")
    model = build_model("taan", digits.input_shape, [1] * digits.num_tasks, hidden=[16], num_hinges=4)
    result = Trainer(model, digits, _config(tmp_path, epochs=1, batch_size=512, sampler="proportional")).fit()
    assert 0.0 <= result.metrics[0]["val"]["main"] <= 1.0


class _FirstBatchDone(Exception):
    pass


def _first_batch_grads(data, tmp_path, task_weights, *, whole_epoch=False):
    """The gradients of the first batch of a proportional epoch from the same start (the same batch
    in every run, drawn from the seed), and the result when ``whole_epoch``, else the run stops there."""
    grads = {}

    def record(trainer, epoch, batch):
        if (epoch, batch) == (1, 0):
            grads.update({name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None})
            if not whole_epoch:
                raise _FirstBatchDone

    name = "none" if task_weights is None else "-".join(map(str, task_weights))
    config = _config(tmp_path / name, epochs=1, batch_size=32, sampler="proportional", task_weights=task_weights)
    trainer = Trainer(_model(data), data, config, on_step=record)
    if whole_epoch:
        return trainer.fit(), grads
    with pytest.raises(_FirstBatchDone):
        trainer.fit()
    return None, grads


def test_proportional_and_task_weights(data, tmp_path):
    result, weighted = _first_batch_grads(data, tmp_path, [1.0, 0.0, 2.0, 1.0], whole_epoch=True)
    assert math.isfinite(result.metrics[0]["train_loss"])
    # The loss is sum_t w_t * (mean loss of task t), so the gradient is linear in the weights:
    # g(1, 0, 2, 1) = g(1, 1, 1, 1) - g(0, 1, 0, 0) + g(0, 0, 1, 0).
    _, plain = _first_batch_grads(data, tmp_path, None)
    _, only_1 = _first_batch_grads(data, tmp_path, [0.0, 1.0, 0.0, 0.0])
    _, only_2 = _first_batch_grads(data, tmp_path, [0.0, 0.0, 1.0, 0.0])
    assert weighted.keys() == plain.keys() == only_1.keys() == only_2.keys()
    for name in plain:
        torch.testing.assert_close(weighted[name], plain[name] - only_1[name] + only_2[name], rtol=1e-4, atol=1e-6,
                                   msg=lambda m, name=name: f"{name}: {m}")
    # Each head sees its own task only: weight 0 silences task 1's head, weight 2 doubles task 2's,
    # weight 1 leaves tasks 0 and 3 as they were.
    for t in range(4):
        assert plain[f"heads.{t}.weight"].abs().sum() > 0
    assert torch.equal(weighted["heads.1.weight"], torch.zeros_like(plain["heads.1.weight"]))
    torch.testing.assert_close(weighted["heads.2.weight"], 2 * plain["heads.2.weight"], rtol=1e-6, atol=0)
    for t in (0, 3):
        torch.testing.assert_close(weighted[f"heads.{t}.weight"], plain[f"heads.{t}.weight"], rtol=1e-6, atol=0)
    # The shared layers see every task, so their gradient changes; task 1's row of alpha gets none.
    assert not torch.allclose(weighted["blocks.0.linear.weight"], plain["blocks.0.linear.weight"])
    for block in (0, 1):
        alpha = f"blocks.{block}.act.alpha"
        assert plain[alpha][1].abs().sum() > 0
        assert torch.equal(weighted[alpha][1], torch.zeros_like(plain[alpha][1]))


@pytest.mark.parametrize("kind,out,target,reference", [
    ("binary", torch.randn(5, 1), torch.randint(0, 2, (5, 1)).float(),
     lambda o, y: F.binary_cross_entropy_with_logits(o, y, reduction="none")[:, 0]),
    ("multilabel", torch.randn(5, 3), torch.randint(0, 2, (5, 3)).float(),
     lambda o, y: F.binary_cross_entropy_with_logits(o, y, reduction="none").mean(1)),
    ("multiclass", torch.randn(5, 4), torch.randint(0, 4, (5,)),
     lambda o, y: F.cross_entropy(o, y, reduction="none")),
    ("regression", torch.randn(5, 2), torch.randn(5, 2),
     lambda o, y: ((o - y) ** 2).mean(1)),
])
def test_per_sample_loss_matches_torch(kind, out, target, reference):
    loss = _per_sample_loss(kind, out, target)
    assert loss.shape == (5,)
    torch.testing.assert_close(loss, reference(out, target))
    assert _per_sample_loss(kind, out.bfloat16(), target).dtype == torch.float32


def test_per_sample_loss_unknown_kind():
    with pytest.raises(ValueError, match="unknown task kind 'ranking'"):
        _per_sample_loss("ranking", torch.zeros(1, 1), torch.zeros(1, 1))


@pytest.mark.parametrize("kwargs,error,match", [
    ({"epochs": 0}, ValueError, "epochs must be >= 1, got 0"),
    ({"batch_size": 2.0}, TypeError, "batch_size must be an int"),
    ({"lr": 0.0}, ValueError, "lr must be > 0"),
    ({"lr": float("nan")}, ValueError, "lr must be finite"),
    ({"optimizer": "sgd"}, ValueError, "optimizer must be one of adam, adamw, got 'sgd'"),
    ({"schedule": "linear"}, ValueError, "schedule must be one of none, cosine, step"),
    ({"sampler": "random"}, ValueError, "sampler must be one of balanced, proportional"),
    ({"reg": "l2"}, ValueError, "reg must be one of none, tracenorm, rownorm, cosine, distance"),
    ({"measure": "empirical"}, ValueError, "measure must be one of standard, data"),
    ({"amp": "yes"}, TypeError, "amp must be a bool"),
    ({"task_weights": [1.0, -1.0]}, ValueError, "task_weights must be finite floats >= 0"),
    ({"device": 0}, TypeError, "device must be a str"),
    ({"compile": 1}, TypeError, "compile must be a bool or a backend name, got 1"),
    ({"compile": ""}, TypeError, "compile must be a bool or a backend name"),
])
def test_config_checks(kwargs, error, match):
    with pytest.raises(error, match=match):
        TrainConfig(**kwargs)


def test_trainer_checks_model_data_and_weights(data, tmp_path):
    other = load_dataset("planted", **dict(TINY, num_tasks=8, groups_per_layer=[2, 4]))
    with pytest.raises(ValueError, match=r"model output_dims \[2, 2, 2, 2\] do not match"):
        Trainer(_model(data), other, _config(tmp_path))
    with pytest.raises(ValueError, match="task_weights must have T = 4 values, got 2"):
        Trainer(_model(data), data, _config(tmp_path, task_weights=[1.0, 1.0]))
    with pytest.raises(TypeError, match="model must be a taan_core.models model"):
        Trainer(torch.nn.Linear(2, 2), data, _config(tmp_path))
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        Trainer(_model(data), data, {"epochs": 1})


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda, cuda:N or mps, got 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device 'cuda' is not available: torch.cuda.is_available\(\) is False"):
            resolve_device("cuda")


def test_prepare_run_dir(tmp_path):
    out = tmp_path / "run"
    assert prepare_run_dir(out) == out and out.is_dir()
    (out / "last.pt").write_bytes(b"x")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"already holds a run \(last.pt\); pass --overwrite"):
        prepare_run_dir(out)
    prepare_run_dir(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    with pytest.raises(FileNotFoundError, match=r"last.pt: no such file, nothing to resume"):
        prepare_run_dir(out, resume=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match="exists and is not a folder"):
        prepare_run_dir(tmp_path / "file")


def test_resume_refuses_a_different_model(data, tmp_path):
    Trainer(_model(data), data, _config(tmp_path, epochs=1)).fit()
    with pytest.raises(ValueError, match="cannot resume from .*last.pt: it holds a TAAN"):
        Trainer(_model(data, hidden=[8, 6]), data, _config(tmp_path, epochs=2)).fit(resume=True)


def test_threads_apply_during_fit_only(data, tmp_path):
    before = torch.get_num_threads()
    seen = []
    trainer = Trainer(_model(data), data, _config(tmp_path, epochs=1, threads=1),
                      on_step=lambda tr, e, b: seen.append(torch.get_num_threads()))
    trainer.fit()
    assert set(seen) == {1}
    assert torch.get_num_threads() == before


def test_progress_prints_one_line_per_epoch_unless_quiet(data, tmp_path, capsys):
    config = TrainConfig(epochs=2, batch_size=8, lr=1e-2, out=str(tmp_path / "loud"), device="cpu", threads=1,
                         starts=1)
    Trainer(_model(data), data, config).fit()
    err = capsys.readouterr().err
    assert [line.split()[:2] for line in err.splitlines()] == [["epoch", "1"], ["epoch", "2"]]
    assert "val main" in err and "(best)" in err
    Trainer(_model(data), data, _config(tmp_path, epochs=1)).fit()
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("schedule", ["cosine", "step", "none"])
def test_learning_rate_schedules(data, tmp_path, schedule):
    trainer = Trainer(_model(data), data, _config(tmp_path, epochs=3, lr=0.1, schedule=schedule, lr_step=2,
                                                  lr_gamma=0.5))
    result = trainer.fit()
    steps = len(trainer.sampler)
    lrs = [m["lr"] for m in result.metrics]
    if schedule == "cosine":
        expected = [0.05 * (1 + math.cos(math.pi * e * steps / (3 * steps))) for e in range(3)]
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    elif schedule == "step":
        expected = [0.1, 0.1, 0.05]
    else:
        expected = [0.1, 0.1, 0.1]
    assert lrs == pytest.approx(expected)


@pytest.mark.slow
@pytest.mark.parametrize("shared_head", [False, True])
def test_compiled_training_matches_eager(data, tmp_path, shared_head):
    # aot_eager traces through dynamo and AOT autograd (the task-adaptive activation runs as its
    # custom op) without inductor's C++ compilation, so the run takes seconds.
    from torch._dynamo.utils import counters

    eager = _model(data, shared_head=shared_head)
    Trainer(eager, data, _config(tmp_path / "eager")).fit()
    torch._dynamo.reset()
    counters.clear()
    compiled = _model(data, shared_head=shared_head)
    Trainer(compiled, data, _config(tmp_path / "compiled", compile="aot_eager")).fit()
    assert counters["stats"]["unique_graphs"] >= 1
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_default_threads_are_physical_cores_capped_by_the_work_of_a_step(monkeypatch, tmp_path):
    from taan_core.train import _support

    # A step of 1e6 multiply-adds needs one thread; 1e9 wants every core, never more.
    assert _support.default_threads(1000, 1000, cores=8) == 1
    assert _support.default_threads(1_000_000, 1000, cores=8) == 8
    assert _support.default_threads(1_000_000, 10, cores=8) == 3
    # Hyper-threads count once: two logical CPUs on one core are one core.
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("".join(f"processor\t: {p}\nphysical id\t: 0\ncore id\t\t: {p // 2}\n\n" for p in range(4)))
    real_open = open
    monkeypatch.setattr(_support.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(cpuinfo if path == "/proc/cpuinfo" else path,
                                                                         *a, **k))
    assert _support.physical_cores() == 2
    monkeypatch.setattr(_support.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert _support.physical_cores() == 1


def test_a_trainer_without_threads_uses_the_default_and_says_so(data, tmp_path, capsys):
    import torch

    from taan_core._cli_console import print_settings
    from taan_core.train._support import run_threads

    trainer = Trainer(_model(data), data, _config(tmp_path / "run", threads=0))
    assert trainer.threads == run_threads(trainer.config, trainer.model, len(data.tasks)) == 1  # a tiny step
    before = torch.get_num_threads()
    trainer.fit()
    assert torch.get_num_threads() == before  # restored after fit
    print_settings("taan", trainer.model, data, trainer.config, False, resumed_from=None)
    assert "1 thread (default:" in capsys.readouterr().err.replace("\n", " ")


def test_a_compiled_run_hands_the_batch_task_counts_to_the_model(data, tmp_path, monkeypatch):
    # With compile and balanced batches the model is given the counts (no bincount sync in the
    # graph); they are the batch's own. torch.compile is replaced by the identity, so the test
    # follows the trainer's path without compiling.
    import torch

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)

    def counts_seen(sampler):
        trainer = Trainer(_model(data), data, _config(tmp_path / sampler, epochs=1, compile="eager", sampler=sampler))
        seen, forward = [], trainer.model.forward

        def spy(x, task, counts=None):
            seen.append(counts)
            return forward(x, task, counts=counts)

        monkeypatch.setattr(trainer.model, "forward", spy)
        trainer.fit()
        return trainer, seen

    trainer, seen = counts_seen("balanced")
    passed = [c for c in seen if c is not None]
    assert passed and all(c == [trainer.config.batch_size] * len(data.tasks) for c in passed)
    # Proportional batches vary in their counts: passing them would recompile at every step.
    _, seen = counts_seen("proportional")
    assert seen and all(c is None for c in seen)
