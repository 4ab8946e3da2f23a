"""Checkpoint schema v1: building, atomic saving, safe loading, imports and exports."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from taan_core.checkpoint import (
    CHECKPOINT_VERSION,
    Checkpoint,
    CheckpointError,
    build_checkpoint,
    export_safetensors,
    layer_snapshot,
    load_checkpoint,
    save_checkpoint,
    validate_checkpoint,
)

T = 4
# The stand-in model below is not one of taan_core.models; build_checkpoint says so, as it should.
pytestmark = pytest.mark.filterwarnings("ignore:.*is not a model of taan_core.models:UserWarning")


@dataclasses.dataclass
class _Config:
    widths: list = dataclasses.field(default_factory=lambda: [5, 3])


class _Act(nn.Module):
    """Stand-in for TaskAdaptiveActivation with the attributes checkpoints read."""

    def __init__(self, num_tasks: int, num_hinges: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.randn(num_tasks, num_hinges))
        self.hinges = nn.Parameter(torch.rand(num_hinges) - 0.5)
        self.register_buffer("preact_mean", torch.randn(num_tasks))
        self.register_buffer("preact_var", torch.rand(num_tasks) + 0.5)
        self.register_buffer("preact_mean_overall", torch.tensor(0.25))
        self.register_buffer("preact_var_overall", torch.tensor(4.0))

    def measure(self, task=None):
        if task is None:
            return float(self.preact_mean_overall), float(self.preact_var_overall.sqrt())
        return float(self.preact_mean[task]), float(self.preact_var[task].sqrt())


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = _Config()
        self.first = _Act(T, 5)
        self.second = _Act(T, 3)

    def adaptive_layers(self):
        return [("first", self.first), ("second", self.second)]


def _dict(model=None, epochs: int = 2) -> dict:
    model = model if model is not None else _Model()
    history = []
    for epoch in range(1, epochs + 1):
        alphas, hinges = layer_snapshot(model)
        history.append({"epoch": epoch, "step": 3 * epoch, "alphas": alphas, "hinges": hinges})
    return build_checkpoint(
        model,
        task_names=[f"t{i}" for i in range(T)],
        data={"name": "planted", "config": {"seed": 0}, "groups": [[0, 0, 1, 1], [0, 1, 2, 3]]},
        history=history,
        metrics=[{"epoch": e, "val": {"main": 0.5 + e / 10}} for e in range(1, epochs + 1)],
        epoch=epochs,
        step=3 * epochs,
        optimizer={"state": {}, "param_groups": [{"lr": 0.01}]},
    )


@pytest.fixture
def saved(tmp_path: Path) -> tuple[_Model, Path]:
    model = _Model()
    path = save_checkpoint(_dict(model), tmp_path / "checkpoint.pt")
    return model, path


def test_round_trip_keeps_layers_statistics_history_and_data(saved):
    model, path = saved
    ckpt = load_checkpoint(path)
    assert isinstance(ckpt, Checkpoint)
    assert ckpt.format_version == CHECKPOINT_VERSION
    assert ckpt.task_names == ["t0", "t1", "t2", "t3"]
    assert ckpt.layer_names == ["first", "second"]
    for record, (_, act) in zip(ckpt.layers, model.adaptive_layers()):
        assert record.alpha.dtype == torch.float64
        torch.testing.assert_close(record.alpha, act.alpha.detach().double())
        torch.testing.assert_close(record.hinges, act.hinges.detach().double())
        torch.testing.assert_close(record.preact_std, act.preact_var.double().sqrt())
        assert record.mu == pytest.approx(0.25)
        assert record.sigma == pytest.approx(2.0)
    assert [h["epoch"] for h in ckpt.history] == [1, 2]
    assert ckpt.history[1]["alphas"][1].shape == (T, 3)
    assert ckpt.metrics[-1]["val"]["main"] == pytest.approx(0.7)
    assert ckpt.groups == [[0, 0, 1, 1], [0, 1, 2, 3]]
    assert len(ckpt.sha256) == 64
    assert ckpt.raw["model"]["class"] == "_Model"
    assert ckpt.raw["model"]["config"] == {"widths": [5, 3]}


def test_run_folder_resolves_to_its_checkpoint(saved):
    _, path = saved
    assert load_checkpoint(path.parent).path == path


def test_snapshot_is_a_copy(saved):
    model = _Model()
    alphas, _ = layer_snapshot(model)
    with torch.no_grad():
        model.first.alpha.add_(1.0)
    assert not torch.equal(alphas[0], model.first.alpha.detach())


def test_save_refuses_objects_outside_the_safe_types(tmp_path):
    obj = _dict()
    obj["extra"] = {"when": object()}
    with pytest.raises(TypeError, match=r"extra\.when must hold only tensors and plain types"):
        save_checkpoint(obj, tmp_path / "x.pt")
    assert not list(tmp_path.iterdir())


def test_save_refuses_an_invalid_schema(tmp_path):
    obj = _dict()
    obj["task_names"] = ["a", "b"]
    with pytest.raises(CheckpointError, match=r"layers\[0\]\.alpha: expected shape \(T, M\) with T = len\(task_names\) = 2"):
        save_checkpoint(obj, tmp_path / "x.pt")


def test_failed_write_leaves_previous_checkpoint_intact(saved, monkeypatch):
    model, path = saved
    before = path.read_bytes()
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        # Write a real prefix, then die the way a full disk or a kill would.
        real_save(obj, f, *args, **kwargs)
        f.seek(0)
        f.truncate(100)
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    newer = _Model()
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(_dict(newer), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]
    torch.testing.assert_close(load_checkpoint(path).layers[0].alpha, model.first.alpha.detach().double())


def test_safetensors_export_round_trip(saved, tmp_path):
    _, path = saved
    ckpt = load_checkpoint(path)
    out = export_safetensors(ckpt, tmp_path / "export" / "coords.safetensors")
    back = load_checkpoint(out)
    assert back.raw is None
    assert back.task_names == ckpt.task_names
    assert back.layer_names == ckpt.layer_names
    for a, b in zip(back.layers, ckpt.layers):
        torch.testing.assert_close(a.alpha, b.alpha)
        torch.testing.assert_close(a.hinges, b.hinges)
        torch.testing.assert_close(a.preact_mean, b.preact_mean)
        assert (a.mu, a.sigma) == (b.mu, b.sigma)
    assert back.groups == ckpt.groups
    assert back.metrics == ckpt.metrics
    torch.testing.assert_close(back.history[1]["alphas"][0], ckpt.history[1]["alphas"][0])


def test_export_rejects_non_checkpoint(tmp_path):
    with pytest.raises(TypeError, match="checkpoint must be a Checkpoint"):
        export_safetensors({"a": 1}, tmp_path / "x.safetensors")


def test_reference_state_dict_import(tmp_path):
    state = {
        "layers.0.alpha": torch.randn(3, 8),
        "layers.0.basis": torch.rand(1, 8),
        "layers.0.weight": torch.randn(4, 4),
        "layers.1.alpha": torch.randn(3, 6),
        "layers.1.basis": torch.rand(1, 6),
    }
    torch.save(state, tmp_path / "ref.pt")
    ckpt = load_checkpoint(tmp_path / "ref.pt")
    assert ckpt.format_version == 0
    assert ckpt.task_names == ["task_0", "task_1", "task_2"]
    assert ckpt.layer_names == ["layers.0", "layers.1"]
    torch.testing.assert_close(ckpt.layers[1].hinges, state["layers.1.basis"][0].double())
    assert (ckpt.layers[0].mu, ckpt.layers[0].sigma) == (0.0, 1.0)
    assert ckpt.layers[0].preact_mean is None


def test_reference_state_dict_from_safetensors(tmp_path):
    from safetensors.torch import save_file

    save_file({"l.alpha": torch.randn(2, 4), "l.basis": torch.rand(1, 4)}, str(tmp_path / "ref.safetensors"))
    assert load_checkpoint(tmp_path / "ref.safetensors").layers[0].alpha.shape == (2, 4)


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"l.alpha": torch.randn(3, 8)}, r"l\.basis: missing key"),
        ({"l.alpha": torch.randn(3, 8), "l.basis": torch.rand(1, 7)}, r"l\.basis: expected shape \(1, M\) with M = alpha.shape\[1\] = 8, got \(1, 7\)"),
        ({"a.alpha": torch.randn(3, 2), "a.basis": torch.rand(1, 2), "b.alpha": torch.randn(4, 2), "b.basis": torch.rand(1, 2)},
         r"b\.alpha: expected shape \(T, M\) with T = 3"),
        ({"weight": torch.randn(2, 2)}, r"found neither"),
        ({"l.alpha": torch.randn(8), "l.basis": torch.rand(1, 8)}, r"l\.alpha: expected shape \(T, M\), got \(8,\)"),
    ],
)
def test_reference_import_errors(tmp_path, state, match):
    torch.save(state, tmp_path / "ref.pt")
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(tmp_path / "ref.pt")


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    target = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def _malicious(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "code-ran"
    _Payload.target = str(marker)
    path = tmp_path / "evil.pt"
    torch.save({"format": "taan-checkpoint", "payload": _Payload()}, path)
    return path, marker


def _corrupt(kind: str, good: Path, tmp_path: Path) -> Path:
    """Write one kind of bad file and return its path (shared with the CLI tests)."""
    path = tmp_path / f"{kind}.pt"
    if kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        path.write_bytes(bytes(range(7, 256)) * 20)
    elif kind == "json":
        path.write_text('{"format": "taan-checkpoint", "version": 1}')
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        obj = torch.load(good, weights_only=True)
        if kind == "version":
            obj["version"] = 99
        elif kind == "missing":
            del obj["task_names"]
        elif kind == "shapes":
            obj["layers"][1]["hinges"] = torch.zeros(7)
        elif kind == "history":
            obj["history"]["alphas"] = obj["history"]["alphas"][:1]
        elif kind == "history_steps":
            obj["history"]["step"] = obj["history"]["step"][:1]
        elif kind == "history_rows":
            obj["history"]["hinges"][1] = obj["history"]["hinges"][1][:1]
        elif kind == "history_v1":
            obj["version"] = 1
            obj["history"] = [{"epoch": 1, "step": 3, "alphas": [obj["layers"][0]["alpha"]],
                               "hinges": [layer["hinges"] for layer in obj["layers"]]}]
        elif kind == "groups":
            obj["data"]["groups"] = [[0, 1]]
        elif kind == "nan":
            obj["layers"][0]["alpha"][0, 0] = float("nan")
        torch.save(obj, path)
    return path


BAD_FILES = {
    "truncated": r"truncated or damaged",
    "random": r"unrecognised format",
    "json": r"got a JSON/text file",
    "empty": r"empty file",
    "version": r"version: expected format version 2 \(or 1\), got 99",
    "missing": r"task_names: missing key",
    "shapes": r"layers\[1\]\.hinges: expected shape \(M,\) with M = alpha.shape\[1\] = 3, got \(7,\)",
    "history": r"history\.alphas: expected a list of 2 tensors",
    "history_steps": r"history\.step: expected 2 values \(one per snapshot\), got 1",
    "history_rows": r"history\.hinges\[1\]: expected shape \(2, 3\) \(K = len\(history\.epoch\) = 2",
    "history_v1": r"history\[0\]\.alphas: expected a list of 2 tensors",
    "groups": r"data\.groups\[0\]: expected a list of 4 ints",
    "nan": r"layers\[0\]\.alpha: expected finite values",
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_files_raise_one_line_naming_file_and_field(saved, tmp_path, kind):
    _, good = saved
    path = _corrupt(kind, good, tmp_path)
    with pytest.raises(CheckpointError, match=BAD_FILES[kind]) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert isinstance(info.value, ValueError)


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    path, marker = _malicious(tmp_path)
    with pytest.raises(CheckpointError, match=r"refused to load.*could run code"):
        load_checkpoint(path)
    assert not marker.exists()


def test_raw_pickle_payload_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    _Payload.target = str(marker)
    path = tmp_path / "raw.pkl"
    path.write_bytes(pickle.dumps(_Payload(), protocol=2))
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(path)
    assert not marker.exists()


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothere\.pt: no such file"):
        load_checkpoint(tmp_path / "nothere.pt")


def test_validate_checkpoint_in_memory():
    obj = _dict()
    validate_checkpoint(obj)
    obj["layer_names"] = ["first"]
    with pytest.raises(CheckpointError, match=r"layer_names: expected the names of layers"):
        validate_checkpoint(obj)


def test_build_checkpoint_takes_any_module_but_refuses_one_without_layers():
    # A config is optional: a module without one is saved (with a warning that it cannot be rebuilt).
    model = _Model()
    model.config = {"widths": [1]}
    with pytest.warns(UserWarning, match=r"_Model is not a model of taan_core\.models"):
        obj = build_checkpoint(model, task_names=[f"t{i}" for i in range(T)])
    assert obj["model"]["config"] == {} and obj["model"]["class"] == "_Model"
    with pytest.raises(ValueError, match=r"Linear holds no task-adaptive activation"):
        build_checkpoint(nn.Linear(2, 2), task_names=["a"])
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got dict"):
        build_checkpoint({}, task_names=["a"])


def test_written_file_loads_with_plain_weights_only(saved):
    _, path = saved
    obj = torch.load(path, weights_only=True)
    assert type(obj) is dict
    assert type(obj["model"]["state_dict"]) is dict
    assert not any(name.endswith(".tmp") for name in os.listdir(path.parent))
