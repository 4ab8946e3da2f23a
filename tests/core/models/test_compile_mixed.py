"""Mixed-task batches under torch.compile: with the task counts given, one graph and no break."""

from __future__ import annotations

import pytest
import torch

from taan_core.models import HardShare, MLPConfig, TAAN, TAANConfig

NUM_TASKS, PER_TASK = 4, 3


def _balanced_batch(seed: int, input_dim: int = 10):
    """A balanced mixed batch (PER_TASK samples of every task) in shuffled order, and its counts."""
    gen = torch.Generator().manual_seed(seed)
    task = torch.arange(NUM_TASKS).repeat_interleave(PER_TASK)
    task = task[torch.randperm(task.numel(), generator=gen)]
    return torch.randn(task.numel(), input_dim, generator=gen), task, [PER_TASK] * NUM_TASKS


def _taan(shared_head: bool = False):
    torch.manual_seed(0)
    config = TAANConfig(input_dim=10, output_dims=[2] * NUM_TASKS if shared_head else [1, 2, 1, 3], hidden=[16, 16],
                        num_hinges=5, batch_norm=True, shared_head=shared_head)
    return TAAN(config).train()


def _graphs(model, *args, **kwargs):
    torch._dynamo.reset()
    return torch._dynamo.explain(model)(*args, **kwargs)


def test_counts_make_the_mixed_forward_one_graph():
    x, task, counts = _balanced_batch(0)
    explained = _graphs(_taan(), x, task, counts=counts)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_without_counts_the_group_sizes_break_the_graph():
    # The reason counts exist: reading the group sizes back from the device is data-dependent.
    x, task, _ = _balanced_batch(0)
    explained = _graphs(_taan(), x, task)
    assert explained.graph_break_count >= 1


@pytest.mark.parametrize("shared_head", [False, True])
def test_fullgraph_compile_gives_the_eager_outputs_and_gradients(shared_head):
    torch._dynamo.reset()
    eager, compiled_model = _taan(shared_head=shared_head), _taan(shared_head=shared_head)
    frames = []

    def counting_backend(graph, example_inputs):
        frames.append(graph)
        return torch._dynamo.backends.registry.lookup_backend("aot_eager")(graph, example_inputs)

    compiled = torch.compile(compiled_model, backend=counting_backend, fullgraph=True)
    for seed in range(3):  # new batches with the same counts: no recompilation
        x, task, counts = _balanced_batch(seed)
        want, got = eager(x, task, counts=counts), compiled(x, task, counts=counts)
        assert len(got) == NUM_TASKS
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
        sum(o.square().sum() for o in want).backward()
        sum(o.square().sum() for o in got).backward()
    assert len(frames) == 1
    for (name, a), b in zip(compiled_model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
    for (name, a), b in zip(compiled_model.named_buffers(), eager.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


def test_counts_give_the_outputs_of_the_default_grouping():
    model = _taan()
    x, task, counts = _balanced_batch(1)
    with torch.no_grad():
        for a, b in zip(model(x, task, counts=counts), model(x, task)):
            assert torch.equal(a, b)


def test_hard_sharing_compiles_too():
    torch.manual_seed(0)
    model = HardShare(MLPConfig(input_dim=10, output_dims=[1, 2, 1, 3], hidden=[16]))
    x, task, counts = _balanced_batch(2)
    explained = _graphs(model, x, task, counts=counts)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


@pytest.mark.parametrize(("counts", "error", "match"), [
    ([3, 3, 3], ValueError, r"counts must have one entry per task \(T = 4\), got 3"),
    ([3, 3, 3, 4], ValueError, r"counts must sum to the batch size N = 12, got 13"),
    ([4, 2, 3, 3], ValueError, r"counts must be the number of samples of each task in the batch: task 0 has 3, "
                               r"counts says 4"),
    ([3, -1, 7, 3], ValueError, r"counts\[1\]"),
    ("3333", TypeError, "counts must be a list of ints, got str"),
])
def test_bad_counts(counts, error, match):
    x, task, _ = _balanced_batch(0)
    with pytest.raises(error, match=match):
        _taan()(x, task, counts=counts)


def test_counts_with_an_int_task():
    x, _, _ = _balanced_batch(0)
    with pytest.raises(ValueError, match="counts is for mixed batches"):
        _taan()(x, 1, counts=[12, 0, 0, 0])
