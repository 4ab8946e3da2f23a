"""taan_viz.compare: the known-distance readers, the Mantel test, runs against planted groups,
the figure and the ``taan-viz compare`` command."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from taan_viz.compare import (
    Comparison,
    KnownTasks,
    attribute_distance,
    compare_runs,
    encode_attributes,
    mantel_test,
    mantel_tests,
    read_known,
)
from tests.viz.viz_helpers import TASK_NAMES, make_checkpoint_dict


def _points_distance(t: int, seed: int, dims: int = 3) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(t, dims))
    return cdist(x, x)


def _write(path, text: str, bom: bool = False):
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def _matrix_csv(names, d, corner: str = "") -> str:
    lines = [",".join([corner, *names])]
    lines += [",".join([n, *(f"{v:.17g}" for v in row)]) for n, row in zip(names, d)]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# reading what is known


@pytest.mark.parametrize("bom", [False, True])
def test_matrix_is_read_and_reordered_to_the_run(tmp_path, bom):
    names = ["a", "b", "c", "d"]
    d = _points_distance(4, 0)
    path = _write(tmp_path / "m.csv", _matrix_csv(names, d, corner="task") + "\n", bom=bom)
    known = read_known(path)
    assert known.kind == "matrix" and known.task_names == tuple(names)
    order = ["c", "a", "d", "b"]
    np.testing.assert_allclose(known.distance(order), d[np.ix_([2, 0, 3, 1], [2, 0, 3, 1])], rtol=1e-15)
    assert known.extra(["a", "b", "c"]) == ["d"]
    # Columns in another order than the rows still form the same matrix.
    perm = [3, 1, 0, 2]
    lines = [",".join(["", *(names[j] for j in perm)])]
    lines += [",".join([names[i], *(f"{d[i, j]:.17g}" for j in perm)]) for i in range(4)]
    shuffled = read_known(_write(tmp_path / "s.csv", "\n".join(lines)), kind="matrix")
    np.testing.assert_allclose(shuffled.matrix, d, rtol=1e-15)


def test_attributes_rule_zscore_and_one_hot(tmp_path):
    text = "school,size,region,kind\nx,100,north,state\ny,300,south,state\nz,200,north,private\nw,200,east,state\n"
    known = read_known(_write(tmp_path / "attr.csv", text, bom=True))
    assert known.kind == "attributes" and list(known.columns) == ["size", "region", "kind"]
    size = np.array([100.0, 300.0, 200.0, 200.0])
    z = (size - size.mean()) / size.std()
    region = np.array([[0, 1, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]])  # east, north, south
    kind = np.array([[0, 1], [0, 1], [1, 0], [0, 1]])  # private, state
    expected = cdist(np.hstack([z[:, None], region, kind]), np.hstack([z[:, None], region, kind]))
    np.testing.assert_allclose(known.distance(["x", "y", "z", "w"]), expected, rtol=1e-14)
    # By hand: x and y differ in size (z = -1.41 and 1.41) and in region (2 in the square).
    assert known.distance(["x", "y", "z", "w"])[0, 1] == pytest.approx(math.sqrt(8 + 2), rel=1e-14)
    # Encoded over x and y alone, their sizes are z = -1 and 1.
    assert known.distance(["x", "y"])[0, 1] == pytest.approx(math.sqrt(4 + 2), rel=1e-14)
    assert known.encoding(["x", "y", "z", "w"]) == [
        "size: numeric, z-scored", "region: categorical, 3 values, one-hot", "kind: categorical, 2 values, one-hot"]
    np.testing.assert_array_equal(known.labels("region", ["w", "x"]), ["east", "north"])


def test_attributes_are_encoded_over_the_tasks_compared(tmp_path):
    # An ignored extra row moves neither the mean nor the std of the z-scores.
    known = read_known(_write(tmp_path / "a.csv", "task,v\na,1\nb,2\nc,4\nextra,1000\n"))
    np.testing.assert_allclose(known.distance(["a", "b", "c"]), attribute_distance({"v": ["1", "2", "4"]}))
    assert known.extra(["a", "b", "c"]) == ["extra"]


def test_encode_attributes_edge_cases():
    # A constant numeric column adds nothing; integer codes read as numbers.
    enc = encode_attributes({"c": ["5", "5", "5"], "g": ["1", "2", "3"]})
    assert enc.shape == (3, 2) and np.all(enc[:, 0] == 0)
    with pytest.raises(ValueError, match="column 'v': expected finite numbers, got 'inf'"):
        encode_attributes({"v": ["1", "inf"]})
    with pytest.raises(ValueError, match="one cell per task"):
        encode_attributes({"a": ["1"], "b": ["1", "2"]})
    with pytest.raises(ValueError, match="at least one attribute column"):
        encode_attributes({})


@pytest.mark.parametrize("text, kind, match", [
    (",a,b,c\na,0,1,x\nb,1,0,1\nc,x,1,0\n", "auto", r"row 'a' \(line 2\), column 'c': expected a number, got 'x'"),
    (",a,b,c\na,0,1,2\nb,1,0,1\nc,2.5,1,0\n", "auto",
     r"must be symmetric; row 'a', column 'c' is 2 but row 'c', column 'a' is 2.5"),
    (",a,b,c\na,0,1,2\nb,1,0.5,1\nc,2,1,0\n", "auto", r"row 'b', column 'b': expected 0 on the diagonal, got 0.5"),
    (",a,b,c\na,0,-1,2\nb,-1,0,1\nc,2,1,0\n", "auto", r"column 'b': expected a finite distance >= 0, got '-1'"),
    (",a,b,c\na,0,nan,2\nb,1,0,1\nc,2,1,0\n", "auto", r"expected a finite distance >= 0, got 'nan'"),
    (",a,b\na,0,1\nb,1,0,3\n", "auto", "line 3 has 4 cells, the header has 3"),
    ("task,v\na,1\na,2\n", "auto", r"task 'a' appears twice \(lines 2 and 3\)"),
    ("task,v\n,1\n", "auto", "line 2 has no task name"),
    ("task,v,\na,1,2\n", "auto", "column 3 of the header has no name"),
    ("task,v,w\na,1,\n", "auto", r"row 'a' \(line 2\), column 'w' is empty"),
    ("task,v\n", "auto", "expected a header row and one row per task"),
    ("task,v\na,1\nb,2\n", "matrix", "a task-by-task matrix needs the header to name the same tasks"),
    ("task,v\na,1\n", "square", "kind must be one of auto, matrix, attributes"),
])
def test_reader_errors_name_the_file_and_the_cell(tmp_path, text, kind, match):
    path = _write(tmp_path / "known.csv", text)
    with pytest.raises(ValueError, match=match) as err:
        read_known(path, kind=kind)
    if kind in ("auto", "matrix"):
        assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_missing_tasks_and_wrong_columns(tmp_path):
    path = _write(tmp_path / "k.csv", "task,group\na,x\nb,y\n")
    known = read_known(path)
    with pytest.raises(ValueError, match=r"k.csv: 2 task\(s\) of the run are missing from it: 'c', 'd'"):
        known.distance(["a", "c", "b", "d"])
    with pytest.raises(ValueError, match=r"no column 'size'; columns: group"):
        known.labels("size", ["a", "b"])
    matrix = read_known(_write(tmp_path / "m.csv", ",a,b\na,0,1\nb,1,0\n"))
    with pytest.raises(ValueError, match="grouping by a column needs a table of attributes"):
        matrix.labels("group", ["a", "b"])
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"task,v\n\xff\xfe,1\n")
    with pytest.raises(ValueError, match="bin.csv: not a UTF-8 text file"):
        read_known(binary)


# ----------------------------------------------------------------------------------------------
# the Mantel test


def test_mantel_statistic_by_hand():
    # Upper triangles (pairs 01, 02, 03, 12, 13, 23): 1..6 and 2,1,4,3,6,5. Every rank differs
    # by 1, so Spearman's rho = 1 - 6 * 6 / (6 * (36 - 1)) = 29/35.
    d1, d2 = np.zeros((4, 4)), np.zeros((4, 4))
    iu = np.triu_indices(4, 1)
    d1[iu], d2[iu] = [1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5]
    d1, d2 = d1 + d1.T, d2 + d2.T
    result = mantel_test(d1, d2, permutations=20_000, seed=3)
    assert result.statistic == pytest.approx(29 / 35, rel=1e-14)
    # The permutation p-value estimates the exact one: the share of the 24 relabellings of the
    # 4 tasks whose rho is at least the observed one.
    exact = []
    for p in itertools.permutations(range(4)):
        dp = d2[np.ix_(p, p)]
        exact.append(mantel_test(d1, dp, permutations=1).statistic >= 29 / 35 - 1e-12)
    assert result.pvalue == pytest.approx(np.mean(exact), abs=0.01)
    assert (result.permutations, result.n_tasks, result.method) == (20_000, 4, "spearman")


@pytest.mark.parametrize("method", ["spearman", "pearson"])
def test_mantel_statistic_matches_scipy(method):
    from scipy.stats import pearsonr, spearmanr

    d1, d2 = _points_distance(12, 0), _points_distance(12, 1)
    d2 = 0.5 * d1 + d2
    iu = np.triu_indices(12, 1)
    expected = (spearmanr if method == "spearman" else pearsonr)(d1[iu], d2[iu]).statistic
    assert mantel_test(d1, d2, permutations=99, method=method).statistic == pytest.approx(expected, rel=1e-12)
    # Ties get average ranks, as in scipy.
    rounded = np.round(d2, 1)
    assert mantel_test(d1, rounded, permutations=9).statistic == pytest.approx(
        spearmanr(d1[iu], rounded[iu]).statistic, rel=1e-12)


@pytest.mark.parametrize("t", [10, 30])
def test_identical_matrices_reach_the_smallest_p(t):
    # Enough tasks that no random relabelling is the identity (at 5 tasks, 1 in 120 is).
    d = _points_distance(t, 2)
    result = mantel_test(d, d, permutations=999)
    assert result.statistic == pytest.approx(1.0, rel=1e-14)
    assert result.pvalue == 1 / 1000


def test_independent_matrices_give_uniform_p_values():
    ps = np.array([mantel_test(_points_distance(8, 2 * k), _points_distance(8, 2 * k + 1), permutations=199,
                               seed=k).pvalue for k in range(60)])
    assert mantel_test(_points_distance(30, 10), _points_distance(30, 11)).pvalue > 0.01
    assert 0.35 < ps.mean() < 0.65 and (ps < 0.05).mean() < 0.15


def test_relabelling_both_matrices_changes_nothing():
    d1, d2 = _points_distance(15, 4), _points_distance(15, 5)
    d2 = d2 + 0.3 * d1
    p = np.random.default_rng(0).permutation(15)
    a = mantel_test(d1, d2, permutations=999, seed=1)
    b = mantel_test(d1[np.ix_(p, p)], d2[np.ix_(p, p)], permutations=999, seed=1)
    assert b.statistic == pytest.approx(a.statistic, rel=1e-13)
    assert abs(b.pvalue - a.pvalue) < 0.03
    # The same seed gives the same p-value; the statistic does not depend on the seed.
    assert mantel_test(d1, d2, permutations=999, seed=1).pvalue == a.pvalue


def _mantel_reference(d1, d2, permutations, seed, method):
    """The test as its definition reads, in float64: permute d2's tasks, correlate the pairs."""
    from scipy.stats import pearsonr, spearmanr

    iu = np.triu_indices(d1.shape[0], 1)
    corr = (lambda a, b: spearmanr(a, b)[0]) if method == "spearman" else (lambda a, b: pearsonr(a, b)[0])
    observed = corr(d1[iu], d2[iu])
    rng = np.random.default_rng(seed)
    perms = rng.permuted(np.tile(np.arange(d1.shape[0]), (permutations, 1)), axis=1)
    above = sum(corr(d1[iu], d2[np.ix_(p, p)][iu]) >= observed - 1e-10 for p in perms)
    return observed, (1 + above) / (1 + permutations)


