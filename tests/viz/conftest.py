"""Fixtures for taan_viz tests: headless matplotlib, seeded RNGs, closed figures, and small
schema-v1 checkpoints written directly with torch.save (no training needed)."""

from __future__ import annotations

import random

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from tests.viz.viz_helpers import make_checkpoint_dict


@pytest.fixture(autouse=True)
def _seed_and_close():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture
def checkpoint_path(tmp_path):
    """A small planted checkpoint (T=6, L=3, M=8) with history and metrics."""
    path = tmp_path / "run" / "checkpoint.pt"
    path.parent.mkdir()
    torch.save(make_checkpoint_dict(), path)
    return path


@pytest.fixture
def checkpoint(checkpoint_path):
    from taan_core.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint_path)


@pytest.fixture
def reference_path(tmp_path):
    """A bare state_dict of the reference TAAN code: '<layer>.alpha' (T, M), '<layer>.basis' (1, M)."""
    gen = torch.Generator().manual_seed(1)
    state = {}
    for name in ("fc1", "fc2"):
        state[f"{name}.weight"] = torch.randn(4, 4, generator=gen)
        state[f"{name}.alpha"] = 0.3 * torch.randn(5, 6, generator=gen)
        state[f"{name}.basis"] = torch.linspace(-0.5, 0.5, 6).reshape(1, 6)
    path = tmp_path / "reference.pt"
    torch.save(state, path)
    return path


@pytest.fixture
def analysis(checkpoint):
    from taan_viz.analysis import analyze

    return analyze(checkpoint)
