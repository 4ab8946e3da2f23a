"""Synthetic schema-v1 checkpoints and independent reference computations for taan_viz tests.

(A uniquely named module rather than conftest, so that imports cannot pick up another test
folder's conftest.)"""

from __future__ import annotations

import numpy as np
import torch

# Planted structure of the synthetic checkpoints: 6 tasks that share everything at layer 0,
# split in two at layer 1 and in four at layer 2 (nested, like a hard-sharing tree).
GROUPS = [[0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1], [0, 0, 1, 2, 2, 3]]
TASK_NAMES = ["cars", "boats", "trains", "cats", "dogs", "birds"]
LAYER_NAMES = ["blocks.0.act", "blocks.1.act", "blocks.2.act"]


def make_checkpoint_dict(
    groups=GROUPS,
    task_names=TASK_NAMES,
    layer_names=LAYER_NAMES,
    num_hinges: int = 8,
    epochs: int = 4,
    seed: int = 0,
    planted: bool = True,
    stats: bool = True,
) -> dict:
    """A schema-v1 checkpoint whose tasks in the same planted group have identical alpha."""
    gen = torch.Generator().manual_seed(seed)
    t = len(task_names)
    layers, finals = [], []
    for l, name in enumerate(layer_names):
        g = torch.tensor(groups[l])
        centres = 0.6 * torch.randn(int(g.max()) + 1, num_hinges, generator=gen, dtype=torch.float64)
        alpha = centres[g]
        hinges = torch.linspace(-1.5, 1.5, num_hinges, dtype=torch.float64) + 0.05 * l
        finals.append((alpha, hinges))
        layers.append({
            "name": name, "alpha": alpha.float(), "hinges": hinges.float(),
            "preact_mean": (0.1 * torch.arange(t, dtype=torch.float32)) if stats else None,
            "preact_std": torch.full((t,), 0.9) if stats else None,
            "preact_mean_overall": 0.2 + 0.1 * l if stats else None,
            "preact_std_overall": 0.8 + 0.1 * l if stats else None,
        })
    start = [0.01 * torch.randn(t, num_hinges, generator=gen, dtype=torch.float64) for _ in layer_names]
    history, metrics = [], []
    for e in range(1, epochs + 1):
        w = e / epochs
        history.append({
            "epoch": e, "step": 10 * e,
            "alphas": [((1 - w) * a0 + w * a).float() for a0, (a, _) in zip(start, finals)],
            "hinges": [h.float() for _, h in finals],
        })
        per_task = {n: {"accuracy": 0.5 + 0.1 * w + 0.01 * i} for i, n in enumerate(task_names)}
        metrics.append({
            "epoch": e, "step": 10 * e, "lr": 1e-3, "train_loss": 1.0 / e, "train_task_loss": 0.9 / e,
            "train_reg": 0.1 / e, "val": {"per_task": per_task, "mean": {"accuracy": 0.5 + 0.1 * w},
                                           "main": 0.5 + 0.1 * w},
            "best": True, "seconds": 1.5,
        })
    return {
        "format": "taan-checkpoint", "version": 1,
        "task_names": list(task_names), "layer_names": list(layer_names), "layers": layers,
        "history": history,
        "model": {"class": "TAAN", "config": {"hidden": [16, 16, 16]}, "state_dict": {}},
        "optimizer": None, "scheduler": None, "rng": None, "sampler": None,
        "epoch": epochs, "step": 10 * epochs, "metrics": metrics,
        "data": {"name": "planted", "config": {"num_tasks": t},
                 "groups": [list(g) for g in groups] if planted else None},
    }


def gaussian_expectation(f, mu: float, sigma: float, n: int = 200_001) -> float:
    """E[f(x)], x ~ N(mu, sigma^2), by the trapezoid rule on mu +- 12 sigma (a reference that
    shares no code with taan_core.gaussian)."""
    x = np.linspace(mu - 12 * sigma, mu + 12 * sigma, n)
    w = np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    return float(np.trapezoid(f(x) * w, x))


