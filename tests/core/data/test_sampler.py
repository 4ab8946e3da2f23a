"""Tests of taan_core.data.sampler: batch composition, determinism, resume, collation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from taan_core.data import Batch, MultiTaskBatchSampler, TaskSpec, TensorSplit, collate


def _split(sizes=(10, 3, 7)):
    tasks = [TaskSpec(f"t{t}", "multiclass", 100) for t in range(len(sizes))]
    # Input = (task, index) so collation can be checked; label = index.
    xs = [torch.stack([torch.full((n,), float(t)), torch.arange(n, dtype=torch.float32)], dim=1) for t, n in enumerate(sizes)]
    ys = [torch.arange(n) for n in sizes]
    return TensorSplit(tasks, xs, ys, source="mem")


def _epoch(sampler):
    return [(t.tolist(), i.tolist()) for t, i in sampler]


def test_balanced_every_task_in_every_batch():
    split = _split()
    sampler = MultiTaskBatchSampler(split, batch_size=4, mode="balanced", seed=1)
    assert len(sampler) == 3  # ceil(10 / 4): the largest task is covered once
    seen = {t: [] for t in range(3)}
    for task, index in sampler:
        assert task.dtype == torch.long and index.dtype == torch.long
        assert task.tolist() == [0] * 4 + [1] * 4 + [2] * 4
        for t in range(3):
            seen[t].extend(index[task == t].tolist())
    assert set(seen[0]) == set(range(10))
    # A small task shows all its samples before repeating any (cycled permutations).
    assert sorted(seen[1][:3]) == [0, 1, 2]
    assert sorted(seen[1][3:6]) == [0, 1, 2]
    assert set(seen[2][:7]) == set(range(7))


def test_balanced_drop_last():
    sampler = MultiTaskBatchSampler(_split(), batch_size=4, drop_last=True)
    assert len(sampler) == 2
    assert len(list(sampler)) == 2
    assert len(MultiTaskBatchSampler(_split((2, 3)), batch_size=8, drop_last=True)) == 1


def test_proportional_covers_every_sample_once():
    split = _split()
    sampler = MultiTaskBatchSampler(split, batch_size=6, mode="proportional", seed=3)
    assert len(sampler) == 4  # ceil(20 / 6)
    pairs = [(t, i) for task, index in sampler for t, i in zip(task.tolist(), index.tolist())]
    assert sorted(pairs) == sorted((t, i) for t, n in enumerate((10, 3, 7)) for i in range(n))
    dropped = MultiTaskBatchSampler(split, batch_size=6, mode="proportional", drop_last=True)
    assert len(dropped) == 3 and all(t.numel() == 6 for t, _ in dropped)


@pytest.mark.parametrize("mode", ["balanced", "proportional"])
def test_deterministic_in_seed_and_epoch(mode):
    split = _split()
    a = MultiTaskBatchSampler(split, 4, mode, seed=5)
    b = MultiTaskBatchSampler(split, 4, mode, seed=5)
    assert _epoch(a) == _epoch(b)
    a.set_epoch(1)
    first = _epoch(a)
    assert first != _epoch(b)
    assert _epoch(a) == first, "a finished epoch restarts from its first batch"
    assert _epoch(MultiTaskBatchSampler(split, 4, mode, seed=6)) != _epoch(b)


@pytest.mark.parametrize("mode", ["balanced", "proportional"])
@settings(max_examples=15, deadline=None)
@given(stop=st.integers(0, 5), epoch=st.integers(0, 3))
def test_resume_gives_the_remaining_batches(mode, stop, epoch):
    split = _split()
    full = MultiTaskBatchSampler(split, 2, mode, seed=9)
    full.set_epoch(epoch)
    expected = _epoch(full)
    stop = min(stop, len(expected))

    first = MultiTaskBatchSampler(split, 2, mode, seed=9)
    first.set_epoch(epoch)
    got = []
    it = iter(first)
    for _ in range(stop):
        t, i = next(it)
        got.append((t.tolist(), i.tolist()))
    state = first.state_dict()
    assert state["position"] == stop and state["epoch"] == epoch

    resumed = MultiTaskBatchSampler(split, 2, mode, seed=9)
    resumed.load_state_dict(state)
    resumed.set_epoch(epoch)  # a trainer re-selecting the same epoch keeps the position
    got.extend(_epoch(resumed))
    assert got == expected
    assert resumed.state_dict()["position"] == 0


def test_state_dict_is_plain_and_checked():
    split = _split()
    sampler = MultiTaskBatchSampler(split, 2, seed=1)
    state = sampler.state_dict()
    assert all(isinstance(v, (int, str, bool, list)) for v in state.values())
    other = MultiTaskBatchSampler(split, 3, seed=1)
    with pytest.raises(ValueError, match="batch_size = 2 but this sampler has 3"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="num_samples"):
        MultiTaskBatchSampler(_split((10, 3, 8)), 2, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="lacks"):
        sampler.load_state_dict({"mode": "balanced"})
    with pytest.raises(ValueError, match="exceeds"):
        sampler.load_state_dict({**state, "position": 99})


def test_set_epoch_resets_position():
    sampler = MultiTaskBatchSampler(_split(), 2)
    next(iter(sampler))
    assert sampler.position == 1
    sampler.set_epoch(1)
    assert sampler.position == 0


@pytest.mark.parametrize("mode", ["balanced", "proportional"])
def test_replicas_partition_the_global_batch(mode):
    split = _split()
    whole = _epoch(MultiTaskBatchSampler(split, 4, mode, seed=2))
    parts = [_epoch(MultiTaskBatchSampler(split, 4, mode, seed=2, num_replicas=2, rank=r)) for r in range(2)]
    for k, (task, index) in enumerate(whole):
        union = sorted(zip(parts[0][k][0] + parts[1][k][0], parts[0][k][1] + parts[1][k][1]))
        assert union == sorted(zip(task, index))
    if mode == "balanced":
        assert parts[0][0][0] == [0, 0, 1, 1, 2, 2]


def test_sampler_argument_errors():
    split = _split()
    with pytest.raises(ValueError, match="mode must be one of balanced, proportional"):
        MultiTaskBatchSampler(split, 2, mode="uniform")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        MultiTaskBatchSampler(split, 0)
    with pytest.raises(TypeError, match="split must be a MultiTaskSplit"):
        MultiTaskBatchSampler([1, 2], 2)
    with pytest.raises(ValueError, match="divisible by num_replicas"):
        MultiTaskBatchSampler(split, 3, num_replicas=2)
    with pytest.raises(ValueError, match="rank must be in"):
        MultiTaskBatchSampler(split, 2, num_replicas=2, rank=2)
    empty = TensorSplit([TaskSpec("a", "regression", 1)], [torch.zeros(0, 1)], [torch.zeros(0, 1)])
    with pytest.raises(ValueError, match=r"tasks \[0\] \(\['a'\]\) have none"):
        MultiTaskBatchSampler(empty, 2)


def test_collate_mixed_batch_matches_model_output_order():
    split = _split()
    task = torch.tensor([2, 0, 2, 0])
    index = torch.tensor([5, 1, 0, 9])
    batch = collate(split, task, index)
    assert isinstance(batch, Batch)
    torch.testing.assert_close(batch.x, torch.tensor([[2.0, 5.0], [0.0, 1.0], [2.0, 0.0], [0.0, 9.0]]))
    assert batch.targets[0].tolist() == [1, 9]
    assert batch.targets[1].shape == (0,)
    assert batch.targets[2].tolist() == [5, 0]
    moved = batch.to("cpu")
    assert moved.task.tolist() == task.tolist()


def test_collate_errors():
    split = _split()
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        collate(split, torch.tensor([0, 1]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"task ids must be in \[0, 3\)"):
        collate(split, torch.tensor([3]), torch.tensor([0]))
    with pytest.raises(ValueError, match="empty batch"):
        collate(split, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))


def _per_task_collate(split, task, index):
    """The reference: one read per task, as collate did before the one-gather path."""
    x = torch.empty((task.numel(), *split.input_shape))
    targets = []
    for t in range(split.num_tasks):
        rows = torch.nonzero(task == t).flatten()
        x_t, y_t = split.get(t, index[rows])
        x[rows] = x_t
        targets.append(y_t)
    return x, targets


@pytest.mark.parametrize("mode", ["balanced", "proportional"])
def test_collate_one_gather_equals_reading_task_by_task(mode):
    gen = torch.Generator().manual_seed(0)
    tasks = [TaskSpec(f"t{k}", "binary", 1) for k in range(5)]
    sizes = [7, 3, 12, 5, 9]
    split = TensorSplit(tasks, [torch.randn(n, 4, generator=gen) for n in sizes],
                        [(torch.rand(n, generator=gen) < 0.5).float() for n in sizes])
    assert split._all_features is not None and split._all_labels is not None
    for task, index in MultiTaskBatchSampler(split, 4, mode=mode, seed=3):
        batch = collate(split, task, index)
        x, targets = _per_task_collate(split, task, index)
        assert torch.equal(batch.x, x)
        assert len(batch.targets) == 5 and all(torch.equal(a, b) for a, b in zip(batch.targets, targets))


def test_collate_reads_task_by_task_when_label_layouts_differ():
    tasks = [TaskSpec("c", "multiclass", 3), TaskSpec("r", "regression", 2)]
    split = TensorSplit(tasks, [torch.arange(8.0).reshape(4, 2), 10 + torch.arange(6.0).reshape(3, 2)],
                        [torch.tensor([0, 2, 1, 1]), torch.arange(6.0).reshape(3, 2)])
    assert split._all_labels is None and split._all_features is not None
    batch = collate(split, torch.tensor([1, 0, 1]), torch.tensor([2, 3, 0]))
    assert batch.x.tolist() == [[14.0, 15.0], [6.0, 7.0], [10.0, 11.0]]
    assert batch.targets[0].tolist() == [1] and batch.targets[1].tolist() == [[4.0, 5.0], [0.0, 1.0]]


def test_collate_one_gather_scales_uint8_and_checks_indices():
    tasks = [TaskSpec("a", "binary", 1), TaskSpec("b", "binary", 1)]
    split = TensorSplit(tasks, [torch.full((2, 3), 255, dtype=torch.uint8), torch.zeros(4, 3, dtype=torch.uint8)],
                        [torch.ones(2), torch.zeros(4)], feature_scale=1 / 255)
    batch = collate(split, torch.tensor([0, 1]), torch.tensor([1, 3]))
    assert batch.x.dtype == torch.float32 and batch.x[0].tolist() == [1.0, 1.0, 1.0] and batch.x[1].sum() == 0
    with pytest.raises(ValueError, match=r"index of task 0 \('a'\) must be in \[0, 2\), got 2"):
        collate(split, torch.tensor([0, 1]), torch.tensor([2, 0]))
