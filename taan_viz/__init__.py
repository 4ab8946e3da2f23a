"""taan_viz: read TAAN checkpoints and show what the network learned.

Per-layer task distance heatmaps, activation curves, clusterings, the sharing tree, the report
and exports. Public names are re-exported lazily (PEP 562) so that each command loads only what
it needs (``taan-viz heatmap`` never imports sympy, scikit-learn or the trainer).
"""

from __future__ import annotations

from taan_core import __version__
from taan_core._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "analyze": "analysis",
    "Analysis": "analysis",
    "LayerAnalysis": "analysis",
    "history_geometry": "analysis",
    "parse_measure": "geometry",
    "cluster_tasks": "clustering",
    "flat_clusters": "clustering",
    "adjusted_rand_index": "clustering",
    "sharing_tree": "sharing",
    "SharingTree": "sharing",
    "classical_mds": "embedding",
    "coordinate_mds": "embedding",
    "layer_mds": "embedding",
    "Consensus": "consensus",
    "network_relatedness": "network",
    "NetworkRelatedness": "network",
    "compare_runs": "compare",
    "mantel_test": "compare",
    "mantel_tests": "compare",
    "read_known": "compare",
    "Comparison": "compare",
    "expand_runs": "runs",
    "measure_mismatch": "measure_check",
    "export_analysis": "export",
    "build_report": "report",
    "plot_heatmaps": "plots",
    "heatmap": "plots",
    "plot_curves": "plots",
    "plot_dendrograms": "plots",
    "clustermap": "plots",
    "seaborn_clustermap": "plots",
    "distance_frame": "frames",
    "tasks_frame": "frames",
    "layers_frame": "frames",
    "plot_sharing_tree": "plots",
    "plot_network": "plots",
    "plot_evolution": "plots",
    "plot_compare": "plots",
    "save_figure": "plots",
}

__all__ = ["__version__", *_EXPORTS]

__getattr__, __dir__ = lazy_exports("taan_viz", _EXPORTS, globals())
