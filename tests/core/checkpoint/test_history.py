"""Schema v2's per-epoch records: the stacked History, the MetricsLog's JSON text, and that a
save holds a fixed number of objects whatever the epoch count (schema v1 files still load)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from taan_core.checkpoint import (
    CHECKPOINT_VERSION,
    CheckpointError,
    History,
    MetricsLog,
    export_safetensors,
    load_checkpoint,
)
from taan_core.checkpoint import _history
from taan_core.data import load_dataset
from taan_core.models import build_model
from taan_core.train import TrainConfig, Trainer


def _snapshots(k: int, shapes=((5, 3), (5, 2)), seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [([torch.randn(*s, generator=gen) for s in shapes], [torch.randn(s[1], generator=gen) for s in shapes])
            for _ in range(k)]


def test_history_reads_like_the_list_of_dicts_it_replaced():
    snaps = _snapshots(11)  # past the first two doublings of the buffers (4, 8, 16)
    history = History()
    for e, (alphas, hinges) in enumerate(snaps):
        history.append(e + 1, 10 * e, alphas, hinges)
    assert len(history) == 11 and [h["epoch"] for h in history] == list(range(1, 12))
    for entry, (alphas, hinges) in zip(history, snaps):
        for got, want in zip(entry["alphas"] + entry["hinges"], alphas + hinges):
            assert torch.equal(got, want)
    assert history[-1]["step"] == 100 and [h["epoch"] for h in history[2:5]] == [3, 4, 5]
    with pytest.raises(IndexError, match="history index 11 out of range for 11 snapshots"):
        history[11]


def test_history_copies_what_it_is_given_and_keeps_old_views_valid():
    (alphas, hinges), = _snapshots(1)
    history = History()
    history.append(1, 0, alphas, hinges)
    first = history[0]["alphas"][0]
    kept = alphas[0].clone()
    alphas[0].add_(1.0)
    for e in range(2, 20):  # the buffers are replaced while they grow
        history.append(e, e, alphas, hinges)
    assert torch.equal(first, kept) and torch.equal(history[0]["alphas"][0], kept)


def test_a_snapshot_with_other_shapes_is_refused():
    history = History()
    (alphas, hinges), = _snapshots(1)
    history.append(1, 0, alphas, hinges)
    with pytest.raises(ValueError, match="differ from the history's"):
        history.append(2, 0, [torch.zeros(4, 3), alphas[1]], hinges)
    with pytest.raises(ValueError, match="as many hinges as alphas"):
        history.append(2, 0, alphas, hinges[:1])


def test_an_empty_loaded_history_takes_the_first_snapshot_it_is_given(tmp_path):
    empty = History._adopt([], [], [torch.empty(0, 7, 7)], [torch.empty(0, 7)])
    (alphas, hinges), = _snapshots(1, shapes=((5, 3),))
    empty.append(1, 0, alphas, hinges)
    assert len(empty) == 1 and torch.equal(empty[0]["alphas"][0], alphas[0])


def test_record_is_stacked_and_exact_size():
    history = History()
    for e, (alphas, hinges) in enumerate(_snapshots(5)):
        history.append(e + 1, e, alphas, hinges, lr=0.1 * e)
    record = history.record()
    assert record["epoch"].tolist() == [1, 2, 3, 4, 5] and record["epoch"].dtype == torch.int64
    assert [tuple(a.shape) for a in record["alphas"]] == [(5, 5, 3), (5, 5, 2)]
    assert [tuple(b.shape) for b in record["hinges"]] == [(5, 3), (5, 2)]
    # Exact-size copies: torch.save would write a view's whole storage.
    assert all(a.untyped_storage().nbytes() == a.numel() * a.element_size() for a in record["alphas"])
    assert [e["lr"] for e in record["extra"]] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    empty = History().record(shapes=[(5, 3)])
    assert tuple(empty["alphas"][0].shape) == (0, 5, 3) and "extra" not in empty


@settings(max_examples=30, deadline=None)
@given(k=st.integers(0, 12), layers=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=3),
       seed=st.integers(0, 2**16))
def test_record_and_the_v1_list_rebuild_the_same_history(k, layers, seed):
    shapes = [(4, m) for _, m in layers]
    history = History()
    for e, (alphas, hinges) in enumerate(_snapshots(k, shapes, seed)):
        history.append(e + 1, 3 * e, alphas, hinges)
    for rebuilt in (History.from_value(history.record()), History.from_value(list(history)),
                    History.from_value(history)):
        assert len(rebuilt) == k
        for a, b in zip(rebuilt, history):
            assert (a["epoch"], a["step"]) == (b["epoch"], b["step"])
            assert all(torch.equal(x, y) for x, y in zip(a["alphas"] + a["hinges"], b["alphas"] + b["hinges"]))


def test_metrics_log_is_one_json_text_that_keeps_nan_and_reads_tensors_as_numbers():
    log = MetricsLog([{"epoch": 1, "val": {"main": float("nan"), "mse": torch.tensor(0.25)}, "best": False}])
    log.append({"epoch": 2, "val": {"main": float("inf"), "per_task": [1, 2]}, "best": None})
    back = json.loads(log.json())
    assert math.isnan(back[0]["val"]["main"]) and back[0]["val"]["mse"] == 0.25 and back[0]["best"] is False
    assert back[1] == {"epoch": 2, "val": {"main": math.inf, "per_task": [1, 2]}, "best": None}
    with pytest.raises(TypeError, match=r"metrics\[1\] must hold only numbers, strings"):
        MetricsLog([{"a": 1}, {"b": object()}]).json()


def test_metrics_log_encodes_each_record_once(monkeypatch):
    calls = []
    encode = _history._encode
    monkeypatch.setattr(_history, "_encode", lambda record, k: calls.append(k) or encode(record, k))
    log = MetricsLog()
    for epoch in range(1, 6):
        log.append({"epoch": epoch})
        log.json()
    assert calls == [0, 1, 2, 3, 4]
    log[2] = {"epoch": 3, "note": "replaced"}  # a record replaced is encoded again
    assert json.loads(log.json())[2]["note"] == "replaced" and calls[-1] == 2


# ------------------------------------------------------------------------------ in a run


def _train(out: Path, epochs: int, resume: bool = False):
    data = load_dataset("planted", num_tasks=3, groups_per_layer=[1, 3], input_dim=5, hidden=[6, 6],
                        num_hinges=3, num_outputs=1, samples_per_task=40)
    torch.manual_seed(0)
    model = build_model("taan", data.input_shape, [1] * 3, hidden=[6, 6], num_hinges=3)
    config = TrainConfig(epochs=epochs, batch_size=8, lr=1e-2, out=str(out), quiet=True, device="cpu", threads=1,
                         starts=1, patience=0)
    return Trainer(model, data, config).fit(resume=resume)


def _objects(value) -> int:
    """Objects pickle visits in a checkpoint: what a save's cost grows with."""
    if isinstance(value, dict):
        return 1 + sum(1 + _objects(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return 1 + sum(_objects(v) for v in value)
    return 1


def test_a_save_holds_as_many_objects_at_every_epoch(tmp_path):
    counts = {}
    for epochs in (2, 7):
        _train(tmp_path / str(epochs), epochs)
        raw = torch.load(tmp_path / str(epochs) / "last.pt", weights_only=True)
        assert raw["version"] == CHECKPOINT_VERSION == 2 and isinstance(raw["metrics"], str)
        assert raw["history"]["alphas"][0].shape[0] == epochs
        # The sampler's position and the epoch counters are numbers whatever the epoch.
        counts[epochs] = _objects(raw)
    assert counts[2] == counts[7]


def _to_v1(path: Path) -> None:
    """Rewrite a run file as the previous schema wrote it: per-epoch history, metrics as a list."""
    raw = torch.load(path, weights_only=True)
    stacked = raw["history"]
    raw["history"] = [{"epoch": int(e), "step": int(s), "alphas": [a[k].clone() for a in stacked["alphas"]],
                       "hinges": [b[k].clone() for b in stacked["hinges"]]}
                      for k, (e, s) in enumerate(zip(stacked["epoch"], stacked["step"]))]
    raw["metrics"] = json.loads(raw["metrics"])
    raw["version"] = 1
    torch.save(raw, path)


def test_a_schema_v1_run_loads_and_resumes_into_a_v2_file(tmp_path):
    _train(tmp_path / "whole", 4)
    _train(tmp_path / "part", 2)
    for name in ("last.pt", "checkpoint.pt"):
        _to_v1(tmp_path / "part" / name)
    old = load_checkpoint(tmp_path / "part" / "last.pt")
    assert old.format_version == 1 and [h["epoch"] for h in old.history] == [1, 2] and len(old.metrics) == 2
    _train(tmp_path / "part", 4, resume=True)
    resumed, whole = (load_checkpoint(tmp_path / run / "last.pt") for run in ("part", "whole"))
    assert resumed.format_version == 2 and [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(resumed.history, whole.history):
        assert all(torch.equal(x, y) for x, y in zip(a["alphas"], b["alphas"]))
    assert [m["val"] for m in resumed.metrics] == [m["val"] for m in whole.metrics]


def test_a_v1_best_checkpoint_is_rewritten_as_v2_when_its_run_resumes(tmp_path):
    # Resumed with no epoch left, the run rewrites checkpoint.pt from the best file it loaded.
    _train(tmp_path / "run", 2)
    for name in ("last.pt", "checkpoint.pt"):
        _to_v1(tmp_path / "run" / name)
    _train(tmp_path / "run", 2, resume=True)
    best = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert best.format_version == 2 and [h["epoch"] for h in best.history] == [1, 2] and len(best.metrics) == 2


def test_an_export_of_either_layout_loads(tmp_path):
    _train(tmp_path / "run", 3)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    new = load_checkpoint(export_safetensors(ckpt, tmp_path / "new.safetensors"))
    assert [h["epoch"] for h in new.history] == [1, 2, 3] and new.metrics == ckpt.metrics
    # The layout of the exports schema v1 wrote: history.{k}.alphas.{i}, one entry per epoch.
    from safetensors.torch import save_file

    tensors = {f"layers.{i}.{key}": getattr(layer, key).float().contiguous()
               for i, layer in enumerate(ckpt.layers) for key in ("alpha", "hinges")}
    for k, entry in enumerate(ckpt.history):
        for i, (a, b) in enumerate(zip(entry["alphas"], entry["hinges"])):
            tensors[f"history.{k}.alphas.{i}"] = a.contiguous()
            tensors[f"history.{k}.hinges.{i}"] = b.contiguous()
    meta = {"format": "taan-checkpoint", "version": 1, "task_names": ckpt.task_names, "layer_names": ckpt.layer_names,
            "layers": [{"name": name} for name in ckpt.layer_names], "metrics": ckpt.metrics, "data": ckpt.data,
            "history": [{"epoch": h["epoch"], "step": h["step"]} for h in ckpt.history]}
    save_file(tensors, tmp_path / "old.safetensors", metadata={"taan": json.dumps(meta), "format": "taan-checkpoint"})
    old = load_checkpoint(tmp_path / "old.safetensors")
    assert old.format_version == 1 and [h["epoch"] for h in old.history] == [1, 2, 3]
    torch.testing.assert_close(old.history[2]["alphas"][1], new.history[2]["alphas"][1])


@pytest.mark.parametrize("kind, message", [
    ("text", r"metrics: expected the JSON text of a list of per-epoch dicts"),
    ("scalars", r"metrics: expected a list of per-epoch dicts"),
    ("nesting", r"metrics: expected the JSON text of a list of per-epoch dicts \(maximum recursion depth"),
    ("epochs", r"history\.epoch: expected a 1-D integer tensor, got \(3,\) torch\.float32"),
    ("negative", r"history\.step: expected values >= 0"),
    ("extra", r"history\.extra: expected a list of 3 dicts"),
])
def test_bad_v2_records_are_one_line_naming_the_field(tmp_path, kind, message):
    _train(tmp_path / "run", 3)
    raw = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    if kind == "text":
        raw["metrics"] = '[{"epoch": 1'
    elif kind == "scalars":
        raw["metrics"] = "[1, 2]"
    elif kind == "nesting":
        raw["metrics"] = "[" * 200_000
    elif kind == "epochs":
        raw["history"]["epoch"] = raw["history"]["epoch"].float()
    elif kind == "negative":
        raw["history"]["step"] = -raw["history"]["step"] - 1
    else:
        raw["history"]["extra"] = [{}]
    path = tmp_path / f"{kind}.pt"
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)
