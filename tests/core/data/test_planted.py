"""Tests of the planted benchmark: the tree, the teacher, calibration, reproducibility, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from taan_core.data import load_dataset, load_planted, make_teacher, teacher_from_config
from taan_core.data.planted import _activation, planted_groups

SMALL = {"num_tasks": 8, "groups_per_layer": [2, 4], "input_dim": 4, "hidden": [8, 8], "samples_per_task": 200}


@pytest.fixture(scope="module")
def small():
    return load_dataset("planted", **SMALL)


def test_default_shape_and_ground_truth():
    data = load_dataset("planted")
    assert data.name == "planted" and data.num_tasks == 16
    assert data.task_names[0] == "task_00" and data.task_names[-1] == "task_15"
    assert all(t.kind == "regression" and t.num_outputs == 4 for t in data.tasks)
    groups = data.ground_truth["groups"]
    assert [max(g) + 1 for g in groups] == [2, 4, 8]
    assert np.asarray(data.ground_truth["alpha"]).shape == (3, 16, 4)
    assert np.asarray(data.ground_truth["hinges"]).shape == (3, 4)
    sizes = [data.split(s).num_samples(0) for s in ("train", "val", "test")]
    assert sizes == [1200, 400, 400]


def test_groups_nest():
    groups = planted_groups(12, [1, 3, 6, 12])
    for coarse, fine in zip(groups, groups[1:]):
        parent = {}
        for t, (c, f) in enumerate(zip(coarse, fine)):
            assert parent.setdefault(f, c) == c, f"group {f} of task {t} straddles two parents"
    assert groups[0] == [0] * 12 and groups[-1] == list(range(12))


def test_config_is_plain_and_rebuilds_identical_data(small):
    assert all(isinstance(v, (int, float, str, list)) for v in small.config.values())
    again = load_dataset("planted", **small.config)
    for which in ("train", "test"):
        a, b = small.split(which), again.split(which)
        for t in range(small.num_tasks):
            idx = torch.arange(a.num_samples(t))
            torch.testing.assert_close(a.get(t, idx), b.get(t, idx), rtol=0, atol=0)
    other = load_planted(**{**SMALL, "seed": 1})
    assert not torch.equal(other.split("train").get(0, torch.arange(5))[1], small.split("train").get(0, torch.arange(5))[1])


def test_data_follow_the_teacher_up_to_noise(small):
    teacher = teacher_from_config(small.config)
    np.testing.assert_allclose(teacher.alpha, small.ground_truth["alpha"])
    split = small.split("train")
    residuals = []
    for t in range(small.num_tasks):
        x, y = split.get(t, torch.arange(split.num_samples(t)))
        residuals.append(y.double().numpy() - teacher.forward(x.double().numpy(), t))
    r = np.concatenate(residuals)
    assert abs(r.std() - 0.1) < 0.01, "outputs are the teacher's plus noise of std `noise`"
    assert abs(r.mean()) < 0.01


def test_activation_formula():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((5, 3))
    alpha = rng.standard_normal(4)
    hinges = np.array([-1.0, -0.2, 0.3, 1.1])
    expected = np.maximum(z, 0) + sum(a * np.maximum(b - z, 0) for a, b in zip(alpha, hinges))
    np.testing.assert_allclose(_activation(z, alpha, hinges), expected)


def _pooled_calibration_holds(teacher, x):
    """Pre-activations pooled over tasks are standardised, so they spread over the hinges."""
    h = [x] * teacher.num_tasks
    for layer, (w, c) in enumerate(zip(teacher.weights, teacher.biases)):
        z = np.stack([hi @ w.T + c for hi in h])
        # Calibrated on 4096 inputs of its own: allow their sampling error.
        assert abs(z.mean()) < 0.1 and abs(z.std() - 1) < 0.1
        h = [_activation(z[t], teacher.alpha[layer, t], teacher.hinges[layer]) for t in range(teacher.num_tasks)]
    return np.stack([teacher.forward(x, t) for t in range(teacher.num_tasks)])


def test_teacher_calibration_and_one_shared_readout():
    teacher = make_teacher(**{k: SMALL[k] for k in ("num_tasks", "groups_per_layer", "input_dim", "hidden")}, seed=3)
    x = np.random.default_rng(9).standard_normal((4000, 4))
    outputs = _pooled_calibration_holds(teacher, x)
    # One readout for every task: only the activations make the tasks differ.
    assert teacher.design == "separated"
    np.testing.assert_array_equal(teacher.heads, np.broadcast_to(teacher.heads[0], teacher.heads.shape))
    np.testing.assert_array_equal(teacher.head_biases, np.broadcast_to(teacher.head_biases[0], teacher.head_biases.shape))
    # The outputs pooled over tasks are standardised; single tasks are not.
    assert np.abs(outputs.mean(axis=(0, 1))).max() < 0.1
    assert np.abs(outputs.std(axis=(0, 1)) - 1).max() < 0.1
    assert np.abs(outputs.mean(axis=1)).max() > 0.1, "task means should differ under a shared readout"


def test_walk_design_standardises_every_task():
    teacher = make_teacher(**{k: SMALL[k] for k in ("num_tasks", "groups_per_layer", "input_dim", "hidden")},
                           seed=3, design="walk", split_distance=1.5)
    x = np.random.default_rng(9).standard_normal((4000, 4))
    outputs = _pooled_calibration_holds(teacher, x)
    assert np.abs(outputs.mean(axis=1)).max() < 0.2
    assert np.abs(outputs.std(axis=1) - 1).max() < 0.2


_GRID = np.linspace(-8, 8, 4001)
_WEIGHTS = np.exp(-0.5 * _GRID**2) / np.exp(-0.5 * _GRID**2).sum()


def _task_distances(teacher, layer):
    """Function-space distances (under N(0, 1), by quadrature) between the tasks at a layer."""
    f = np.stack([_activation(_GRID, teacher.alpha[layer, t], teacher.hinges[layer]) for t in range(teacher.num_tasks)])
    return np.sqrt((((f[:, None] - f[None]) ** 2) * _WEIGHTS).sum(axis=-1))


@pytest.mark.parametrize("seed", [0, 5])
def test_every_layer_separates_all_its_groups_by_the_planted_size(seed):
    teacher = make_teacher(seed=seed)
    np.testing.assert_allclose(teacher.split_sizes, [0.3, 0.15, 0.075])
    groups = np.asarray(teacher.groups)
    for layer in range(3):
        size = teacher.split_sizes[layer]
        d = _task_distances(teacher, layer)
        same = np.equal.outer(groups[layer], groups[layer])
        # Tasks jitter by about 0.01 around their group; the groups' mean activations are
        # exactly `size` apart at the closest pair (up to the jitter's mean).
        assert d[same].max() < 0.05, layer
        centres = np.stack([teacher.alpha[layer, groups[layer] == g].mean(axis=0) for g in np.unique(groups[layer])])
        f = np.stack([_activation(_GRID, c, teacher.hinges[layer]) for c in centres])
        dc = np.sqrt((((f[:, None] - f[None]) ** 2) * _WEIGHTS).sum(axis=-1))
        off = ~np.eye(len(centres), dtype=bool)
        assert dc[off].min() == pytest.approx(size, abs=0.015), layer
        assert d[~same].min() > size - 0.05, layer
    # Candidates drawn along the well-conditioned directions of the hinge basis: no large,
    # cancelling coefficients (the walk design reached |alpha| = 6.5 on some seeds).
    assert np.abs(teacher.alpha).max() < 0.5


def test_walk_splits_have_the_requested_size():
    teacher = make_teacher(seed=0, design="walk", split_distance=1.5)
    np.testing.assert_allclose(teacher.split_sizes, [1.5, 0.75, 0.375])
    groups = np.asarray(teacher.groups)
    for layer in range(3):
        d = _task_distances(teacher, layer)
        # Siblings created at this layer: same group above, different group here.
        above = groups[layer - 1] if layer else np.zeros(16, dtype=int)
        siblings = np.equal.outer(above, above) & ~np.equal.outer(groups[layer], groups[layer])
        closest = min(d[siblings][d[siblings] > 0])
        # Jitter (0.01) moves the closest pair a little off the planted size.
        assert closest == pytest.approx(teacher.split_sizes[layer], abs=0.05), layer


@pytest.mark.parametrize("design", ["separated", "walk"])
def test_group_activations_are_shared_within_and_distinct_between(design):
    teacher = make_teacher(seed=2, design=design)
    for layer, g in enumerate(teacher.groups):
        d = _task_distances(teacher, layer)
        same = np.equal.outer(g, g)
        assert d[same].max() < d[~same].min(), f"layer {layer}: a within-group pair is farther than a between-group one"


def test_config_without_design_rebuilds_the_walk_teacher():
    data = load_planted(**SMALL)
    old = {k: v for k, v in data.config.items() if k != "design"}
    old["split_distance"] = 1.5
    teacher = teacher_from_config(old)
    assert teacher.design == "walk"
    walk = make_teacher(**{k: SMALL[k] for k in ("num_tasks", "groups_per_layer", "input_dim", "hidden")},
                        design="walk", split_distance=1.5)
    np.testing.assert_array_equal(teacher.alpha, walk.alpha)
    assert teacher_from_config(data.config).design == "separated"


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"groups_per_layer": [2, 3, 8]}, ValueError, "each groups_per_layer entry must divide the next"),
        ({"groups_per_layer": [2, 4]}, ValueError, r"one group count per hidden layer \(len\(hidden\) = 3\)"),
        ({"groups_per_layer": [2, 4, 32]}, ValueError, "exceeds num_tasks = 16"),
        ({"hidden": "16"}, TypeError, "hidden must be a non-empty list of ints"),
        ({"hidden": [16, 0, 16]}, ValueError, r"hidden\[1\] must be >= 1"),
        ({"noise": -0.1}, ValueError, "noise must be finite and >= 0"),
        ({"split_distance": 0.0}, ValueError, "split_distance must be finite and > 0"),
        ({"split_decay": "half"}, TypeError, "split_decay must be a float"),
        ({"design": "tree"}, ValueError, "design must be one of separated, walk"),
        ({"samples_per_task": 2}, ValueError, "samples_per_task must be >= 3"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, ValueError, "val_fraction \\+ test_fraction must be < 1"),
        ({"num_tasks": 1.5}, TypeError, "num_tasks must be an int"),
    ],
)
def test_config_errors(overrides, error, match):
    with pytest.raises(error, match=match):
        load_planted(**overrides)


def test_data_path_is_refused():
    with pytest.raises(ValueError, match="reads no files"):
        load_dataset("planted", data_path="x.npz")


@pytest.mark.parametrize(("overrides", "match"), [
    ({"samples_per_task": 10**11}, r"samples_per_task \* \(input_dim \+ num_outputs \+ max\(hidden\) \* num_hinges\) = 7\.6e\+12 values"),
    ({"num_tasks": 10**6, "samples_per_task": 1000, "groups_per_layer": [2, 4, 8]}, r"num_tasks \* samples_per_task \* \(input_dim \+ num_outputs\) = 1\.2e\+10"),
    ({"num_hinges": 10**5, "samples_per_task": 3}, r"num_tasks \* 4096 \* max\(hidden\) \* num_hinges = 1\.05e\+11"),
    ({"input_dim": 10**6, "hidden": [2000] * 3, "samples_per_task": 3}, r"the teacher's weights \(max fan-in \* fan-out\) = 2e\+09"),
])
def test_sizes_are_bounded_before_generation(overrides, match):
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="the planted data set is too large: " + match):
            load_dataset("planted", **overrides)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20, f"refusing the config allocated {peak} bytes"


def test_teacher_from_an_untrusted_config_is_bounded():
    with pytest.raises(ValueError, match="the planted data set is too large"):
        teacher_from_config({"design": "separated", "hidden": [10**6] * 3, "groups_per_layer": [2, 4, 8]})


def test_eval_of_a_checkpoint_with_a_huge_data_config_is_one_line(tmp_path, capsys):
    from taan_core.checkpoint import build_checkpoint, save_checkpoint
    from taan_core.cli import main
    from taan_core.models import build_model

    model = build_model("taan", (8,), [4] * 16, hidden=[4], num_hinges=2)
    config = {**load_planted(**SMALL).config, "num_tasks": 16, "groups_per_layer": [2], "hidden": [16],
              "samples_per_task": 10**11}
    ckpt = build_checkpoint(model, task_names=[f"task_{t:02d}" for t in range(16)],
                            data={"name": "planted", "config": config, "groups": None})
    save_checkpoint(ckpt, tmp_path / "checkpoint.pt")
    with pytest.raises(SystemExit) as info:
        main(["eval", str(tmp_path / "checkpoint.pt")])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "the planted data set is too large" in err