@pytest.mark.parametrize("method", ["spearman", "pearson"])
@pytest.mark.parametrize("case", range(6))
def test_shared_relabellings_count_exactly_as_the_definition(case, method):
    # Weak associations (p-values in the bulk of the null, where float32 could misplace a
    # statistic) and tasks with identical rows (permuted statistics equal to the observed one).
    t = 9 + 3 * case
    known = _points_distance(t, 100 + case)
    layers = [_points_distance(t, 200 + case) + w * known for w in (0.0, 0.05, 0.3)]
    twins = _points_distance(t, 300 + case)
    twins[1], twins[:, 1] = twins[0], twins[:, 0]
    twins[0, 1] = twins[1, 0] = 0.0
    layers.append(twins)
    results = mantel_tests(known, layers, permutations=300, seed=case, method=method)
    for layer, result in zip(layers, results):
        rho, p = _mantel_reference(known, layer, 300, case, method)
        assert result.statistic == pytest.approx(rho, abs=1e-12)
        assert result.pvalue == p
        single = mantel_test(known, layer, permutations=300, seed=case, method=method)
        assert single.statistic == pytest.approx(result.statistic, abs=1e-14) and single.pvalue == result.pvalue


def _blocks(t: int, groups: int, scale: float, offset: float, seed: int) -> np.ndarray:
    """Distances that depend only on the tasks' groups: many relabellings tie with the identity."""
    label = np.arange(t) * groups // t
    values = offset + scale * np.random.default_rng(seed).random((groups, groups))
    d = (values + values.T)[label][:, label]
    np.fill_diagonal(d, 0.0)
    return d


