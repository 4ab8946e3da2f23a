"""The HTML report: one self-contained, offline page with every figure, the tables, the training
metrics and the math, plus a ``manifest.json`` that says exactly what produced it.

Images are embedded as base64 data URIs and the styles are inline, so ``index.html`` can be
mailed, archived or opened from any folder without its neighbours and without a network.

The page is a Jinja2 template (``taan_viz/templates/report.html``) rendered with autoescaping,
so task names and paths can never inject markup. Further sections (e.g. a comparison of several
checkpoints) are added by passing :class:`ReportSection` objects to :func:`render_report`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from taan_core._atomic import refuse_link, write_file
from taan_viz.analysis import METRICS, Analysis, Snapshot

__all__ = ["REPORT_FILES", "ReportFigure", "ReportSection", "build_report", "figure_uri", "render_report",
           "tool_versions"]

REPORT_FILES = ("index.html", "manifest.json")
_TABLE_ROWS_MAX = 100
# The per-task small multiples are embedded up to this many tasks; beyond, their dozens of
# panels would cost more than the rest of the report, and the page says where they are
# (taan-viz curves --grid writes every page).
_GRID_TASKS_MAX = 24


def tool_versions() -> dict[str, str]:
    """Versions of taan and of the libraries that shape the numbers and the figures."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("taan", "torch", "numpy", "scipy", "matplotlib", "jinja2"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


@dataclass
class ReportFigure:
    """One embedded figure: ``key`` (its anchor ``fig-<key>``), heading, caption, PNG data URI."""

    key: str
    title: str
    caption: str
    data_uri: str


