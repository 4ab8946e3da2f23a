"""taan_viz.frames (the analysis as DataFrames) and the seaborn clustermap built on them."""

from __future__ import annotations

import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_hex, to_rgb

import taan_viz
from tests.viz.viz_helpers import GROUPS, LAYER_NAMES, TASK_NAMES
from taan_viz.frames import distance_frame, layers_frame, tasks_frame
from taan_viz.plots.cluster import seaborn_clustermap


def test_distance_frame_is_the_layer_matrix_labelled_by_task(analysis):
    for metric in ("distance", "cosine", "inner-product"):
        frame = distance_frame(analysis, 1, metric=metric)
        assert frame.shape == (6, 6)
        assert list(frame.index) == list(frame.columns) == TASK_NAMES
        assert frame.index.name == frame.columns.name == "task"
        np.testing.assert_array_equal(frame.to_numpy(), analysis.layers[1].geometry.matrix(metric))
    # A copy: editing the frame leaves the analysis alone.
    frame = distance_frame(analysis)
    frame.iloc[0, 1] = -1.0
    assert analysis.layers[-1].geometry.distance[0, 1] != -1.0
    assert distance_frame(analysis, "blocks.0.act").equals(distance_frame(analysis, 0))


def test_tasks_frame_rows_and_values(analysis):
    frame = tasks_frame(analysis)
    assert frame.shape == (6 * 3, 9)
    assert list(frame.columns) == ["task", "layer", "layer_name", "group", "norm", "nearest",
                                   "nearest_distance", "planted", "order"]
    groups = analysis.cluster_labels()
    for k, la in enumerate(analysis.layers):
        rows = frame[frame["layer"] == la.index + 1]
        assert list(rows["task"]) == TASK_NAMES
        assert set(rows["layer_name"]) == {LAYER_NAMES[k]}
        np.testing.assert_array_equal(rows["group"].to_numpy(), groups[k] + 1)
        np.testing.assert_allclose(rows["norm"].to_numpy(), la.geometry.norms)
        assert list(rows["planted"]) == [g + 1 for g in GROUPS[k]]
        np.testing.assert_array_equal(np.asarray(TASK_NAMES)[la.clustering.order],
                                      rows.sort_values("order")["task"].to_numpy())
        d = la.geometry.distance
        for t, (near, near_d) in enumerate(zip(rows["nearest"], rows["nearest_distance"])):
            s = TASK_NAMES.index(near)
            assert s != t
            assert near_d == d[t, s] == min(d[t, u] for u in range(6) if u != t)
    # The planted groups of the synthetic checkpoint: at the deepest layer tasks 0 and 1 share one.
    deep = frame[frame["layer"] == 3].set_index("task")
    assert deep.loc["cars", "nearest_distance"] == pytest.approx(0.0, abs=1e-9)
    assert deep.loc["cars", "group"] == deep.loc["boats", "group"] != deep.loc["cats", "group"]


def test_tasks_frame_by_count_and_without_planted(analysis, tmp_path):
    import torch

    from taan_core.checkpoint import load_checkpoint
    from taan_viz.analysis import analyze
    from tests.viz.viz_helpers import make_checkpoint_dict

    frame = tasks_frame(analysis, n_clusters=2)
    by_count = analysis.cluster_labels(n_clusters=2)
    np.testing.assert_array_equal(frame["group"].to_numpy(), np.concatenate(by_count) + 1)
    # Layer 1's tasks are identical (one planted group): no cut makes two clusters of them.
    assert list(frame.groupby("layer")["group"].nunique()) == [1, 2, 2]
    path = tmp_path / "unplanted.pt"
    torch.save(make_checkpoint_dict(planted=False), path)
    bare = analyze(load_checkpoint(path))
    assert tasks_frame(bare)["planted"].isna().all()
    assert layers_frame(bare)["ari"].isna().all()


def test_layers_frame_rows_and_values(analysis):
    frame = layers_frame(analysis)
    assert frame.shape == (3, 10)
    assert list(frame["layer"]) == [1, 2, 3]
    assert list(frame["layer_name"]) == LAYER_NAMES
    groups = analysis.cluster_labels()
    for row, la, lab in zip(frame.itertuples(), analysis.layers, groups):
        assert (row.mu, row.sigma) == (la.geometry.mu, la.geometry.sigma)
        off = la.geometry.distance[~np.eye(6, dtype=bool)]
        assert row.mean_distance == pytest.approx(off.mean())
        assert row.max_distance == pytest.approx(off.max())
        assert row.groups == len(set(lab.tolist()))
        assert row.ari == pytest.approx(la.ari)
        assert row.rms_norm == pytest.approx(la.geometry.rms_norm)
    # Planted 1, 2 and 4 groups, recovered exactly by the tree at the default threshold.
    assert list(frame["groups"]) == [1, 2, 4]


