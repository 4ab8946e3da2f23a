"""Baselines with TAANConv's trunk: hard-conv and stl-conv, and how the CLI picks the conv variants."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from taan_core.checkpoint import load_checkpoint, model_from_checkpoint
from taan_core.cli import main
from taan_core.data import save_npz
from taan_core.models import (
    ConvConfig,
    HardShareConv,
    SingleTaskConv,
    build_model,
    conv_variant,
    model_from_config,
    trunk_description,
)

SHAPE = (1, 12, 12)
SMALL = dict(channels=[4, 8], hidden=[16])


@pytest.mark.parametrize("name", ["hard-conv", "stl-conv"])
def test_shapes_state_dict_round_trip_and_rebuild(name):
    torch.manual_seed(0)
    model = build_model(name, SHAPE, [2, 3, 1], **SMALL)
    x, task = torch.randn(6, *SHAPE), torch.tensor([0, 1, 2, 1, 0, 1])
    out = model(x, task)
    assert [o.shape for o in out] == [(2, 2), (3, 3), (1, 1)]
    assert model(x, 1).shape == (6, 3)
    import dataclasses

    again = model_from_config(type(model).__name__, dataclasses.asdict(model.config))
    again.load_state_dict(model.state_dict())
    model.eval(), again.eval()
    assert torch.equal(model(x, 1), again(x, 1))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, 12, 12\), got \(6, 144\)"):
        model(x.flatten(1), 0)


def test_the_trunk_is_taanconvs_with_relu():
    conv = build_model("taan-conv", SHAPE, [2, 2], num_hinges=2, **SMALL)
    hard = build_model("hard-conv", SHAPE, [2, 2], **SMALL)
    taan_shapes = [tuple(p.shape) for name, p in conv.named_parameters() if "act." not in name]
    assert sorted(tuple(p.shape) for p in hard.parameters()) == sorted(taan_shapes)
    assert conv.num_parameters() - hard.num_parameters() == 3 * (2 * 2 + 2)  # L (T M + M): 2 conv + 1 dense
    stl = build_model("stl-conv", SHAPE, [2, 2], **SMALL)
    heads = sum(p.numel() for p in hard.heads.parameters())
    assert stl.num_parameters() == 2 * hard.num_parameters() - heads and len(stl.columns) == 2
    assert trunk_description(hard) == "conv 4,8 + dense 16" == trunk_description(conv)
    assert trunk_description(build_model("hard", (5,), [1], hidden=[32, 16])) == "mlp 32,16"


def test_conv_variant_on_images_only():
    assert [conv_variant(n, SHAPE) for n in ("taan", "hard", "stl", "mmoe", "hard-conv", "npz")] == \
        ["taan-conv", "hard-conv", "stl-conv", "mmoe-conv", "hard-conv", "npz"]
    assert conv_variant("hard", (144,)) == "hard"


def test_config_checks():
    with pytest.raises(ValueError, match=r"input_shape \(1, 4, 4\) is too small for 2 stages"):
        ConvConfig(output_dims=[1], input_shape=[1, 4, 4], channels=[4, 8])
    with pytest.raises(TypeError, match="HardShareConv takes a ConvConfig, got MLPConfig"):
        from taan_core.models import MLPConfig

        HardShareConv(MLPConfig(input_dim=3, output_dims=[1]))
    assert SingleTaskConv.config_class is ConvConfig


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    # Images large enough for TAANConv's default four conv stages: 48 -> 23 -> 10 -> 4 -> 1.
    rng = np.random.default_rng(0)
    n = 60
    task = np.repeat([0, 1], n // 2)
    x = rng.normal(size=(n, 1, 48, 48)).astype(np.float32)
    y = (x[:, 0, :24].mean(axis=(1, 2)) > 0).astype(np.int64)
    path = tmp_path_factory.mktemp("img") / "img.npz"
    save_npz(path, x, task, y, kinds="binary")
    return path


@pytest.mark.parametrize(("given", "cls", "trunk"), [
    ("hard", "HardShareConv", "conv 6,12,24,64 + dense 8"),
    ("stl-conv", "SingleTaskConv", "conv 6,12,24,64 + dense 8"),
    ("soft-order", "SoftOrderConv", "conv 32,32,32,32 + dense 8"),
    ("cross-stitch", "CrossStitchConv", "conv 6,12,24,64 + dense 8"),
    ("mmoe", "MMoEConv", "conv 6,12,24,64 + dense 8"),
])
def test_the_cli_trains_the_conv_variant_on_images(images, tmp_path, capsys, given, cls, trunk):
    out = tmp_path / given
    with pytest.raises(SystemExit) as info:
        main(["train", "--dataset", "npz", "--data", str(images), "--model", given, "--hidden", "8", "--epochs", "1",
              "--starts", "1", "--batch-size", "4", "--threads", "1", "--device", "cpu", "--out", str(out)])
    err = capsys.readouterr().err
    assert info.value.code == 0, err
    model_line = next(line for line in err.splitlines() if line.startswith("model"))
    assert f"trunk {trunk}" in model_line
    assert ("on images: TAANConv's trunk" in model_line) == (not given.endswith("-conv"))
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt.raw["model"]["class"] == cls and ckpt.raw["extra"]["trunk"] == trunk
    assert model_from_checkpoint(ckpt).config.input_shape == [1, 48, 48]


def test_branched_follows_the_tree_of_a_conv_taan(images, tmp_path, capsys):
    out = tmp_path / "conv"
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "npz", "--data", str(images), "--hidden", "8", "--hinges", "2", "--epochs", "1",
              "--starts", "1", "--batch-size", "4", "--threads", "1", "--device", "cpu", "--quiet", "--out", str(out)])
    taan = load_checkpoint(out / "checkpoint.pt")
    assert taan.raw["model"]["class"] == "TAANConv"
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["train", "--dataset", "npz", "--data", str(images), "--model", "branched", "--tree-from",
              str(out / "checkpoint.pt"), "--epochs", "1", "--starts", "1", "--batch-size", "4", "--threads", "1",
              "--device", "cpu", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert info.value.code == 0, err
    model_line = next(line for line in err.splitlines() if line.startswith("model"))
    assert "branched-conv (--model branched on images: TAANConv's trunk)" in model_line
    assert "trunk conv 6,12,24,64 + dense 8" in model_line
    from taan_core.relatedness import tree_from_checkpoint

    ckpt = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert ckpt.raw["model"]["class"] == "BranchedConv" and ckpt.raw["extra"]["trunk"] == "conv 6,12,24,64 + dense 8"
    net = model_from_checkpoint(ckpt)
    assert net.config.groups == tree_from_checkpoint(taan) and len(net.config.groups) == 5
    # A fully connected TAAN's tree cannot shape the conv trunk: one line.
    with pytest.raises(SystemExit) as info:
        main(["train", "--dataset", "npz", "--data", str(images), "--model", "branched", "--tree-from",
              str(tmp_path / "b" / "checkpoint.pt"), "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1
    assert "follows the sharing tree of a conv TAAN (taan-conv); this checkpoint holds BranchedConv" in err[0]
