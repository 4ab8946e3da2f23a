"""The consensus of several runs as a report section and as JSON (kept apart from report.py,
which renders one run; ``taan-viz report`` passes this section in)."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path
from typing import Any

from taan_viz.consensus import Consensus

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
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _uri(fig, dpi: int) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.03, facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def consensus_section(cons: Consensus, dpi: int = 150, representative: str | None = None) -> tuple[str, str, str]:
    """``(id, title, html)`` of the report section on the consensus of the runs."""
    esc = html.escape
    rows = []
    for la in cons.layers:
        planted = "–" if la.planted_ari is None else f"{la.planted_ari.mean():.2f} (min {la.planted_ari.min():.2f})"
        rows.append(f"<tr><td>{la.index + 1}</td><td>{esc(la.name)}</td><td>{la.stability:.3f}</td>"
                    f"<td>{float(la.pairwise_ari[~_eye(la)].min()):.3f}</td><td>{esc(planted)}</td></tr>")
    table = ("<table class=\"num\"><thead><tr><th>#</th><th>layer</th><th>stability (mean ARI between runs)</th>"
             "<th>lowest ARI between two runs</th><th>ARI vs planted, mean over runs</th></tr></thead><tbody>"
             + "".join(rows) + "</tbody></table>")
    runs = ", ".join(esc(r) for r in cons.runs)
    rep = representative or cons.runs[cons.representative]
    intro = (f"<p>{cons.num_runs} runs ({runs}). Stability 1 means every run finds the same clusters; about 0 "
             "means no more agreement than chance. The rest of this report shows one run, "
             f"<b>{esc(rep)}</b>, the one that agrees most with the others (highest summed ARI).</p>")
    figs = []
    for key, (title, fig) in consensus_figures(cons).items():
        figs.append(f'<figure id="fig-consensus-{key}"><h3>{esc(title.capitalize())}</h3>'
                    f'<img src="{_uri(fig, dpi)}" alt="{esc(title)}"></figure>')
    return "consensus", f"Consensus of {cons.num_runs} runs", intro + table + "\n".join(figs)


def _eye(la):
    import numpy as np

    return np.eye(la.pairwise_ari.shape[0], dtype=bool)
