"""The planted benchmark: data from a teacher TAAN whose tasks share activations by a known tree.

The teacher is a task-adaptive MLP with ``L`` hidden layers and one shared linear readout,

    h_0 = x ~ N(0, I_D),   z_l = W_l h_{l-1} + c_l,   h_l = F^l_t(z_l),   y_t = A h_L + e + noise,

where ``F^l_t(z) = relu(z) + sum_m alpha[l, t, m] relu(b_m - z)`` is applied elementwise and the
readout ``A, e`` standardises the outputs pooled over all tasks. Only the activation
coordinates ``alpha[l, t]`` are task specific. The tasks form a tree: at layer 1 they fall into
``G_1`` groups, and each group of layer ``l`` splits into ``G_{l+1} / G_l`` groups at layer
``l + 1`` (default 16 tasks in 2, 4 and 8 groups). The tasks of a group share that layer's
activation up to a small jitter.

Every layer's groups get well-separated activations (``design="separated"``, the default): the
``G_l`` group activations of layer ``l`` are relu plus centred offsets, picked by farthest-point
selection from random candidates and scaled so that the two closest groups are
``split_distance * split_decay**(l - 1)`` apart in function space (the L2 distance under
``z ~ N(0, 1)``). Each layer's groups are drawn independently; the tree lies in the labels (the
groups of layer ``l + 1`` refine those of layer ``l``). Choices that make the tree visible to a
student TAAN (docs/data.md gives what was tried and the measured adjusted Rand indices):

- the readout is shared by all tasks, scales and shifts included: every task-specific effect
  comes from the activations, and a student with one shared head cannot explain a task
  difference anywhere else (with a random readout per task a student explained the
  differences with its own per-task heads, ARI near 0);
- all groups of a layer differ at that layer: in the earlier branching walk (``design="walk"``)
  a coarse split was carried into the deeper layers, and a student moved it back to the
  coarse layer, which left the deeper layers' groups mixed;
- the closest groups of a coarse layer are farther apart than those of a fine one
  (``split_decay < 1``: 0.3, 0.15, 0.075; farthest-point selection puts the typical pair of
  groups about 0.3 apart at every layer);
- activations stay close to relu, so the teacher is a smooth network that a student fits to
  R^2 of about 0.97 in seconds; large offsets made non-monotone activations whose compositions
  a student fitted poorly, and a poor fit recovered little;
- pre-activations are calibrated to mean 0 and variance 1 over all tasks' inputs, which spreads
  them over the hinges at ``[-1.5, 1.5]``; tasks are regressions with several outputs, so every
  sample carries a continuous signal (a binary label carries far less per sample);
- the input is low-dimensional (8) and the teacher (16 units, 4 hinges) narrower than the
  default student (32 units, 4 hinges): a student as narrow as its teacher fitted it poorly, and
  a freer one (64 units, 8 hinges) spread task differences over its layers more often.

Nothing is stored: the teacher and the data are regenerated from the config (numpy seeds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from taan_core._validation import check_int
from taan_core.data.base import MultiTaskData, TaskSpec, TensorSplit, _check_fractions

__all__ = ["PLANTED_STUDENT_TAAN", "PlantedTeacher", "make_teacher", "teacher_from_config", "planted_groups",
           "load_planted"]

# Teacher hinges of every layer lie evenly in [-_HINGE_RANGE, _HINGE_RANGE] (standardised units).
_HINGE_RANGE = 1.5
# TAANConfig fields of the benchmark's documented student (docs/data.md), used by `taan-core train`
# and the reproduction study: like its teacher it shares every weight and standardises its
# pre-activations, and its hinges span the teacher's range.
PLANTED_STUDENT_TAAN: dict[str, Any] = {"shared_head": True, "batch_norm": True, "batch_norm_affine": False,
                                        "hinge_range": _HINGE_RANGE}
# Random candidates from which the separated design picks each layer's group activations.
_CANDIDATES = 256
_DESIGNS = ("separated", "walk")
# Inputs on which the teacher's pre-activations and outputs are standardised.
_CALIBRATION_SAMPLES = 4096
# Quadrature grid for function-space distances under N(0, 1).
_GRID = np.linspace(-6.0, 6.0, 1201)
_GRID_WEIGHTS = np.exp(-0.5 * _GRID**2)
_GRID_WEIGHTS /= _GRID_WEIGHTS.sum()
# Most values (float64) that one generated array may hold, 8 GiB: a config from a damaged or
# hostile checkpoint (samples_per_task = 1e11, say) is refused before anything is allocated.
_MAX_VALUES = 2**30


def _activation(z: np.ndarray, alpha: np.ndarray, hinges: np.ndarray) -> np.ndarray:
    """``relu(z) + sum_m alpha[..., m] relu(b_m - z)``; alpha (..., M) broadcast against z (..., K)."""
    kinks = np.maximum(hinges - z[..., None], 0.0)
    return np.maximum(z, 0.0) + np.einsum("...km,...m->...k", kinks, alpha)


def _hinge_gram(hinges: np.ndarray) -> np.ndarray:
    """``E[relu(b_m - z) relu(b_n - z)]`` under z ~ N(0, 1), by quadrature: (M, M)."""
    k = np.maximum(hinges[:, None] - _GRID[None, :], 0.0)
    return (k * _GRID_WEIGHTS) @ k.T


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
        The readout of every task: one matrix for all tasks that standardises the outputs
        pooled over tasks (``design="walk"``: scaled per task to standardise each task).
    head_biases : array of shape (T, K)
        The readout's bias (the same for all tasks unless ``design="walk"``).
    groups : list of L lists of T ints
        ``groups[l][t]`` is the planted group of task ``t`` at hidden layer ``l``.
    split_sizes : list of L floats
        Function-space distance of the two closest groups of each layer (``design="walk"``:
        of the closest children of the splits made at each layer).
    design : str
        "separated" or "walk", see :func:`make_teacher`.
    """

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    hinges: np.ndarray
    alpha: np.ndarray
    heads: np.ndarray
    head_biases: np.ndarray
    groups: list[list[int]]
    split_sizes: list[float]
    design: str = "separated"

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