def make_large_checkpoint_dict(num_tasks: int = 65, num_hinges: int = 8, noise: float = 0.05, seed: int = 0) -> dict:
    """A schema-v1 checkpoint at the scale of real data sets (exam: 65 tasks): nested planted
    groups (1, 4, 12 per layer) with noise, so that tasks differ and the deepest layer has
    more groups than the palette has colours."""
    t = num_tasks
    groups = [[0] * t, [i * 4 // t for i in range(t)], [i * 12 // t for i in range(t)]]
    obj = make_checkpoint_dict(groups=groups, task_names=[f"exam_{i:02d}" for i in range(t)],
                               num_hinges=num_hinges, epochs=2, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    for layer in obj["layers"]:
        layer["alpha"] = layer["alpha"] + noise * torch.randn(layer["alpha"].shape, generator=gen)
    return obj


# Eight Omniglot alphabets: names as long as real data sets give them.
LONG_TASK_NAMES = ["Japanese_(katakana)", "Japanese_(hiragana)", "Asomtavruli_(Georgian)", "Alphabet_of_the_Magi",
                   "Anglo-Saxon_Futhorc", "Burmese_(Myanmar)", "Early_Aramaic", "Korean"]
CONV_LAYER_NAMES = [f"convs.{l}.act" for l in range(5)]


def make_wide_checkpoint_dict(noise: float = 0.25, seed: int = 0) -> dict:
    """A schema-v1 checkpoint shaped like a convolutional Omniglot model: 8 tasks with long
    names, 5 layers named ``convs.l.act``, nested planted groups (1, 2, 4, 6, 8) blurred by
    per-task noise, so that distances spread and thresholds cut them in several ways."""
    groups = [[0] * 8, [0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 2, 2, 3, 3], [0, 0, 1, 2, 3, 4, 5, 5],
              list(range(8))]
    obj = make_checkpoint_dict(groups=groups, task_names=LONG_TASK_NAMES, layer_names=CONV_LAYER_NAMES,
                               epochs=2, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    for layer in obj["layers"]:
        layer["alpha"] = layer["alpha"] + noise * torch.randn(layer["alpha"].shape, generator=gen)
    return obj


def rendered_boxes(fig, texts) -> list:
    """Window extents of ``texts`` once ``fig`` is drawn (on an Agg canvas, at its own dpi)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in texts]


def overlapping(boxes, pad: float = 0.0) -> list[tuple[int, int]]:
    """Pairs of boxes (indices) that overlap by more than ``pad`` pixels each way."""
    out = []
    for i, a in enumerate(boxes):
        for j in range(i + 1, len(boxes)):
            b = boxes[j]
            if min(a.x1, b.x1) - max(a.x0, b.x0) > pad and min(a.y1, b.y1) - max(a.y0, b.y0) > pad:
                out.append((i, j))
    return out


def wide_runs(tmp_path, seeds=(0, 1, 2)) -> list:
    """Analyses of :func:`make_wide_checkpoint_dict` runs, one per seed."""
    from taan_core.checkpoint import load_checkpoint
    from taan_viz.analysis import analyze

    out = []
    for seed in seeds:
        path = tmp_path / f"wide-{seed}" / "checkpoint.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(make_wide_checkpoint_dict(seed=seed), path)
        out.append(analyze(load_checkpoint(path)))
    return out


def continuum_checkpoint_dict(num_tasks: int = 40, spread: float = 0.1) -> dict:
    """A checkpoint whose layer 2 spreads the tasks evenly at random along one direction of
    alpha (a continuum, as on school): a threshold cuts it into groups that are not separated.
    Layers 1 and 3 hold every task alike."""
    d = make_checkpoint_dict(groups=[[0] * num_tasks] * 3, task_names=[f"task_{i}" for i in range(num_tasks)],
                             planted=False)
    position = torch.rand(num_tasks, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    direction = torch.linspace(-1.0, 1.0, d["layers"][1]["alpha"].shape[1], dtype=torch.float64)
    d["layers"][1]["alpha"] = (spread * position[:, None] * direction).float()
    return d
