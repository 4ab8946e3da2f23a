"""taan_viz.plots.training: one axis per metric kind, integer epochs, legends off the data."""

from __future__ import annotations

import pytest

from tests.viz.viz_helpers import TASK_NAMES, make_checkpoint_dict
from taan_viz.plots.training import plot_training


def _metrics(epochs=5, rmse=True):
    metrics = make_checkpoint_dict(epochs=epochs)["metrics"]
    if rmse:
        for m in metrics:
            m["val"]["mean"]["rmse"] = 3.0 / m["epoch"]
    return metrics


def test_one_axis_per_metric_kind():
    fig = plot_training(_metrics())
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_ylabel() for ax in axes] == ["training loss", "validation accuracy", "validation rmse",
                                                "validation main"]
    # RMSE never shares an axis with accuracy.
    by_label = {ax.get_ylabel(): [line.get_label() for line in ax.get_lines()] for ax in axes}
    assert by_label["validation rmse"] == ["val.mean.rmse"]
    assert "val.mean.rmse" not in by_label["validation accuracy"]


def test_integer_epochs_and_legends_outside():
    fig = plot_training(_metrics(epochs=7))
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    for ax in [ax for ax in fig.axes if ax.get_visible()]:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
        legend = ax.get_legend()
        assert legend is not None
        # Below the axes: the legend's box does not overlap the data area.
        assert legend.get_window_extent(renderer).y1 <= ax.get_window_extent(renderer).y0


def test_per_task_curves_for_few_tasks():
    fig = plot_training(_metrics())
    acc = [ax for ax in fig.axes if ax.get_ylabel() == "validation accuracy"][0]
    labels = [line.get_label() for line in acc.get_lines()]
    assert [f"{n} (task)" for n in TASK_NAMES] == [lab for lab in labels if lab.endswith("(task)")]


def test_rejects_empty():
    with pytest.raises(ValueError, match="no per-epoch metrics"):
        plot_training([])
