"""The HTML report: one self-contained, offline page with every figure, the tables, the training
metrics and the math, plus a ``manifest.json`` that says exactly what produced it.

Images are embedded as base64 data URIs and the styles are inline, so ``index.html`` can be
mailed, archived or opened from any folder without its neighbours and without a network.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from taan_viz.analysis import METRICS, Analysis, Snapshot

__all__ = ["REPORT_FILES", "build_report", "render_report", "tool_versions"]

REPORT_FILES = ("index.html", "manifest.json")
_TABLE_ROWS_MAX = 100


def tool_versions() -> dict[str, str]:
    """Versions of taan and of the libraries that shape the numbers and the figures."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("taan", "torch", "numpy", "scipy", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


@dataclass
class _Figure:
    key: str
    title: str
    caption: str
    data_uri: str


def _png_uri(fig, dpi: int) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.03, facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.{digits}g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>'


def _summary_rows(analysis: Analysis, clusters: list[np.ndarray], tree) -> list[list[str]]:
    depth = {la.index: k for k, la in enumerate(sorted(analysis.layers, key=lambda la: la.index))}
    rows = []
    for la, lab in zip(analysis.layers, clusters):
        g = la.geometry
        off = g.distance[~np.eye(g.num_tasks, dtype=bool)]
        rows.append([
            la.index + 1, la.name, g.hinges.shape[0], _fmt(g.mu), _fmt(g.sigma), _fmt(float(g.norms.mean())),
            _fmt(float(off.mean()) if off.size else None), _fmt(float(off.max()) if off.size else None),
            len(np.unique(lab)), tree.num_groups[depth[la.index]],
            _fmt(la.clustering.cophenetic_correlation), _fmt(la.ari),
        ])
    return rows


def _task_rows(analysis: Analysis, k: int, clusters: np.ndarray, sharing: np.ndarray) -> list[list[str]]:
    la = analysis.layers[k]
    g = la.geometry
    nearest, dist = g.nearest()
    rows = []
    for t in la.clustering.order[:_TABLE_ROWS_MAX]:
        rows.append([
            analysis.task_names[t], _fmt(float(g.norms[t])),
            analysis.task_names[nearest[t]] if nearest[t] >= 0 else "–", _fmt(float(dist[t])),
            int(clusters[t]) + 1, int(sharing[t]) + 1,
            "–" if la.planted is None else int(la.planted[t]) + 1,
            "–" if la.preact_mean is None else _fmt(float(la.preact_mean[t])),
            "–" if la.preact_std is None else _fmt(float(la.preact_std[t])),
        ])
    return rows


def _metrics_rows(metrics: Sequence[Mapping]) -> tuple[list[str], list[list[str]]]:
    from taan_viz.plots.training import flatten_metrics

    flat = flatten_metrics(metrics)
    keys = list(dict.fromkeys(k for r in flat for k in r))
    rows = [[_fmt(r.get(k), 4) if k not in ("epoch", "step") else int(r.get(k, 0)) for k in keys] for r in flat]
    for row, entry in zip(rows, metrics):
        row.append("★" if entry.get("best") else "")
    return keys + ["best"], rows


