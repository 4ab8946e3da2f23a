"""taan_viz.plots.curves: the activation functions, their colours, ranges and small multiples."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.colors import to_hex

from tests.viz.viz_helpers import TASK_NAMES
from taan_viz.plots._style import category_color
from taan_viz.plots.curves import activation_curves, activation_values, curve_range, plot_curve_grid, plot_curves


def test_activation_values():
    alpha = np.array([[0.0, 0.0], [1.0, -2.0]])
    hinges = np.array([-1.0, 1.0])
    x = np.array([-2.0, 0.0, 2.0])
    y = activation_values(alpha, hinges, x)
    np.testing.assert_allclose(y[0], np.maximum(x, 0))
    expected = np.maximum(x, 0) + np.maximum(-1 - x, 0) - 2 * np.maximum(1 - x, 0)
    np.testing.assert_allclose(y[1], expected)
    with pytest.raises(ValueError, match=r"alpha must have shape \(T, M\) with M = len\(hinges\) = 2"):
        activation_values(np.zeros((2, 3)), hinges, x)


def test_curve_range():
    assert curve_range(1.0, 2.0) == (-6.0, 8.0)
    lo, hi = curve_range(0.0, 1.0, [-5.0, 0.0, 100.0])
    assert lo < -5.0 and hi == 3.5  # near hinges widen the range, far ones do not


def _lines(ax):
    return [c for c in ax.collections if isinstance(c, LineCollection)]


def test_plot_curves_colours_follow_the_palette(analysis):
    fig = plot_curves(analysis)
    axes = [ax for ax in fig.axes if _lines(ax)]
    assert len(axes) == 3
    palette = analysis.palette()
    for la, ax in zip(analysis.layers, axes):
        (lines,) = _lines(ax)
        segs = lines.get_segments()
        assert len(segs) == 6
        # Every layer colours a task the same way: the analysis' one palette.
        drawn = {to_hex(c) for c in lines.get_colors()}
        assert drawn == {palette.color(t).lower() for t in range(6)}
        # Curves are F_t on the range that covers the measure.
        lo, hi = curve_range(la.geometry.mu, la.geometry.sigma, la.geometry.hinges)
        assert ax.get_xlim() == pytest.approx((lo, hi))
        ys = sorted(tuple(np.round(s[:, 1], 9)) for s in segs)
        want = sorted(tuple(np.round(r, 9)) for r in activation_values(la.geometry.alpha, la.geometry.hinges, segs[0][:, 0]))
        assert ys == want
        assert ax.get_legend() is None
    # One legend for the figure, outside the panels: a colour group per entry, then relu etc.
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(texts) == palette.num_keys + 3 and {"relu(x)", "hinges bₘ"} <= set(texts)


def test_plot_curves_residual_row(analysis):
    fig = plot_curves(analysis, layers=[2], residual=True, relu=False)
    axes = [ax for ax in fig.axes if _lines(ax)]
    assert len(axes) == 2 and axes[1].get_ylabel().startswith("Fₜ(x) − relu")
    x = _lines(axes[1])[0].get_segments()[0][:, 0]
    # Residuals vanish beyond the last hinge.
    right = x > analysis.layers[2].geometry.hinges.max()
    for seg in _lines(axes[1])[0].get_segments():
        np.testing.assert_allclose(seg[right, 1], 0.0, atol=1e-12)
    assert len(axes[0].get_lines()) == 1  # hinge ticks only, no relu line


def test_curve_grid(analysis):
    fig = plot_curve_grid(analysis, 2)
    panels = [ax for ax in fig.axes if ax.get_visible() and _lines(ax)]
    assert len(panels) == 6
    order = analysis.layers[2].clustering.order
    assert [ax.get_title() for ax in panels] == [TASK_NAMES[i] for i in order]
    few = plot_curve_grid(analysis, 2, max_tasks=4)
    assert len([ax for ax in few.axes if ax.get_visible()]) == 4
    assert "first 4 of 6 tasks" in few._suptitle.get_text()
    with pytest.raises(ValueError, match="max_tasks must be an int >= 1"):
        plot_curve_grid(analysis, 0, max_tasks=0)


def test_axes_level_curves():
    plt.figure()
    ax = activation_curves(np.array([[0.2, -0.1]]), np.array([-0.5, 0.5]), labels=["only"])
    assert ax is plt.gca() and ax.get_legend() is not None
    with pytest.raises(ValueError, match="labels must have 1 entries"):
        activation_curves(np.zeros((1, 2)), np.zeros(2), labels=["a", "b"])
    with pytest.raises(ValueError, match="clusters must have 1 entries"):
        activation_curves(np.zeros((1, 2)), np.zeros(2), clusters=[0, 1])
    with pytest.raises(ValueError, match="sigma must be > 0"):
        activation_curves(np.zeros((1, 2)), np.zeros(2), sigma=0.0)



def test_plot_curves_rejects(analysis):
    with pytest.raises(ValueError, match="at least one layer"):
        plot_curves(analysis, layers=[])
    with pytest.raises(ValueError, match="no analysed layer named 'x'"):
        plot_curves(analysis, layers=["x"])


def test_legend_keeps_long_names_whole(tmp_path):
    from taan_viz.plots.curves import plot_curves
    from tests.viz.viz_helpers import LONG_TASK_NAMES, rendered_boxes, wide_runs

    analysis = wide_runs(tmp_path, seeds=(0,))[0]
    fig = plot_curves(analysis)
    texts = fig.legends[0].get_texts()
    shown = {t.get_text() for t in texts}
    assert set(LONG_TASK_NAMES) <= shown and not any("…" in s for s in shown)
    for box in rendered_boxes(fig, texts):
        assert fig.bbox.x0 - 1 <= box.x0 and box.x1 <= fig.bbox.x1 + 1


def test_many_tasks_are_drawn_as_group_means_and_bands():
    from matplotlib.collections import PolyCollection

    rng = np.random.default_rng(0)
    t, m = 200, 6
    groups = np.repeat([0, 1], t // 2)
    alpha = rng.normal(size=(2, m))[groups] + 0.05 * rng.normal(size=(t, m))
    hinges = np.linspace(-1, 1, m)
    ax = activation_curves(alpha, hinges, clusters=groups, ax=plt.figure().add_subplot(), density=False)
    assert not [c for c in ax.collections if isinstance(c, LineCollection)]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    means = [line for line in ax.lines if line.get_linestyle() != "None" and line.get_color() != "0.25"]
    assert len(means) == 2
    # The mean of group 0 is the mean of its tasks' curves.
    y = activation_values(alpha[groups == 0], hinges, means[-1].get_xdata()).mean(axis=0)
    np.testing.assert_allclose(means[-1].get_ydata(), y, rtol=1e-12)
    assert any("bands: 10–90 % of its tasks" in text.get_text() for text in ax.get_legend().get_texts())
    # Forced off, every task gets its line again.
    ax = activation_curves(alpha, hinges, clusters=groups, ax=plt.figure().add_subplot(), summary=False)
    assert sum(len(c.get_segments()) for c in ax.collections if isinstance(c, LineCollection)) == t