def _coefficient_distances(a: np.ndarray, b: np.ndarray, gram: np.ndarray) -> np.ndarray:
    """Function-space distances between coefficient rows a (P, M) and b (Q, M): (P, Q)."""
    diff = a[:, None, :] - b[None, :, :]
    return np.sqrt(np.maximum(np.einsum("ijm,mn,ijn->ij", diff, gram, diff), 0.0))


def _closest_pair(dist: np.ndarray) -> float:
    return float(dist[~np.eye(dist.shape[0], dtype=bool)].min())


def _separated_offsets(rng: np.random.Generator, groups: list[list[int]], hinges: np.ndarray,
                       sizes: np.ndarray) -> np.ndarray:
    """Coefficient offsets of every task's group at every layer: (L, T, M).

    Layer ``l``'s ``G_l`` group offsets are chosen by farthest-point selection (in function
    space) among random candidates, centred, and scaled so that the closest two are
    ``sizes[l]`` apart. Candidates are drawn as N(0, gram^(1/2)) in coefficient space: a draw
    isotropic in coefficients puts some groups along nearly flat directions of the hinge basis,
    and scaling those to a function-space distance needs large, cancelling coefficients.
    """
    num_layers, m = hinges.shape
    out = np.zeros((num_layers, len(groups[0]), m))
    for layer in range(num_layers):
        members = np.asarray(groups[layer])
        count = int(members.max()) + 1
        if count < 2:
            continue
        gram = _hinge_gram(hinges[layer])
        evals, evecs = np.linalg.eigh(gram)
        candidates = rng.standard_normal((_CANDIDATES, m)) @ (evecs * np.clip(evals, 0.0, None) ** 0.25).T
        norms = _coefficient_distances(candidates, np.zeros((1, m)), gram)[:, 0]
        chosen = [int(np.argmin(norms))]
        nearest = _coefficient_distances(candidates, candidates[chosen], gram)[:, 0]
        for _ in range(count - 1):
            chosen.append(int(np.argmax(nearest)))
            nearest = np.minimum(nearest, _coefficient_distances(candidates, candidates[chosen[-1:]], gram)[:, 0])
        centres = candidates[chosen] - candidates[chosen].mean(axis=0)
        centres *= sizes[layer] / _closest_pair(_coefficient_distances(centres, centres, gram))
        out[layer] = centres[members]
    return out


