"""taan_viz.plots.heatmap: panels, order (labels travel with values), colour scales, strips."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from tests.viz.viz_helpers import TASK_NAMES
from taan_viz.plots.heatmap import heatmap, metric_norm, plot_heatmaps


def _panels(fig):
    return [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>" and ax.images[0].get_array().shape[0] > 1
            and ax.images[0].get_array().shape[0] == ax.images[0].get_array().shape[1]]


def test_plot_heatmaps_panels_labels_and_values_travel_together(analysis):
    fig = plot_heatmaps(analysis, order_by=2, annot=True)
    assert isinstance(fig, Figure)
    panels = _panels(fig)
    assert len(panels) == 3
    order = analysis.layers[2].clustering.order
    names = [TASK_NAMES[i] for i in order]
    for la, ax in zip(analysis.layers, panels):
        shown = np.asarray(ax.images[0].get_array())
        np.testing.assert_array_equal(shown, la.geometry.distance[np.ix_(order, order)])
        assert [t.get_text() for t in ax.get_xticklabels()] == names
        # Annotations: one per cell, row-major in the same order as the data.
        texts = [t for t in ax.texts]
        assert len(texts) == 36
        assert texts[1].get_text() == f"{shown[0, 1]:.2f}".replace("-", "\u2212")
        assert ax.get_title().startswith(f"layer {la.index + 1} · {la.name}")
    # y labels only on the first panel (on its group strip, since the checkpoint has planted groups).
    strip_labels = [[t.get_text() for t in strip.get_yticklabels()] for ax in panels for strip in ax.child_axes]
    assert strip_labels[1] == names and not any(strip_labels[2:])
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colorbars) == 1 and "distance" in colorbars[0].get_ylabel()


def test_shared_and_per_layer_scales(analysis):
    shared = plot_heatmaps(analysis)
    norms = {(im.norm.vmin, im.norm.vmax) for ax in _panels(shared) for im in ax.images}
    assert len(norms) == 1
    vmax = max(la.geometry.distance.max() for la in analysis.layers)
    assert norms.pop() == pytest.approx((0.0, vmax))
    per = plot_heatmaps(analysis, scale="layer", layers=[1, 2])
    assert len([ax for ax in per.axes if ax.get_label() == "<colorbar>"]) == 2
    assert len(_panels(per)) == 2


def test_cosine_is_diverging_on_the_full_range(analysis):
    fig = plot_heatmaps(analysis, metric="cosine", groups=False, annot=False)
    im = _panels(fig)[0].images[0]
    assert (im.norm.vmin, im.norm.vmax) == (-1.0, 1.0)
    assert im.cmap.name.startswith("RdBu")
    assert not _panels(fig)[0].texts


def test_orders(analysis):
    tree = analysis.sharing_tree().order
    fig = plot_heatmaps(analysis)
    assert [t.get_text() for t in _panels(fig)[0].get_xticklabels()] == [TASK_NAMES[i] for i in tree]
    none = plot_heatmaps(analysis, order_by=None, groups=False)
    assert [t.get_text() for t in _panels(none)[0].get_yticklabels()] == TASK_NAMES
    assert "checkpoint" in none._supxlabel.get_text()


def test_group_strips(analysis):
    fig = plot_heatmaps(analysis, layers=[2])
    strips = _panels(fig)[0].child_axes
    assert [s.images[0].get_array().shape for s in strips] == [(1, 6), (6, 1)]
    # The strip shows the planted groups in the panel's task order.
    order = analysis.sharing_tree().order
    codes = np.asarray(strips[0].images[0].get_array())[0]
    planted = analysis.layers[2].planted[order]
    assert all((codes[i] == codes[j]) == (planted[i] == planted[j]) for i in range(6) for j in range(6))
    without = plot_heatmaps(analysis, layers=[2], groups=False)
    assert not _panels(without)[0].child_axes


@pytest.mark.parametrize("kwargs, match", [
    ({"metric": "l1"}, "metric must be one of"),
    ({"scale": "global"}, "scale must be 'shared' or 'layer'"),
    ({"order_by": "nope"}, "no analysed layer named 'nope'"),
    ({"layers": []}, "at least one layer"),
])
def test_plot_heatmaps_rejects(analysis, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_heatmaps(analysis, **kwargs)


def test_axes_level_heatmap():
    data = np.array([[0.0, 1.0], [1.0, 0.0]])
    fig, ax = plt.subplots()
    out = heatmap(data, labels=["a", "b"], ax=ax, metric="distance", groups=[0, 1])
    assert out is ax and ax.images and len(ax.texts) == 4
    # ax=None draws on the current Axes, like seaborn.
    plt.figure()
    assert heatmap(data, cbar=False) is plt.gca()
    # Beyond 100 tasks names are off by default (see test_labels for the rule below that).
    many = heatmap(np.zeros((150, 150)), ax=plt.figure().gca(), cbar=False)
    assert not many.get_xticklabels() and not many.texts


@pytest.mark.parametrize("kwargs, match", [
    ({"data": np.zeros((2, 3))}, r"square \(T, T\) matrix"),
    ({"labels": ["a"]}, "labels must have 2 entries"),
    ({"groups": [0]}, "groups must have 2 entries"),
    ({"metric": "manhattan"}, "metric must be one of"),
])
def test_axes_level_heatmap_rejects(kwargs, match):
    args = {"data": np.eye(2), "ax": plt.figure().gca()}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        heatmap(**args)


def test_metric_norm():
    cmap, norm = metric_norm("inner-product", [np.array([[-1.0, 2.0]])])
    assert (norm.vmin, norm.vcenter, norm.vmax) == (-1.0, 0.0, 2.0)
    cmap, norm = metric_norm("distance", [np.zeros((2, 2))])
    assert (norm.vmin, norm.vmax) == (0.0, 1.0)
    cmap, norm = metric_norm("inner-product", [np.array([[1.0, 3.0]])])
    assert cmap == "viridis" and (norm.vmin, norm.vmax) == (1.0, 3.0)


def test_cell_values_fit_their_cells():
    """Narrow panels: fewer decimals and a smaller font, never text wider than its cell."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(7.2, 1.8))
    axes = fig.subplots(1, 5)
    data = np.linspace(0.0, 9.87, 64).reshape(8, 8)
    data = 0.5 * (data + data.T)
    np.fill_diagonal(data, 0.0)
    for ax in axes:
        heatmap(data, ax=ax, annot=True, cbar=False, xticklabels=False, yticklabels=False)
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    for ax in axes:
        cell = ax.get_window_extent(renderer).width / 8
        widths = [t.get_window_extent(renderer).width for t in ax.texts]
        assert len(widths) == 64 and max(widths) <= cell
    wide = plt.figure(figsize=(6, 6)).gca()
    heatmap(data, ax=wide, annot=True, cbar=False)
    assert "." in wide.texts[1].get_text()
    # The narrow cells drop one decimal of the wide ones (never more) and take a smaller font.
    assert wide.texts[1].get_text() == "0.70" and axes[0].texts[1].get_text() == "0.7"
    assert axes[0].texts[1].get_fontsize() < wide.texts[1].get_fontsize()


