"""taan_viz: read TAAN checkpoints and show what the network learned.

Per-layer task distance heatmaps, activation curves, clusterings, the sharing tree, the report
and exports. Public names are re-exported lazily (PEP 562) so that each command loads only what
it needs (``taan-viz heatmap`` never imports sympy, scikit-learn or the trainer).
"""

from __future__ import annotations

import importlib
from typing import Any

from taan_core import __version__

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
    "export_analysis": "export",
    "build_report": "report",
    "plot_heatmaps": "plots",
    "heatmap": "plots",
    "plot_curves": "plots",
    "plot_dendrograms": "plots",
    "clustermap": "plots",
    "plot_sharing_tree": "plots",
    "plot_evolution": "plots",
    "save_figure": "plots",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'taan_viz' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"taan_viz.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