def _split_offsets(rng: np.random.Generator, groups: list[list[int]], hinges: np.ndarray) -> np.ndarray:
    """Unit-size coordinate offsets of every split: (L depths, L layers, T, M).

    ``out[d, l, t]`` is what the split made at layer ``d`` adds to task ``t``'s coordinates at
    layer ``l >= d``: the children of each group get centred random offsets (a fresh direction
    for every layer) scaled so that the closest two siblings are 1 apart in function space.
    """
    num_layers, m = hinges.shape
    members = [np.asarray(g) for g in groups]
    out = np.zeros((num_layers, num_layers, members[0].size, m))
    for depth in range(num_layers):
        parent = members[depth - 1] if depth else np.zeros_like(members[0])
        for p in np.unique(parent):
            children = np.unique(members[depth][parent == p])
            if children.size < 2:
                continue
            for layer in range(depth, num_layers):
                gram = _hinge_gram(hinges[layer])
                u = rng.standard_normal((children.size, m))
                u -= u.mean(axis=0)
                u /= _closest_pair(_coefficient_distances(u, u, gram))
                for c, offset in zip(children, u):
                    out[depth, layer, members[depth] == c] = offset
    return out


def _calibrate(x, alpha, hinges, raw_weights, raw_head, per_task_outputs: bool):
    """Standardise every unit's pre-activation over all tasks, and the outputs on x (n, D):
    pooled over tasks (one readout), or per task when ``per_task_outputs``.

    Returns the weights, biases, per-task heads (T, K, H_L) and head biases (T, K).
    """
    h = np.broadcast_to(x, (alpha.shape[1],) + x.shape)
    weights, biases = [], []
    for layer, w in enumerate(raw_weights):
        z = h @ w.T
        mean = z.mean(axis=(0, 1))
        std = z.std(axis=(0, 1))
        std = np.where(std > 1e-12, std, 1.0)
        weights.append(w / std[:, None])
        biases.append(-mean / std)
        h = _activation((z - mean) / std, alpha[layer][:, None, :], hinges[layer])
    raw = h @ raw_head.T
    axes = 1 if per_task_outputs else (0, 1)
    mean = np.broadcast_to(raw.mean(axis=axes, keepdims=True), raw.shape)[:, 0]
    std = np.broadcast_to(raw.std(axis=axes, keepdims=True), raw.shape)[:, 0]
    std = np.where(std > 1e-12, std, 1.0)
    return weights, biases, raw_head[None] / std[:, :, None], -mean / std


