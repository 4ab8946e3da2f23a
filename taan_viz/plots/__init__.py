"""Figures of taan_viz: axes-level functions take ``ax=None`` and return the Axes; figure-level
ones build and return their own Figure (``plot_*``, ``clustermap``). They only draw what
``taan_viz.analysis`` computed, and never touch global matplotlib state."""

from taan_viz.plots._style import OKABE_ITO, paper_style, save_figure
from taan_viz.plots.cluster import (
    clustermap,
    dendrogram,
    embedding,
    plot_dendrograms,
    plot_embeddings,
    seaborn_clustermap,
)
from taan_viz.plots.compare import plot_compare
from taan_viz.plots.consensus import plot_coclustering, plot_distance_spread, plot_support_tree
from taan_viz.plots.curves import activation_curves, activation_values, plot_curve_grid, plot_curves
from taan_viz.plots.evolution import animate_evolution, plot_curves_evolution, plot_evolution
from taan_viz.plots.heatmap import heatmap, plot_heatmaps
from taan_viz.plots.network import plot_network
from taan_viz.plots.training import plot_training
from taan_viz.plots.tree import plot_sharing_tree

__all__ = [
    "OKABE_ITO",
    "activation_curves",
    "activation_values",
    "animate_evolution",
    "clustermap",
    "dendrogram",
    "embedding",
    "heatmap",
    "paper_style",
    "plot_coclustering",
    "plot_compare",
    "plot_curve_grid",
    "plot_curves",
    "plot_curves_evolution",
    "plot_dendrograms",
    "plot_distance_spread",
    "plot_embeddings",
    "plot_evolution",
    "plot_heatmaps",
    "plot_network",
    "plot_sharing_tree",
    "plot_support_tree",
    "plot_training",
    "save_figure",
    "seaborn_clustermap",
]
