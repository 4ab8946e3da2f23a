"""State_dicts of the reference TAAN code rebuilt as TAAN / TAANConv with their weights.

The reference files are built here key by key, as its TAL_Linear / TAL_Conv2d layers and
per-task heads store them, and the reference forward pass is written out independently
(F_t(h) = relu(h) + sum_m alpha[t, m] relu(basis[m] - h)) to check the rebuilt model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from taan_core import CheckpointError, load_checkpoint, model_from_checkpoint
from taan_core.cli import main
from taan_core.data.npz import save_npz
from taan_core.models import TAAN, TAANConv

T, M = 3, 5


def _f(h, alpha_t, basis):
    return F.relu(h) + (alpha_t * F.relu(basis.reshape(-1) - h.unsqueeze(-1))).sum(-1)


def _bn_state(prefix: str, n: int) -> dict:
    return {f"{prefix}.bn.weight": torch.rand(n) + 0.5, f"{prefix}.bn.bias": torch.randn(n) * 0.1,
            f"{prefix}.bn.running_mean": torch.randn(n) * 0.1, f"{prefix}.bn.running_var": torch.rand(n) + 0.5,
            f"{prefix}.bn.num_batches_tracked": torch.tensor(7)}


def _bn(h, state, prefix):
    return F.batch_norm(h, state[f"{prefix}.bn.running_mean"], state[f"{prefix}.bn.running_var"],
                        state[f"{prefix}.bn.weight"], state[f"{prefix}.bn.bias"], False, 0.0, 1e-5)


def youtube_style(dims=(7, 6, 6), outputs=(2, 3, 1), bn=False) -> dict:
    """layer1..layerL (TAL_Linear) and heads net_t.0 (Sequential(Linear))."""
    torch.manual_seed(0)
    state = {}
    for k, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:]), start=1):
        state.update({f"layer{k}.weight": torch.randn(d_out, d_in) * 0.4, f"layer{k}.bias": torch.randn(d_out) * 0.1,
                      f"layer{k}.alpha": torch.randn(T, M) * 0.5, f"layer{k}.basis": torch.rand(1, M) - 0.5})
        if bn:
            state.update(_bn_state(f"layer{k}", d_out))
    for t, c in enumerate(outputs):
        state[f"net_{t}.0.weight"], state[f"net_{t}.0.bias"] = torch.randn(c, dims[-1]), torch.randn(c)
    return state


def youtube_forward(state, x, t, layers, bn=False):
    h = x
    for k in range(1, layers + 1):
        h = F.linear(h, state[f"layer{k}.weight"], state[f"layer{k}.bias"])
        if bn:
            h = _bn(h, state, f"layer{k}")
        h = _f(h, state[f"layer{k}.alpha"][t], state[f"layer{k}.basis"])
    return F.linear(h, state[f"net_{t}.0.weight"], state[f"net_{t}.0.bias"])


ALPHABETS = ["Latin", "Greek", "Armenian"]  # file order; the project orders tasks by name


def omniglot_style(size=14) -> dict:
    """conv1, conv2 (TAL_Conv2d with BatchNorm, 3x3, each then a 2x2 max-pool), fc1, TOutput_<alphabet>."""
    torch.manual_seed(1)
    state = {}
    for k, (c_in, c_out) in enumerate([(1, 2), (2, 3)], start=1):
        state.update({f"conv{k}.weight": torch.randn(c_out, c_in, 3, 3) * 0.4, f"conv{k}.bias": torch.randn(c_out) * 0.1,
                      f"conv{k}.alpha": torch.randn(T, M) * 0.5, f"conv{k}.basis": torch.rand(1, M) - 0.5})
        state.update(_bn_state(f"conv{k}", c_out))
    side = ((size - 2) // 2 - 2) // 2
    state.update({"fc1.weight": torch.randn(4, 3 * side * side) * 0.3, "fc1.bias": torch.randn(4) * 0.1,
                  "fc1.alpha": torch.randn(T, M) * 0.5, "fc1.basis": torch.rand(1, M) - 0.5})
    for a, name in enumerate(ALPHABETS):
        state[f"TOutput_{name}.weight"], state[f"TOutput_{name}.bias"] = torch.randn(a + 2, 4), torch.randn(a + 2)
    return state


def omniglot_forward(state, x, name):
    t = ALPHABETS.index(name)
    h = x
    for k in (1, 2):
        h = F.conv2d(h, state[f"conv{k}.weight"], state[f"conv{k}.bias"])
        h = F.max_pool2d(_f(_bn(h, state, f"conv{k}"), state[f"conv{k}.alpha"][t], state[f"conv{k}.basis"]), 2)
    h = _f(F.linear(h.flatten(1), state["fc1.weight"], state["fc1.bias"]), state["fc1.alpha"][t], state["fc1.basis"])
    return F.linear(h, state[f"TOutput_{name}.weight"], state[f"TOutput_{name}.bias"])


@pytest.mark.parametrize("bn", [False, True])
def test_youtube_style_file_rebuilds_as_taan(tmp_path, bn):
    state = youtube_style(bn=bn)
    torch.save(state, tmp_path / "ref.pt")
    ckpt = load_checkpoint(tmp_path / "ref.pt")
    assert ckpt.format_version == 0 and ckpt.task_names == ["task_0", "task_1", "task_2"]
    assert ckpt.layer_names == ["layer1", "layer2"]
    model = model_from_checkpoint(ckpt)
    assert isinstance(model, TAAN) and model.config.hidden == [6, 6] and model.config.batch_norm is bn
    assert model.output_dims == [2, 3, 1] and model.config.num_hinges == M
    x = torch.randn(5, 7)
    with torch.no_grad():
        for t in range(T):
            torch.testing.assert_close(model(x, t), youtube_forward(state, x, t, 2, bn=bn))
    torch.testing.assert_close(ckpt.layers[1].alpha, state["layer2.alpha"].double())


def test_omniglot_style_file_rebuilds_as_taanconv_with_named_tasks(tmp_path):
    state = omniglot_style()
    torch.save(state, tmp_path / "ref.pt")
    ckpt = load_checkpoint(tmp_path / "ref.pt")
    assert ckpt.task_names == sorted(ALPHABETS)
    assert ckpt.layer_names == ["conv1", "conv2", "fc1"]
    for t, name in enumerate(ckpt.task_names):
        torch.testing.assert_close(ckpt.layers[0].alpha[t], state["conv1.alpha"][ALPHABETS.index(name)].double())
    model = model_from_checkpoint(ckpt)
    assert isinstance(model, TAANConv) and model.input_shape == (1, 14, 14)
    assert model.config.channels == [2, 3] and model.config.hidden == [4] and model.config.batch_norm
    x = torch.randn(4, 1, 14, 14)
    with torch.no_grad():
        for t, name in enumerate(ckpt.task_names):
            torch.testing.assert_close(model(x, t), omniglot_forward(state, x, name))


def test_layouts_that_are_not_a_whole_model_are_read_for_analysis_only(tmp_path):
    state = youtube_style()
    state["layer1.rbf_pi"] = torch.ones(1)  # a variant the rebuild does not know
    torch.save(state, tmp_path / "ref.pt")
    ckpt = load_checkpoint(tmp_path / "ref.pt")
    assert ckpt.layer_names == ["layer1", "layer2"] and ckpt.raw is None
    with pytest.raises(CheckpointError, match=r"model: expected a full taan checkpoint with a model"):
        model_from_checkpoint(ckpt)


def test_single_layer_file_says_what_was_found(tmp_path):
    torch.save({"weight": torch.randn(4, 3), "alpha": torch.randn(T, M), "basis": torch.rand(1, M)}, tmp_path / "l.pt")
    with pytest.raises(CheckpointError, match=r"found the state_dict of a single task-adaptive layer "
                                              r"\('alpha' \(3, 5\) and 'basis'\), which names no layer"):
        load_checkpoint(tmp_path / "l.pt")


def _npz(path, features, num_outputs, names=None):
    rng = np.random.default_rng(0)
    n = features.shape[0]
    task_ids = np.arange(n) % len(num_outputs)
    labels = np.array([rng.integers(0, num_outputs[t]) for t in task_ids])
    save_npz(path, features, task_ids, labels, kinds="multiclass", num_outputs=list(num_outputs),
             task_names=names, split=np.where(np.arange(n) < n // 2, 0, 2))
    return path


def _cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


@pytest.mark.slow
def test_eval_and_data_measure_of_a_reference_file(tmp_path, capsys):
    state = omniglot_style()
    torch.save(state, tmp_path / "ref.pt")
    data = _npz(tmp_path / "d.npz", np.random.default_rng(1).random((60, 1, 14, 14), dtype=np.float32),
                [3, 2, 4], names=sorted(ALPHABETS))
    code, out, err = _cli(capsys, "eval", tmp_path / "ref.pt", "--dataset", "npz", "--data", data, "--json",
                          "--save", tmp_path / "conv.pt")
    assert code == 0, err
    result = __import__("json").loads(out)
    assert sorted(result["per_task"]) == sorted(ALPHABETS)
    # The saved file measures each layer's pre-activations on the data: the data measure.
    converted = load_checkpoint(tmp_path / "conv.pt")
    assert converted.task_names == sorted(ALPHABETS) and converted.data["name"] == "npz"
    model = model_from_checkpoint(load_checkpoint(tmp_path / "ref.pt"))
    x = torch.from_numpy(np.load(data)["features"][30:])  # the test split, which eval measured
    with torch.no_grad():
        z = F.batch_norm(F.conv2d(x, model.convs[0].conv.weight, model.convs[0].conv.bias),
                         model.convs[0].bn.running_mean, model.convs[0].bn.running_var,
                         model.convs[0].bn.weight, model.convs[0].bn.bias, False, 0.0, 1e-5)
    assert converted.layers[0].mu == pytest.approx(float(z.double().mean()), rel=1e-6)
    assert converted.layers[0].sigma == pytest.approx(float(z.double().std()), rel=1e-6)
    rebuilt = model_from_checkpoint(converted)
    torch.testing.assert_close(rebuilt.blocks[0].act.alpha, model.blocks[0].act.alpha)


def test_eval_errors_for_reference_files(tmp_path, capsys):
    torch.save(youtube_style(), tmp_path / "ref.pt")
    code, _, err = _cli(capsys, "eval", tmp_path / "ref.pt")
    assert code == 2 and "the checkpoint names no data set; pass --dataset" in err and len(err.splitlines()) == 1
    torch.save(omniglot_style(), tmp_path / "o.pt")
    data = _npz(tmp_path / "d.npz", np.zeros((12, 1, 14, 14), dtype=np.float32), [3, 2, 4])
    code, _, err = _cli(capsys, "eval", tmp_path / "o.pt", "--dataset", "npz", "--data", data)
    assert code == 2 and "tasks (Armenian, Greek, Latin) are not the 3 tasks of the data set (task_0" in err


def test_omniglot_b_keys_are_the_hinges(tmp_path):
    state = {"conv1.alpha": torch.randn(T, M), "conv1.b": torch.rand(1, M), "conv1.conv.weight": torch.randn(2, 1, 3, 3)}
    torch.save(state, tmp_path / "o.pt")
    ckpt = load_checkpoint(tmp_path / "o.pt")
    assert ckpt.layer_names == ["conv1"] and ckpt.raw is None
    torch.testing.assert_close(ckpt.layers[0].hinges, state["conv1.b"][0].double())


def test_a_state_dict_that_is_no_whole_model_says_why_it_cannot_be_rebuilt(tmp_path):
    # Layers without heads: readable for analysis, and model_from_checkpoint names the reason.
    from taan_core.nn.layers import TALinear

    net = torch.nn.Sequential(TALinear(3, 4, num_tasks=2, num_hinges=2))
    torch.save(net.state_dict(), tmp_path / "layers.pt")
    ckpt = load_checkpoint(tmp_path / "layers.pt")
    assert ckpt.num_tasks == 2 and ckpt.not_rebuilt is not None and "no task heads" in ckpt.not_rebuilt
    with pytest.raises(CheckpointError, match="not a whole reference model: no task heads"):
        model_from_checkpoint(ckpt)
