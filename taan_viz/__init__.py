"""taan_viz: read TAAN checkpoints and show what the network learned.

Per-layer task distance heatmaps, activation curves, clusterings, the sharing tree, the report
and exports. Submodules are imported on use so that each command loads only what it needs.
"""

from __future__ import annotations

from taan_core import __version__

__all__ = ["__version__"]
