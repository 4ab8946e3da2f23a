"""The whole-network relatedness of a run: taan_viz.network, its figure and `taan-viz network`."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from taan_core.checkpoint import build_checkpoint, load_checkpoint, save_checkpoint
from taan_core.data import load_dataset
from taan_core.models import TAAN, TAANConfig
from taan_core.nn.layers import adaptive_layers
from taan_core.relatedness import network_distances
from taan_viz.cli import main
from taan_viz.network import mean_network, network_agreement, network_relatedness, write_network_csv
from taan_viz.plots.network import plot_network

DATA_CONFIG = {"num_tasks": 6, "groups_per_layer": [2, 6], "hidden": [8, 8], "samples_per_task": 40, "seed": 0}


def _save_run(path, seed=0):
    data = load_dataset("planted", **DATA_CONFIG)
    torch.manual_seed(seed)
    model = TAAN(TAANConfig(8, [4] * 6, [8, 8], num_hinges=3, shared_head=True))
    with torch.no_grad():
        for _, layer in adaptive_layers(model):
            layer.alpha.normal_(0.0, 0.5)
    ckpt = build_checkpoint(model, task_names=data.task_names,
                            data={"name": "planted", "config": dict(data.config), "groups": None})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ckpt, path)
    return data, model.eval()


def test_network_relatedness_is_network_distances_on_the_pooled_split(tmp_path):
    data, model = _save_run(tmp_path / "run" / "checkpoint.pt")
    net = network_relatedness(load_checkpoint(tmp_path / "run" / "checkpoint.pt"), split="test")
    split = data.split("test")
    x = torch.cat([split.get(t, torch.arange(split.num_samples(t)))[0] for t in range(6)])
    want, scale = network_distances(model, x)
    np.testing.assert_allclose(net.distance, want, rtol=1e-12)
    assert net.scale == pytest.approx(scale) and net.num_inputs == x.shape[0] and net.split == "test"
    np.testing.assert_allclose(net.relative, want / scale)
    assert sorted(net.order.tolist()) == list(range(6)) and 0 < net.axis_share <= 1
    assert np.all(np.diff(net.axis[net.order]) >= 0)


def test_network_relatedness_errors(tmp_path):
    _save_run(tmp_path / "run" / "checkpoint.pt")
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(ValueError, match="split must be one of train, val, test, got 'dev'"):
        network_relatedness(ckpt, split="dev")
    school = dataclasses.replace(ckpt, data={"name": "school", "config": {"data_path": str(tmp_path / "no.mat")}})
    with pytest.raises(ValueError, match="cannot load its data set 'school'.*pass the data with --data"):
        network_relatedness(school)
    with pytest.raises(ValueError, match="does not name its data set"):
        network_relatedness(dataclasses.replace(ckpt, data={}))


def test_agreement_plot_and_csv(tmp_path):
    _save_run(tmp_path / "a" / "checkpoint.pt", seed=0)
    _save_run(tmp_path / "b" / "checkpoint.pt", seed=1)
    a, b = (network_relatedness(load_checkpoint(tmp_path / k / "checkpoint.pt")) for k in "ab")
    same = network_agreement([a, a])
    assert same == {"distance_spearman": pytest.approx(1.0), "axis_spearman": pytest.approx(1.0)}
    assert network_agreement([a, b])["distance_spearman"] < 1.0
    with pytest.raises(ValueError, match="at least two runs, got 1"):
        network_agreement([a])
    fig = plot_network(a)
    assert isinstance(fig, Figure)
    caption = fig._supxlabel.get_text().replace("\n", " ")
    assert "separated" in caption and caption.endswith("then taan-viz consensus")
    assert "consensus" not in plot_network(a, single_run=False)._supxlabel.get_text()
    path = write_network_csv(tmp_path / "n.csv", a)
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["task", "axis", *a.task_names]
    np.testing.assert_allclose(np.array([[float(v) for v in r[2:]] for r in rows[1:]]), a.relative, rtol=1e-15)


def test_cli_network(tmp_path, capsys):
    _save_run(tmp_path / "runs" / "seed-0" / "checkpoint.pt", seed=0)
    _save_run(tmp_path / "runs" / "seed-1" / "checkpoint.pt", seed=1)
    with pytest.raises(SystemExit) as exc:
        main(["network", str(tmp_path / "runs"), "-o", str(tmp_path / "out"), "--dpi", "50"])
    assert exc.value.code == 0
    captured = capsys.readouterr()
    for seed in (0, 1):
        assert (tmp_path / "out" / f"seed-{seed}" / "network.png").is_file()
        assert (tmp_path / "out" / f"seed-{seed}" / "network.csv").is_file()
    assert "2 runs agree on the whole-network distances with Spearman" in captured.err
    assert (tmp_path / "out" / "network-mean.png").is_file()
    rows = list(csv.reader((tmp_path / "out" / "network-mean.csv").open()))
    assert len(rows) == 7 and rows[0][:2] == ["task", "axis"]
    assert str(tmp_path / "out" / "network-mean.png") in captured.out
    with pytest.raises(SystemExit) as exc:
        main(["network", str(tmp_path / "runs" / "seed-0"), "--split", "dev", "-o", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("taan-viz: error: --split must be one of")


def test_mean_network(tmp_path):
    _save_run(tmp_path / "a" / "checkpoint.pt", seed=0)
    _save_run(tmp_path / "b" / "checkpoint.pt", seed=1)
    a, b = (network_relatedness(load_checkpoint(tmp_path / k / "checkpoint.pt")) for k in "ab")
    mean = mean_network([a, b])
    np.testing.assert_allclose(mean.distance, (a.relative + b.relative) / 2)
    assert mean.runs == 2 and mean.scale == 1.0 and np.array_equal(mean.relative, mean.distance)
    same = mean_network([a, a])
    np.testing.assert_allclose(same.relative, a.relative)
    assert abs(np.corrcoef(same.axis, a.axis)[0, 1]) == pytest.approx(1.0)
    caption = plot_network(mean)._supxlabel.get_text().replace("\n", " ")
    assert caption.startswith("mean over 2 runs") and "stability unknown" not in caption
    with pytest.raises(ValueError, match="at least two runs, got 1"):
        mean_network([a])