def test_frames_reject(analysis):
    with pytest.raises(TypeError, match="analysis must be a taan_viz.Analysis, got dict"):
        tasks_frame({})
    with pytest.raises(ValueError, match="metric"):
        distance_frame(analysis, metric="euclid")
    with pytest.raises(ValueError, match="threshold must be a finite number >= 0"):
        layers_frame(analysis, threshold=-1.0)


def test_frames_are_reexported_lazily():
    assert taan_viz.tasks_frame is tasks_frame
    assert taan_viz.seaborn_clustermap is seaborn_clustermap
    assert {"distance_frame", "tasks_frame", "layers_frame", "seaborn_clustermap"} <= set(dir(taan_viz))


def test_seaborn_clustermap_follows_the_analysis(analysis):
    la = analysis.layers[-1]
    palette = analysis.palette()
    grid = seaborn_clustermap(analysis, metric="cosine")
    try:
        order = la.clustering.order.tolist()
        assert list(grid.dendrogram_row.reordered_ind) == order
        assert list(grid.dendrogram_col.reordered_ind) == order
        np.testing.assert_array_equal(grid.dendrogram_row.linkage, la.clustering.linkage)
        assert [t.get_text() for t in grid.ax_heatmap.get_yticklabels()] == [TASK_NAMES[i] for i in order]
        # Row colours: one strip cell per task, in leaf order, the palette's colour of that task.
        strip = grid.ax_row_colors.collections[0]
        cells = np.asarray(strip.get_facecolors())[:, :3]
        assert cells.shape == (6, 3)
        np.testing.assert_allclose(cells, [to_rgb(palette.color(i)) for i in order], atol=1e-6)
        col_cells = np.asarray(grid.ax_col_colors.collections[0].get_facecolors())[:, :3]
        np.testing.assert_allclose(col_cells, cells, atol=1e-6)
        # The drawn matrix is the cosine, rows and columns in leaf order.
        drawn = np.asarray(grid.data2d)
        np.testing.assert_allclose(drawn, la.geometry.cosine[np.ix_(order, order)])
        assert [to_hex(t.get_color()) for t in grid.ax_heatmap.get_yticklabels()] == [
            to_hex(t.get_color()) for t in grid.ax_heatmap.get_xticklabels()]
    finally:
        plt.close(grid.figure)


def test_seaborn_clustermap_rejects(analysis):
    with pytest.raises(ValueError, match="labels must be one of"):
        seaborn_clustermap(analysis, labels="some")
    with pytest.raises(ValueError, match="palette must colour 6 tasks, got 2"):
        from taan_viz.palette import task_palette

        seaborn_clustermap(analysis, palette=task_palette([np.array([0, 1])], ["x"]))


def test_importing_taan_viz_loads_neither_pandas_nor_seaborn():
    """The frames and the seaborn figure import pandas and seaborn when called, not before
    (``taan-viz heatmap``'s own check is tests/viz/test_cli.py)."""
    code = ("import sys, taan_viz, taan_viz.plots, taan_viz.frames, taan_viz.plots.cluster\n"
            "print(sorted(m for m in ('pandas', 'seaborn') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


def test_one_task(tmp_path):
    import torch

    from taan_core.checkpoint import load_checkpoint
    from taan_viz.analysis import analyze
    from tests.viz.viz_helpers import make_checkpoint_dict

    path = tmp_path / "one.pt"
    torch.save(make_checkpoint_dict(groups=[[0]] * 3, task_names=["solo"]), path)
    single = analyze(load_checkpoint(path))
    frame = tasks_frame(single)
    assert frame.shape == (3, 9)
    assert frame["nearest"].isna().all() and frame["nearest_distance"].isna().all()
    assert layers_frame(single)["max_distance"].isna().all()
    with pytest.raises(ValueError, match="seaborn_clustermap needs at least 2 tasks, got 1"):
        seaborn_clustermap(single)