def make_teacher(
    *,
    num_tasks: int = 16,
    groups_per_layer: Sequence[int] = (2, 4, 8),
    input_dim: int = 8,
    hidden: Sequence[int] = (16, 16, 16),
    num_hinges: int = 4,
    num_outputs: int = 4,
    split_distance: float = 0.3,
    split_decay: float = 0.5,
    within_group_std: float = 0.01,
    seed: int = 0,
    design: str = "separated",
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
    split_distance, split_decay : float
        The closest two groups of hidden layer ``l + 1`` (0-based ``l``) are
        ``split_distance * split_decay**l`` apart in function space under N(0, 1).
    within_group_std : float
        Expected function-space size of every task's jitter around its group's activation.
    seed : int
        Seed of everything random.
    design : {"separated", "walk"}
        "separated": every layer's groups get their own well-separated activations around relu,
        and one readout serves all tasks. "walk": the earlier design (kept to rebuild older data
        sets): a branching walk down the tree from a random base activation, each split carried
        into all deeper layers (sized by ``split_distance`` 1.5 in its old default), and outputs
        standardised per task.
    """
    _check_design(design)
    groups_per_layer = [int(g) for g in groups_per_layer]
    hidden = [int(h) for h in hidden]
    _check_sizes(int(num_tasks), int(input_dim), hidden, int(num_hinges), int(num_outputs))
    num_layers = len(hidden)
    rng = np.random.default_rng([int(seed), 0x7A4A])
    groups = planted_groups(num_tasks, groups_per_layer)
    positions = np.linspace(-_HINGE_RANGE, _HINGE_RANGE, num_hinges) if num_hinges > 1 else np.zeros(1)
    hinges = np.tile(positions, (num_layers, 1))

    if design == "walk":
        base = rng.uniform(-0.5, 0.5, size=(num_layers, 1, num_hinges))
        offsets = _split_offsets(rng, groups, hinges)
    jitter = np.stack([
        within_group_std / np.sqrt(np.trace(_hinge_gram(hinges[layer])))
        * rng.standard_normal((num_tasks, num_hinges))
        for layer in range(num_layers)
    ])
    fans = [input_dim] + hidden[:-1]
    raw_weights = [rng.standard_normal((h, f)) / np.sqrt(f) for h, f in zip(hidden, fans)]
    raw_head = rng.standard_normal((num_outputs, hidden[-1])) / np.sqrt(hidden[-1])
    x_cal = rng.standard_normal((_CALIBRATION_SAMPLES, input_dim))
    sizes = split_distance * split_decay ** np.arange(num_layers)
    if design == "walk":
        alpha = base + np.einsum("d,dltm->ltm", sizes, offsets) + jitter
    else:
        alpha = _separated_offsets(rng, groups, hinges, sizes) + jitter
    weights, biases, heads, head_biases = _calibrate(x_cal, alpha, hinges, raw_weights, raw_head,
                                                     per_task_outputs=design == "walk")
    return PlantedTeacher(
        weights=weights,
        biases=biases,
        hinges=hinges,
        alpha=alpha,
        heads=heads,
        head_biases=head_biases,
        groups=groups,
        split_sizes=sizes.tolist(),
        design=design,
    )


_TEACHER_KEYS = (
    "num_tasks", "groups_per_layer", "input_dim", "hidden", "num_hinges", "num_outputs",
    "split_distance", "split_decay", "within_group_std", "seed", "design",
)


def teacher_from_config(config: dict) -> PlantedTeacher:
    """The teacher behind a planted data set, rebuilt from its ``config`` (``data.config``).

    A config without ``design`` predates it and was made with ``design="walk"`` and the old
    ``split_distance`` default of 1.5.
    """
    kwargs = {k: config[k] for k in _TEACHER_KEYS if k in config}
    if "design" not in config:
        kwargs = {"design": "walk", "split_distance": 1.5, **kwargs}
    return make_teacher(**kwargs)


def _check_sizes(num_tasks: int, input_dim: int, hidden: Sequence[int], num_hinges: int, num_outputs: int,
                 samples_per_task: int = 0) -> None:
    """Raise ValueError if the teacher or the data would need an array of more than ``_MAX_VALUES``."""
    widest = max(hidden, default=0)
    fans = [input_dim, *hidden]
    arrays = {
        # One task's samples: inputs, outputs and the teacher's hinge terms on them.
        "samples_per_task * (input_dim + num_outputs + max(hidden) * num_hinges)":
            samples_per_task * (input_dim + num_outputs + widest * num_hinges),
        # All tasks' samples, kept in memory.
        "num_tasks * samples_per_task * (input_dim + num_outputs)": num_tasks * samples_per_task * (input_dim + num_outputs),
        # Calibration of the teacher: every task's hinge terms on its calibration inputs.
        f"num_tasks * {_CALIBRATION_SAMPLES} * max(hidden) * num_hinges": num_tasks * _CALIBRATION_SAMPLES * widest * num_hinges,
        "the teacher's weights (max fan-in * fan-out)": max(a * b for a, b in zip(fans, fans[1:] + [num_outputs])),
    }
    for what, count in arrays.items():
        if count > _MAX_VALUES:
            raise ValueError(f"the planted data set is too large: {what} = {count:.3g} values, "
                             f"more than the limit of 2**30")


# The Python side of one task's data: its spec, its six tensors and their numpy bases.
_TASK_BYTES = 4096


def _check_memory(num_tasks: int, hidden: Sequence[int], num_hinges: int, values_per_task: int) -> None:
    """Raise MemoryLimitError when the data would not fit: every task's samples in float64 and
    again as float32 tensors, the calibration's hinge terms, the Python side of every task."""
    from taan_core._memory import check_memory

    samples = 8 * 1.5 * num_tasks * values_per_task
    calibration = 8 * num_tasks * _CALIBRATION_SAMPLES * max(hidden, default=0) * num_hinges
    check_memory(samples + calibration + _TASK_BYTES * num_tasks,
                 f"the planted data set (num_tasks = {num_tasks:,})")


def _check_design(design) -> None:
    if design not in _DESIGNS:
        raise ValueError(f"design must be one of {', '.join(_DESIGNS)}, got {design!r}")


def _check_sequence(seq, name: str) -> None:
    if isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence) or len(seq) == 0:
        raise TypeError(f"{name} must be a non-empty list of ints, got {seq!r}")
    for i, v in enumerate(seq):
        check_int(v, f"{name}[{i}]", minimum=1)


