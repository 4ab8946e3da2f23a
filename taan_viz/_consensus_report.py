"""The consensus of several runs as a report section and as JSON (kept apart from report.py,
which renders one run; ``taan-viz report`` passes this section in)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from taan_core._atomic import write_file
from taan_viz.consensus import STABILITY_THRESHOLD, Consensus

__all__ = ["CONSENSUS_FILES", "consensus_figures", "consensus_section", "write_consensus_json"]

CONSENSUS_FILES = ("coclustering", "distance", "support-tree")


def consensus_figures(cons: Consensus) -> dict[str, tuple[str, Any]]:
    """``{file stem: (title, Figure)}`` of the three consensus figures, in page order."""
    from taan_viz.plots.consensus import plot_coclustering, plot_distance_spread, plot_support_tree

    return {
        "coclustering": ("co-clustering of the tasks over runs", plot_coclustering(cons)),
        "distance": ("mean functional distance and its spread over runs", plot_distance_spread(cons)),
        "support-tree": ("sharing tree with group support", plot_support_tree(cons)),
    }


def write_consensus_json(cons: Consensus, path: "str | Path", extra: dict | None = None) -> Path:
    """Write ``cons.to_dict()`` (plus ``extra``) as indented JSON."""
    path = Path(path)
    doc = {**cons.to_dict(), **dict(extra or {})}
    text = json.dumps(doc, indent=1)
    # One line per matrix row (and per short list), not one line per number.
    text = re.sub(r"\[\s*([^\[\]{}]*?)\s*\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    write_file(path, text + "\n")
    return path


def consensus_section(cons: Consensus, dpi: int = 150, representative: str | None = None):
    """The report section (a :class:`taan_viz.report.ReportSection`) on the consensus of the runs."""
    from taan_viz.report import ReportFigure, ReportSection, figure_uri

    rows = []
    for la in cons.layers:
        planted = "–" if la.planted_ari is None else f"{la.planted_ari.mean():.2f} (min {la.planted_ari.min():.2f})"
        rows.append([la.index + 1, la.name, f"{la.stability:.3f}", f"{float(la.pairwise_ari[~_eye(la)].min()):.3f}",
                     planted])
    header = ["#", "layer", "stability (mean ARI between runs)", "lowest ARI between two runs",
              "ARI vs planted, mean over runs"]
    rep = representative or cons.runs[cons.representative]
    intro = (f"{cons.num_runs} runs ({', '.join(cons.runs)}). Stability 1 means every run finds the same groups; "
             f"about 0 means no more agreement than chance; below {STABILITY_THRESHOLD:g} a layer's groups depend "
             "on the run. The other sections of this report show one run, "
             f"{rep}, the one that agrees most with the others (highest summed ARI).")
    figures = [ReportFigure(f"consensus-{key}", title.capitalize(), "", figure_uri(fig, dpi))
               for key, (title, fig) in consensus_figures(cons).items()]
    return ReportSection(id="consensus", title=f"Consensus of {cons.num_runs} runs", paragraphs=[intro],
                         warnings=cons.warnings,
                         figures=figures, tables=[(header, rows)])


def _eye(la):
    import numpy as np

    return np.eye(la.pairwise_ari.shape[0], dtype=bool)
