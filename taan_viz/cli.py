"""The ``taan-viz`` command line: thin typer commands over taan_viz's library functions.

Heavy modules (sympy, training code, the other figure families) are imported inside the commands
that need them, so that ``taan-viz heatmap`` starts fast. Every command reads one or more runs
(checkpoints, run folders, folders of runs), writes only under ``--out`` (by default
``<checkpoint stem>-viz/`` next to each checkpoint; ``--out/<run>/`` per run when there are
several) with fixed file names, refuses to replace files without ``--overwrite``, and reports a
user error as one line on stderr with exit status 2. ``consensus`` combines several runs into one
picture with its confidence; ``report`` on several runs includes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from taan_core._cli_runner import run_app, user_input
from taan_core.errors import UserError
from taan_viz._cli_support import (
    Checkpoints,
    Clusters,
    Dpi,
    Format,
    Layers,
    Measure,
    Method,
    Metric,
    Out,
    Overwrite,
    TaskNames,
    Threshold,
    claim_paths,
    common_out,
    heatmap_order,
    note_per_run,
    open_runs,
    warn_not_separated,
    figure_metadata,
    default_out,
    save_and_echo,
    metric_suffix,
    tool_version,
)
from taan_viz.verify import verify_command

__all__ = ["app", "main"]

app = typer.Typer(
    name="taan-viz",
    help="Show what a TAAN learned: heatmaps, activation curves, clusterings, sharing tree, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("verify")(verify_command)

Labels = Annotated[str, typer.Option(
    "--labels", help="Task names: 'auto' (up to 100 tasks, the figure growing to fit them), 'all' (at any "
    "count) or 'none'.")]
# The per-task grids hold dozens of small panels: 150 dpi is sharp for them at their print size
# and a quarter of the pixels of 300.
_GRID_DPI = 150
CLUSTERMAPS = ("deepest", "all", "none")

# ----------------------------------------------------------------------------------------------
# commands


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the taan-viz version and exit.")] = False,
) -> None:
    if version:
        typer.echo(f"taan-viz {tool_version()}")
        raise typer.Exit(0)


@app.command("heatmap")
def heatmap_command(
    checkpoints: Checkpoints,
    layers: Layers = None,
    metric: Metric = "distance",
    measure: Measure = "data",
    out: Out = None,
    fmt: Format = "png",
    dpi: Dpi = 300,
    task_names: TaskNames = None,
    overwrite: Overwrite = False,
    order_by: Annotated[str, typer.Option(
        "--order-by", help="Task order shared by all panels: 'tree' (sharing tree: the deepest layer's "
        "clustering with shallower groups kept together), a layer (name or 1-based position; its clustering), "
        "or 'none' (checkpoint order).")] = "tree",
    scale: Annotated[str, typer.Option(
        "--scale", help="'shared': one colour scale for all layers; 'layer': one each.")] = "shared",
    annotate: Annotated[Optional[bool], typer.Option(
        "--annotate/--no-annotate", help="Write values in the cells (default: when there are at most 10 tasks).",
        show_default=False)] = None,
    threshold: Threshold = 0.1,
    method: Method = "average",
    labels: Labels = "auto",
) -> None:
    """Task-by-task heatmaps of every layer, one clustered task order and one colour scale.

    Writes heatmap.<format> (heatmap-<metric>.<format> for metrics other than distance).
    """
    if scale not in ("shared", "layer"):
        raise UserError(f"--scale must be 'shared' or 'layer', got {scale!r}")
    runs, fmt = open_runs(checkpoints, measure=measure, layers=layers, task_names=task_names, method=method, out=out,
                          fmt=fmt, dpi=dpi, threshold=threshold, metric=metric, labels=labels)
    for run in runs:
        ckpt, analysis = run.ckpt, run.analysis
        order = heatmap_order(run, order_by)
        (path,) = run.claim([f"heatmap{metric_suffix(metric)}.{fmt}"], overwrite)
        from taan_viz.plots.heatmap import plot_heatmaps

        fig = plot_heatmaps(analysis, metric=metric, order_by=order, scale=scale, annot=annotate,
                            threshold=threshold, labels=labels)
        save_and_echo(fig, path, dpi, figure_metadata(ckpt, f"{metric} heatmap", run.note))
        warn_not_separated(run, analysis.separation_note(threshold=threshold))
    note_per_run(runs, "heatmap")


@app.command("curves")
def curves_command(
    checkpoints: Checkpoints,
    layers: Layers = None,
    measure: Measure = "data",
    out: Out = None,
    fmt: Format = "png",
    dpi: Dpi = 300,
    task_names: TaskNames = None,
    overwrite: Overwrite = False,
    residual: Annotated[bool, typer.Option(
        "--residual", help="Add a row with each task's residual F_t - relu.")] = False,
    relu: Annotated[bool, typer.Option("--relu/--no-relu", help="Draw relu(x) for reference.")] = True,
    grid: Annotated[bool, typer.Option(
        "--grid/--no-grid", help="Also draw small multiples, one panel per task, for each layer (64 tasks a "
        "page, at most 150 dpi).")] = False,
    clusters: Clusters = None,
    threshold: Threshold = 0.1,
    method: Method = "average",
) -> None:
    """Every task's activation function F_t per layer, coloured by cluster, over the measure.

    Writes curves.<format>, and with --grid curves-tasks-L<l>-<layer>.<format> per layer (more than 64
    tasks: further pages curves-tasks-L<l>-<layer>-<page>.<format>).
    """
    runs, fmt = open_runs(checkpoints, measure=measure, layers=layers, task_names=task_names, method=method, out=out,
                          fmt=fmt, dpi=dpi, threshold=threshold, clusters=clusters)
    for run in runs:
        ckpt, analysis = run.ckpt, run.analysis
        from taan_viz.export import layer_slug

        names = [f"curves.{fmt}"]
        pages: list[tuple[int, int]] = []
        if grid:
            from taan_viz.plots.curves import grid_pages

            for k, la in enumerate(analysis.layers):
                for page in range(1, grid_pages(analysis.num_tasks) + 1):
                    suffix = "" if page == 1 else f"-{page}"
                    names.append(f"curves-tasks-{layer_slug(la.index, la.name)}{suffix}.{fmt}")
                    pages.append((k, page))
        paths = run.claim(names, overwrite)
        from taan_viz.plots.curves import plot_curve_grid, plot_curves

        fig = plot_curves(analysis, n_clusters=clusters, threshold=threshold, residual=residual, relu=relu)
        save_and_echo(fig, paths[0], dpi, figure_metadata(ckpt, "activation curves", run.note))
        for (k, page), path in zip(pages, paths[1:]):
            fig = plot_curve_grid(analysis, k, n_clusters=clusters, threshold=threshold, page=page)
            title = f"activation curves per task, layer {analysis.layers[k].name}, page {page}"
            save_and_echo(fig, path, min(dpi, _GRID_DPI), figure_metadata(ckpt, title, run.note))
    note_per_run(runs, "curves")


@app.command("cluster")
def cluster_command(
    checkpoints: Checkpoints,
    layers: Layers = None,
    metric: Metric = "distance",
    measure: Measure = "data",
    out: Out = None,
    fmt: Format = "png",
    dpi: Dpi = 300,
    task_names: TaskNames = None,
    overwrite: Overwrite = False,
    clusters: Clusters = None,
    threshold: Threshold = 0.1,
    method: Method = "average",
    labels: Labels = "auto",
    clustermaps: Annotated[str, typer.Option(
        "--clustermaps", help="Clustermaps to draw: of the deepest analysed layer (deepest), of every "
        "analysed layer (all), or none.")] = "deepest",
) -> None:
    """Hierarchical clustering of the tasks: dendrograms, clustermaps, and task maps (MDS).

    Writes cluster.<format> (dendrograms of all analysed layers), clustermap-L<l>-<layer>.<format>
    (showing --metric; the deepest layer's, or per layer with --clustermaps all) and mds.<format>.
    """
    if clustermaps not in CLUSTERMAPS:
        raise UserError(f"--clustermaps must be one of {', '.join(CLUSTERMAPS)}, got {clustermaps!r}")
    runs, fmt = open_runs(checkpoints, measure=measure, layers=layers, task_names=task_names, method=method, out=out,
                          fmt=fmt, dpi=dpi, threshold=threshold, clusters=clusters, metric=metric, labels=labels)
    for run in runs:
        ckpt, analysis = run.ckpt, run.analysis
        from taan_viz.export import layer_slug

        mapped = {"all": list(range(len(analysis.layers))), "deepest": [len(analysis.layers) - 1],
                  "none": []}[clustermaps]
        names = [f"cluster.{fmt}"]
        names += [f"clustermap{metric_suffix(metric)}-{layer_slug(la.index, la.name)}.{fmt}"
                  for la in (analysis.layers[k] for k in mapped)]
        names.append(f"mds.{fmt}")
        paths = run.claim(names, overwrite)
        from taan_viz.plots.cluster import clustermap, plot_dendrograms, plot_embeddings

        save_and_echo(plot_dendrograms(analysis, n_clusters=clusters, threshold=threshold, labels=labels),
                      paths[0], dpi, figure_metadata(ckpt, "dendrograms", run.note))
        for path, k in zip(paths[1:-1], mapped):
            fig = clustermap(analysis, k, metric=metric, n_clusters=clusters, threshold=threshold, labels=labels)
            save_and_echo(fig, path, dpi,
                          figure_metadata(ckpt, f"clustermap of layer {analysis.layers[k].name}", run.note))
        save_and_echo(plot_embeddings(analysis, n_clusters=clusters, threshold=threshold), paths[-1], dpi,
              figure_metadata(ckpt, "classical MDS of the tasks", run.note))
    note_per_run(runs, "cluster")


@app.command("tree")
def tree_command(
    checkpoints: Checkpoints,
    layers: Layers = None,
    measure: Measure = "data",
    out: Out = None,
    fmt: Format = "png",
    dpi: Dpi = 300,
    task_names: TaskNames = None,
    overwrite: Overwrite = False,
    threshold: Threshold = 0.1,
    absolute: Annotated[bool, typer.Option(
        "--absolute", help="Read --threshold as a distance, not as a fraction of the RMS activation norm.")] = False,
    labels: Labels = "auto",
) -> None:
    """The sharing tree: which tasks can share each layer, drawn as the hard-sharing network it implies.

    Writes tree.<format>.
    """
    runs, fmt = open_runs(checkpoints, measure=measure, layers=layers, task_names=task_names, out=out, fmt=fmt, dpi=dpi,
                          threshold=threshold, labels=labels)
    from taan_viz.plots._style import show_labels

    for run in runs:
        ckpt, analysis = run.ckpt, run.analysis
        (path,) = run.claim([f"tree.{fmt}"], overwrite)
        from taan_viz.plots.tree import plot_sharing_tree, tree_figure

        tree = analysis.sharing_tree(threshold, relative=not absolute)
        names = show_labels(labels, analysis.num_tasks)
        fig, ax = tree_figure(tree, names=names)
        # The tasks' colours of every other figure (the relative rule); an absolute threshold
        # makes its own groups, coloured by the same rule.
        palette = analysis.palette(threshold=threshold) if not absolute else None
        # The groups are judged where they are the analysis' own (the relative rule).
        weak = analysis.separation_note(threshold=threshold) if not absolute else None
        plot_sharing_tree(tree, ax=ax, names=names, palette=palette, note=weak)
        save_and_echo(fig, path, dpi, figure_metadata(ckpt, "sharing tree", run.note))
        warn_not_separated(run, weak)
    note_per_run(runs, "tree")


@app.command("evolution")
def evolution_command(
    checkpoints: Checkpoints,
    layers: Layers = None,
    metric: Metric = "distance",
    measure: Measure = "data",
    out: Out = None,
    fmt: Format = "png",
    dpi: Dpi = 300,
    task_names: TaskNames = None,
    overwrite: Overwrite = False,
    columns: Annotated[int, typer.Option(
        "--columns", help="Snapshots shown in the small multiples (evenly spaced).")] = 6,
    gif: Annotated[bool, typer.Option(
        "--gif/--no-gif", help="Also write an animated GIF, one frame per snapshot.")] = True,
    fps: Annotated[float, typer.Option("--fps", help="Frames per second of the GIF.")] = 2.0,
    threshold: Threshold = 0.1,
) -> None:
    """How the geometry developed during training: heatmaps and curves at the history snapshots.

    Writes evolution<-metric>.<format>, evolution-curves.<format> and (with --gif) evolution<-metric>.gif.
    """
    if columns < 1:
        raise UserError(f"--columns must be >= 1, got {columns}")
    if not fps > 0:
        raise UserError(f"--fps must be > 0, got {fps:g}")
    runs, fmt = open_runs(checkpoints, measure=measure, layers=layers, task_names=task_names, out=out, fmt=fmt, dpi=dpi,
                          threshold=threshold, metric=metric)
    from taan_viz.analysis import history_geometry

    for run in runs:
        ckpt, analysis = run.ckpt, run.analysis
        with user_input():  # the checkpoint's history snapshots, checked like the rest of the file
            snapshots = history_geometry(ckpt, measure=analysis.measure, layers=[la.index for la in analysis.layers])
        names = [f"evolution{metric_suffix(metric)}.{fmt}", f"evolution-curves.{fmt}"]
        if gif:
            names.append(f"evolution{metric_suffix(metric)}.gif")
        paths = run.claim(names, overwrite)
        from taan_viz.plots.evolution import animate_evolution, plot_curves_evolution, plot_evolution

        save_and_echo(plot_evolution(analysis, snapshots, metric=metric, max_columns=columns), paths[0], dpi,
              figure_metadata(ckpt, f"evolution of the {metric}", run.note))
        fig = plot_curves_evolution(analysis, snapshots, max_columns=columns, threshold=threshold)
        save_and_echo(fig, paths[1], dpi, figure_metadata(ckpt, "evolution of the activation curves", run.note))
        if gif:
            animate_evolution(analysis, snapshots, paths[2], metric=metric, fps=fps, threshold=threshold)
            typer.echo(str(paths[2]))
    note_per_run(runs, "evolution")


@app.command("report")
def report_command(
    checkpoints: Checkpoints,
    layers: Layers = None,
    measure: Measure = "data",
    out: Annotated[Optional[Path], typer.Option(
        "-o", "--out", help="Report folder (default: <checkpoint stem>-viz/report next to the checkpoint; "
        "report/ in the folder holding the runs when there are several).",
        show_default=False)] = None,
    dpi: Annotated[int, typer.Option("--dpi", help="Resolution of the embedded images.")] = 150,
    task_names: TaskNames = None,
    overwrite: Overwrite = False,
    clusters: Clusters = None,
    threshold: Threshold = 0.1,
    method: Method = "average",
) -> None:
    """A self-contained offline HTML report: every figure, the tables, training metrics, the math.

    With several runs the report opens with their consensus (as taan-viz consensus draws it) and
    shows the run that agrees most with the others. Writes index.html (images embedded) and manifest.json (versions, checkpoint hash, arguments).
    """
    runs, _ = open_runs(checkpoints, measure=measure, layers=layers, task_names=task_names, method=method, dpi=dpi,
                        threshold=threshold, clusters=clusters)
    from taan_viz.report import REPORT_FILES, build_report

    sections, extra = [], {}
    if len(runs) > 1:
        # Several runs: the consensus first, then the run that agrees most with the others.
        from taan_viz._consensus_report import consensus_section
        from taan_viz.consensus import consensus

        with user_input():  # several runs must agree in tasks and layers
            cons = consensus([r.analysis for r in runs], runs=[r.label for r in runs], threshold=threshold,
                             n_clusters=clusters)
        run = runs[cons.representative]
        out_dir = out if out is not None else common_out(runs, "report")
        sections.append(consensus_section(cons, dpi))
        extra["consensus"] = {"runs": list(cons.runs), "representative": run.label,
                              "stability": {la.name: la.stability for la in cons.layers}}
    else:
        run = runs[0]
        out_dir = default_out(run.ckpt, out, "report")
    ckpt, analysis = run.ckpt, run.analysis
    if run.note:
        from taan_viz.report import ReportSection

        sections.append(ReportSection(id="measure-warning", title="Measure warning", notes=[run.note]))
        extra["measure_warning"] = run.note
    claim_paths(out_dir, list(REPORT_FILES), overwrite)
    snapshots = None
    if ckpt.history:
        from taan_viz.analysis import history_geometry

        with user_input():
            snapshots = history_geometry(ckpt, measure=analysis.measure,
                                         layers=[la.index for la in analysis.layers])
    info = {"path": str(ckpt.path), "sha256": ckpt.sha256, "format_version": ckpt.format_version,
            "data_name": (ckpt.data or {}).get("name", ""),
            "epoch": ckpt.epoch if ckpt.epoch is not None else (ckpt.history[-1]["epoch"] if ckpt.history else "")}
    arguments = {"checkpoint": str(checkpoints[0]) if len(checkpoints) == 1 else [str(c) for c in checkpoints], "layers": layers, "measure": measure,
                 "out": str(out_dir), "dpi": dpi, "task_names": None if task_names is None else str(task_names),
                 "clusters": clusters, "threshold": threshold, "method": method}
    paths = build_report(analysis, out_dir, checkpoint=info, snapshots=snapshots, threshold=threshold,
                         n_clusters=clusters, dpi=dpi, arguments=arguments, overwrite=True,
                         sections=sections, manifest_extra=extra)
    for path in paths:
        typer.echo(str(path))


@app.command("network")
def network_command(
    checkpoints: Checkpoints,
    data: Annotated[Optional[Path], typer.Option(
        "--data", help="The data file or folder (default: the path the checkpoint records).")] = None,
    split: Annotated[str, typer.Option(
        "--split", help="Whose inputs (every task's, pooled) the task networks are compared on: train, val or test.")] = "val",
    out: Out = None,
    fmt: Format = "png",
    dpi: Dpi = 300,
    task_names: TaskNames = None,
    overwrite: Overwrite = False,
    labels: Labels = "auto",
) -> None:
    """The whole-network relatedness: how far apart the task-specific networks' functions are on the data.

    Writes network.<format> and network.csv (d / spread, task by task) per run. With several runs
    also network-mean.<format> and network-mean.csv (the mean over the runs, in --out or in
    network/ beside the runs), and how well the runs agree. Needs the data set and the model.
    """
    from taan_viz.network import SPLITS, mean_network, network_agreement, network_relatedness, write_network_csv
    from taan_viz.plots.network import plot_network

    if split not in SPLITS:
        raise UserError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    runs, fmt = open_runs(checkpoints, measure="data", layers=None, task_names=task_names, out=out, fmt=fmt, dpi=dpi,
                          labels=labels)
    results = []
    for run in runs:
        with user_input():  # the data set or the model the checkpoint names cannot be had
            net = network_relatedness(run.ckpt, None if data is None else str(data), split)
        # --task-names renames the tasks of the analysis; the figure uses those names.
        net = dataclasses.replace(net, task_names=tuple(run.analysis.task_names))
        fig_path, csv_path = run.claim([f"network.{fmt}", "network.csv"], overwrite)
        fig = plot_network(net, labels=labels, single_run=len(runs) == 1)
        save_and_echo(fig, fig_path, dpi, figure_metadata(run.ckpt, "whole-network relatedness", run.note))
        write_network_csv(csv_path, net)
        typer.echo(str(csv_path))
        results.append(net)
    if len(results) > 1:
        # The runs' mean: the picture that reproduces (docs/training.md), beside the folders.
        mean = mean_network(results)
        fig_path, csv_path = claim_paths(out or common_out(runs, "network"),
                                         [f"network-mean.{fmt}", "network-mean.csv"], overwrite)
        save_and_echo(plot_network(mean, labels=labels), fig_path, dpi,
                      figure_metadata(runs[0].ckpt, f"whole-network relatedness, mean of {len(runs)} runs"))
        write_network_csv(csv_path, mean)
        typer.echo(str(csv_path))
        agree = network_agreement(results)
        typer.echo(f"taan-viz: note: {len(results)} runs agree on the whole-network distances with Spearman "
                   f"{agree['distance_spearman']:.2f} and on the tasks' order along the main axis with "
                   f"{agree['axis_spearman']:.2f} (mean over pairs of runs)", err=True)


@app.command("consensus")
def consensus_command(
    checkpoints: Checkpoints,
    layers: Layers = None,
    measure: Measure = "data",
    out: Annotated[Optional[Path], typer.Option(
        "-o", "--out", help="Output folder (default: consensus/ in the folder holding the runs).",
        show_default=False)] = None,
    fmt: Format = "png",
    dpi: Dpi = 300,
    task_names: TaskNames = None,
    overwrite: Overwrite = False,
    clusters: Clusters = None,
    threshold: Threshold = 0.1,
    method: Method = "average",
) -> None:
    """Several runs, one picture with its confidence: co-clustering, stability, distance spread, support.

    Writes coclustering.<format> (per layer, the fraction of runs in which two tasks share a cluster),
    distance.<format> (mean distance over runs and its standard deviation), support-tree.<format>
    (the sharing tree of the mean distances, each group with the fraction of runs that hold it) and
    consensus.json (each layer's stability = mean ARI between runs, the co-clustering matrix, ...).
    """
    runs, fmt = open_runs(checkpoints, measure=measure, layers=layers, task_names=task_names, method=method, fmt=fmt,
                          dpi=dpi, threshold=threshold, clusters=clusters)
    from taan_viz._consensus_report import CONSENSUS_FILES, consensus_figures, write_consensus_json
    from taan_viz.consensus import consensus

    with user_input():  # several runs must agree in tasks and layers
        cons = consensus([r.analysis for r in runs], runs=[r.label for r in runs], threshold=threshold,
                         n_clusters=clusters)
    out_dir = out if out is not None else common_out(runs, "consensus")
    paths = claim_paths(out_dir, [f"{k}.{fmt}" for k in CONSENSUS_FILES] + ["consensus.json"], overwrite)
    notes = {r.label: r.note for r in runs if r.note}
    meta = {"version": tool_version(), "source": "; ".join(str(r.ckpt.path) for r in runs)}
    for path, (title, fig) in zip(paths, consensus_figures(cons).values()):
        description = f"taan-viz {title} of {len(runs)} runs."
        if notes:
            description += f" Warning: {len(notes)} run(s) drawn under another measure than their regulariser."
        save_and_echo(fig, path, dpi, {**meta, "title": title, "description": description})
    extra = {"version": tool_version(), "sha256": {r.label: r.ckpt.sha256 for r in runs}}
    if notes:
        extra["measure_warnings"] = notes
    write_consensus_json(cons, paths[-1], extra)
    typer.echo(str(paths[-1]))
    for la in cons.layers:
        typer.echo(la.warning or f"layer {la.index + 1} {la.name}: stability {la.stability:.3f}", err=True)


@contextlib.contextmanager
def _relabelling_bar():
    """A transient progress bar of the Mantel relabellings on a terminal (they take about a
    minute at T = 1000), else nothing."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("relabellings"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("relabellings", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@app.command("compare")
def compare_command(
    checkpoints: Checkpoints,
    against: Annotated[Path, typer.Option(
        "--against", help="CSV of what is known about the tasks: a task-by-task distance matrix, or a table of "
        "per-task attributes (first column the task name).", show_default=False)],
    kind: Annotated[str, typer.Option(
        "--kind", help="Form of the --against file: auto (a matrix when the header names the same tasks as the "
        "first column), matrix or attributes.")] = "auto",
    group_by: Annotated[Optional[str], typer.Option(
        "--group-by", help="An attribute column: also score each layer's groups against it (adjusted Rand index); "
        "'columns': each layer against its own --columns column.", show_default=False)] = None,
    columns: Annotated[Optional[str], typer.Option(
        "--columns", help="The attribute columns each compared layer is tested against, comma-separated, one per "
        "layer or one for all; join several with + (planted: layer1,layer2,layer3). Default: all columns.",
        show_default=False)] = None,
    permutations: Annotated[int, typer.Option(
        "--permutations", help="Random relabellings of the tasks in the Mantel test.")] = 9999,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the relabellings.")] = 0,
    layers: Layers = None,
    measure: Measure = "data",
    out: Annotated[Optional[Path], typer.Option(
        "-o", "--out", help="Output folder (default: <checkpoint stem>-viz next to one checkpoint; compare/ in the "
        "folder holding several runs).", show_default=False)] = None,
    fmt: Format = "png",
    dpi: Dpi = 300,
    task_names: TaskNames = None,
    overwrite: Overwrite = False,
    threshold: Threshold = 0.1,
) -> None:
    """Test each layer's task distances against what is known about the tasks (Mantel test).

    Writes compare.<format> (per layer, the TAAN distance of every pair of tasks against the known
    distance, with Spearman's rho and the permutation p-value) and compare.json; prints the table on
    stderr. With several runs: each run's rho, their spread, and the test of their mean distance.
    """
    if permutations < 1:
        raise UserError(f"--permutations must be >= 1, got {permutations}")
    from taan_viz.compare import KINDS, compare_runs, read_known

    if kind not in KINDS:
        raise UserError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    with user_input():
        known = read_known(against, kind=kind)
    runs, fmt = open_runs(checkpoints, measure=measure, layers=layers, task_names=task_names, fmt=fmt, dpi=dpi,
                          threshold=threshold)
    per_layer = None if columns is None else [c.split("+") for c in columns.split(",")]
    with user_input(), _relabelling_bar() as progress:  # the known tasks and columns against the runs'
        cmp = compare_runs([r.analysis for r in runs], known, grouping=group_by, permutations=permutations,
                           seed=seed, runs=[r.label for r in runs], threshold=threshold, columns=per_layer,
                           progress=progress)
    out_dir = default_out(runs[0].ckpt, out) if len(runs) == 1 else (out or common_out(runs, "compare"))
    fig_path, json_path = claim_paths(out_dir, [f"compare.{fmt}", "compare.json"], overwrite)
    if cmp.ignored:
        shown = ", ".join(cmp.ignored[:3]) + (f" and {len(cmp.ignored) - 3} more" if len(cmp.ignored) > 3 else "")
        typer.echo(f"taan-viz: note: {against}: {len(cmp.ignored)} row(s) of tasks not in the runs ignored "
                   f"({shown})", err=True)
    from taan_viz.plots.compare import plot_compare

    title = "TAAN distances against known distances"
    if len(runs) == 1:
        meta = figure_metadata(runs[0].ckpt, title, runs[0].note)
    else:
        meta = {"version": tool_version(), "source": "; ".join(str(r.ckpt.path) for r in runs), "title": title,
                "description": f"taan-viz {title} of {len(runs)} runs."}
    save_and_echo(plot_compare(cmp), fig_path, dpi, meta)
    extra = {"version": tool_version(), "sha256": {r.label: r.ckpt.sha256 for r in runs}}
    notes = {r.label: r.note for r in runs if r.note}
    if notes:
        extra["measure_warnings"] = notes
    cmp.write_json(json_path, extra)
    typer.echo(str(json_path))
    for line in cmp.table():
        typer.echo(line, err=True)


@app.command("inspect")
def inspect_command(
    checkpoints: Checkpoints,
    layers: Layers = None,
    measure: Measure = "data",
    task_names: TaskNames = None,
    all_tasks: Annotated[bool, typer.Option("--all", help="List every task (default: the first 30).")] = False,
) -> None:
    """Summarise a checkpoint: tasks, layers, hinges, measure, norms, nearest tasks per layer, metrics."""
    runs, _ = open_runs(checkpoints, measure=measure, layers=layers, task_names=task_names)
    from taan_viz._inspect import render_inspect

    for k, run in enumerate(runs):
        if len(runs) > 1:
            typer.echo(("\n" if k else "") + f"== run {run.label} ({k + 1} of {len(runs)}) ==")
        render_inspect(run.ckpt, run.analysis, all_tasks=all_tasks)


@app.command("export")
def export_command(
    checkpoints: Checkpoints,
    layers: Layers = None,
    metric: Metric = "distance",
    measure: Measure = "data",
    out: Out = None,
    task_names: TaskNames = None,
    overwrite: Overwrite = False,
    clusters: Clusters = None,
    threshold: Threshold = 0.1,
    method: Method = "average",
    pairs: Annotated[bool, typer.Option(
        "--pairs", help="Write <metric>-pairs.csv (T^2/2 rows a layer) also beyond 2000 tasks.")] = False,
) -> None:
    """Write the numbers: CSV (square and long), JSON, NPZ, Newick trees and cluster assignments.

    Writes <metric>-L<l>-<layer>.csv, <metric>-pairs.csv (beyond 2000 tasks only with --pairs),
    geometry.json (labels, the metric's definition), geometry.npz, tree-L<l>-<layer>.nwk,
    sharing-tree.nwk and clusters.csv.
    """
    runs, _ = open_runs(checkpoints, measure=measure, layers=layers, task_names=task_names, method=method, out=out,
                        threshold=threshold, clusters=clusters, metric=metric)
    for run in runs:
        ckpt, analysis = run.ckpt, run.analysis
        from taan_viz.export import PAIRS_LIMIT, export_analysis, export_names

        out_dir = default_out(ckpt, run.out)
        claim_paths(out_dir, export_names(analysis, metric, pairs), overwrite)
        for path in export_analysis(analysis, out_dir, metric=metric, threshold=threshold, n_clusters=clusters,
                                    overwrite=True, metadata={"version": tool_version()}, pairs=pairs):
            typer.echo(str(path))
        if not pairs and analysis.num_tasks > PAIRS_LIMIT:
            typer.echo(f"taan-viz: note: {metric}-pairs.csv not written: {analysis.num_tasks} tasks > "
                       f"{PAIRS_LIMIT} ({analysis.num_tasks * (analysis.num_tasks - 1) // 2} rows a layer); "
                       "pass --pairs to write it", err=True)
    note_per_run(runs, "export")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; exits with the status code.

    A user error (bad options, unreadable or incompatible checkpoints, existing outputs) is one
    line on stderr with exit status 2; anything else is a bug and shows its traceback (status 1;
    ``--debug`` shows every traceback). See :mod:`taan_core._cli_runner`.
    """
    run_app(app, "taan-viz", argv)


if __name__ == "__main__":
    main()