def _check_float(value, name: str, *, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not np.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {value}")


def load_planted(
    data_path: str | None = None,
    *,
    num_tasks: int = 16,
    groups_per_layer: Sequence[int] = (2, 4, 8),
    input_dim: int = 8,
    hidden: Sequence[int] = (16, 16, 16),
    num_hinges: int = 4,
    num_outputs: int = 4,
    samples_per_task: int = 2000,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    noise: float = 0.1,
    split_distance: float = 0.3,
    split_decay: float = 0.5,
    within_group_std: float = 0.01,
    seed: int = 0,
    design: str = "separated",
) -> MultiTaskData:
    """Generate the planted benchmark.

    Parameters
    ----------
    data_path : None
        Unused (the data are generated); accepted so every source has the same signature.
    num_tasks, groups_per_layer, input_dim, hidden, num_hinges, num_outputs
        Teacher shape, see :func:`make_teacher`.
    samples_per_task : int
        Samples per task over all three splits.
    val_fraction, test_fraction : float
        Fractions of every task's samples held out for validation and test.
    noise : float
        Standard deviation of the Gaussian noise added to the unit-variance outputs.
    split_distance, split_decay, within_group_std, seed, design
        Tree, seed and design, see :func:`make_teacher`.

    Returns
    -------
    MultiTaskData
        ``T`` regression tasks ``task_00`` .. with ``num_outputs`` outputs each, input shape
        ``(input_dim,)``; ``ground_truth`` holds ``groups`` (L lists of T ints), the teacher's
        ``hinges`` (L lists of M floats), ``alpha`` (L x T x M nested lists) and ``split_sizes``.
    """
    if data_path is not None:
        raise ValueError(f"the planted data set is generated, it reads no files; got data_path={data_path!r}")
    for name, value, low in (("num_tasks", num_tasks, 1), ("input_dim", input_dim, 1), ("num_hinges", num_hinges, 1),
                             ("num_outputs", num_outputs, 1), ("samples_per_task", samples_per_task, 3), ("seed", seed, 0)):
        check_int(value, name, minimum=low)
    _check_sequence(groups_per_layer, "groups_per_layer")
    _check_sequence(hidden, "hidden")
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
                f"groups must refine with depth: each groups_per_layer entry must divide the next, got {list(groups_per_layer)}"
            )
    _check_fractions(val_fraction, test_fraction)
    for name, value in (("noise", noise), ("within_group_std", within_group_std), ("split_decay", split_decay)):
        _check_float(value, name)
    _check_float(split_distance, "split_distance", positive=True)
    _check_design(design)
    _check_sizes(num_tasks, input_dim, hidden, num_hinges, num_outputs, samples_per_task)
    _check_memory(num_tasks, hidden, num_hinges, (input_dim + num_outputs) * samples_per_task)

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
        "split_distance": float(split_distance),
        "split_decay": float(split_decay),
        "within_group_std": float(within_group_std),
        "seed": seed,
        "design": design,
    }
    teacher = make_teacher(
        num_tasks=num_tasks, groups_per_layer=groups_per_layer, input_dim=input_dim, hidden=hidden,
        num_hinges=num_hinges, num_outputs=num_outputs, split_distance=split_distance, split_decay=split_decay,
        within_group_std=within_group_std, seed=seed, design=design,
    )
    rng = np.random.default_rng([int(seed), 0xDA7A])
    n_test = max(1, int(round(samples_per_task * test_fraction))) if test_fraction > 0 else 0
    n_val = max(1, int(round(samples_per_task * val_fraction))) if val_fraction > 0 else 0
    n_train = samples_per_task - n_val - n_test
    if n_train < 1:
        raise ValueError(f"samples_per_task = {samples_per_task} leaves no training samples")
    cuts = {"train": slice(0, n_train), "val": slice(n_train, n_train + n_val), "test": slice(n_train + n_val, None)}
    tasks = [TaskSpec(f"task_{t:02d}", "regression", num_outputs) for t in range(num_tasks)]
    parts: dict[str, tuple[list, list]] = {s: ([], []) for s in cuts}
    for t in range(num_tasks):
        x = rng.standard_normal((samples_per_task, input_dim))
        y = teacher.forward(x, t) + noise * rng.standard_normal((samples_per_task, num_outputs))
        for split, sl in cuts.items():
            parts[split][0].append(torch.from_numpy(x[sl]).float())
            parts[split][1].append(torch.from_numpy(y[sl]).float())
    splits = {s: TensorSplit(tasks, xs, ys, source=f"planted (seed {seed})") for s, (xs, ys) in parts.items()}
    ground_truth = {
        "groups": [list(g) for g in teacher.groups],
        "hinges": teacher.hinges.tolist(),
        "alpha": teacher.alpha.tolist(),
        "split_sizes": list(teacher.split_sizes),
        "design": design,
    }
    return MultiTaskData("planted", config, tasks, splits, input_shape=(input_dim,), ground_truth=ground_truth)