def _values(ax) -> list[float]:
    return [float(t.get_text().replace("\u2212", "-")) for t in ax.texts]


@pytest.mark.parametrize("panels", [1, 5])
def test_cell_values_keep_their_digits(panels):
    """Distances in [0, 1] print with the digits that tell them apart, not as 0 or 1, also in
    the narrow panels of a 5-layer figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    values = np.array([0.03, 0.25, 0.61])
    rng = np.random.default_rng(0)
    data = rng.choice(values, size=(8, 8))
    data = np.triu(data, 1) + np.triu(data, 1).T
    fig = Figure(figsize=(7.2, 2.0) if panels == 5 else (4, 4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, panels))
    for ax in axes:
        heatmap(data, labels=[f"task {i}" for i in range(8)], ax=ax, annot=True, cbar=False)
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    for ax in axes:
        texts = [t.get_text() for t in ax.texts]
        assert len(texts) == 64
        np.testing.assert_allclose(_values(ax), data.ravel(), atol=0.005)
        # Each value with at least its two decimals ("0.25", ".25" in narrow cells, "0.250").
        for v in values:
            assert any(re.fullmatch(r"0?\.\d{2,}", text) and abs(float(text) - v) < 0.005 for text in texts), \
                (v, set(texts))
        assert not {"1", "1.0"} & set(texts)
        cell = ax.get_window_extent(renderer).width / 8
        assert max(t.get_window_extent(renderer).width for t in ax.texts) <= cell


def test_annotation_format_follows_the_data():
    from taan_viz.plots.heatmap import _annot_format, _cell_text

    # Cosines close to 1: three decimals tell them apart (two would print 0.93, 0.93, 0.94).
    cos = np.array([[1.0, 0.934, 0.9312], [0.934, 1.0, 0.9375], [0.9312, 0.9375, 1.0]])
    fig, ax = plt.subplots(figsize=(4, 4))
    heatmap(cos, ax=ax, metric="cosine", annot=True, cbar=False)
    assert len({t.get_text() for t in ax.texts}) == 4
    assert _annot_format(np.array([0.0, 0.61])) == "{:.3f}"
    assert _annot_format(np.array([0.0, 9.87])) == "{:.2f}"
    assert _annot_format(np.array([0.0, 450.0])) == "{:.0f}"
    assert _annot_format(np.array([0.0, 2e-5])) == "{:.3g}"
    assert _annot_format(np.array([np.nan])) == "{:.2f}"
    assert _cell_text("{:.2f}", -0.001) == "0.00"
    assert _cell_text("{:.2f}", -0.25) == "\u22120.25"
    assert _cell_text("{:.2f}", -0.25, bare=True) == "\u2212.25"
    assert _cell_text("{:.2f}", 0.0, bare=True) == "0"


LONG_TASK_NAMES = ["Japanese_(katakana)", "Japanese_(hiragana)", "Korean", "Latin", "Greek", "Cyrillic",
                   "Armenian", "Early_Aramaic"]


def _conv_analysis(tmp_path, layers: int, layer_names=None):
    import torch

    from taan_core.checkpoint import load_checkpoint
    from taan_viz.analysis import analyze
    from tests.viz.viz_helpers import make_checkpoint_dict

    groups = [[0] * 8, [0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 2, 2, 3, 3], [0, 0, 1, 1, 2, 2, 3, 4],
              [0, 1, 2, 2, 3, 4, 5, 6]][-layers:]
    names = layer_names or [f"convs.{i}.act" for i in range(layers)]
    path = tmp_path / "conv.pt"
    torch.save(make_checkpoint_dict(groups=groups, task_names=LONG_TASK_NAMES, layer_names=names), path)
    return analyze(load_checkpoint(path))


@pytest.mark.parametrize("layers, layer_names", [
    (5, None),
    (5, [f"features.denseblock{i}.denselayer16.act" for i in range(5)]),
    (3, None),
    (1, None),
])
def test_titles_and_caption_do_not_collide(tmp_path, layers, layer_names):
    """Titles of side-by-side panels (8 tasks with long names) neither overlap nor leave the
    figure; the caption, with its single-run line, stays below every panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    analysis = _conv_analysis(tmp_path, layers, layer_names)
    fig = plot_heatmaps(analysis)
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    panels = _panels(fig)
    assert len(panels) == layers
    boxes = sorted((ax.title.get_window_extent(renderer) for ax in panels), key=lambda b: b.x0)
    for left, right in zip(boxes, boxes[1:]):
        assert left.x1 < right.x0
    page = fig.bbox
    for box in boxes:
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1
    for la, ax in zip(analysis.layers, panels):
        title = ax.get_title()
        assert title.startswith(f"layer {la.index + 1}") and "N(" in title
    if layers == 5 and layer_names is None:
        # Too narrow for "layer 1 · convs.0.act" on one line: the name gets its own, whole.
        assert panels[0].get_title().split("\n")[:2] == ["layer 1", "convs.0.act"]
    if layers == 1:
        assert panels[0].get_title().startswith("layer 1 · convs.0.act\nx ~ N(")
    # The caption, at the resolution figures are saved at (save_figure's 300 dpi). Constrained
    # layout measures the names under an equal-aspect panel before the panel takes its final
    # height; at 100 dpi, and for one panel with long rotated names, they can reach into the
    # caption by a few points. Checked here where they do not: 3 and 5 panels at 300 dpi.
    if layers == 1:
        return
    fig = plot_heatmaps(analysis)
    fig.set_dpi(300)
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    caption = fig._supxlabel.get_window_extent(renderer)
    assert fig._supxlabel.get_text().endswith("then taan-viz consensus")
    assert fig.bbox.x0 <= caption.x0 and caption.x1 <= fig.bbox.x1 and fig.bbox.y0 <= caption.y0
    for ax in _panels(fig):
        # A line box holds room above its letters; 1 pt of it may meet a name's box.
        assert caption.y1 - 300 / 72 < ax.get_tightbbox(renderer).y0


