"""Tests of the branched hard-sharing network and its task-group trees."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from taan_core.models import HardShare, MLPConfig, SingleTask
from taan_core.models.branched import Branched, BranchedConfig, check_groups, random_assignment

TREE = [[0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1], [0, 1, 1, 2, 3, 3]]


def _model(groups=TREE, hidden=(5, 6, 7), dims=None, **kw) -> Branched:
    t = len(groups[0])
    dims = dims or [1 + k % 3 for k in range(t)]
    return Branched(BranchedConfig(input_dim=4, output_dims=dims, groups=groups, hidden=list(hidden), **kw)).double()


# ---------------------------------------------------------------------------------- trees


def test_check_groups_renumbers_by_first_appearance():
    assert check_groups([[3, 3, 7], [5, 2, 9]]) == [[0, 0, 1], [0, 1, 2]]
    assert check_groups(np.array([[1, 0]])) == [[0, 1]]


@pytest.mark.parametrize(
    ("groups", "error", "match"),
    [
        ("abc", TypeError, "groups must be a list"),
        ([], ValueError, "at least one layer"),
        ([[0, 1], 5], TypeError, r"groups\[1\] must be a list"),
        ([[0, 1.5]], TypeError, r"groups\[0\]\[1\] must be an int"),
        ([[0, -1]], ValueError, r"groups\[0\]\[1\] must be >= 0"),
        ([[0, 1], [0, 1, 2]], ValueError, r"groups\[1\] must have one group id per task \(T = 2\)"),
        ([[]], ValueError, "at least one task"),
        ([[0, 0, 1], [0, 1, 0]], ValueError, "groups must nest.*tasks 0 and 2 share group 0 at layer 1"),
    ],
)
def test_check_groups_errors(groups, error, match):
    with pytest.raises(error, match=match):
        check_groups(groups)


def test_check_groups_num_tasks():
    with pytest.raises(ValueError, match=r"T = 3\), got 2"):
        check_groups([[0, 1]], num_tasks=3)


def _shape(tree):
    """The tree's shape: per layer, the sorted sizes of its groups, each with the sorted sizes
    of its children one layer down."""
    out = []
    for l, row in enumerate(tree):
        below = tree[l + 1] if l + 1 < len(tree) else row
        out.append(sorted(
            (row.count(g), tuple(sorted(below.count(c) for c in {below[t] for t in range(len(row)) if row[t] == g})))
            for g in set(row)
        ))
    return out


def test_random_assignment_keeps_shape_and_is_seeded():
    tree = check_groups(TREE)
    shuffled = random_assignment(TREE, seed=3)
    assert _shape(shuffled) == _shape(tree)
    assert check_groups(shuffled) == shuffled  # nested and canonical
    assert random_assignment(TREE, seed=3) == shuffled
    others = {tuple(map(tuple, random_assignment(TREE, seed=s))) for s in range(10)}
    assert len(others) > 1
    with pytest.raises(ValueError, match="seed must be >= 0"):
        random_assignment(TREE, seed=-1)


# ---------------------------------------------------------------------------------- config


def test_config_defaults_and_errors():
    config = BranchedConfig(input_dim=3, output_dims=[1, 2], groups=[[0, 0], [0, 1]])
    assert config.hidden == [256, 256]
    assert config.num_groups == [1, 2]
    with pytest.raises(ValueError, match=r"one width per layer of groups \(L = len\(groups\) = 2\), got 1"):
        BranchedConfig(input_dim=3, output_dims=[1, 2], groups=[[0, 0], [0, 1]], hidden=[4])
    with pytest.raises(ValueError, match=r"T = 2\), got 3"):
        BranchedConfig(input_dim=3, output_dims=[1, 2], groups=[[0, 0, 1]], hidden=[4])
    with pytest.raises(TypeError, match="batch_norm must be a bool"):
        BranchedConfig(input_dim=3, output_dims=[1], groups=[[0]], hidden=[4], batch_norm=1)
    with pytest.raises(TypeError, match="takes a BranchedConfig"):
        Branched(MLPConfig(input_dim=3, output_dims=[1]))


def test_config_is_plain_and_rebuilds():
    model = _model(batch_norm=True, dropout=0.1)
    config = dataclasses.asdict(model.config)
    assert config["groups"] == check_groups(TREE)
    again = Branched(BranchedConfig(**config)).double()
    again.load_state_dict(model.state_dict())
    x = torch.randn(3, 4, dtype=torch.float64)
    model.eval(), again.eval()
    torch.testing.assert_close(model(x, 4), again(x, 4))
    assert "num_groups=[1, 2, 4]" in repr(model)


# ---------------------------------------------------------------------------------- forward


def test_parameter_count():
    model = _model()
    widths = [4, 5, 6, 7]
    expected = sum(g * (widths[l] * widths[l + 1] + widths[l + 1]) for l, g in enumerate([1, 2, 4]))
    expected += sum(7 * d + d for d in model.output_dims)
    assert model.num_parameters() == expected


def test_single_task_shapes_and_path():
    model = _model()
    x = torch.randn(5, 4, dtype=torch.float64)
    for t, dim in enumerate(model.output_dims):
        assert model(x, t).shape == (5, dim)
    # Task 3 uses branch 1 at layer 1 and branch 2 at layer 2, nothing of tasks 0-2's own branches.
    model.zero_grad()
    model(x, 3).sum().backward()
    used = {".".join(name.split(".")[:3]) for name, p in model.named_parameters()
            if p.grad is not None and name.startswith("branches")}
    assert used == {"branches.0.0", "branches.1.1", "branches.2.2"}


def test_mixed_batch_matches_single_task():
    model = _model()
    torch.manual_seed(1)
    x = torch.randn(40, 4, dtype=torch.float64)
    task = torch.randint(0, 6, (40,))
    task[task == 2] = 1  # task 2 absent
    out = model(x, task)
    assert len(out) == 6
    assert out[2].shape == (0, model.output_dims[2])
    for t in range(6):
        torch.testing.assert_close(out[t], model(x[task == t], t))


def test_one_group_per_layer_is_hard_sharing():
    torch.manual_seed(0)
    hard = HardShare(MLPConfig(input_dim=4, output_dims=[1, 2, 3], hidden=[5, 6]))
    torch.manual_seed(0)
    branched = Branched(BranchedConfig(input_dim=4, output_dims=[1, 2, 3], groups=[[0, 0, 0], [0, 0, 0]],
                                       hidden=[5, 6]))
    assert branched.num_parameters() == hard.num_parameters()
    x = torch.randn(7, 4)
    task = torch.tensor([0, 1, 2, 2, 1, 0, 0])
    for a, b in zip(branched(x, task), hard(x, task)):
        torch.testing.assert_close(a, b)


def test_all_tasks_apart_has_single_task_size():
    stl = SingleTask(MLPConfig(input_dim=4, output_dims=[1, 2, 3], hidden=[5, 6]))
    branched = Branched(BranchedConfig(input_dim=4, output_dims=[1, 2, 3], groups=[[0, 1, 2], [0, 1, 2]],
                                       hidden=[5, 6]))
    assert branched.num_parameters() == stl.num_parameters()


def test_batch_norm_branch_with_no_rows():
    model = _model(batch_norm=True)
    x = torch.randn(8, 4, dtype=torch.float64)
    task = torch.tensor([0, 0, 1, 1, 0, 1, 0, 1])  # branch 1 of layer 1 gets no rows
    out = model(x, task)
    assert out[0].shape == (4, model.output_dims[0]) and out[4].shape == (0, model.output_dims[4])
    sum(o.sum() for o in out).backward()


def test_gradcheck_float64():
    model = _model(hidden=(3, 3, 3))
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    task = torch.tensor([0, 5, 3, 1, 4, 2])
    assert torch.autograd.gradcheck(lambda inp: torch.cat([o.reshape(-1) for o in model(inp, task)]), (x,))


@st.composite
def _trees(draw):
    t = draw(st.integers(1, 7))
    depth = draw(st.integers(1, 3))
    rows = [[0] * t]
    for _ in range(depth - 1):
        split = draw(st.lists(st.integers(0, 2), min_size=t, max_size=t))
        rows.append([rows[-1][k] * 3 + split[k] for k in range(t)])
    return rows


@settings(max_examples=25, deadline=None)
@given(tree=_trees(), seed=st.integers(0, 1000))
def test_mixed_equals_single_for_any_tree(tree, seed):
    groups = check_groups(tree)
    model = Branched(BranchedConfig(input_dim=3, output_dims=[2] * len(groups[0]), groups=groups,
                                    hidden=[4] * len(groups))).double()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(12, 3, dtype=torch.float64, generator=gen)
    task = torch.randint(0, len(groups[0]), (12,), generator=gen)
    out = model(x, task)
    for t in range(len(groups[0])):
        torch.testing.assert_close(out[t], model(x[task == t], t))
    shuffled = random_assignment(groups, seed)
    assert [sorted(row.count(g) for g in set(row)) for row in shuffled] == \
        [sorted(row.count(g) for g in set(row)) for row in groups]