_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;margin:0;color:#1b1b1b;
background:#fafafa;line-height:1.45}
main{max-width:1120px;margin:0 auto;padding:24px 28px 60px;background:#fff;box-shadow:0 0 8px rgba(0,0,0,.06)}
h1{font-size:1.6em;margin:.2em 0 .1em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd;
padding-bottom:.2em}h3{font-size:1.05em;margin-top:1.4em}
.meta td:first-child{color:#555;padding-right:1.2em;white-space:nowrap}
table{border-collapse:collapse;font-size:.86em;margin:.6em 0}
th,td{padding:3px 9px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top}
th{background:#f2f4f7;font-weight:600}
table.num td:not(:first-child){font-variant-numeric:tabular-nums}
figure{margin:1.2em 0;text-align:center}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.88em;color:#444;text-align:left;max-width:900px;margin:.4em auto}
code,.mono{font-family:"SFMono-Regular",Menlo,Consolas,monospace;font-size:.9em}
.note{color:#666;font-size:.85em}nav a{margin-right:1em}
.math{background:#f7f7f9;border-left:3px solid #0072B2;padding:.6em 1em;font-family:"Cambria Math",
"STIX Two Math",serif}
"""


_MATH = """
<p>Each task-adaptive layer has hinges b<sub>1</sub>, …, b<sub>M</sub> and, per task t, coefficients
α<sub>t,1</sub>, …, α<sub>t,M</sub>. Task t's activation is</p>
<div class="math">F<sub>t</sub>(x) = relu(x) + Σ<sub>m</sub> α<sub>t,m</sub> relu(b<sub>m</sub> − x).</div>
<p>Activations are compared as functions in L²(N(μ, σ²)): with the basis B<sub>0</sub>(x) = relu(x),
B<sub>m</sub>(x) = relu(b<sub>m</sub> − x) and its Gram matrix G<sub>ij</sub> = E[B<sub>i</sub>(x) B<sub>j</sub>(x)],
x ~ N(μ, σ²), evaluated in closed form (taan_core.gaussian), and a<sub>t</sub> = (1, α<sub>t</sub>):</p>
<div class="math">⟨F<sub>s</sub>, F<sub>t</sub>⟩ = a<sub>s</sub><sup>T</sup> G a<sub>t</sub>,&emsp;
d(F<sub>s</sub>, F<sub>t</sub>)² = (a<sub>s</sub> − a<sub>t</sub>)<sup>T</sup> G (a<sub>s</sub> − a<sub>t</sub>)
= E[(F<sub>s</sub>(x) − F<sub>t</sub>(x))²],&emsp;
cos(F<sub>s</sub>, F<sub>t</sub>) = ⟨F<sub>s</sub>, F<sub>t</sub>⟩ / (‖F<sub>s</sub>‖ ‖F<sub>t</sub>‖).</div>
<p><b>Measure.</b> {measure}</p>
<p><b>Clustering.</b> {method}-linkage hierarchical clustering of d (after checking that the matrix is a
distance: square, finite, symmetric, zero diagonal, non-negative), leaves in optimal order; the cophenetic
correlation r says how faithfully the tree keeps the distances (1 = exactly). Flat clusters cut each tree at
{threshold:g} × the layer's RMS activation norm √(mean<sub>t</sub> ‖F<sub>t</sub>‖²).{ari}</p>
<p><b>Sharing tree.</b> At layer l two tasks share the activation when d(F<sub>s</sub>, F<sub>t</sub>) ≤
{threshold:g} × the layer's RMS activation norm; groups are the connected components of that relation,
intersected with the groups of the layer before (a hard-sharing network cannot re-join branches).</p>
<p><b>Embedding.</b> Classical multidimensional scaling of d: the two leading axes of the double-centred
squared distances, with the share of the total variance each keeps.</p>
"""


def render_report(
    analysis: Analysis,
    *,
    checkpoint: Mapping[str, Any],
    snapshots: Sequence[Snapshot] | None = None,
    threshold: float = 0.1,
    n_clusters: int | None = None,
    dpi: int = 150,
    version: str = "",
    progress: Callable[[str], None] | None = None,
    sections: Sequence[tuple[str, str, str]] = (),
) -> tuple[str, list[str]]:
    """Build the report page.

    Parameters
    ----------
    analysis : Analysis
    checkpoint : mapping
        ``path``, ``sha256``, ``format_version``, ``data_name``, ``epoch`` of the checkpoint.
    snapshots : sequence of Snapshot, optional
        History snapshots for the evolution figures (none: the section says so).
    threshold : float, default 0.1
    n_clusters : int, optional
    dpi : int, default 150
        Resolution of the embedded PNG images.
    version : str
        taan-viz version shown in the footer.
    progress : callable, optional
        Called with the name of each figure as it is drawn.
    sections : sequence of (id, title, html)
        Further sections, placed before the layers (e.g. the consensus of several runs); the
        html is inserted as given.

    Returns
    -------
    html : str
    figure_keys : list of str
        The figures embedded, in page order.
    """
    from taan_viz.plots.cluster import clustermap, plot_dendrograms, plot_embeddings
    from taan_viz.plots.curves import plot_curve_grid, plot_curves
    from taan_viz.plots.heatmap import plot_heatmaps
    from taan_viz.plots.training import plot_training
    from taan_viz.plots.tree import plot_sharing_tree

    clusters = analysis.cluster_labels(n_clusters=n_clusters, threshold=threshold)
    tree = analysis.sharing_tree(threshold)
    t = analysis.num_tasks
    how = f"{n_clusters} clusters per layer" if n_clusters else f"clusters cut at {threshold:g} × RMS norm"
    specs: list[tuple[str, str, str, Callable]] = [
        ("heatmap", "Functional distances", "Distance d(Fₛ, Fₜ) between the tasks' activations in every layer, "
         "one colour scale; tasks in the sharing-tree order.",
         lambda: plot_heatmaps(analysis, threshold=threshold)),
        ("heatmap-cosine", "Cosine similarities", "cos(Fₛ, Fₜ) on the diverging scale [−1, 1].",
         lambda: plot_heatmaps(analysis, metric="cosine", threshold=threshold)),
        ("curves", "Activation functions", f"Every task's Fₜ (top) and its residual Fₜ − relu (bottom), colours by "
         f"cluster ({how}); shaded: the measure; ticks: hinges.",
         lambda: plot_curves(analysis, n_clusters=n_clusters, threshold=threshold, residual=True)),
    ]
    if t > 8:
        deepest = max(range(len(analysis.layers)), key=lambda k: analysis.layers[k].index)
        specs.append(("curves-tasks", "Activation functions per task",
                      "Small multiples of the deepest analysed layer: each task over the others in grey.",
                      lambda: plot_curve_grid(analysis, deepest, n_clusters=n_clusters, threshold=threshold)))
    specs += [
        ("cluster", "Clusterings", "Dendrogram of each layer; colours follow a cluster across layers.",
         lambda: plot_dendrograms(analysis, n_clusters=n_clusters, threshold=threshold)),
        ("clustermap", "Clustermap of the deepest layer", "The deepest analysed layer's distances in its own "
         "clustered order with its dendrogram.",
         lambda: clustermap(analysis, max(range(len(analysis.layers)), key=lambda k: analysis.layers[k].index),
                            n_clusters=n_clusters, threshold=threshold)),
        ("mds", "Task maps (classical MDS)", "Tasks as points whose distances approximate d(Fₛ, Fₜ).",
         lambda: plot_embeddings(analysis, n_clusters=n_clusters, threshold=threshold)),
        ("tree", "Sharing tree", "The hard-sharing architecture the learned activations imply.",
         lambda: plot_sharing_tree(tree).figure),
    ]
    if snapshots:
        from taan_viz.plots.evolution import plot_curves_evolution, plot_evolution

        specs += [
            ("evolution", "Evolution of the distances", "Distances at the history snapshots, one colour scale.",
             lambda: plot_evolution(snapshots, analysis)),
            ("evolution-curves", "Evolution of the activations", "Activation curves at the history snapshots, "
             "axes fixed per layer.", lambda: plot_curves_evolution(snapshots, analysis, threshold=threshold)),
        ]
    if analysis.metrics:
        specs.append(("training", "Training", "Losses and validation metrics per epoch.",
                      lambda: plot_training(analysis.metrics)))
    figures = []
    for key, title, caption, make in specs:
        if progress:
            progress(key)
        fig = make()
        figures.append(_Figure(key, title, caption, _png_uri(fig, dpi)))

    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
             f"<meta name=\"generator\" content=\"taan-viz {_esc(version)}\">"
             f"<title>TAAN report: {_esc(Path(str(checkpoint.get('path', ''))).name)}</title>"
             f"<style>{_CSS}</style></head><body><main>"]
    parts.append(f"<h1>What the network learned</h1><p class=\"note\">taan-viz report of "
                 f"<span class=\"mono\">{_esc(checkpoint.get('path', ''))}</span></p>")
    meta = [
        ("checkpoint", checkpoint.get("path", "")), ("sha256", analysis.sha256),
        ("format version", checkpoint.get("format_version", "")), ("data set", checkpoint.get("data_name", "")),
        ("tasks", t), ("layers", ", ".join(f"{la.index + 1}: {la.name}" for la in analysis.layers)),
        ("epochs trained", checkpoint.get("epoch", "")), ("measure", analysis.measure.describe()),
    ]
    parts.append('<table class="meta">' + "".join(f"<tr><td>{_esc(k)}</td><td class=\"mono\">{_esc(v)}</td></tr>"
                                                  for k, v in meta) + "</table>")
    parts.append("<nav>" + "".join(f'<a href="#{_esc(a)}">{_esc(title)}</a>' for a, title, _ in sections)
                 + "<a href=\"#layers\">Layers</a><a href=\"#figures\">Figures</a>"
                 "<a href=\"#tasks\">Tasks</a><a href=\"#training\">Training</a><a href=\"#math\">Math</a></nav>")
    for anchor, title, body in sections:
        parts.append(f'<h2 id="{_esc(anchor)}">{_esc(title)}</h2>\n{body}')
    parts.append('<h2 id="layers">Layers</h2>')
    header = ["#", "layer", "M", "μ", "σ", "mean ‖Fₜ‖", "mean d", "max d", "clusters", "sharing groups",
              "cophenetic r", "ARI vs planted"]
    parts.append(_table(header, _summary_rows(analysis, clusters, tree), "num layers"))
    parts.append('<p class="note">ARI: adjusted Rand index between the planted groups and as many flat clusters '
                 '(1 = recovered exactly; – when the checkpoint has no ground truth). Clusters, sharing groups '
                 'and planted groups are numbered from 1 in the task tables.</p>')
    parts.append('<h2 id="figures">Figures</h2>')
    for f in figures:
        parts.append(f'<figure id="fig-{f.key}"><h3>{_esc(f.title)}</h3><img src="{f.data_uri}" '
                     f'alt="{_esc(f.title)}"><figcaption>{_esc(f.caption)}</figcaption></figure>')
    if not snapshots:
        parts.append('<p class="note">No history snapshots in this checkpoint, so no evolution figures.</p>')
    parts.append('<h2 id="tasks">Tasks per layer</h2>')
    depth = {la.index: k for k, la in enumerate(sorted(analysis.layers, key=lambda la: la.index))}
    for k, la in enumerate(analysis.layers):
        parts.append(f"<h3>Layer {la.index + 1}: {_esc(la.name)}</h3>")
        head = ["task", "‖Fₜ‖", "nearest task", "d to nearest", "cluster", "sharing group", "planted group",
                "pre-act. mean", "pre-act. std"]
        parts.append(_table(head, _task_rows(analysis, k, clusters[k], tree.groups[depth[la.index]]), "num tasks"))
        if t > _TABLE_ROWS_MAX:
            parts.append(f'<p class="note">First {_TABLE_ROWS_MAX} of {t} tasks in clustered order; '
                         "taan-viz export writes them all.</p>")
    parts.append('<h2 id="training">Training metrics</h2>')
    if analysis.metrics:
        keys, rows = _metrics_rows(analysis.metrics)
        parts.append(_table(keys, rows, "num metrics"))
    else:
        parts.append('<p class="note">The checkpoint records no per-epoch metrics.</p>')
    parts.append('<h2 id="math">The math used</h2>')
    ari = (" ARI compares the planted groups of a layer with the same number of flat clusters."
           if analysis.has_planted else "")
    parts.append(_MATH.format(measure=_esc(analysis.measure.describe()), method=_esc(analysis.method),
                              threshold=threshold, ari=ari))
    parts.append(f'<p class="note">Made by taan-viz {_esc(version)}; versions and arguments in manifest.json.</p>')
    parts.append("</main></body></html>\n")
    return "\n".join(parts), [f.key for f in figures]


def build_report(
    analysis: Analysis,
    out: "str | Path",
    *,
    checkpoint: Mapping[str, Any],
    snapshots: Sequence[Snapshot] | None = None,
    threshold: float = 0.1,
    n_clusters: int | None = None,
    dpi: int = 150,
    arguments: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    sections: Sequence[tuple[str, str, str]] = (),
    manifest_extra: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write ``index.html`` and ``manifest.json`` into ``out``.

    Parameters
    ----------
    analysis, checkpoint, snapshots, threshold, n_clusters, dpi, progress, sections
        See :func:`render_report`.
    out : path-like
        Folder, created when missing.
    arguments : mapping, optional
        The options that made the report, recorded in the manifest.
    overwrite : bool, default False
        Replace existing files; otherwise existing files are an error and nothing is written.
    manifest_extra : mapping, optional
        Further entries of ``manifest.json`` (e.g. the consensus summary, a measure warning).

    Returns
    -------
    list of Path

    Raises
    ------
    FileExistsError
    """
    out = Path(out)
    if not overwrite:
        existing = [n for n in REPORT_FILES if (out / n).exists()]
        if existing:
            raise FileExistsError(f"{out / existing[0]} exists; pass --overwrite to replace it")
    versions = tool_versions()
    page, keys = render_report(analysis, checkpoint=checkpoint, snapshots=snapshots, threshold=threshold,
                               n_clusters=n_clusters, dpi=dpi, version=versions.get("taan", ""), progress=progress,
                               sections=sections)
    data = page.encode("utf-8")
    manifest = {
        "tool": "taan-viz",
        "versions": versions,
        "platform": platform.platform(),
        "command": " ".join(["taan-viz", *sys.argv[1:]]) if sys.argv and "taan" in Path(sys.argv[0]).name else None,
        "arguments": dict(arguments or {}),
        "checkpoint": {k: str(v) for k, v in checkpoint.items()},
        "measure": {"spec": analysis.measure.spec, "description": analysis.measure.describe()},
        "layers": [{"position": la.index + 1, "name": la.name, "mu": la.geometry.mu, "sigma": la.geometry.sigma}
                   for la in analysis.layers],
        "metrics": {k: v[1] for k, v in METRICS.items()},
        "figures": keys,
        "files": {"index.html": {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}},
        **dict(manifest_extra or {}),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.html").write_bytes(data)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return [out / n for n in REPORT_FILES]
