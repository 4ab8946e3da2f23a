"""Clusterings of the tasks: the dendrograms (:mod:`taan_viz.plots.dendrogram`), the clustermaps
(:mod:`taan_viz.plots.clustermap`) and the task maps (:mod:`taan_viz.plots.mds`), one module per
figure; their names are re-exported here, where they always were."""

from taan_viz.plots.clustermap import clustermap, seaborn_clustermap
from taan_viz.plots.dendrogram import dendrogram, plot_dendrograms
from taan_viz.plots.mds import embedding, place_labels, plot_embeddings

__all__ = ["clustermap", "dendrogram", "embedding", "place_labels", "plot_dendrograms", "plot_embeddings",
           "seaborn_clustermap"]
