"""Soft-order, cross-stitch, MMoE and branched networks with TAANConv's trunk (soft-order-conv,
cross-stitch-conv, mmoe-conv, branched-conv)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from taan_core.checkpoint import build_checkpoint, load_checkpoint, model_from_checkpoint, save_checkpoint
from taan_core.models import (
    MODELS,
    BranchedConv,
    BranchedConvConfig,
    CrossStitchConvConfig,
    MMoEConvConfig,
    SoftOrderConv,
    SoftOrderConvConfig,
    build_model,
    conv_variant,
    model_from_config,
    trunk_description,
)
from taan_core.models.branched_conv import branched_conv_overrides

SHAPE = (1, 14, 14)  # two stages of 3x3 conv and 2x2 pool: 14 -> 6 -> 2
DIMS = [2, 3, 1]
TREE = [[0, 0, 0], [0, 0, 1], [0, 1, 2]]
SMALL = {
    "soft-order-conv": {"channels": [4, 4], "hidden": [8]},
    "cross-stitch-conv": {"channels": [3, 4], "hidden": [8]},
    "mmoe-conv": {"channels": [3, 4], "hidden": [8], "num_experts": 3, "tower_hidden": [5]},
    "branched-conv": {"channels": [3, 4], "hidden": [8], "groups": TREE},
}
NAMES = sorted(SMALL)


def _build(name: str, seed: int = 0, **extra):
    torch.manual_seed(seed)
    return build_model(name, SHAPE, DIMS, **{**SMALL[name], **extra}).double()


def _batch(n: int = 12, seed: int = 3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *SHAPE, dtype=torch.float64, generator=gen)
    task = torch.randint(0, len(DIMS), (n,), generator=gen)
    task[:3] = torch.tensor([0, 1, 2])  # every task present
    return x, task


def test_registered_and_picked_on_images():
    assert {"soft-order-conv", "cross-stitch-conv", "mmoe-conv", "branched-conv"} <= set(MODELS)
    names = ("soft-order", "cross-stitch", "mmoe", "branched")
    assert [conv_variant(n, SHAPE) for n in names] == [f"{n}-conv" for n in names]
    assert [conv_variant(n, (196,)) for n in names] == list(names)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_single_task_and_mixed_batch(name):
    model = _build(name).eval()
    x, task = _batch()
    for t, d in enumerate(DIMS):
        assert model(x, t).shape == (12, d)
    out = model(x, task)
    assert [tuple(o.shape) for o in out] == [(int((task == t).sum()), d) for t, d in enumerate(DIMS)]
    for t in range(len(DIMS)):
        torch.testing.assert_close(out[t], model(x[task == t], t), rtol=1e-12, atol=1e-12)
    absent = model.train()(x[:4], torch.tensor([0, 2, 2, 0]))  # task 1 absent, in training mode
    assert [tuple(o.shape) for o in absent] == [(2, 2), (0, 3), (2, 1)]
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, 14, 14\), got \(12, 196\)"):
        model(x.flatten(1), 0)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    model = _build(name)
    if name == "cross-stitch-conv":
        # A single-task loss reaches the other columns only through the stitches.
        assert model.stitch[0, 0, 1] > 0
    x, task = _batch()
    sum(o.square().sum() for o in model(x, task)).backward()
    for pname, p in model.named_parameters():
        if name == "soft-order-conv" and pname == "order_logits":
            # Every row of the softmax gets a gradient; uniform mixing starts them equal, not zero.
            assert p.grad is not None and torch.isfinite(p.grad).all()
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_float64(name):
    small = {**SMALL[name], "channels": [2, 2], "hidden": [3]}
    if name == "branched-conv":
        small["groups"] = TREE
    torch.manual_seed(0)
    model = build_model(name, (1, 10, 10), DIMS, **small).double().train()
    # One sample per task, out of task order: the mixed routing, at half the finite differences.
    x = torch.randn(3, 1, 10, 10, dtype=torch.float64, requires_grad=True)
    task = torch.tensor([2, 0, 1])
    # Max-pool picks one input per window; random inputs leave no ties, so the map is smooth there.
    assert torch.autograd.gradcheck(lambda inp: torch.cat([o.reshape(-1) for o in model(inp, task)]), (x,))


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip_and_checkpoint(name, tmp_path):
    model = _build(name)
    x, task = _batch()
    model.train()
    model(x, task)  # move the BatchNorm statistics
    config = dataclasses.asdict(model.config)
    rebuilt = model_from_config(type(model).__name__, config).double()
    assert rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    for a, b in zip(rebuilt(x, task), model(x, task)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # The trainer's way to write a model without task-adaptive layers (save() wants some).
    path = save_checkpoint(build_checkpoint(model.float(), task_names=["a", "b", "c"],
                                            extra={"trunk": trunk_description(model)}), tmp_path / "model.pt")
    loaded = model_from_checkpoint(load_checkpoint(path))
    assert type(loaded) is type(model) and loaded.config == model.config
    loaded.eval()
    for a, b in zip(loaded(x.float(), task), model(x.float(), task)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_a_tiny_fit(name):
    # Task 0: is the left half brighter than the right? Task 1: the top half? Task 2: regression
    # on the mean. A conv trunk fits each within a hundred steps.
    torch.manual_seed(0)
    model = build_model(name, SHAPE, [2, 2, 1], **SMALL[name])
    n = 96
    x = torch.randn(n, *SHAPE)
    task = torch.arange(n) % 3
    left = (x[..., :7].mean((1, 2, 3)) > x[..., 7:].mean((1, 2, 3))).long()
    top = (x[..., :7, :].mean((1, 2, 3)) > x[..., 7:, :].mean((1, 2, 3))).long()
    target = [left[task == 0], top[task == 1], x[task == 2].mean((1, 2, 3), keepdim=True)[:, :, 0, 0] * 10]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_fn():
        out = model(x, task)
        ce, mse = torch.nn.functional.cross_entropy, torch.nn.functional.mse_loss
        return ce(out[0], target[0]) + ce(out[1], target[1]) + mse(out[2], target[2])

    first = float(loss_fn().detach())
    for _ in range(100):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(x, task)
        last = float(loss_fn())
    accuracy = [float((out[t].argmax(1) == target[t]).float().mean()) for t in (0, 1)]
    assert last < 0.3 * first and min(accuracy) > 0.9, (first, last, accuracy)


# ------------------------------------------------------------------------------ soft order

def test_soft_order_starts_uniform_and_follows_peaked_logits():
    model = _build("soft-order-conv").eval()
    torch.testing.assert_close(model.order_logits.softmax(-1), torch.full((3, 2, 2), 0.5, dtype=torch.float64))
    with torch.no_grad():
        model.order_logits.fill_(-1e4)
        model.order_logits[1, 0, 1] = model.order_logits[1, 1, 0] = 1e4  # task 1: stage 1, then stage 0
    x, _ = _batch(4)
    w, depth = 4, 2
    weights = model.layers.weight.split(w)
    biases = model.layers.bias.split(w)
    h = model.encoder(x)
    for d, k in enumerate((1, 0)):
        z = torch.nn.functional.conv2d(h, weights[k], biases[k])
        norm = model.norms[d]
        z = (z - norm.running_mean[k * w:(k + 1) * w, None, None]) / torch.sqrt(
            norm.running_var[k * w:(k + 1) * w, None, None] + norm.eps)
        z = z * norm.weight[k * w:(k + 1) * w, None, None] + norm.bias[k * w:(k + 1) * w, None, None]
        h = torch.nn.functional.max_pool2d(torch.relu(z), 2)
    expected = model.heads[1](model.dense(h.flatten(1)))
    torch.testing.assert_close(model(x, 1), expected, rtol=1e-10, atol=1e-10)
    assert depth == len(model.config.channels)


def test_soft_order_config_checks():
    assert SoftOrderConvConfig([1]).channels == [32, 32, 32, 32]
    with pytest.raises(ValueError, match=r"channels must hold one count repeated .* got \[6, 12\]"):
        SoftOrderConvConfig([1], input_shape=[1, 20, 20], channels=[6, 12])
    with pytest.raises(TypeError, match="SoftOrderConv takes a SoftOrderConvConfig, got CrossStitchConvConfig"):
        SoftOrderConv(CrossStitchConvConfig([1], input_shape=[1, 20, 20], channels=[4]))


# ---------------------------------------------------------------------------- cross-stitch

def test_cross_stitch_identity_is_independent_columns_and_stitches_mix():
    model = _build("cross-stitch-conv", self_weight=1.0).eval()
    x, _ = _batch(4)
    model.zero_grad()
    model(x, 2).sum().backward()
    # Column 2's filters are rows 2 * c_out .. 3 * c_out of every grouped conv.
    for conv in model.columns.convs:
        per_column = conv.weight.grad.unflatten(0, (3, -1)).abs().flatten(1).sum(1)
        assert per_column[2] > 0 and per_column[0] == 0 and per_column[1] == 0
    for layer in model.columns.dense:
        assert layer.weight.grad[2].abs().sum() > 0 and layer.weight.grad[:2].abs().sum() == 0
    mixed = _build("cross-stitch-conv").eval()
    mixed.zero_grad()
    mixed(x, 2).sum().backward()
    assert all(conv.weight.grad.unflatten(0, (3, -1))[0].abs().sum() > 0 for conv in mixed.columns.convs)


def test_columns_are_initialised_like_one_conv_each():
    model = build_model("cross-stitch-conv", (1, 30, 30), [1] * 5, channels=[6, 12], hidden=[8])
    first, second = model.columns.convs
    assert first.weight.shape == (5 * 6, 1, 3, 3) and second.weight.shape == (5 * 12, 6, 3, 3)
    # kaiming_uniform(a=sqrt(5)) bounds a weight by 1 / sqrt(fan_in), one column's fan-in.
    assert second.weight.abs().max() <= 1 / math.sqrt(6 * 9) and second.weight.abs().max() > 0.8 / math.sqrt(6 * 9)
    with pytest.raises(ValueError, match=r"self_weight must be in \[0, 1\]"):
        CrossStitchConvConfig([1], self_weight=1.5)


# ------------------------------------------------------------------------------------ MMoE

def test_mmoe_gate_picks_the_experts():
    model = _build("mmoe-conv").eval()
    x, _ = _batch(4)
    with torch.no_grad():
        model.gates.weight.zero_()
        model.gates.bias.fill_(-1e4)
        model.gates.bias[1, 2] = 1e4  # task 1 reads expert 2 alone
    experts = model.experts(x)
    torch.testing.assert_close(model(x, 1), model.towers[1](experts[2]), rtol=1e-12, atol=1e-12)
    model.zero_grad()
    model(x, 1).sum().backward()
    grads = model.experts.convs[1].weight.grad.unflatten(0, (3, -1)).abs().flatten(1).sum(1)
    assert grads[2] > 0 and grads[0] == 0 and grads[1] == 0
    assert MMoEConvConfig([1]).num_experts == 4 and MMoEConvConfig([1]).tower_hidden == []
    with pytest.raises(ValueError, match="num_experts must be >= 1"):
        MMoEConvConfig([1], num_experts=0)


# -------------------------------------------------------------------------------- branched

def test_branched_conv_bounds_are_hard_and_single_task():
    small = {"channels": [3, 4], "hidden": [8]}
    torch.manual_seed(0)
    hard = build_model("hard-conv", SHAPE, DIMS, **small)
    torch.manual_seed(0)
    shared = build_model("branched-conv", SHAPE, DIMS, groups=[[0, 0, 0]] * 3, **small)
    assert shared.num_parameters() == hard.num_parameters()
    hard.eval(), shared.eval()
    x, task = _batch()
    for a, b in zip(shared(x.float(), task), hard(x.float(), task)):
        torch.testing.assert_close(a, b)
    stl = build_model("stl-conv", SHAPE, DIMS, **small)
    apart = build_model("branched-conv", SHAPE, DIMS, groups=[[0, 1, 2]] * 3, **small)
    assert apart.num_parameters() == stl.num_parameters()
    assert trunk_description(apart) == "conv 3,4 + dense 8"
    assert "num_groups=[1, 2, 3]" in repr(_build("branched-conv"))


def test_branched_conv_uses_only_its_tasks_branches():
    model = _build("branched-conv")
    x, _ = _batch(4)
    model(x, 1).sum().backward()
    used = {".".join(n.split(".")[:3]) for n, p in model.named_parameters()
            if n.startswith("branches") and p.grad is not None}
    assert used == {"branches.0.0", "branches.1.0", "branches.2.1"}


def test_branched_conv_config_checks():
    with pytest.raises(ValueError, match="groups must be given"):
        BranchedConvConfig([1, 1], input_shape=list(SHAPE), channels=[3, 4], hidden=[8])
    with pytest.raises(ValueError, match=r"one row per layer of the trunk \(L = len\(channels\) \+ len\(hidden\) "
                                         r"= 2 \+ 1 = 3\), got 2"):
        BranchedConvConfig([1, 1], input_shape=list(SHAPE), channels=[3, 4], hidden=[8], groups=[[0, 0], [0, 1]])
    with pytest.raises(ValueError, match="groups must nest"):
        BranchedConvConfig([1, 1, 1], input_shape=list(SHAPE), channels=[3, 4], hidden=[8],
                           groups=[[0, 0, 1], [0, 1, 1], [0, 1, 2]])
    with pytest.raises(TypeError, match="BranchedConv takes a BranchedConvConfig"):
        BranchedConv(SoftOrderConvConfig([1]))


def test_branched_conv_overrides_copy_the_taan_trunk():
    taan = build_model("taan-conv", SHAPE, DIMS, channels=[3, 4], hidden=[8], num_hinges=2, dropout=0.25)
    config = dataclasses.asdict(taan.config)
    overrides = branched_conv_overrides([[5, 5, 5], [5, 5, 7], [1, 2, 3]], config)
    assert overrides == {"groups": TREE, "channels": [3, 4], "kernel_size": 3, "padding": 0, "hidden": [8],
                         "batch_norm": True, "dropout": 0.25}
    model = build_model("branched-conv", SHAPE, DIMS, **overrides)
    assert [tuple(p.shape) for p in model.branches[0][0].parameters()] == \
        [tuple(p.shape) for n, p in taan.convs[0].named_parameters() if "act." not in n]
    assert branched_conv_overrides(TREE, config, hidden=[16])["hidden"] == [16]
    with pytest.raises(ValueError, match=r"hidden must give one width per dense layer of the conv TAAN \(1\), "
                                         r"got \[16, 16\]"):
        branched_conv_overrides(TREE, config, hidden=[16, 16])
    with pytest.raises(ValueError, match=r"one row per task-adaptive layer of the conv TAAN \(3\), got 2"):
        branched_conv_overrides(TREE[:2], config)
    with pytest.raises(ValueError, match="taan_config is not a TAANConv's config: it lacks channels"):
        branched_conv_overrides(TREE, {"hidden": [8]})