@pytest.mark.parametrize("method", ["spearman", "pearson"])
@pytest.mark.parametrize("seed", range(4))
def test_statistics_tied_with_the_observed_one_are_counted_in_float64(seed, method):
    # Two groups of four tasks: 1 relabelling in 35 keeps the groups and ties exactly with the
    # observed statistic, which float32 rounding alone miscounts (without the float64 recheck
    # the Pearson half of these cases fails).
    known, layer = _blocks(8, 2, 0.37, 0.11, seed), _blocks(8, 2, 0.53, 0.07, seed + 50)
    layers = [layer, layer + 0.1 * known]
    for d, result in zip(layers, mantel_tests(known, layers, permutations=300, seed=seed, method=method)):
        rho, p = _mantel_reference(known, d, 300, seed, method)
        assert result.statistic == pytest.approx(rho, abs=1e-12) and result.pvalue == p


def test_mantel_edge_cases():
    d = _points_distance(6, 0)
    constant = np.ones((6, 6)) - np.eye(6)
    result = mantel_test(d, constant, permutations=9)
    assert math.isnan(result.statistic) and math.isnan(result.pvalue)
    with pytest.raises(ValueError, match="same shape"):
        mantel_test(d, _points_distance(5, 0))
    with pytest.raises(ValueError, match="at least 3 tasks"):
        mantel_test(d[:2, :2], d[:2, :2])
    with pytest.raises(ValueError, match="permutations must be an int >= 1"):
        mantel_test(d, d, permutations=0)
    with pytest.raises(ValueError, match="method must be one of spearman, pearson"):
        mantel_test(d, d, method="kendall")
    asym = d.copy()
    asym[0, 1] += 1
    with pytest.raises(ValueError, match="d2 must be symmetric"):
        mantel_test(d, asym)


