"""taan as a library: a user's own module, loop and files reach taan-viz.

Two paths: ``torch.save(model.state_dict(), path)`` and the one-call ``taan_core.save``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import taan_core
from taan_core import (
    CheckpointError,
    TALinear,
    adaptive_layers,
    functional_penalty,
    load_checkpoint,
    model_from_checkpoint,
)
from taan_core.checkpoint import build_checkpoint, layer_snapshot

T = 3


class MyNet(nn.Module):
    """A plain network of a user: no config, no adaptive_layers() method."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = TALinear(6, 8, num_tasks=T, num_hinges=4)
        self.l2 = TALinear(8, 8, num_tasks=T, num_hinges=4, batch_norm=True)
        self.head = nn.Linear(8, 1)

    def forward(self, x, task):
        return self.head(self.l2(self.l1(x, task), task))


def _trained() -> MyNet:
    torch.manual_seed(0)
    model = MyNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):
        x, task = torch.randn(24, 6) * 2 + 1, torch.arange(24) % T
        loss = model(x, task).square().mean() + functional_penalty(model, "distance", 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def _heatmap(path, tmp_path) -> int:
    from taan_viz.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["heatmap", str(path), "-o", str(tmp_path / "figs"), "--dpi", "40", "--measure", "data"])
    return exc.value.code


def test_adaptive_layers_finds_layers_by_type_in_depth_order():
    model = MyNet()
    assert [name for name, _ in adaptive_layers(model)] == ["l1.act", "l2.act"]
    compiled = torch.compile(model, backend="eager")
    assert [name for name, _ in adaptive_layers(compiled)] == ["l1.act", "l2.act"]
    assert adaptive_layers(nn.Linear(2, 2)) == []
    with pytest.raises(TypeError, match=r"module must be a torch\.nn\.Module, got int"):
        adaptive_layers(3)


def test_penalty_and_snapshot_work_on_a_plain_module():
    model = MyNet()
    with torch.no_grad():
        model.l1.act.alpha.normal_()
    penalty = functional_penalty(model, "distance", 0.5)
    assert penalty.item() > 0 and penalty.requires_grad
    alphas, hinges = layer_snapshot(model)
    assert [a.shape for a in alphas] == [(T, 4), (T, 4)] and hinges[0].shape == (4,)
    torch.testing.assert_close(alphas[0], model.l1.act.alpha.detach())


def test_state_dict_path_reaches_taan_viz(tmp_path):
    model = _trained()
    path = tmp_path / "my.pt"
    torch.save(model.state_dict(), path)
    ckpt = load_checkpoint(path)
    assert ckpt.layer_names == ["l1.act", "l2.act"]
    assert ckpt.task_names == [f"task_{t}" for t in range(T)]
    assert ckpt.format_version == 0 and ckpt.raw is None
    record = ckpt.layers[0]
    torch.testing.assert_close(record.alpha, model.l1.act.alpha.detach().double())
    torch.testing.assert_close(record.hinges, model.l1.act.hinges.detach().double())
    # The running statistics are the data measure.
    mu, sigma = model.l1.act.measure()
    assert record.mu == pytest.approx(mu) and record.sigma == pytest.approx(sigma) and sigma != 1.0
    torch.testing.assert_close(record.preact_std, model.l1.act.preact_var.double().sqrt())
    assert _heatmap(path, tmp_path) == 0
    assert (tmp_path / "figs" / "heatmap.png").stat().st_size > 0


