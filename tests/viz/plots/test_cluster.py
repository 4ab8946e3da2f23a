"""taan_viz.plots.cluster: dendrograms, clustermap and MDS maps."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.colors import to_hex

from tests.viz.viz_helpers import TASK_NAMES
from taan_viz.plots._style import category_color, name_texts, readable_color
from taan_viz.plots.cluster import clustermap, dendrogram, embedding, plot_dendrograms, plot_embeddings


def test_dendrogram_leaves_are_the_leaf_order(analysis):
    la = analysis.layers[2]
    clusters = la.flat()
    fig, ax = plt.subplots()
    dendrogram(la.clustering, ax=ax, clusters=clusters, cut=0.5)
    labels = name_texts(ax)
    assert [t.get_text() for t in labels] == [TASK_NAMES[i] for i in la.clustering.order]
    assert [to_hex(t.get_color()) for t in labels] == [to_hex(readable_color(category_color(clusters[i])))
                                                       for i in la.clustering.order]
    (links,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(links.get_segments()) == 5
    # Root at the left: the x axis runs from the largest merge height down to 0.
    assert ax.get_xlim()[0] > ax.get_xlim()[1] == 0.0
    top = plt.figure().gca()
    dendrogram(la.clustering, ax=top, orientation="top", labels=False)
    assert not name_texts(top) and not top.get_xticklabels()
    dendrogram(la.clustering, ax=top, orientation="top", labels=True)
    assert [t.get_text() for t in name_texts(top)] == [TASK_NAMES[i] for i in la.clustering.order]


def test_dendrogram_rejects(analysis):
    clus = analysis.layers[2].clustering
    with pytest.raises(ValueError, match="orientation must be 'left' or 'top'"):
        dendrogram(clus, orientation="right")
    with pytest.raises(ValueError, match="clusters must have 6 entries"):
        dendrogram(clus, clusters=[0, 1])


def test_plot_dendrograms(analysis):
    fig = plot_dendrograms(analysis)
    panels = [ax for ax in fig.axes if ax.collections]
    assert len(panels) == 3
    assert "ARI 1.00" in panels[2].get_title() and "4 clusters" in panels[2].get_title()
    assert "ARI" in fig._supxlabel.get_text()
    by_count = plot_dendrograms(analysis, n_clusters=2, layers=[1])
    assert "2 clusters" in by_count.axes[0].get_title()


def test_clustermap(analysis):
    fig = clustermap(analysis, -1, metric="cosine")
    ax_map = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"][0]
    order = analysis.layers[2].clustering.order
    np.testing.assert_array_equal(np.asarray(ax_map.images[0].get_array()),
                                  analysis.layers[2].geometry.cosine[np.ix_(order, order)])
    assert [t.get_text() for t in name_texts(ax_map)] == [TASK_NAMES[i] for i in order]
    assert len(fig.axes) == 4
    with pytest.raises(ValueError, match="metric must be one of"):
        clustermap(analysis, metric="jaccard")


def test_embedding_axes_level():
    plt.figure()
    coords = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    ax = embedding(coords, names=["a", "b", "c"], clusters=[0, 0, 1], groups=[0, 1, 1])
    assert ax is plt.gca()
    # Coinciding points share one label.
    assert sorted(t.get_text() for t in ax.texts) == ["a +1", "c"]
    # labels is the rule of every figure: "none" writes no names, and the old spelling warns.
    plt.figure()
    assert len(embedding(coords, names=["a", "b", "c"], labels="none").texts) == 0
    plt.figure()
    with pytest.warns(DeprecationWarning, match="pass the names as names="):
        old = embedding(coords, labels=["a", "b", "c"])
    assert sorted(t.get_text() for t in old.texts) == ["a +1", "c"]
    with pytest.warns(DeprecationWarning, match="use labels="):
        assert len(embedding(coords, names=["a", "b", "c"], annotate=False, ax=plt.figure().gca()).texts) == 0
    with pytest.raises(ValueError, match=r"coords must have shape \(T, 2\)"):
        embedding(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="clusters must have 2 entries"):
        embedding(np.zeros((2, 2)), clusters=[0])


def test_plot_embeddings(analysis):
    fig = plot_embeddings(analysis)
    panels = [ax for ax in fig.axes if ax.collections]
    assert len(panels) == 3
    assert panels[1].get_xlabel().startswith("MDS 1 (100")
    assert "planted group" in fig._supxlabel.get_text()
    with pytest.raises(ValueError, match="at least one layer"):
        plot_embeddings(analysis, layers=[])


def test_mds_panels_keep_equal_aspect_and_fill(analysis):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from taan_viz.embedding import classical_mds

    fig = plot_embeddings(analysis)
    FigureCanvasAgg(fig).draw()
    for la, ax in zip(analysis.layers, [ax for ax in fig.axes if ax.collections]):
        assert ax.get_aspect() == 1.0 and ax.get_adjustable() == "box"
        coords, _ = classical_mds(la.geometry.distance, 2)
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        if np.ptp(coords[:, 0]) == 0:
            continue  # every task at one point (layer 1 of the fixture): nothing to fill
        # The points span most of the panel's width (no wide empty margins).
        assert np.ptp(coords[:, 0]) >= 0.8 * (x1 - x0)
        # ... and of its height, unless flatter than the least aspect (0.3, plus the margins).
        assert np.ptp(coords[:, 1]) >= 0.8 * (y1 - y0) or (y1 - y0) <= 0.42 * (x1 - x0)


@pytest.mark.slow
def test_five_layers_with_long_names_stay_inside_the_figure(tmp_path):
    from taan_viz.plots.cluster import plot_dendrograms, plot_embeddings
    from taan_viz.plots._style import name_texts
    from tests.viz.viz_helpers import LONG_TASK_NAMES, overlapping, rendered_boxes, wide_runs

    analysis = wide_runs(tmp_path, seeds=(0,))[0]
    fig = plot_dendrograms(analysis)
    texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_text") and a.get_visible()) if t.get_text()]
    figure = fig.bbox
    for text, box in zip(texts, rendered_boxes(fig, texts)):
        assert figure.x0 - 1 <= box.x0 and box.x1 <= figure.x1 + 1, text.get_text()
        assert figure.y0 - 1 <= box.y0 and box.y1 <= figure.y1 + 1, text.get_text()
    names = {t.get_text() for ax in fig.axes for t in name_texts(ax)}
    assert names == set(LONG_TASK_NAMES)
    # The task maps: names overlap neither each other nor the points, inside their panels;
    # where some find no place, a legend names every task in full.
    fig = plot_embeddings(analysis)
    for ax in [ax for ax in fig.axes if ax.get_visible()]:
        labels = name_texts(ax)
        boxes = rendered_boxes(fig, labels)
        assert not overlapping(boxes)
        frame = ax.get_window_extent()
        for box in boxes:
            assert frame.x0 - 1 <= box.x0 and box.x1 <= frame.x1 + 1 and frame.y0 - 1 <= box.y0 <= box.y1 <= frame.y1 + 1
        points = np.concatenate([c.get_offsets() for c in ax.collections])
        at = ax.transData.transform(points)
        for box in boxes:
            assert not any(box.x0 < x < box.x1 and box.y0 < y < box.y1 for x, y in at)
    legend = fig.legends[0] if fig.legends else None
    assert legend is not None and [t.get_text() for t in legend.get_texts()] == LONG_TASK_NAMES