# ----------------------------------------------------------------------------------------------
# runs against what is known


PLANTED_COUNTS = (2, 4, 8)


def _planted(tmp_path, t: int = 32, seed: int = 0, noise: float = 0.01):
    """A checkpoint whose alpha encodes nested planted groups (2, 4, 8 per layer) plus a little
    noise, so that the analysis recovers them and no two tasks are identical."""
    groups = [[i * c // t for i in range(t)] for c in PLANTED_COUNTS]
    names = [f"task_{i:02d}" for i in range(t)]
    obj = make_checkpoint_dict(groups=groups, task_names=names, epochs=1, seed=seed)
    gen = torch.Generator().manual_seed(seed + 100)
    for layer in obj["layers"]:
        layer["alpha"] = layer["alpha"] + noise * torch.randn(layer["alpha"].shape, generator=gen)
    path = tmp_path / f"seed-{seed}" / "checkpoint.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path, groups, names


def _planted_csv(tmp_path, groups, names, extra: bool = True):
    # Group ids written as text, so that the columns are categorical.
    lines = ["task," + ",".join(f"g{l + 1}" for l in range(len(groups)))]
    lines += [name + "," + ",".join(f"c{g[i]}" for g in groups) for i, name in enumerate(names)]
    if extra:
        lines.append("not_a_task," + ",".join("c0" for _ in groups))
    return _write(tmp_path / "planted.csv", "\n".join(lines) + "\n")


def _analyze(path):
    from taan_core.checkpoint import load_checkpoint
    from taan_viz.analysis import analyze

    return analyze(load_checkpoint(path))


def test_planted_groups_are_found_at_every_layer(tmp_path):
    from taan_core.relatedness import adjusted_rand_index

    path, groups, names = _planted(tmp_path)
    analysis = _analyze(path)
    labels = analysis.cluster_labels()
    assert [adjusted_rand_index(g, lab) for g, lab in zip(groups, labels)] == [1.0, 1.0, 1.0]
    csv = _planted_csv(tmp_path, groups, names)
    cmp = compare_runs(analysis, csv, permutations=9999, seed=0)
    assert isinstance(cmp, Comparison) and cmp.ignored == ("not_a_task",) and cmp.kind == "attributes"
    for la in cmp.layers:
        assert la.pvalue < 0.001 and la.rho > 0.3, (la.name, la.rho, la.pvalue)
        assert la.run_rho.tolist() == [la.rho]
    # Each layer against its own planted column alone: significant, and its groups score ARI 1.
    known = read_known(csv)
    for l in range(3):
        column = f"g{l + 1}"
        own = KnownTasks(source="own.csv", kind="attributes", task_names=known.task_names,
                         columns={column: known.columns[column]})
        (la,) = compare_runs(analysis, own, grouping=column, permutations=9999, layers=[l]).layers
        assert la.pvalue < 0.001 and la.ari.tolist() == [1.0], (la.name, la.pvalue, la.ari)


def test_planted_against_a_shuffled_truth_is_not_significant(tmp_path):
    path, groups, names = _planted(tmp_path)
    shuffled = list(np.random.default_rng(5).permutation(names))
    cmp = compare_runs(_analyze(path), _planted_csv(tmp_path, groups, shuffled), permutations=999)
    assert all(la.pvalue > 0.01 for la in cmp.layers)


def test_several_runs_give_the_spread(tmp_path):
    analyses = []
    for seed in range(3):
        path, groups, names = _planted(tmp_path, seed=seed, noise=0.05)
        analyses.append(_analyze(path))
    known = read_known(_planted_csv(tmp_path, groups, names, extra=False))
    cmp = compare_runs(analyses, known, runs=["s0", "s1", "s2"], grouping="g3", permutations=199, layers=["blocks.2.act"])
    (la,) = cmp.layers
    assert la.distance.shape == (3, 32, 32) and la.run_rho.shape == (3,) and la.ari.shape == (3,)
    assert la.spread["min"] <= la.spread["mean"] <= la.spread["max"]
    assert la.spread["std"] == pytest.approx(np.std(la.run_rho))
    # The layer's own test is the one of the mean distance over runs.
    pooled = mantel_test(known.distance(names), la.distance.mean(axis=0), permutations=199)
    assert (la.rho, la.pvalue) == (pooled.statistic, pooled.pvalue)
    doc = json.loads(json.dumps(cmp.to_dict(), allow_nan=False))
    layer = doc["layers"][0]
    assert layer["position"] == 3 and layer["n_tasks"] == 32 and layer["permutations"] == 199
    assert sorted(layer["runs"]) == ["s0", "s1", "s2"] and set(layer["runs"]["s1"]) == {"rho", "p", "ari"}
    assert doc["against"]["kind"] == "attributes" and doc["grouping"] == "g3"
    from taan_viz.plots.compare import plot_compare

    fig = plot_compare(cmp)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["s0", "s1", "s2", "median per bin"]
    assert "runs: ρ " in fig.axes[0].get_title() and "mean distance: ρ = " in fig.axes[0].get_title()


def test_compare_runs_errors(tmp_path, checkpoint, analysis):
    known = KnownTasks(source="k.csv", kind="attributes", task_names=tuple(TASK_NAMES[:5]),
                       columns={"g": ("a", "a", "b", "b", "c")})
    with pytest.raises(ValueError, match=r"k.csv: 1 task\(s\) of the run are missing from it: 'birds'"):
        compare_runs(analysis, known)
    full = KnownTasks(source="k.csv", kind="attributes", task_names=tuple(TASK_NAMES),
                      columns={"g": ("a", "a", "b", "b", "c", "c")})
    with pytest.raises(ValueError, match="no column 'h'"):
        compare_runs(analysis, full, grouping="h")
    with pytest.raises(ValueError, match="runs must have 1 labels"):
        compare_runs([analysis], full, runs=["a", "b"])
    with pytest.raises(ValueError, match="give at least one analysis"):
        compare_runs([], full)
    from taan_viz.analysis import analyze

    fewer = analyze(checkpoint, layers=[1, 2])
    with pytest.raises(ValueError, match="runs must have the same tasks and analysed layers"):
        compare_runs([analysis, fewer], full)
    # Layer 1 of the fixture: every task has the same activation, so rho is undefined (None in JSON).
    cmp = compare_runs(analysis, full, permutations=9)
    assert math.isnan(cmp.layers[0].rho) and json.loads(json.dumps(cmp.to_dict()))["layers"][0]["rho"] is None


# ----------------------------------------------------------------------------------------------
# the figure


def test_plot_compare(tmp_path):
    from taan_viz.plots import save_figure
    from taan_viz.plots.compare import format_p, plot_compare

    path, groups, names = _planted(tmp_path)
    cmp = compare_runs(_analyze(path), _planted_csv(tmp_path, groups, names), grouping="g2", permutations=99)
    fig = plot_compare(cmp)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 3
    assert "layer 2  blocks.1.act" in axes[1].get_title() and "ρ = " in axes[1].get_title()
    assert "p = 0.01" in axes[0].get_title() and "ARI vs g2" in axes[0].get_title()
    assert len(axes[0].collections[0].get_offsets()) == 32 * 31 // 2
    save_figure(fig, tmp_path / "c.svg")
    assert "<image" not in (tmp_path / "c.svg").read_text()  # 496 points: vector
    save_figure(plot_compare(cmp, rasterized=True, alpha=0.5, max_columns=2), tmp_path / "r.svg")
    assert "<image" in (tmp_path / "r.svg").read_text()
    assert format_p(float("nan")) == "p undefined" and format_p(1e-4) == "p = 0.0001"
    with pytest.raises(ValueError, match="max_columns"):
        plot_compare(cmp, max_columns=0)


# ----------------------------------------------------------------------------------------------
# taan-viz compare


def _run(*args) -> int:
    from taan_viz.cli import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return exc.value.code


def test_cli_compare_one_run(tmp_path, capsys):
    from PIL import Image

    path, groups, names = _planted(tmp_path)
    csv = _planted_csv(tmp_path, groups, names)
    assert _run("compare", path, "--against", csv, "--group-by", "g3", "--permutations", "999", "--dpi", "60") == 0
    out = path.parent / "checkpoint-viz"
    captured = capsys.readouterr()
    assert captured.out.split() == [str(out / "compare.png"), str(out / "compare.json")]
    assert "1 row(s) of tasks not in the runs ignored (not_a_task)" in captured.err
    table = [line for line in captured.err.splitlines() if not line.startswith("taan-viz:")]
    assert table[0].split() == ["layer", "name", "rho", "p", "ARI", "vs", "g3"] and len(table) == 4
    assert table[3].split()[:2] == ["3", "blocks.2.act"] and table[3].split()[-1] == "1.000"
    doc = json.loads((out / "compare.json").read_text())
    assert [la["p"] for la in doc["layers"]] == [0.001] * 3
    assert doc["layers"][2]["ari"] == 1.0 and doc["permutations"] == 999 and doc["against"]["ignored_tasks"] == [
        "not_a_task"]
    with Image.open(out / "compare.png") as im:
        assert len(im.info["Checkpoint-SHA256"]) == 64
    # Files are not replaced without --overwrite.
    assert _run("compare", path, "--against", csv) == 2
    assert "compare.png exists; pass --overwrite" in capsys.readouterr().err


def test_cli_compare_several_runs_and_a_matrix(tmp_path, capsys):
    for seed in range(2):
        path, groups, names = _planted(tmp_path / "runs", seed=seed)
    known = read_known(_planted_csv(tmp_path, groups, names)).distance(names)
    matrix = _write(tmp_path / "m.csv", _matrix_csv(names, known))
    assert _run("compare", tmp_path / "runs", "--against", matrix, "--kind", "matrix", "--permutations", "99",
                "--layers", "2,3", "--dpi", "40", "--format", "svg") == 0
    out = tmp_path / "runs" / "compare"
    assert sorted(p.name for p in out.iterdir()) == ["compare.json", "compare.svg"]
    doc = json.loads((out / "compare.json").read_text())
    assert [la["position"] for la in doc["layers"]] == [2, 3] and sorted(doc["layers"][0]["runs"]) == ["seed-0", "seed-1"]
    assert set(doc["layers"][0]["spread"]) == {"mean", "std", "min", "max"} and doc["against"]["kind"] == "matrix"
    assert "runs: mean rho" in capsys.readouterr().err


def _one_line_error(capsys, *args) -> str:
    assert _run(*args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("taan-viz: error: ") and "Traceback" not in err
    return err


def test_cli_compare_errors(tmp_path, checkpoint_path, capsys):
    hostile = _write(tmp_path / "hostile.csv", ",cars,boats\ncars,0,1\nboats,2,0\n")
    err = _one_line_error(capsys, "compare", checkpoint_path, "--against", hostile)
    assert str(hostile) in err and "must be symmetric" in err
    missing = _write(tmp_path / "few.csv", "task,kind\ncars,vehicle\nboats,vehicle\n")
    assert f"{missing}: 4 task(s) of the run are missing from it: 'trains'" in _one_line_error(
        capsys, "compare", checkpoint_path, "--against", missing)
    assert "no such file" in _one_line_error(capsys, "compare", checkpoint_path, "--against", tmp_path / "nope.csv").lower()
    good = _write(tmp_path / "ok.csv", "task,kind\n" + "".join(f"{n},k{i % 2}\n" for i, n in enumerate(TASK_NAMES)))
    assert "--kind must be one of auto, matrix, attributes" in _one_line_error(
        capsys, "compare", checkpoint_path, "--against", good, "--kind", "table")
    assert "--permutations must be >= 1" in _one_line_error(
        capsys, "compare", checkpoint_path, "--against", good, "--permutations", "0")
    assert "no column 'size'" in _one_line_error(capsys, "compare", checkpoint_path, "--against", good, "--group-by", "size")
    assert "Missing option '--against'" in _one_line_error(capsys, "compare", checkpoint_path)


def test_each_layer_against_its_own_columns(tmp_path):
    path, groups, names = _planted(tmp_path)
    analysis = _analyze(path)
    csv = _planted_csv(tmp_path, groups, names)
    cmp = compare_runs(analysis, csv, columns=["g1", "g2", "g3"], grouping="columns", permutations=9999)
    known = read_known(csv)
    for l, la in enumerate(cmp.layers):
        assert la.columns == (f"g{l + 1}",)
        np.testing.assert_array_equal(la.known, known.distance(list(names), [f"g{l + 1}"]))
        assert la.pvalue < 0.001 and la.ari.tolist() == [1.0]
    # One entry serves every layer; several columns join with a sequence.
    both = compare_runs(analysis, csv, columns=[["g1", "g2"]], permutations=99)
    assert [la.columns for la in both.layers] == [("g1", "g2")] * 3
    assert cmp.to_dict()["layers"][1]["columns"] == ["g2"]
    with pytest.raises(ValueError, match=r"one entry for all layers or one per compared layer \(3\), got 2"):
        compare_runs(analysis, csv, columns=["g1", "g2"])
    with pytest.raises(ValueError, match="no column 'nope'"):
        compare_runs(analysis, csv, columns=["nope"])
    with pytest.raises(ValueError, match="give columns too"):
        compare_runs(analysis, csv, grouping="columns")
    with pytest.raises(ValueError, match="needs one column per layer"):
        compare_runs(analysis, csv, columns=[["g1", "g2"]], grouping="columns")


def test_cli_compare_columns(tmp_path, capsys):
    path, groups, names = _planted(tmp_path)
    csv = _planted_csv(tmp_path, groups, names)
    assert _run("compare", path, "--against", csv, "--columns", "g1,g2,g3", "--group-by", "columns",
                "--permutations", "999", "--dpi", "60") == 0
    table = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("taan-viz:")]
    assert table[0].split()[:5] == ["layer", "name", "against", "rho", "p"]
    assert [row.split()[2] for row in table[1:]] == ["g1", "g2", "g3"]
    assert _run("compare", path, "--against", csv, "--columns", "g1,zz", "--overwrite") == 2