@dataclass
class ReportSection:
    """A further section of the report, rendered after the training metrics.

    Attributes
    ----------
    id : str
        Anchor and navigation target.
    title : str
    paragraphs : list of str
        Text (escaped).
    figures : list of ReportFigure
    tables : list of (header, rows)
    notes : list of str
    warnings : list of str
        Lines a reader must not miss (e.g. a layer whose groups differ between runs), one
        paragraph each after ``paragraphs``, in dark red.
    """

    id: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    figures: list[ReportFigure] = field(default_factory=list)
    tables: list[tuple[Sequence[str], Sequence[Sequence[Any]]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def figure_uri(fig, dpi: int) -> str:
    """``fig`` as a PNG data URI, for :class:`ReportFigure`."""
    buf = io.BytesIO()
    from taan_viz.plots._style import savefig_once

    savefig_once(fig, buf, format="png", dpi=dpi, facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.{digits}g}"


def _summary_rows(analysis: Analysis, clusters: list[np.ndarray], tree) -> list[list[str]]:
    depth = {la.index: k for k, la in enumerate(sorted(analysis.layers, key=lambda la: la.index))}
    rows = []
    for la, lab in zip(analysis.layers, clusters):
        g = la.geometry
        t = g.num_tasks
        # The diagonal is zero and the distances >= 0, so the off-diagonal mean and maximum come
        # from the whole matrix without a T x T mask and copy.
        mean = float(g.distance.sum()) / (t * (t - 1)) if t > 1 else None
        top = float(g.distance.max()) if t > 1 else None
        rows.append([
            la.index + 1, la.name, g.hinges.shape[0], _fmt(g.mu), _fmt(g.sigma), _fmt(float(g.norms.mean())),
            _fmt(mean), _fmt(top),
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


def _template():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(str(Path(__file__).parent / "templates")), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=False, lstrip_blocks=False)
    return env.get_template("report.html")


def _groups_rule(n_clusters: int | None, threshold: float) -> str:
    if n_clusters:
        return (f"the figures and tables colour and count {n_clusters} clusters cut from each layer's linkage "
                f"tree (--clusters); the sharing tree keeps its own rule at {threshold:g}")
    return (f"every figure and table uses the sharing tree's groups at {threshold:g} (tree, dendrograms, curves, "
            "task maps and the export agree)")


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
    sections: Sequence[ReportSection] = (),
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
    sections : sequence of ReportSection
        Further sections, after the training metrics (their figures count in ``figure_keys``).

    Returns
    -------
    html : str
    figure_keys : list of str
        The figures embedded, in page order.
    """
    clusters = analysis.cluster_labels(n_clusters=n_clusters, threshold=threshold)
    palette = analysis.palette(n_clusters=n_clusters, threshold=threshold)
    tree = analysis.sharing_tree(threshold)
    t = analysis.num_tasks
    # Beside a consensus of several runs the figures need not say that one run cannot tell how
    # stable its groups are: the consensus section says how stable they are.
    single_run = not any(sec.id == "consensus" for sec in sections)
    specs, notes = _figure_specs(analysis, tree, palette, snapshots=snapshots, threshold=threshold,
                                 n_clusters=n_clusters, single_run=single_run)
    figures = []
    for key, title, caption, make in specs:
        if progress:
            progress(key)
        figures.append(ReportFigure(key, title, caption, figure_uri(make(), dpi)))
    task_tables = _task_tables(analysis, clusters, tree)
    metrics_header, metrics_rows = _metrics_rows(analysis.metrics) if analysis.metrics else ([], [])
    nav = [("layers", "Layers"), ("figures", "Figures"), ("tasks", "Tasks"), ("training", "Training")]
    nav += [(sec.id, sec.title) for sec in sections] + [("math", "Math")]
    context = {
        "version": version,
        "checkpoint": {"path": checkpoint.get("path", "")},
        "checkpoint_name": Path(str(checkpoint.get("path", ""))).name,
        "meta": [
            ("checkpoint", checkpoint.get("path", "")), ("sha256", analysis.sha256),
            ("format version", checkpoint.get("format_version", "")), ("data set", checkpoint.get("data_name", "")),
            ("tasks", t), ("layers", ", ".join(f"{la.index + 1}: {la.name}" for la in analysis.layers)),
            ("epochs trained", checkpoint.get("epoch", "")), ("measure", analysis.describe_measure()),
        ],
        "nav": nav,
        "layer_header": ["#", "layer", "M", "μ", "σ", "mean ‖Fₜ‖", "mean d", "max d", "groups", "sharing groups",
                         "cophenetic r", "ARI vs planted"],
        "layer_rows": _summary_rows(analysis, clusters, tree),
        "groups_rule": _groups_rule(n_clusters, threshold),
        "colours": palette.describe(),
        "figures": figures,
        "figure_notes": notes,
        "task_header": ["task", "‖Fₜ‖", "nearest task", "d to nearest", "group", "sharing group", "planted group",
                        "pre-act. mean", "pre-act. std"],
        "task_tables": task_tables,
        "metrics_header": metrics_header,
        "metrics_rows": metrics_rows,
        "sections": list(sections),
        "measure": analysis.describe_measure(),
        "method": analysis.method,
        "threshold": f"{threshold:g}",
        "ari": analysis.has_planted,
    }
    page = _template().render(**context)
    keys = [f.key for f in figures] + [f.key for sec in sections for f in sec.figures]
    return page, keys


def _figure_specs(analysis: Analysis, tree, palette, *, snapshots, threshold: float, n_clusters: int | None,
                  single_run: bool) -> tuple[list[tuple[str, str, str, Callable]], list[str]]:
    """The report's figures in page order, as (key, title, caption, draw), and notes on those
    left out."""
    from taan_viz.plots.cluster import clustermap, plot_dendrograms, plot_embeddings
    from taan_viz.plots.curves import plot_curve_grid, plot_curves
    from taan_viz.plots.heatmap import plot_heatmaps
    from taan_viz.plots.training import plot_training
    from taan_viz.plots.tree import plot_sharing_tree, tree_figure

    t = analysis.num_tasks
    deepest = max(range(len(analysis.layers)), key=lambda k: analysis.layers[k].index)
    how = f"{n_clusters} clusters per layer" if n_clusters else f"groups of the sharing tree at {threshold:g}"

    def tree_fig():
        fig, ax = tree_figure(tree)
        plot_sharing_tree(tree, ax=ax, palette=palette, single_run=single_run,
                          note=analysis.separation_note(threshold=threshold))
        return fig

    specs: list[tuple[str, str, str, Callable]] = [
        ("heatmap", "Functional distances", "Distance d(Fₛ, Fₜ) between the tasks' activations in every layer, "
         "one colour scale; tasks in the sharing-tree order.",
         lambda: plot_heatmaps(analysis, threshold=threshold, palette=palette, single_run=single_run)),
        # Beyond 40 tasks the distance heatmap grows to hold every name; the cosines follow it in
        # the same order, so they leave the names to it and stay one page wide.
        ("heatmap-cosine", "Cosine similarities", "cos(Fₛ, Fₜ) on the diverging scale [−1, 1]"
         + (", tasks in the order of the distance heatmap, which names them." if t > 40 else "."),
         lambda: plot_heatmaps(analysis, metric="cosine", threshold=threshold, palette=palette,
                               labels="none" if t > 40 else "auto", single_run=single_run)),
        ("curves", "Activation functions", f"Every task's Fₜ (top) and its residual Fₜ − relu (bottom), coloured "
         f"by task ({how}); shaded: the measure; ticks: hinges.",
         lambda: plot_curves(analysis, n_clusters=n_clusters, threshold=threshold, residual=True, palette=palette)),
    ]
    notes = []
    if 8 < t <= _GRID_TASKS_MAX:
        specs.append(("curves-tasks", "Activation functions per task",
                      "Small multiples of the deepest analysed layer: each task over the others in grey.",
                      lambda: plot_curve_grid(analysis, deepest, n_clusters=n_clusters, threshold=threshold,
                                              palette=palette)))
    elif t > _GRID_TASKS_MAX:
        notes.append(f"The per-task small multiples of {t} tasks are not embedded; taan-viz curves --grid writes "
                     "them, 64 tasks a page.")
    specs += [
        ("cluster", "Clusterings", "Dendrogram of each layer, tasks in their colours.",
         lambda: plot_dendrograms(analysis, n_clusters=n_clusters, threshold=threshold, palette=palette)),
        ("clustermap", "Clustermap of the deepest layer", "The deepest analysed layer's distances in its own "
         "clustered order with its dendrogram.",
         lambda: clustermap(analysis, deepest, n_clusters=n_clusters, threshold=threshold, palette=palette)),
        ("mds", "Task maps (classical MDS)", "Tasks as points whose distances approximate d(Fₛ, Fₜ).",
         lambda: plot_embeddings(analysis, n_clusters=n_clusters, threshold=threshold, palette=palette)),
        ("tree", "Sharing tree", "The hard-sharing architecture the learned activations imply.", tree_fig),
    ]
    if snapshots:
        from taan_viz.plots.evolution import plot_curves_evolution, plot_evolution

        specs += [
            ("evolution", "Evolution of the distances", "Distances at the history snapshots, one colour scale.",
             lambda: plot_evolution(analysis, snapshots)),
            ("evolution-curves", "Evolution of the activations", "Activation curves at the history snapshots, "
             "axes fixed per layer.",
             lambda: plot_curves_evolution(analysis, snapshots, threshold=threshold, palette=palette)),
        ]
    else:
        notes.append("No history snapshots in this checkpoint, so no evolution figures.")
    if analysis.metrics:
        specs.append(("training", "Training", "Losses and validation metrics per epoch.",
                      lambda: plot_training(analysis.metrics)))
    return specs, notes


def _task_tables(analysis: Analysis, clusters, tree) -> list[dict]:
    """One table per analysed layer: each task's norm, nearest task, groups and statistics."""
    t = analysis.num_tasks
    depth = {la.index: k for k, la in enumerate(sorted(analysis.layers, key=lambda la: la.index))}
    task_tables = []
    for k, la in enumerate(analysis.layers):
        task_tables.append({
            "number": la.index + 1, "name": la.name,
            "rows": _task_rows(analysis, k, clusters[k], tree.groups[depth[la.index]]),
            "note": (f"First {_TABLE_ROWS_MAX} of {t} tasks in clustered order; taan-viz export writes them all."
                     if t > _TABLE_ROWS_MAX else ""),
        })
    return task_tables


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
    sections: Sequence[ReportSection] = (),
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
    manifest_extra : mapping, optional
        Further manifest entries (e.g. the consensus of several runs, a measure warning).
    overwrite : bool, default False
        Replace existing files; otherwise existing files are an error and nothing is written.

    Returns
    -------
    list of Path

    Raises
    ------
    FileExistsError
    """
    out = Path(out)
    for name in REPORT_FILES:
        refuse_link(out / name)
    if not overwrite:
        existing = [n for n in REPORT_FILES if os.path.lexists(out / n)]
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
        "measure": {"spec": analysis.measure.spec, "description": analysis.describe_measure()},
        "layers": [{"position": la.index + 1, "name": la.name, "mu": la.geometry.mu, "sigma": la.geometry.sigma}
                   for la in analysis.layers],
        "metrics": {k: v[1] for k, v in METRICS.items()},
        "figures": keys,
        "files": {"index.html": {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}},
        **dict(manifest_extra or {}),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_file(out / "index.html", data)
    write_file(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return [out / n for n in REPORT_FILES]
