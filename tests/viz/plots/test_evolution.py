"""taan_viz.plots.evolution: snapshots as small multiples on fixed scales, and the GIF."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from taan_viz.analysis import Analysis, history_geometry
from taan_viz.plots.evolution import animate_evolution, plot_curves_evolution, plot_evolution


@pytest.fixture
def snapshots(checkpoint):
    return history_geometry(checkpoint)


def test_plot_evolution_grid_and_fixed_scale(snapshots, analysis):
    fig = plot_evolution(analysis, snapshots, max_columns=3)
    images = [ax.images[0] for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert len(images) == 3 * 3
    assert len({(im.norm.vmin, im.norm.vmax) for im in images}) == 1
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["epoch 1\nstep 10", "epoch 3\nstep 30", "epoch 4\nstep 40"]
    # The last column is the final state, in the final order.
    order = analysis.sharing_tree().order
    np.testing.assert_allclose(np.asarray(images[-1].get_array()),
                               analysis.layers[2].geometry.distance[np.ix_(order, order)], atol=1e-6)


def test_plot_curves_evolution_fixed_axes(snapshots, analysis):
    fig = plot_curves_evolution(analysis, snapshots)
    rows = np.array([ax for ax in fig.axes]).reshape(3, 4)
    for row in rows:
        assert len({ax.get_ylim() for ax in row}) == 1 and len({ax.get_xlim() for ax in row}) == 1


def test_animate_evolution(tmp_path, snapshots, analysis):
    path = animate_evolution(analysis, snapshots, tmp_path / "e.gif", fps=4, dpi=40)
    with Image.open(path) as im:
        assert im.n_frames == 4 and im.format == "GIF"


def test_evolution_rejects(snapshots, analysis):
    with pytest.raises(ValueError, match="at least one history snapshot"):
        plot_evolution(analysis, [])
    first_only = Analysis(task_names=analysis.task_names, layers=analysis.layers[:1], measure=analysis.measure)
    with pytest.raises(ValueError, match="snapshots must cover the analysed layers"):
        plot_evolution(first_only, snapshots)
    with pytest.raises(ValueError, match="fps must be > 0"):
        animate_evolution(analysis, snapshots, "x.gif", fps=0)
    with pytest.raises(ValueError, match="metric must be one of"):
        plot_evolution(analysis, snapshots, metric="hamming")


def test_evolution_names_tasks(snapshots, analysis):
    fig = plot_evolution(analysis, snapshots, max_columns=2)
    names = set(analysis.task_names)
    panels = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    grid = np.array(panels).reshape(3, 2)
    # Rows named in the first column, columns below the last row, nowhere else.
    assert all({t.get_text() for t in ax.get_yticklabels()} == names for ax in grid[:, 0])
    assert all({t.get_text() for t in ax.get_xticklabels()} == names for ax in grid[-1, :])
    assert not [t for t in grid[0, 1].get_yticklabels() + grid[0, 1].get_xticklabels() if t.get_text()]


def test_old_argument_order_warns(snapshots, analysis):
    with pytest.warns(DeprecationWarning, match=r"pass plot_evolution\(analysis, snapshots\)"):
        fig = plot_evolution(snapshots, analysis, max_columns=2)
    assert fig.axes
    with pytest.raises(TypeError, match="analysis must be an Analysis"):
        plot_evolution(snapshots, snapshots)
