"""Sizes bounded before allocation: the memory estimate of models and data, the limit, the
checkpoint storage check, and the CLI's one line when an allocation fails anyway."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from taan_core import _memory
from taan_core._memory import MemoryLimitError, check_memory, memory_limit, model_parameters, parse_size
from taan_core.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save
from taan_core.cli import main
from taan_core.data import load_dataset, load_npz, save_npz
from taan_core.models import build_model, model_from_config
from taan_core.train import TrainConfig, Trainer


def _cli(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return info.value.code, err.strip()


# ------------------------------------------------------------------------------------ the limit


@pytest.mark.parametrize("text, expected", [("1024", 1024), ("64G", 64 * 2**30), ("512MiB", 512 * 2**20),
                                            ("1.5t", int(1.5 * 2**40)), (" 8 KB ", 8192)])
def test_sizes_are_parsed_with_binary_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-5G", "0", "64Q", "1e9"])
def test_a_bad_size_names_the_variable(text):
    with pytest.raises(ValueError, match=r"TAAN_MEMORY_LIMIT must be"):
        parse_size(text)


def test_the_limit_is_the_variable_or_the_memory_available(monkeypatch):
    monkeypatch.setattr(_memory, "memory_available", lambda: 3 * 2**30)
    monkeypatch.delenv("TAAN_MEMORY_LIMIT", raising=False)
    assert memory_limit() == (3 * 2**30, "memory available")
    monkeypatch.setenv("TAAN_MEMORY_LIMIT", "64G")
    assert memory_limit() == (64 * 2**30, "TAAN_MEMORY_LIMIT=64G")
    check_memory(60 * 2**30, "sixty")  # beyond the memory available, within the variable
    with pytest.raises(MemoryLimitError, match=r"^seventy needs about 70\.0 GiB, more than the 64\.0 GiB of the "
                                               r"limit \(TAAN_MEMORY_LIMIT=64G\)"):
        check_memory(70 * 2**30, "seventy")
    monkeypatch.delenv("TAAN_MEMORY_LIMIT")
    monkeypatch.setattr(_memory, "memory_available", lambda: None)
    check_memory(2**60, "anything")  # unknown: nothing is refused


def test_multiseed_reads_the_same_memory_figure():
    from taan_core import _cli_seeds

    assert _cli_seeds._memory_available is _memory.memory_available


# ------------------------------------------------------------------------------------ models

_CASES = [
    ("taan", (7,), dict(hidden=[5, 3], num_hinges=4)),
    ("taan", (7,), dict(hidden=[5], batch_norm=True)),
    ("taan", (7,), dict(hidden=[5], batch_norm=True, batch_norm_affine=False)),
    ("stl", (7,), dict(hidden=[5, 3], batch_norm=True)),
    ("soft-order", (7,), dict(hidden=[5, 5])),
    ("cross-stitch", (7,), dict(hidden=[5, 3])),
    ("mmoe", (7,), dict(hidden=[5, 3], num_experts=3, tower_hidden=[4])),
    ("mmoe", (7,), dict(hidden=[5], tower_hidden=[])),
    ("branched", (7,), dict(groups=[[0, 0, 1], [0, 1, 2]], hidden=[5, 3])),
    ("taan-conv", (1, 12, 12), dict(channels=[2, 3], hidden=[5])),
    ("stl-conv", (1, 12, 12), dict(channels=[2, 3], hidden=[])),
    ("soft-order-conv", (1, 12, 12), dict(channels=[3, 3], hidden=[5])),
    ("soft-order-conv", (2, 12, 12), dict(channels=[3, 3], hidden=[], batch_norm=False)),
    ("cross-stitch-conv", (1, 12, 12), dict(channels=[2, 3], hidden=[5])),
    ("mmoe-conv", (1, 12, 12), dict(channels=[2, 3], hidden=[5], num_experts=2, tower_hidden=[4])),
    ("branched-conv", (1, 12, 12), dict(channels=[2, 3], hidden=[5], groups=[[0, 0, 0], [0, 0, 1], [0, 1, 2]])),
]


def test_every_model_has_an_estimate():
    from taan_core._memory import _KNOWN
    from taan_core.models import MODELS

    assert {cls.config_class.__name__ for cls in MODELS.values()} <= set(_KNOWN)
    assert {name for name, _, _ in _CASES} | {"hard", "hard-conv"} == set(MODELS)


@pytest.mark.parametrize("name, shape, overrides", _CASES)
def test_the_estimate_counts_every_parameter(name, shape, overrides):
    model = build_model(name, shape, [1, 2, 3], **overrides)
    assert model_parameters(model.config)[0] == model.num_parameters()


@pytest.mark.parametrize("shared, separate, shape, overrides", [("hard", "stl", (7,), dict(hidden=[5, 3])),
                                                                ("hard-conv", "stl-conv", (1, 12, 12), dict(channels=[2]))])
def test_a_config_shared_by_two_models_is_estimated_by_the_larger(shared, separate, shape, overrides):
    small = build_model(shared, shape, [1, 2, 3], **overrides)
    large = build_model(separate, shape, [1, 2, 3], **overrides)
    assert small.num_parameters() < model_parameters(small.config)[0] == large.num_parameters()


def test_enormous_widths_are_refused_before_anything_is_allocated(monkeypatch):
    monkeypatch.setenv("TAAN_MEMORY_LIMIT", "1G")
    tic = time.perf_counter()
    with pytest.raises(MemoryLimitError, match=r"the model \(TAAN, 1 tasks, 1e\+10 parameters\) needs about 37\.3 GiB"):
        build_model("taan", (10,), [1], hidden=[100_000, 100_000])
    with pytest.raises(MemoryLimitError, match=r"TAAN_MEMORY_LIMIT=1G"):
        model_from_config("TAAN", {"input_dim": 10, "output_dims": [1], "hidden": [8], "num_hinges": 10**9})
    assert time.perf_counter() - tic < 1.0


def test_the_trainer_counts_the_optimizer_state(monkeypatch, tmp_path):
    data = load_dataset("planted", num_tasks=2, groups_per_layer=[1], input_dim=4, hidden=[4], num_hinges=2,
                        num_outputs=1, samples_per_task=20)
    model = build_model("hard", data.input_shape, [1, 1], hidden=[2000, 2000])
    weights = model.num_parameters() * 4
    monkeypatch.setenv("TAAN_MEMORY_LIMIT", str(2 * weights))  # the weights fit, Adam's state does not
    with pytest.raises(MemoryLimitError, match=r"trained with Adam\) needs about"):
        Trainer(model, data, TrainConfig(out=str(tmp_path / "run"), batch_size=4, device="cpu", quiet=True))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option", [["--hidden", "100000,100000"], ["--hinges", "1000000000"]])
def test_the_cli_refuses_what_the_machine_cannot_hold_in_one_line(capsys, tmp_path, monkeypatch, option):
    monkeypatch.setenv("TAAN_MEMORY_LIMIT", "2G")
    code, err = _cli(capsys, "train", "--epochs", "1", "--threads", "1", "--out", tmp_path / "run", *option)
    assert code == 2
    assert err.startswith("taan-core: error: the model (TAAN, 16 tasks, ") and "TAAN_MEMORY_LIMIT" in err


# ------------------------------------------------------------------------------------ checkpoints


def _checkpoint(tmp_path: Path, num_tasks: int = 3) -> tuple[Path, dict]:
    torch.manual_seed(0)
    model = build_model("taan", (4,), [1] * num_tasks, hidden=[5], num_hinges=3)
    path = save(model, tmp_path / "good.pt")
    return path, torch.load(path, weights_only=True)


@pytest.mark.parametrize("field", ["alpha", "state_dict"])
def test_a_tensor_declaring_more_than_its_storage_is_refused(tmp_path, field):
    _, raw = _checkpoint(tmp_path)
    huge = torch.zeros(3, 1).expand(3, 10**9)  # 12 bytes of storage declaring 12 GB
    if field == "alpha":
        raw["layers"][0]["alpha"] = huge
        where = r"layers\[0\]\.alpha"
    else:
        raw["model"]["state_dict"]["heads.0.weight"] = torch.zeros(1).expand(10**10, 1)
        where = r"model\.state_dict\.heads\.0\.weight"
    path = tmp_path / "views.pt"
    torch.save(raw, path)
    tic = time.perf_counter()
    with pytest.raises(CheckpointError, match=rf"views\.pt: {where}: expected a tensor whose storage holds its "
                                              r"[\d,]+ elements of shape .* got a view of \d+ bytes declaring"):
        load_checkpoint(path)
    assert time.perf_counter() - tic < 2.0


def test_many_views_of_one_storage_are_bounded_by_the_limit(tmp_path, monkeypatch):
    _, raw = _checkpoint(tmp_path)
    shared = torch.zeros(25_000)  # 100 kB, each view is all of it: 40 views declare 4 MB
    raw["extra"] = {"views": [shared[:] for _ in range(40)]}
    path = tmp_path / "shared.pt"
    torch.save(raw, path)
    monkeypatch.setenv("TAAN_MEMORY_LIMIT", "64M")
    load_checkpoint(path)  # within the limit: shared storage (tied weights) is allowed
    monkeypatch.setenv("TAAN_MEMORY_LIMIT", "1M")
    with pytest.raises(CheckpointError, match=r"shared\.pt: expected tensors with storages of their own, got views "
                                              r"of shared storages that declare 3\.7 MiB more than they hold"):
        load_checkpoint(path)


def test_a_checkpoint_of_300000_tasks_is_refused_before_its_model_is_built(tmp_path, monkeypatch):
    _, raw = _checkpoint(tmp_path)
    tasks = 300_000
    raw["task_names"] = [f"t{t}" for t in range(tasks)]
    layer = raw["layers"][0]
    layer.update(alpha=torch.zeros(tasks, 3), preact_mean=None, preact_std=None)
    raw["model"]["config"]["output_dims"] = [1] * tasks
    path = tmp_path / "many.pt"
    torch.save(raw, path)
    monkeypatch.setenv("TAAN_MEMORY_LIMIT", "512M")
    ckpt = load_checkpoint(path)
    tic = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"many\.pt: model\.config: cannot rebuild TAAN \(the model \(TAAN, "
                                              r"300,000 tasks"):
        model_from_checkpoint(ckpt)
    from taan_viz import analyze

    with pytest.raises(MemoryLimitError, match=r"many\.pt: task_names: the analysis of 300,000 tasks"):
        analyze(ckpt)
    assert time.perf_counter() - tic < 2.0


# ------------------------------------------------------------------------------------ data


def _small_npz(path: Path, **kwargs) -> Path:
    rng = np.random.default_rng(0)
    save_npz(path, features=rng.normal(size=(20, 3)), task_ids=np.repeat([0, 1], 10),
             labels=rng.integers(0, 2, 20), **kwargs)
    return path


def test_an_npz_member_without_npy_is_refused(tmp_path):
    path = _small_npz(tmp_path / "extra.npz")
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("features", b"\x00" * 64)
    with pytest.raises(ValueError, match=r"extra\.npz: member 'features': expected only \.npy arrays"):
        load_npz(str(path))


def test_npz_arrays_beyond_the_limit_are_refused_before_loading(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    path = tmp_path / "big.npz"
    # 8 MB of zeros compress to a few kB.
    save_npz(path, features=np.zeros((2000, 1000)), task_ids=np.repeat([0, 1], 1000), labels=rng.normal(size=2000))
    assert path.stat().st_size < 100_000
    monkeypatch.setenv("TAAN_MEMORY_LIMIT", "4M")
    with pytest.raises(MemoryLimitError, match=r"big\.npz: reading the arrays \(7\.7 MiB declared by their headers\) needs"):
        load_npz(str(path))


def test_npz_tasks_declaring_a_billion_outputs_are_refused(tmp_path, monkeypatch):
    path = _small_npz(tmp_path / "outputs.npz", kinds="multiclass", num_outputs=[100_000, 100_000])
    monkeypatch.setenv("TAAN_MEMORY_LIMIT", "4M")
    with pytest.raises(MemoryLimitError, match=r"outputs\.npz: num_outputs: training the heads of the 2 tasks' 200,000 outputs needs"):
        load_npz(str(path))
    monkeypatch.setenv("TAAN_MEMORY_LIMIT", "64M")
    assert [t.num_outputs for t in load_npz(str(path)).tasks] == [100_000, 100_000]


def test_a_planted_config_of_many_tasks_is_refused_at_once(monkeypatch):
    monkeypatch.setenv("TAAN_MEMORY_LIMIT", "256M")
    tic = time.perf_counter()
    # Within the per-array bound of planted, beyond the limit: 20,000 tasks of 100 samples.
    with pytest.raises(MemoryLimitError, match=r"the planted data set \(num_tasks = 20,000\) needs about 1\.6 GiB"):
        load_dataset("planted", num_tasks=20_000, groups_per_layer=[2], hidden=[2], num_hinges=1, samples_per_task=100)
    assert time.perf_counter() - tic < 1.0


# ------------------------------------------------------------------------------------ the CLI


@pytest.mark.parametrize("error", [
    MemoryError(),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried to "
                 "allocate 4000000000000 bytes."),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
])
def test_an_allocation_failure_is_the_one_line_out_of_memory_error(capsys, monkeypatch, tmp_path, error):
    import taan_core.data

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(taan_core.data, "load_dataset", fail)
    code, err = _cli(capsys, "train", "--out", tmp_path / "run")
    assert code == 2
    assert err.startswith("taan-core: error: out of memory")


def test_other_runtime_errors_are_not_called_out_of_memory(monkeypatch, tmp_path, capsys):
    import taan_core.data

    def fail(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(taan_core.data, "load_dataset", fail)
    with pytest.raises(SystemExit) as info:
        main(["train", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert info.value.code == 1 and "RuntimeError: a bug" in err and "out of memory" not in err


def test_a_config_of_a_users_own_model_is_let_pass(monkeypatch):
    from dataclasses import dataclass

    from taan_core._memory import check_model

    @dataclass
    class MyConfig:
        width: int = 10**12

    monkeypatch.setenv("TAAN_MEMORY_LIMIT", "1M")
    assert model_parameters(MyConfig()) == (0, 0)
    check_model(MyConfig(), training=True)  # nothing known, nothing refused


def test_a_million_layers_are_refused_by_their_modules(monkeypatch):
    monkeypatch.setenv("TAAN_MEMORY_LIMIT", "1G")
    with pytest.raises(MemoryLimitError, match=r"the model \(TAAN, 1 tasks, "):
        build_model("taan", (1,), [1], hidden=[1] * 1_000_000, num_hinges=1)