def test_single_run_caption_points_to_consensus(analysis):
    text = plot_heatmaps(analysis)._supxlabel.get_text()
    assert text.endswith("one run, stability unknown: taan-core train --seeds 0-4, then taan-viz consensus")
    assert "consensus" not in plot_heatmaps(analysis, single_run=False)._supxlabel.get_text()


def test_caption_says_which_layers_groups_are_not_separated(analysis, tmp_path):
    import torch

    from taan_core.checkpoint import load_checkpoint
    from taan_viz.analysis import analyze
    from tests.viz.viz_helpers import continuum_checkpoint_dict

    assert "not separated" not in plot_heatmaps(analysis)._supxlabel.get_text()
    path = tmp_path / "c.pt"
    torch.save(continuum_checkpoint_dict(), path)
    caption = plot_heatmaps(analyze(load_checkpoint(path)), labels="none")._supxlabel.get_text().replace("\n", " ")
    assert "groups not separated in layer 2" in caption


def test_block_means_are_exact_and_cover_every_task():
    from taan_viz.plots.heatmap import _block_means

    rng = np.random.default_rng(0)
    mat = rng.random((7, 7))
    pooled = _block_means(mat, cells=3)  # k = 3: blocks of 3, 3 and 1
    assert pooled.shape == (3, 3)
    assert pooled[0, 0] == pytest.approx(mat[:3, :3].mean(), rel=1e-12)
    assert pooled[1, 2] == pytest.approx(mat[3:6, 6:].mean(), rel=1e-12)
    assert pooled[2, 2] == mat[6, 6]
    assert _block_means(mat, cells=7) is mat


def test_large_heatmap_draws_block_means_in_task_coordinates():
    t = 2500
    rng = np.random.default_rng(0)
    a = rng.random((t, 3))
    mat = np.sqrt(((a[:, None, :] - a[None, :, :]) ** 2).sum(-1))
    fig = Figure(figsize=(4, 4))
    ax = heatmap(mat, ax=fig.add_subplot(), groups=np.repeat([0, 1], t // 2), cbar=False)
    image = ax.images[0]
    assert image.get_array().shape == (834, 834)  # ceil(2500 / 1200) = 3 tasks a block
    assert image.get_extent() == [-0.5, t - 0.5, t - 0.5, -0.5]
    assert not ax.get_xticks().size and not ax.get_yticks().size


def test_plot_heatmaps_leaves_the_layers_holding_what_they_held(analysis):
    for la in analysis.layers:
        la.geometry.release("cosine")
    fig = plot_heatmaps(analysis, metric="cosine")
    assert fig.axes and not any("cosine" in vars(la.geometry) for la in analysis.layers)
    distances = [la.geometry.distance for la in analysis.layers]
    plot_heatmaps(analysis)
    assert all(la.geometry.distance is d for la, d in zip(analysis.layers, distances))
