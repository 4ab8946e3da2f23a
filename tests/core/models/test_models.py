"""Tests of taan_core.models: the forward(x, task) contract, parameter counts, rebuilding."""

from __future__ import annotations

import dataclasses
import io
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from taan_core.nn.layers import TaskAdaptiveActivation
from taan_core.models import (
    MODELS,
    CrossStitch,
    CrossStitchConfig,
    HardShare,
    MLPConfig,
    MMoE,
    MMoEConfig,
    SoftOrder,
    SoftOrderConfig,
    TAAN,
    TAANConfig,
    TAANConv,
    TAANConvConfig,
    build_model,
    model_from_config,
)

OUTPUT_DIMS = [1, 3, 2]
# Small configurations of every registered model: (input_shape, config overrides).
SPECS = {
    "taan": ((12,), {"hidden": [16, 8], "num_hinges": 4}),
    "taan-conv": ((1, 20, 20), {"channels": [3, 4], "hidden": [8], "num_hinges": 4}),
    "stl": ((12,), {"hidden": [16, 8]}),
    "hard": ((12,), {"hidden": [16, 8]}),
    "soft-order": ((12,), {"hidden": [16, 16]}),
    "cross-stitch": ((12,), {"hidden": [16, 8]}),
    "mmoe": ((12,), {"hidden": [16], "num_experts": 3, "tower_hidden": [4]}),
}


def _build(name: str, seed: int = 0, **extra):
    torch.manual_seed(seed)
    shape, overrides = SPECS[name]
    model = build_model(name, shape, OUTPUT_DIMS, **{**overrides, **extra}).double()
    return model, shape