def test_one_call_save_reaches_taan_viz(tmp_path):
    model = _trained()
    with pytest.warns(UserWarning, match=r"MyNet is not a model of taan_core\.models.*cannot rebuild it"):
        path = taan_core.save(model, tmp_path / "run" / "checkpoint.pt", task_names=["a", "b", "c"], epoch=5,
                              metrics={"val_loss": torch.tensor(0.25), "acc": [0.5, 0.75]})
    ckpt = load_checkpoint(path)
    assert ckpt.task_names == ["a", "b", "c"] and ckpt.layer_names == ["l1.act", "l2.act"]
    assert ckpt.metrics == [{"epoch": 5, "val_loss": 0.25, "acc": [0.5, 0.75]}]
    assert ckpt.raw["epoch"] == 5 and ckpt.raw["model"]["class"] == "MyNet"
    rebuilt = MyNet()
    rebuilt.load_state_dict(ckpt.raw["model"]["state_dict"])
    torch.testing.assert_close(rebuilt.l2.act.alpha, model.l2.act.alpha)
    assert ckpt.layers[1].sigma == pytest.approx(model.l2.act.measure()[1])
    assert _heatmap(path, tmp_path) == 0


def test_save_sees_through_compile_and_takes_a_list_of_metrics(tmp_path):
    model = MyNet()
    compiled = torch.compile(model, backend="eager")
    with pytest.warns(UserWarning):
        path = taan_core.save(compiled, tmp_path / "c.pt", metrics=[{"epoch": 1, "loss": 1.0}, {"epoch": 2}])
    ckpt = load_checkpoint(path)
    assert ckpt.raw["model"]["class"] == "MyNet" and "l1.act.alpha" in ckpt.raw["model"]["state_dict"]
    assert [m["epoch"] for m in ckpt.metrics] == [1, 2]


def test_a_user_module_cannot_be_rebuilt_one_line(tmp_path, capsys):
    with pytest.warns(UserWarning):
        path = taan_core.save(MyNet(), tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match=r"model\.class: cannot rebuild tests\.core\.test_library\.MyNet, "
                                              r"which is not a model of taan_core\.models") as info:
        model_from_checkpoint(load_checkpoint(path))
    assert "\n" not in str(info.value)
    from taan_core.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["eval", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1
    assert err[0].startswith("taan-core: error: ") and "cannot rebuild tests.core.test_library.MyNet" in err[0]


def test_a_taan_model_saves_without_warning_and_rebuilds(tmp_path):
    model = taan_core.build_model("taan", [5], [1, 2], hidden=[4], num_hinges=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = taan_core.save(model, tmp_path / "t.pt", task_names=["x", "y"])
    rebuilt = model_from_checkpoint(load_checkpoint(path))
    torch.testing.assert_close(rebuilt.blocks[0].act.alpha, model.blocks[0].act.alpha)


def test_save_errors(tmp_path):
    with pytest.raises(ValueError, match=r"Linear holds no task-adaptive activation"):
        taan_core.save(nn.Linear(2, 2), tmp_path / "x.pt")
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got str"):
        taan_core.save("model", tmp_path / "x.pt")
    with pytest.raises(TypeError, match=r"metrics must be a dict or a list of dicts, got float"):
        taan_core.save(MyNet(), tmp_path / "x.pt", metrics=0.5)
    with pytest.raises(TypeError, match=r"metrics\.model must hold numbers.*got MyNet"):
        taan_core.save(MyNet(), tmp_path / "x.pt", metrics={"model": MyNet()})
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match=r"T = len\(task_names\) = 2"):
        taan_core.save(MyNet(), tmp_path / "x.pt", task_names=["a", "b"])
    assert not (tmp_path / "x.pt").exists()


def test_build_checkpoint_names_tasks_when_not_given():
    with pytest.warns(UserWarning):
        obj = build_checkpoint(MyNet())
    assert obj["task_names"] == ["task_0", "task_1", "task_2"]
    assert obj["model"]["module"] == __name__


def test_a_submodule_named_adaptive_layers_is_not_taken_for_the_method(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.adaptive_layers = nn.ModuleList([TALinear(3, 4, num_tasks=2, num_hinges=2)])

    model = Net()
    assert functional_penalty(model, "tracenorm", 1.0).item() > 0
    assert layer_snapshot(model)[0][0].shape == (2, 2)
    with pytest.warns(UserWarning):
        assert load_checkpoint(taan_core.save(model, tmp_path / "n.pt")).layer_names == ["adaptive_layers.0.act"]
