"""taan_viz.analysis, taan_viz.inputs and taan_viz.embedding: the numbers behind the figures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.viz.viz_helpers import GROUPS, LAYER_NAMES, TASK_NAMES, gaussian_expectation, make_checkpoint_dict
from taan_viz.analysis import (
    METRICS,
    Measure,
    analyze,
    check_metric,
    history_geometry,
    layer_geometry,
    parse_measure,
)
from taan_viz.embedding import classical_mds
from taan_viz.inputs import parse_layers, read_task_names, select_layers


def _activation(alpha_row, hinges):
    return lambda x: np.maximum(x, 0) + sum(a * np.maximum(b - x, 0) for a, b in zip(alpha_row, hinges))


# ---------------------------------------------------------------------------------------------
# measure


@pytest.mark.parametrize("spec, kind, mu, sigma", [
    ("data", "data", None, None), ("standard", "standard", None, None), (" Standard ", "standard", None, None),
    ("0.5,2", "explicit", 0.5, 2.0), ("-1,0.25", "explicit", -1.0, 0.25),
])
def test_parse_measure(spec, kind, mu, sigma):
    m = parse_measure(spec)
    assert (m.kind, m.mu, m.sigma) == (kind, mu, sigma)
    assert parse_measure(m.spec) == m
    assert parse_measure(m) is m


@pytest.mark.parametrize("spec, match", [
    ("gauss", "'data', 'standard' or 'MU,SIGMA'"), ("1,2,3", "'MU,SIGMA'"), ("a,b", "with numbers"),
    ("0,0", "SIGMA must be > 0"), ("0,-1", "SIGMA must be > 0"), ("nan,1", "finite"), ("0,inf", "finite"),
])
def test_parse_measure_rejects(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_measure(spec)


def test_parse_measure_type():
    with pytest.raises(TypeError, match="measure must be a str"):
        parse_measure(1.0)


def test_measure_resolve(checkpoint):
    layer = checkpoint.layers[1]
    assert Measure("data").resolve(layer) == pytest.approx((0.3, 0.9))
    assert Measure("standard").resolve(layer) == (0.0, 1.0)
    assert Measure("explicit", 1.5, 0.5).resolve(layer) == (1.5, 0.5)
    with pytest.raises(ValueError, match="needs a layer"):
        Measure("data").resolve(None)


def test_check_metric():
    assert set(METRICS) == {"distance", "squared-distance", "cosine", "inner-product"}
    with pytest.raises(ValueError, match="metric must be one of"):
        check_metric("euclid")
    with pytest.raises(TypeError, match="metric must be a str"):
        check_metric(3)


# ---------------------------------------------------------------------------------------------
# geometry against direct computation


@pytest.mark.parametrize("mu, sigma", [(0.0, 1.0), (0.7, 0.4), (-1.2, 2.5)])
def test_layer_geometry_matches_quadrature(mu, sigma):
    rng = np.random.default_rng(1)
    alpha = rng.normal(scale=0.5, size=(3, 4))
    hinges = np.array([-1.0, -0.2, 0.4, 1.3])
    g = layer_geometry(alpha, hinges, mu, sigma)
    fs = [_activation(a, hinges) for a in alpha]
    for s in range(3):
        for t in range(3):
            inner = gaussian_expectation(lambda x: fs[s](x) * fs[t](x), mu, sigma)
            d2 = gaussian_expectation(lambda x: (fs[s](x) - fs[t](x)) ** 2, mu, sigma)
            assert g.inner_product[s, t] == pytest.approx(inner, rel=1e-6, abs=1e-9)
            assert g.squared_distance[s, t] == pytest.approx(d2, rel=1e-6, abs=1e-9)
    norms = np.sqrt(np.diag(g.inner_product))
    np.testing.assert_allclose(g.distance, np.sqrt(g.squared_distance))
    np.testing.assert_allclose(g.cosine, g.inner_product / np.outer(norms, norms), rtol=1e-12)
    np.testing.assert_allclose(g.norms, norms)
    assert g.rms_norm == pytest.approx(np.sqrt(np.mean(norms ** 2)))
    assert g.matrix("squared-distance") is g.squared_distance
    assert g.matrix("inner-product") is g.inner_product


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 6), st.integers(1, 5), st.integers(0, 10_000))
def test_distance_is_a_metric(t, m, seed):
    rng = np.random.default_rng(seed)
    g = layer_geometry(rng.normal(size=(t, m)), np.sort(rng.normal(size=m)), float(rng.normal()), 0.5 + rng.random())
    d = g.distance
    np.testing.assert_array_equal(d, d.T)
    assert np.all(np.diag(d) == 0) and np.all(d >= 0)
    # Triangle inequality (an L2 distance), up to rounding.
    assert np.all(d[:, None, :] <= d[:, :, None] + d[None, :, :].transpose(0, 2, 1) + 1e-9)
    assert np.all(np.abs(g.cosine) <= 1.0)


def test_nearest():
    g = layer_geometry(np.array([[0.0], [0.1], [1.0]]), np.array([0.0]))
    idx, dist = g.nearest()
    assert idx.tolist() == [1, 0, 1]
    assert dist[0] == pytest.approx(g.distance[0, 1])
    single = layer_geometry(np.array([[0.3]]), np.array([0.0]))
    idx, dist = single.nearest()
    assert idx.tolist() == [-1] and np.isnan(dist[0])


# ---------------------------------------------------------------------------------------------
# the whole checkpoint


def test_analyze_planted_ground_truth(analysis):
    assert analysis.task_names == tuple(TASK_NAMES)
    assert analysis.layer_names == LAYER_NAMES
    assert analysis.has_planted
    for la, groups in zip(analysis.layers, GROUPS):
        groups = np.array(groups)
        same = groups[:, None] == groups[None, :]
        # Identical tasks have distance exactly 0; different groups are apart.
        assert np.all(la.geometry.distance[same] == 0.0)
        assert np.all(la.geometry.distance[~same] > 1e-3)
        np.testing.assert_array_equal(la.planted, groups)
        assert la.ari == pytest.approx(1.0)
    # Layer 0: every task identical, one cluster.
    assert analysis.layers[0].flat().tolist() == [0] * 6
    assert np.isnan(analysis.layers[0].clustering.cophenetic_correlation)


def test_analyze_measure_and_selection(checkpoint):
    data = analyze(checkpoint, measure="data", layers=[2, "blocks.1.act"])
    assert [la.index for la in data.layers] == [2, 1]
    assert (data.layers[0].geometry.mu, data.layers[0].geometry.sigma) == pytest.approx((0.4, 1.0))
    std = analyze(checkpoint, measure="standard")
    assert {(la.geometry.mu, la.geometry.sigma) for la in std.layers} == {(0.0, 1.0)}
    explicit = analyze(checkpoint, measure="1,2")
    assert explicit.layers[0].geometry.mu == 1.0
    assert data.layer("blocks.1.act") is data.layers[1]
    assert data.layer(-1) is data.layers[1]
    with pytest.raises(ValueError, match="no analysed layer named 'x'"):
        data.layer("x")
    with pytest.raises(ValueError, match="out of range"):
        data.layer(5)
    with pytest.raises(TypeError, match="layer must be a name or an int"):
        data.layer(1.0)


def test_analyze_stats_and_names(checkpoint):
    a = analyze(checkpoint, task_names=list("abcdef"))
    assert a.task_names == tuple("abcdef")
    assert a.layers[0].clustering.labels == tuple("abcdef")
    np.testing.assert_allclose(a.layers[0].preact_std, 0.9)
    with pytest.raises(ValueError, match="task_names must have 6 entries"):
        analyze(checkpoint, task_names=["a"])
    with pytest.raises(ValueError, match="method must be one of"):
        analyze(checkpoint, method="fastest")


def test_analyze_without_ground_truth(tmp_path):
    from taan_core.checkpoint import load_checkpoint

    path = tmp_path / "c.pt"
    torch.save(make_checkpoint_dict(planted=False, stats=False), path)
    a = analyze(load_checkpoint(path))
    assert not a.has_planted and a.layers[1].ari is None and a.layers[1].planted is None
    # Without recorded statistics the data measure is N(0, 1).
    assert (a.layers[1].geometry.mu, a.layers[1].geometry.sigma) == (0.0, 1.0)
    assert a.layers[1].preact_mean is None


def test_cluster_labels_follow_clusters_across_layers(analysis):
    labels = analysis.cluster_labels()
    # Layer 1 splits layer 0's single cluster; the larger part keeps id 0.
    assert labels[0].tolist() == [0] * 6
    assert len(set(labels[1].tolist())) == 2 and 0 in labels[1]
    # A cluster of layer 2 that is a subset of a layer-1 cluster may keep that cluster's id.
    for lab in labels[2:]:
        assert len(np.unique(lab)) == 4
    assert [len(np.unique(x)) for x in analysis.cluster_labels(n_clusters=2)] == [1, 2, 2]
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        analysis.layers[0].flat(threshold=-1.0)


def test_history_geometry(checkpoint):
    snaps = history_geometry(checkpoint)
    assert [s.epoch for s in snaps] == [1, 2, 3, 4]
    last = analyze(checkpoint)
    np.testing.assert_allclose(snaps[-1].layers[2].distance, last.layers[2].geometry.distance, atol=1e-6)
    # One measure for every snapshot: the final recorded statistics.
    assert snaps[0].layers[2].mu == pytest.approx(0.4)
    two = history_geometry(checkpoint, layers=[1], max_snapshots=2)
    assert [s.epoch for s in two] == [1, 4] and [g.name for g in two[0].layers] == ["blocks.1.act"]
    with pytest.raises(ValueError, match="max_snapshots must be an int >= 1"):
        history_geometry(checkpoint, max_snapshots=0)


def test_history_geometry_without_history(tmp_path):
    from taan_core.checkpoint import load_checkpoint

    path = tmp_path / "c.pt"
    torch.save(make_checkpoint_dict(epochs=0), path)
    with pytest.raises(ValueError, match="no history snapshots"):
        history_geometry(load_checkpoint(path))


# ---------------------------------------------------------------------------------------------
# inputs


def test_select_layers_is_names_or_zero_based_indices():
    # The Python rule, as in torch: 0-based, negative from the end.
    names = ["a.act", "b.act", "c.act"]
    assert select_layers(names, None) == [0, 1, 2]
    assert select_layers(names, "all") == [0, 1, 2]
    assert select_layers(names, [2, "a.act"]) == [2, 0]
    assert select_layers(names, ["b.act", 0]) == [1, 0]
    assert select_layers(names, -1) == [2] and select_layers(names, "c.act,a.act") == [2, 0]


def test_parse_layers_is_the_command_lines_one_based_rule():
    names = ["a.act", "b.act", "c.act"]
    assert parse_layers("3,a.act", names) == [2, 0]
    assert parse_layers("1", names) == select_layers(names, [0]) == [0]
    assert parse_layers(None, names) == parse_layers("all", names) == [0, 1, 2]
    with pytest.raises(ValueError, match="position 4 is out of range 1..3"):
        parse_layers("4", names)
    with pytest.raises(ValueError, match="position 0 is out of range 1..3"):
        parse_layers("0", names)


@pytest.mark.parametrize("spec, match", [
    ("d.act", "no layer named 'd.act'; the layers are a.act, b.act, c.act"),
    ([3], r"index 3 is out of range for 3 layers \(0-based: 0..2\)"), ([-4], "out of range"),
    ("2", "0-based int index; 1-based positions are the command line's"),
    ([1, 1], "selected twice"), ([], "selection is empty"),
])
def test_select_layers_rejects(spec, match):
    with pytest.raises(ValueError, match=match):
        select_layers(["a.act", "b.act", "c.act"], spec)


def test_select_layers_no_layers():
    with pytest.raises(ValueError, match="no task-adaptive layers"):
        select_layers([], None)


def test_read_task_names(tmp_path):
    txt = tmp_path / "names.txt"
    txt.write_text("alpha\n\n beta \ngamma\n")
    assert read_task_names(txt, 3) == ["alpha", "beta", "gamma"]
    js = tmp_path / "names.json"
    js.write_text(json.dumps(["x", "y"]))
    assert read_task_names(js, 2) == ["x", "y"]


@pytest.mark.parametrize("content, name, match", [
    ("a\nb\n", "n.txt", "must hold 3 names"),
    ("a\nb\na\n", "n.txt", "repeats 'a'"),
    ('["a", 1, "b"]', "n.json", "JSON list of strings"),
    ('["a", "b"', "n.json", "not valid JSON"),
    ('["a", " ", "b"]', "n.json", "empty name"),
])
def test_read_task_names_rejects(tmp_path, content, name, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        read_task_names(path, 3)


def test_read_task_names_missing(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        read_task_names(tmp_path / "nope.txt", 3)


# ---------------------------------------------------------------------------------------------
# embedding


def test_classical_mds_recovers_planar_points():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(7, 2))
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    coords, explained = classical_mds(d, 2)
    np.testing.assert_allclose(np.linalg.norm(coords[:, None] - coords[None], axis=-1), d, atol=1e-10)
    assert explained.sum() == pytest.approx(1.0)
    assert explained[0] >= explained[1]
    # Deterministic orientation: the largest-magnitude coordinate of each axis is positive.
    for j in range(2):
        assert coords[np.argmax(np.abs(coords[:, j])), j] > 0


def test_classical_mds_edge_cases():
    coords, explained = classical_mds(np.zeros((3, 3)), 2)
    assert np.all(coords == 0) and np.all(explained == 0)
    coords, _ = classical_mds(np.array([[0.0, 2.0], [2.0, 0.0]]), 3)
    assert coords.shape == (2, 3)
    assert abs(coords[0, 0] - coords[1, 0]) == pytest.approx(2.0)
    assert classical_mds(np.zeros((0, 0)))[0].shape == (0, 2)
    with pytest.raises(ValueError, match=r"square matrix \(T, T\)"):
        classical_mds(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="n_components must be an int >= 1"):
        classical_mds(np.zeros((2, 2)), 0)


def test_a_non_finite_geometry_never_advises_the_measure_in_use():
    alpha = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"N\(0, 1e-300²\) is not finite: .*\(--measure standard, or 0,1, which "
                                         r"spans them\)$"):
        layer_geometry(alpha, np.array([-1.0, 0.0, 1.0]), 0.0, 1e-300, name="l0")
    # Under the standard measure already, only a measure spanning the hinges is advised.
    with pytest.raises(ValueError, match=r"N\(0, 1²\) is not finite: .*hinges in \[-1e\+300, 1e\+300\]; choose "
                                         r"another measure \(--measure 0,1e\+300, which spans them\)$") as info:
        layer_geometry(alpha, np.array([-1e300, 0.0, 1e300]), 0.0, 1.0, name="l0")
    assert "standard" not in str(info.value)


def test_separation_of_planted_groups(analysis):
    # Tasks of one planted group have identical alpha: their groups are perfectly separated.
    seps = analysis.separation()
    assert np.isnan(seps[0].ratio)  # one group: nothing to judge
    assert [s.ratio for s in seps[1:]] == [np.inf, np.inf]
    assert [s.k for s in seps] == [1, 2, 4]
    assert analysis.separation_note() is None


def test_separation_flags_a_continuum(tmp_path):
    from taan_core.checkpoint import load_checkpoint
    from tests.viz.viz_helpers import continuum_checkpoint_dict

    path = tmp_path / "c.pt"
    torch.save(continuum_checkpoint_dict(), path)
    a = analyze(load_checkpoint(path))
    seps = a.separation()
    assert seps[1].k >= 2 and seps[1].ratio < 0.5 and not seps[1].separated
    note = a.separation_note()
    assert note.startswith(f"groups not separated in layer 2 ({seps[1].ratio:.2f}):")
    assert "layer 1" not in note and "layer 3" not in note
    # Cut into two clusters instead of at the threshold: judged the same way.
    assert not a.separation(n_clusters=2)[1].separated


def test_geometry_computes_a_matrix_when_it_is_first_read():
    rng = np.random.default_rng(0)
    g = layer_geometry(rng.normal(size=(6, 4)), np.linspace(-1, 1, 4))
    assert not {"inner_product", "distance", "squared_distance", "cosine"} & set(vars(g))
    d = g.matrix("distance")
    assert set(vars(g)) & {"inner_product", "distance", "squared_distance", "cosine"} == {"distance"}
    assert g.matrix("distance") is d
    # The norms need no T x T matrix, and agree with the inner products' diagonal.
    np.testing.assert_allclose(g.norms ** 2, np.diag(g.inner_product), rtol=1e-13)
    np.testing.assert_allclose(d, np.sqrt(g.squared_distance), rtol=0, atol=0)


def test_geometry_release_drops_a_kept_matrix():
    g = layer_geometry(np.random.default_rng(1).normal(size=(5, 3)), np.linspace(-1, 1, 3))
    first = g.matrix("cosine")
    g.release("cosine")
    assert "cosine" not in vars(g)
    np.testing.assert_array_equal(g.matrix("cosine"), first)
    with pytest.raises(ValueError, match="metric must be one of"):
        g.release("cosines")
