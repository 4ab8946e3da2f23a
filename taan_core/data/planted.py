"""The planted benchmark: data from a teacher TAAN whose tasks share activations by a known tree.

The teacher is a task-adaptive MLP with ``L`` hidden layers,

    h_0 = x ~ N(0, I_D),   z_l = W_l h_{l-1} + c_l,   h_l = F^l_t(z_l),   y = A_t h_L + e_t + noise,

where ``F^l_t(z) = relu(z) + sum_m alpha[l, t, m] relu(b_{l,m} - z)`` is applied elementwise. The
weights ``W_l`` are shared by all tasks; only the activation coordinates ``alpha[l, t]`` and the
output heads ``A_t`` are per task. The tasks are partitioned into groups at every layer, the
partition refining with depth (default: 16 tasks, 2 groups at layer 1, 4 at layer 2, 8 at layer
3), and all tasks of a group share (up to a small jitter) one activation of that layer. A student
TAAN trained on the data should rediscover the partition of every layer from the distances
between its learned per-task activations.

What makes the partition identifiable (docs/data.md gives the measurements):

- group activations are far apart: each is the farthest-point pick among many random candidate
  shapes, measured by the function-space distance under N(0, 1); within a group the coordinates
  differ only by ``within_group_std``;
- candidate shapes are restricted to a moderate output variance, so no group's signal is
  squashed into a corner of the next layer's hinges;
- ``W_l`` and ``c_l`` are calibrated so that every unit's pre-activation has mean 0 and variance 1
  over all tasks' inputs, which spreads pre-activations over the hinges at ``[-1.5, 1.5]``;
- tasks are regressions with several outputs, each output a random readout of the last hidden
  layer, so every sample carries a continuous signal about every layer's activation
  (binary labels carry far less information per sample and made the recovered groups noisier);
- outputs are standardised per task, then Gaussian noise of standard deviation ``noise`` is
  added, so R^2 of the teacher itself is about ``1 / (1 + noise^2)``.

Nothing is stored: the teacher and the data are regenerated from the config (a numpy seed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from taan_core.data.base import MultiTaskData, TaskSpec, TensorSplit

__all__ = ["PlantedTeacher", "make_teacher", "planted_groups", "load_planted"]

# Teacher hinges of every layer, in units of the (standardised) pre-activation.
_HINGE_RANGE = 1.5
# Candidate activation coordinates are uniform in [-_ALPHA_RANGE, _ALPHA_RANGE].
_ALPHA_RANGE = 1.5
# Candidate shapes per group to pick the farthest-apart ones from.
_CANDIDATES_PER_GROUP = 64
# Allowed output variance of a candidate activation under z ~ N(0, 1).
_VARIANCE_RANGE = (0.25, 2.5)
# Samples per task used to calibrate the teacher's pre-activation statistics.
_CALIBRATION_SAMPLES = 2048
# Quadrature grid for function-space distances under N(0, 1).
_GRID = np.linspace(-6.0, 6.0, 1201)
_GRID_WEIGHTS = np.exp(-0.5 * _GRID**2)
_GRID_WEIGHTS /= _GRID_WEIGHTS.sum()


def _activation(z: np.ndarray, alpha: np.ndarray, hinges: np.ndarray) -> np.ndarray:
    """``relu(z) + sum_m alpha[..., m] relu(b_m - z)``; alpha (..., M) broadcast against z (..., K)."""
    # (..., K, M): one hinge term per element and hinge; sizes here are small.
    kinks = np.maximum(hinges[None, :] - z[..., :, None], 0.0)
    return np.maximum(z, 0.0) + np.einsum("...km,...m->...k", kinks, alpha)


@dataclass(frozen=True)
class PlantedTeacher:
    """The teacher network that generates the planted benchmark (float64 numpy arrays).

    Attributes
    ----------
    weights : list of L arrays, weights[l] of shape (H_l, H_{l-1}) (H_0 = input_dim)
    biases : list of L arrays of shape (H_l,)
    hinges : array of shape (L, M)
    alpha : array of shape (L, T, M)
        Activation coordinates of every task at every layer.
    heads : array of shape (T, K, H_L)
    head_biases : array of shape (T, K)
        Chosen so that every task's noiseless outputs have mean 0 and variance 1.
    groups : list of L lists of T ints
        ``groups[l][t]`` is the planted group of task ``t`` at hidden layer ``l``.
    """

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    hinges: np.ndarray
    alpha: np.ndarray
    heads: np.ndarray
    head_biases: np.ndarray
    groups: list[list[int]]

    @property
    def num_tasks(self) -> int:
        return int(self.alpha.shape[1])

    def hidden(self, x: np.ndarray, task: int) -> list[np.ndarray]:
        """Hidden representations ``[h_1, ..., h_L]`` of inputs x (n, D) for one task."""
        out = []
        h = np.asarray(x, dtype=np.float64)
        for layer, (w, c) in enumerate(zip(self.weights, self.biases)):
            h = _activation(h @ w.T + c, self.alpha[layer, task], self.hinges[layer])
            out.append(h)
        return out

    def forward(self, x: np.ndarray, task: int) -> np.ndarray:
        """Noiseless outputs of shape (n, K) for inputs x of shape (n, D) of one task."""
        h = self.hidden(x, task)[-1]
        return h @ self.heads[task].T + self.head_biases[task]


def planted_groups(num_tasks: int, groups_per_layer: Sequence[int]) -> list[list[int]]:
    """Nested contiguous groups: ``groups[l][t] = floor(t * G_l / T)``.

    With every ``G_l`` dividing ``G_{l+1}`` the partition of layer ``l + 1`` refines that of
    layer ``l`` (floor(floor(x c) / c) = floor(x) for an integer c).
    """
    return [[t * g // num_tasks for t in range(num_tasks)] for g in groups_per_layer]


def _pick_group_alphas(
    rng: np.random.Generator, num_groups: int, hinges: np.ndarray
) -> np.ndarray:
    """Farthest-point choice of ``num_groups`` activation coordinates among random candidates."""
    m = hinges.shape[0]
    count = _CANDIDATES_PER_GROUP * num_groups
    cand = rng.uniform(-_ALPHA_RANGE, _ALPHA_RANGE, size=(count, m))
    values = _activation(np.broadcast_to(_GRID, (count, _GRID.size)), cand, hinges)
    mean = values @ _GRID_WEIGHTS
    var = (values**2) @ _GRID_WEIGHTS - mean**2
    keep = (var >= _VARIANCE_RANGE[0]) & (var <= _VARIANCE_RANGE[1])
    cand, values = cand[keep], values[keep]
    # Function-space distance under N(0, 1), by quadrature on the grid.
    sq = np.sqrt(_GRID_WEIGHTS)
    v = values * sq
    chosen = [int(rng.integers(len(cand)))]
    dist = np.sqrt(((v - v[chosen[0]]) ** 2).sum(axis=1))
    for _ in range(num_groups - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.sqrt(((v - v[nxt]) ** 2).sum(axis=1)))
    return cand[chosen]


def make_teacher(
    *,
    num_tasks: int = 16,
    groups_per_layer: Sequence[int] = (2, 4, 8),
    input_dim: int = 16,
    hidden: Sequence[int] = (32, 32, 32),
    num_hinges: int = 4,
    num_outputs: int = 4,
    within_group_std: float = 0.02,
    head_std: float = 1.0,
    seed: int = 0,
) -> PlantedTeacher:
    """Build the seeded teacher of the planted benchmark (see the module docstring).

    Parameters
    ----------
    num_tasks : int
        Number of tasks ``T``.
    groups_per_layer : sequence of L ints
        Number of groups at each hidden layer; each must divide the next and be <= T.
    input_dim : int
        Input dimension ``D``.
    hidden : sequence of L ints
        Hidden widths of the teacher.
    num_hinges : int
        Hinges per layer ``M``, evenly spaced in [-1.5, 1.5].
    num_outputs : int
        Regression outputs per task ``K``.
    within_group_std : float
        Standard deviation of the per-task jitter of the activation coordinates around the
        group's coordinates.
    seed : int
        Seed of everything random.
    """
    groups_per_layer = [int(g) for g in groups_per_layer]
    hidden = [int(h) for h in hidden]
    rng = np.random.default_rng([int(seed), 0x7A4A])
    groups = planted_groups(num_tasks, groups_per_layer)
    num_layers = len(hidden)
    hinges = np.tile(np.linspace(-_HINGE_RANGE, _HINGE_RANGE, num_hinges), (num_layers, 1))
    alpha = np.empty((num_layers, num_tasks, num_hinges))
    for layer, g in enumerate(groups_per_layer):
        group_alpha = _pick_group_alphas(rng, g, hinges[layer])
        jitter = within_group_std * rng.standard_normal((num_tasks, num_hinges))
        alpha[layer] = group_alpha[np.asarray(groups[layer])] + jitter

    # Calibrate each layer on pooled inputs of all tasks: unit pre-activations get mean 0, var 1.
    x_cal = rng.standard_normal((num_tasks, _CALIBRATION_SAMPLES, input_dim))
    h = x_cal
    weights, biases = [], []
    fan_in = input_dim
    for layer, width in enumerate(hidden):
        w = rng.standard_normal((width, fan_in)) / np.sqrt(fan_in)
        z = h @ w.T
        mean = z.mean(axis=(0, 1))
        std = z.std(axis=(0, 1))
        std = np.where(std > 1e-12, std, 1.0)
        w = w / std[:, None]
        c = -mean / std
        weights.append(w)
        biases.append(c)
        z = h @ w.T + c
        h = np.stack([_activation(z[t], alpha[layer, t], hinges[layer]) for t in range(num_tasks)])
        fan_in = width

    shared = rng.standard_normal((1, num_outputs, fan_in))
    own = rng.standard_normal((num_tasks, num_outputs, fan_in))
    heads = (np.sqrt(1 - head_std**2) * shared + head_std * own) / np.sqrt(fan_in)
    raw = np.einsum("tnh,tkh->tnk", h, heads)
    mean = raw.mean(axis=1)
    std = raw.std(axis=1)
    std = np.where(std > 1e-12, std, 1.0)
    heads = heads / std[:, :, None]
    head_biases = -mean / std
    return PlantedTeacher(
        weights=weights,
        biases=biases,
        hinges=hinges,
        alpha=alpha,
        heads=heads,
        head_biases=head_biases,
        groups=groups,
    )


def _check_config(
    num_tasks, groups_per_layer, input_dim, hidden, num_hinges, num_outputs,
    samples_per_task, val_fraction, test_fraction, noise, within_group_std, seed,
) -> None:
    from taan_core._validation import check_int
    from taan_core.data.base import _check_fractions

    check_int(num_tasks, "num_tasks", minimum=1)
    check_int(input_dim, "input_dim", minimum=1)
    check_int(num_hinges, "num_hinges", minimum=1)
    check_int(num_outputs, "num_outputs", minimum=1)
    check_int(samples_per_task, "samples_per_task", minimum=3)
    check_int(seed, "seed", minimum=0)
    for name, seq in (("groups_per_layer", groups_per_layer), ("hidden", hidden)):
        if isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence) or len(seq) == 0:
            raise TypeError(f"{name} must be a non-empty list of ints, got {seq!r}")
        for i, v in enumerate(seq):
            check_int(v, f"{name}[{i}]", minimum=1)
    if len(groups_per_layer) != len(hidden):
        raise ValueError(
            f"groups_per_layer must give one group count per hidden layer (len(hidden) = {len(hidden)}), "
            f"got {len(groups_per_layer)}: {list(groups_per_layer)}"
        )
    for layer, g in enumerate(groups_per_layer):
        if g > num_tasks:
            raise ValueError(f"groups_per_layer[{layer}] = {g} exceeds num_tasks = {num_tasks}")
        if layer + 1 < len(groups_per_layer) and groups_per_layer[layer + 1] % g:
            raise ValueError(
                "groups must refine with depth: each groups_per_layer entry must divide the next, "
                f"got {list(groups_per_layer)}"
            )
    _check_fractions(val_fraction, test_fraction)
    for name, v in (("noise", noise), ("within_group_std", within_group_std)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name} must be a float, got {type(v).__name__}")
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be finite and >= 0, got {v}")


def load_planted(
    data_path: str | None = None,
    *,
    num_tasks: int = 16,
    groups_per_layer: Sequence[int] = (2, 4, 8),
    input_dim: int = 16,
    hidden: Sequence[int] = (32, 32, 32),
    num_hinges: int = 4,
    num_outputs: int = 4,
    samples_per_task: int = 1000,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    noise: float = 0.1,
    within_group_std: float = 0.02,
    head_std: float = 1.0,
    seed: int = 0,
) -> MultiTaskData:
    """Generate the planted benchmark.

    Parameters
    ----------
    data_path : None
        Unused (the data are generated); accepted so every source has the same signature.
    num_tasks, groups_per_layer, input_dim, hidden, num_hinges, num_outputs, within_group_std, seed
        Teacher configuration, see :func:`make_teacher`.
    samples_per_task : int
        Samples per task over all three splits.
    val_fraction, test_fraction : float
        Fractions of every task's samples held out for validation and test.
    noise : float
        Standard deviation of the Gaussian noise added to the unit-variance outputs.

    Returns
    -------
    MultiTaskData
        ``T`` regression tasks with ``num_outputs`` outputs each, input shape ``(input_dim,)``;
        ``ground_truth`` holds ``groups`` (L lists of T ints) and the teacher's ``hinges``
        (L lists of M floats) and ``alpha`` (L x T x M nested lists).
    """
    if data_path is not None:
        raise ValueError(f"the planted data set is generated, it reads no files; got data_path={data_path!r}")
    _check_config(
        num_tasks, groups_per_layer, input_dim, hidden, num_hinges, num_outputs,
        samples_per_task, val_fraction, test_fraction, noise, within_group_std, seed,
    )
    config = {
        "num_tasks": num_tasks,
        "groups_per_layer": [int(g) for g in groups_per_layer],
        "input_dim": input_dim,
        "hidden": [int(h) for h in hidden],
        "num_hinges": num_hinges,
        "num_outputs": num_outputs,
        "samples_per_task": samples_per_task,
        "val_fraction": float(val_fraction),
        "test_fraction": float(test_fraction),
        "noise": float(noise),
        "within_group_std": float(within_group_std),
        "seed": seed,
    }
    teacher = make_teacher(
        num_tasks=num_tasks,
        groups_per_layer=groups_per_layer,
        input_dim=input_dim,
        hidden=hidden,
        num_hinges=num_hinges,
        num_outputs=num_outputs,
        within_group_std=within_group_std,
        head_std=head_std,
        seed=seed,
    )
    rng = np.random.default_rng([int(seed), 0xDA7A])
    n_test = max(1, int(round(samples_per_task * test_fraction))) if test_fraction > 0 else 0
    n_val = max(1, int(round(samples_per_task * val_fraction))) if val_fraction > 0 else 0
    n_train = samples_per_task - n_val - n_test
    if n_train < 1:
        raise ValueError(f"samples_per_task = {samples_per_task} leaves no training samples")
    tasks = [TaskSpec(f"task_{t:02d}", "regression", num_outputs) for t in range(num_tasks)]
    parts: dict[str, tuple[list, list]] = {s: ([], []) for s in ("train", "val", "test")}
    for t in range(num_tasks):
        x = rng.standard_normal((samples_per_task, input_dim))
        y = teacher.forward(x, t) + noise * rng.standard_normal((samples_per_task, num_outputs))
        cuts = {"train": slice(0, n_train), "val": slice(n_train, n_train + n_val), "test": slice(n_train + n_val, None)}
        for split, sl in cuts.items():
            parts[split][0].append(torch.from_numpy(x[sl]).float())
            parts[split][1].append(torch.from_numpy(y[sl]).float())
    splits = {
        s: TensorSplit(tasks, xs, ys, source=f"planted (seed {seed})") for s, (xs, ys) in parts.items()
    }
    ground_truth = {
        "groups": [list(g) for g in teacher.groups],
        "hinges": teacher.hinges.tolist(),
        "alpha": teacher.alpha.tolist(),
    }
    return MultiTaskData(
        "planted", config, tasks, splits, input_shape=(input_dim,), ground_truth=ground_truth
    )