def _randomise_adaptive(model, seed: int = 1) -> None:
    """Give every task a clearly different activation (the init is close to relu for all)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, act in model.adaptive_layers():
            act.alpha.copy_(torch.randn(act.alpha.shape, generator=gen, dtype=act.alpha.dtype))


def test_registry_holds_every_model():
    assert set(SPECS) <= set(MODELS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_output_shape_single_task(name):
    model, shape = _build(name)
    x = torch.randn(5, *shape, dtype=torch.float64)
    for t, d in enumerate(OUTPUT_DIMS):
        assert model(x, t).shape == (5, d)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_output_shapes_mixed_batch_with_absent_task(name):
    model, shape = _build(name)
    task = torch.tensor([0, 2, 2, 0, 2])  # task 1 absent
    out = model(torch.randn(5, *shape, dtype=torch.float64), task)
    assert isinstance(out, list) and len(out) == len(OUTPUT_DIMS)
    assert [tuple(o.shape) for o in out] == [(2, 1), (0, 3), (3, 2)]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_mixed_batch_equals_per_task_passes(name):
    model, shape = _build(name)
    _randomise_adaptive(model)
    model.eval()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(11, *shape, dtype=torch.float64, generator=gen)
    task = torch.randint(0, len(OUTPUT_DIMS), (11,), generator=gen)
    task[:3] = torch.tensor([0, 1, 2])  # every task present
    out = model(x, task)
    for t in range(len(OUTPUT_DIMS)):
        rows = (task == t).nonzero().squeeze(1)
        torch.testing.assert_close(out[t], model(x[rows], t), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out[t], model(x, t)[rows], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["taan", "taan-conv"])
def test_tasks_differ_through_their_activations(name):
    model, shape = _build(name)
    _randomise_adaptive(model)
    model.eval()
    x = torch.randn(4, *shape, dtype=torch.float64)
    h0 = model._trunk(x, 0)
    h1 = model._trunk(x, 1)
    assert not torch.allclose(h0, h1)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, len(OUTPUT_DIMS) - 1), min_size=0, max_size=9))
def test_mixed_batch_keeps_batch_order(tasks):
    model, shape = _build("taan")
    _randomise_adaptive(model)
    model.eval()
    task = torch.tensor(tasks, dtype=torch.long)
    x = torch.randn(len(tasks), *shape, dtype=torch.float64)
    out = model(x, task)
    for t, d in enumerate(OUTPUT_DIMS):
        rows = [i for i, s in enumerate(tasks) if s == t]
        assert out[t].shape == (len(rows), d)
        for k, i in enumerate(rows):
            torch.testing.assert_close(out[t][k], model(x[i : i + 1], t)[0], rtol=1e-12, atol=1e-12)


def test_mixed_batch_backward_reaches_every_parameter():
    model, shape = _build("taan")
    task = torch.tensor([0, 1, 2, 1, 0, 2])
    out = model(torch.randn(6, *shape, dtype=torch.float64), task)
    sum(o.square().sum() for o in out).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


# --------------------------------------------------------------------------- parameter counts

def _mlp_count(widths, batch_norm):
    return sum(a * b + b + (2 * b if batch_norm else 0) for a, b in zip(widths[:-1], widths[1:]))


@pytest.mark.parametrize("batch_norm", [False, True])
def test_taan_has_hard_share_parameters_plus_alpha_and_hinges(batch_norm):
    widths, num_hinges, output_dims = [20, 16, 16, 8], 5, [2, 1, 4, 3]
    hidden = widths[1:]
    taan = TAAN(TAANConfig(20, output_dims, hidden, num_hinges=num_hinges, batch_norm=batch_norm))
    hard = HardShare(MLPConfig(20, output_dims, hidden, batch_norm=batch_norm))
    heads = sum(widths[-1] * d + d for d in output_dims)
    assert hard.num_parameters() == _mlp_count(widths, batch_norm) + heads
    num_layers, num_tasks = len(hidden), len(output_dims)
    assert taan.num_parameters() == hard.num_parameters() + num_layers * (num_tasks * num_hinges + num_hinges)


def test_shared_head_is_one_head_and_the_tasks_differ_only_in_activations():
    torch.manual_seed(0)
    config = TAANConfig(6, [3, 3, 3, 3], [8, 8], num_hinges=3, shared_head=True)
    model = TAAN(config).double().eval()
    per_task = TAAN(dataclasses.replace(config, shared_head=False))
    assert len(model.heads) == 1
    assert per_task.num_parameters() - model.num_parameters() == 3 * (8 * 3 + 3)
    x = torch.randn(20, 6, dtype=torch.float64)
    task = torch.tensor([0, 1, 2, 3] * 5)
    # With equal coordinates all tasks are one network; differing ones make them differ.
    with torch.no_grad():
        for _, act in model.adaptive_layers():
            act.alpha.zero_()
    same = torch.stack([model(x, t) for t in range(4)])
    torch.testing.assert_close(same, same[:1].expand_as(same), rtol=0, atol=0)
    _randomise_adaptive(model)
    outputs = model(x, task)
    for t in range(4):
        torch.testing.assert_close(outputs[t], model(x[task == t], t), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(model(x, 0), model(x, 1))
    rebuilt = model_from_config("TAAN", dataclasses.asdict(model.config))
    rebuilt.load_state_dict(model.state_dict())
    assert len(rebuilt.heads) == 1


def test_unaffine_batch_norm_and_hinge_range():
    torch.manual_seed(0)
    model = TAAN(TAANConfig(5, [2, 2], [64, 64], num_hinges=50, batch_norm=True, batch_norm_affine=False,
                            hinge_range=1.5))
    for block in model.blocks:
        assert block.bn is not None and block.bn.weight is None and block.bn.bias is None
        hinges = block.act.hinges.detach()
        assert hinges.min() >= -1.5 and hinges.max() <= 1.5 and hinges.max() - hinges.min() > 2.0
    # Every unit's pre-activation is standardised over the batch: the activations see N(0, 1).
    seen = []
    hook = model.blocks[1].act.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    model.train()
    model(torch.randn(512, 5) * 3 + 1, torch.randint(0, 2, (512,)))
    hook.remove()
    z = seen[0]
    torch.testing.assert_close(z.mean(0), torch.zeros(64), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(64), atol=1e-3, rtol=0)


def test_single_task_has_one_network_per_task():
    model = build_model("stl", (12,), OUTPUT_DIMS, hidden=[16, 8])
    assert model.num_parameters() == sum(_mlp_count([12, 16, 8], False) + 8 * d + d for d in OUTPUT_DIMS)


def test_num_parameters_trainable_only():
    model, _ = _build("taan")
    total = model.num_parameters()
    for _, act in model.adaptive_layers():
        act.hinges.requires_grad_(False)
    frozen = sum(act.hinges.numel() for _, act in model.adaptive_layers())
    assert model.num_parameters(trainable_only=True) == total - frozen
    assert model.num_parameters() == total


def test_taan_conv_default_is_the_omniglot_network():
    model = TAANConv(TAANConvConfig(output_dims=[5] * 3))
    assert model.config.flat_features() == 64 * 4 * 4
    assert [act.alpha.shape for _, act in model.adaptive_layers()] == [(3, 32)] * 5
    assert model.blocks[0].linear.out_features == 512
    assert model(torch.randn(2, 1, 105, 105), 1).shape == (2, 5)


# --------------------------------------------------------------------------- adaptive layers

def test_adaptive_layers_in_depth_order():
    taan, _ = _build("taan")
    conv, _ = _build("taan-conv")
    assert [n for n, _ in taan.adaptive_layers()] == ["blocks.0.act", "blocks.1.act"]
    assert [n for n, _ in conv.adaptive_layers()] == ["convs.0.act", "convs.1.act", "blocks.0.act"]
    for model in (taan, conv):
        modules = dict(model.named_modules())
        for name, act in model.adaptive_layers():
            assert isinstance(act, TaskAdaptiveActivation) and modules[name] is act


@pytest.mark.parametrize("name", ["stl", "hard", "soft-order", "cross-stitch", "mmoe"])
def test_baselines_have_no_adaptive_layers(name):
    model, _ = _build(name)
    assert model.adaptive_layers() == []


def test_taan_with_zero_alpha_is_hard_share():
    taan, shape = _build("taan")
    hard, _ = _build("hard", seed=5)
    with torch.no_grad():
        for _, act in taan.adaptive_layers():
            act.alpha.zero_()
        linears = [m for m in hard.trunk if isinstance(m, torch.nn.Linear)]
        for block, linear in zip(taan.blocks, linears):
            linear.load_state_dict(block.linear.state_dict())
        hard.heads.load_state_dict(taan.heads.state_dict())
    x = torch.randn(6, *shape, dtype=torch.float64)
    task = torch.tensor([2, 0, 1, 1, 0, 2])
    for a, b in zip(taan(x, task), hard(x, task)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- baselines reduce to known forms

def _relu_mlp(x, weights):
    for w, b in weights:
        x = torch.relu(x @ w.T + b)
    return x


def test_cross_stitch_with_identity_stitches_is_independent_columns():
    model = CrossStitch(CrossStitchConfig(12, OUTPUT_DIMS, [16, 8], self_weight=1.0)).double()
    assert torch.equal(model.stitch, torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    x = torch.randn(4, 12, dtype=torch.float64)
    for t in range(3):
        h = _relu_mlp(x, [(layer.weight[t], layer.bias[t]) for layer in model.columns])
        torch.testing.assert_close(model(x, t), model.heads[t](h), rtol=1e-12, atol=1e-12)


def test_cross_stitch_mixes_columns():
    model = CrossStitch(CrossStitchConfig(12, OUTPUT_DIMS, [16], self_weight=0.9)).double()
    torch.testing.assert_close(model.stitch.sum(-1), torch.ones(1, 3, dtype=torch.float64))
    x = torch.randn(4, 12, dtype=torch.float64)
    layer = model.columns[0]
    cols = torch.stack([_relu_mlp(x, [(layer.weight[s], layer.bias[s])]) for s in range(3)])
    expected = torch.tensor([0.05, 0.9, 0.05], dtype=torch.float64)
    torch.testing.assert_close(model.stitch[0, 1], expected, rtol=1e-6, atol=0)  # set in float32
    mixed = torch.einsum("s,snh->nh", model.stitch[0, 1], cols)
    torch.testing.assert_close(model(x, 1), model.heads[1](mixed), rtol=1e-12, atol=1e-12)


def test_soft_order_with_peaked_logits_applies_layers_in_that_order():
    model = SoftOrder(SoftOrderConfig(12, OUTPUT_DIMS, [16, 16, 16])).double()
    orders = [[0, 1, 2], [2, 1, 0], [1, 1, 0]]
    with torch.no_grad():
        model.order_logits.fill_(-1e4)
        for t, order in enumerate(orders):
            for d, k in enumerate(order):
                model.order_logits[t, d, k] = 0.0
    x = torch.randn(5, 12, dtype=torch.float64)
    for t, order in enumerate(orders):
        h = model.encoder(x)
        for k in order:
            h = torch.relu(h @ model.layers.weight[k].T + model.layers.bias[k])
        torch.testing.assert_close(model(x, t), model.heads[t](h), rtol=1e-12, atol=1e-12)


def test_soft_order_starts_uniform():
    model = SoftOrder(SoftOrderConfig(12, OUTPUT_DIMS, [16, 16]))
    torch.testing.assert_close(model.order_logits.softmax(-1), torch.full((3, 2, 2), 0.5))


def test_mmoe_gates_mix_experts_per_task():
    model = MMoE(MMoEConfig(12, OUTPUT_DIMS, [16], num_experts=3, tower_hidden=[])).double()
    x = torch.randn(5, 12, dtype=torch.float64)
    experts = torch.stack(
        [_relu_mlp(x, [(model.experts[0].weight[e], model.experts[0].bias[e])]) for e in range(3)]
    )
    for t in range(3):
        gate = torch.softmax(x @ model.gates.weight[t].T + model.gates.bias[t], dim=-1)
        mixed = (gate.T.unsqueeze(-1) * experts).sum(0)
        torch.testing.assert_close(model(x, t), model.towers[t](mixed), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- state and configs

@pytest.mark.parametrize("name", sorted(SPECS))
def test_state_dict_round_trip(name):
    model, shape = _build(name, seed=0)
    _randomise_adaptive(model)
    model.train()
    model(torch.randn(8, *shape, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))  # move stats
    model.eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    other, _ = _build(name, seed=1)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    other.eval()
    x = torch.randn(4, *shape, dtype=torch.float64)
    for t in range(len(OUTPUT_DIMS)):
        torch.testing.assert_close(other(x, t), model(x, t), rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_model_from_config_rebuilds_the_model(name):
    model, shape = _build(name)
    _randomise_adaptive(model)
    config = dataclasses.asdict(model.config)
    assert json.loads(json.dumps(config)) == config  # plain types only
    rebuilt = model_from_config(type(model).__name__, config).double()
    assert type(rebuilt) is type(model) and rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict())
    model.eval()
    rebuilt.eval()
    x = torch.randn(4, *shape, dtype=torch.float64)
    task = torch.tensor([1, 0, 2, 1])
    for a, b in zip(rebuilt(x, task), model(x, task)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_config_tuples_become_lists():
    config = TAANConfig(input_dim=4, output_dims=(1, 2), hidden=(8, 8))
    assert config.output_dims == [1, 2] and config.hidden == [8, 8]


def test_build_model_flattens_the_input_shape():
    model = build_model("taan", (1, 4, 3), [2, 2], hidden=[8])
    assert model.config.input_dim == 12
    assert model(torch.randn(3, 1, 4, 3), 0).shape == (3, 2)


def test_build_model_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown model 'resnet'; valid names: .*cross-stitch.*taan"):
        build_model("resnet", (4,), [1])


def test_build_model_unknown_field_lists_valid_fields():
    with pytest.raises(ValueError, match=r"unknown config field 'width' for model 'taan'; valid fields: .*num_hinges"):
        build_model("taan", (4,), [1], width=3)
    with pytest.raises(ValueError, match="unknown config field 'input_dim'"):
        build_model("taan", (4,), [1], input_dim=3)


def test_model_from_config_errors():
    with pytest.raises(ValueError, match=r"unknown model class 'Resnet'; valid classes: .*TAAN"):
        model_from_config("Resnet", {})
    with pytest.raises(ValueError, match=r"unknown fields \['width'\], missing fields \['output_dims'\]"):
        model_from_config("TAAN", {"input_dim": 4, "width": 3})
    with pytest.raises(TypeError, match="config must be a dict"):
        model_from_config("TAAN", [4])


def test_model_takes_its_own_config_class():
    with pytest.raises(TypeError, match="TAAN takes a TAANConfig, got MLPConfig"):
        TAAN(MLPConfig(4, [1]))


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: TAANConfig(4, [1], hidden=[]), ValueError, "hidden must not be empty"),
        (lambda: TAANConfig(4, [], hidden=[3]), ValueError, "output_dims must not be empty"),
        (lambda: TAANConfig(4, [1], hidden=[3, 0]), ValueError, r"hidden\[1\] must be >= 1, got 0"),
        (lambda: TAANConfig(4, [1], hidden="33"), TypeError, "hidden must be a list of ints"),
        (lambda: TAANConfig(4, [1], num_hinges=0), ValueError, "num_hinges must be >= 1"),
        (lambda: TAANConfig(4.0, [1]), TypeError, "input_dim must be an int"),
        (lambda: TAANConfig(4, [1], dropout=1.0), ValueError, "dropout must be < 1"),
        (lambda: TAANConfig(4, [1], dropout=-0.1), ValueError, r"dropout must be in \[0, 1\]"),
        (lambda: TAANConfig(4, [1], batch_norm=1), TypeError, "batch_norm must be a bool"),
        (lambda: TAANConfig(4, [1], batch_norm_affine="no"), TypeError, "batch_norm_affine must be a bool"),
        (lambda: TAANConfig(4, [1], hinge_range=-1.0), ValueError, "hinge_range must be finite and >= 0"),
        (lambda: TAANConfig(4, [1], hinge_range="wide"), TypeError, "hinge_range must be a float"),
        (lambda: TAANConfig(4, [1, 2], shared_head=True), ValueError,
         r"shared_head needs every task to have the same output size, got output_dims \[1, 2\]"),
        (lambda: SoftOrderConfig(4, [1], hidden=[8, 16]), ValueError, "hidden must hold one width repeated"),
        (lambda: CrossStitchConfig(4, [1], self_weight=1.5), ValueError, r"self_weight must be in \[0, 1\]"),
        (lambda: MMoEConfig(4, [1], num_experts=0), ValueError, "num_experts must be >= 1"),
        (lambda: TAANConvConfig([1], input_shape=[1, 20]), ValueError, r"input_shape must be \(C, H, W\)"),
        (lambda: TAANConvConfig([1], input_shape=[1, 20, 20]), ValueError,
         r"input_shape \(1, 20, 20\) is too small for 4 stages .* after stage 3"),
    ],
)
def test_config_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("name", ["taan", "hard", "cross-stitch"])
def test_bad_task_errors(name):
    model, shape = _build(name)
    x = torch.randn(4, *shape, dtype=torch.float64)
    with pytest.raises(IndexError, match=r"task must be in \[0, 3\) \(T = 3\), got 3"):
        model(x, 3)
    with pytest.raises(IndexError, match=r"task must be in \[0, 3\) \(T = 3\), got -1"):
        model(x, -1)
    with pytest.raises(IndexError, match=r"task ids must be in \[0, 3\) \(T = 3\), got 5"):
        model(x, torch.tensor([0, 1, 5, 2]))
    with pytest.raises(IndexError, match=r"got -2"):
        model(x, torch.tensor([0, -2, 1, 2]))
    with pytest.raises(ValueError, match=r"task must have shape \(N,\) with N = x.shape\[0\] = 4, got \(3,\)"):
        model(x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"task must have shape \(N,\) .* got \(4, 1\)"):
        model(x, torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(TypeError, match="task must be an int or an integer tensor, got a tensor of dtype torch.float32"):
        model(x, torch.zeros(4))
    with pytest.raises(TypeError, match="task must be an int or a LongTensor of shape"):
        model(x, 1.0)
    with pytest.raises(TypeError, match="task must be an int or a LongTensor of shape"):
        model(x, True)
    with pytest.raises(ValueError, match=r"task must be on the device of x \(cpu\), got meta"):
        model(x, torch.zeros(4, dtype=torch.long, device="meta"))


def test_int32_task_tensor_is_accepted():
    model, shape = _build("taan")
    model.eval()
    x = torch.randn(3, *shape, dtype=torch.float64)
    out = model(x, torch.tensor([2, 0, 2], dtype=torch.int32))
    torch.testing.assert_close(out[2], model(x[[0, 2]], 2))


def test_bad_input_errors():
    model, _ = _build("taan")
    with pytest.raises(ValueError, match=r"x must have shape \(N, 12\) \(input_dim = 12 features per sample\), got 11"):
        model(torch.randn(2, 11, dtype=torch.float64), 0)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 12\), got \(12,\)"):
        model(torch.randn(12, dtype=torch.float64), 0)
    with pytest.raises(TypeError, match="x must be a floating-point tensor, got dtype torch.int64"):
        model(torch.zeros(2, 12, dtype=torch.long), 0)
    with pytest.raises(TypeError, match="x must be a tensor, got list"):
        model([[0.0] * 12], 0)
    conv, _ = _build("taan-conv")
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, 20, 20\), got \(2, 1, 20, 21\)"):
        conv(torch.randn(2, 1, 20, 21, dtype=torch.float64), 0)


def test_extra_repr_names_tasks():
    model, _ = _build("taan")
    assert "num_tasks=3, output_dims=[1, 3, 2]" in repr(model)
    assert math.prod(model.input_shape) == 12
