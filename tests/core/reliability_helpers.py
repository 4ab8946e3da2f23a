"""Shared by the reliability tests (tests/core/train and tests/core/cli): a tiny planted data
set, a mixed-kinds npz, the CLI runner and the one-line error check."""


from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from taan_core.cli import main
from taan_core.data import load_dataset, save_npz
from taan_core.models import build_model
from taan_core.train import TrainConfig

_ROOT = Path(__file__).resolve().parents[2]  # the repository
_TINY = dict(num_tasks=4, groups_per_layer=[2, 4], input_dim=6, hidden=[8, 8], num_hinges=4, num_outputs=2,
             samples_per_task=60)
_KINDS = ["regression", "binary", "multiclass", "multilabel"]


def _strict(text: str) -> list:
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


def _write_npz(path: Path, seed: int = 0, n: int = 40) -> Path:
    rng = np.random.default_rng(seed)
    t = np.repeat(np.arange(4), n)
    y = np.zeros((4 * n, 3))
    y[t == 0] = rng.normal(size=(n, 3))
    y[t == 1, 0] = rng.integers(0, 2, n)
    y[t == 2, 0] = rng.integers(0, 3, n)
    y[t == 3] = rng.integers(0, 2, (n, 3))
    save_npz(path, features=rng.normal(size=(4 * n, 5)), task_ids=t, labels=y,
             task_names=["reg", "bin", "multi", "tags"], kinds=_KINDS, num_outputs=[3, 1, 3, 3])
    return path


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def _one_line(code: int, err: str, status: int = 2) -> str:
    assert code == status, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("taan-core: ")
    return lines[0]


def _npz_args(npz: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", "npz", "--data", str(npz), "--hidden", "8", "--hinges", "2", "--epochs", "1",
            "--batch-size", "8", "--lr", "0.01", "--threads", "1", "--device", "cpu", "--starts", "1", "--out", str(out),
            *extra]


@pytest.fixture(scope="module")
def data():
    return load_dataset("planted", **_TINY)


@pytest.fixture
def npz(tmp_path) -> Path:
    return _write_npz(tmp_path / "mixed.npz")


def _model(data, name="taan", **overrides):
    torch.manual_seed(0)
    overrides.setdefault("hidden", [8, 8])
    if name in ("taan",):
        overrides.setdefault("num_hinges", 4)
    return build_model(name, data.input_shape, [t.num_outputs for t in data.tasks], **overrides)


def _config(out: Path, **kw) -> TrainConfig:
    kw.setdefault("epochs", 2)
    kw.setdefault("batch_size", 8)
    kw.setdefault("lr", 1e-2)
    kw.setdefault("starts", 1)  # one start: the hooks below act on the run's own epochs
    return TrainConfig(out=str(out), quiet=True, device="cpu", threads=1, **kw)
