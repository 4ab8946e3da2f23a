"""Options and helpers shared by the ``taan-viz`` commands (kept apart so cli.py reads as a
list of commands)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from taan_core._cli_runner import user_input
from taan_core.errors import UserError

__all__ = [
    "Checkpoint", "Checkpoints", "Clusters", "Run", "Dpi", "Format", "Layers", "Measure", "Method", "Metric", "Out", "Overwrite",
    "TaskNames", "Threshold", "check_format", "check_threshold", "claim_paths", "common_out", "default_out",
    "figure_metadata", "heatmap_order", "load_runs", "metric_suffix", "note_per_run", "open_runs",
    "parse_order_by", "save_and_echo", "tool_version", "warn_not_separated",
]

# ----------------------------------------------------------------------------------------------
# options shared by the commands

Checkpoint = Annotated[Path, typer.Argument(
    help="A taan checkpoint (.pt), a .safetensors export, a reference TAAN state_dict, or a run folder.",
    show_default=False)]
Checkpoints = Annotated[list[Path], typer.Argument(
    help="One or more runs: checkpoints (.pt, .safetensors, reference state_dicts), run folders, or folders "
    "of runs (seed-*/checkpoint.pt or */checkpoint.pt, as taan-core train --seeds writes).", show_default=False)]
Layers = Annotated[Optional[str], typer.Option(
    "--layers", help="Comma-separated layer names or 1-based positions, e.g. 1,3 (default: all layers).",
    show_default=False)]
Metric = Annotated[str, typer.Option(
    "--metric", help="Matrix to show: distance, squared-distance, cosine or inner-product.")]
Measure = Annotated[str, typer.Option(
    "--measure", help="Gaussian measure of the function space: 'data' (each layer's recorded pre-activation "
    "mean and std), 'standard' (N(0,1), as in the paper) or 'MU,SIGMA' (write --measure=-1,2 for a negative MU).")]
Out = Annotated[Optional[Path], typer.Option(
    "-o", "--out", help="Output folder (default: <checkpoint stem>-viz next to the checkpoint).", show_default=False)]
Format = Annotated[str, typer.Option("--format", help="Figure format: png, svg or pdf (SVG/PDF keep text editable).")]
Dpi = Annotated[int, typer.Option("--dpi", help="Resolution of PNG files (and of raster parts of SVG/PDF).")]
TaskNames = Annotated[Optional[Path], typer.Option(
    "--task-names", help="File with one task name per line (or a JSON list), replacing the checkpoint's names.",
    show_default=False)]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing output files instead of stopping.")]
Threshold = Annotated[float, typer.Option(
    "--threshold", help="Tasks closer than this fraction of the layer's RMS activation norm share an activation "
    "(flat clusters and sharing tree).")]
Clusters = Annotated[Optional[int], typer.Option(
    "--clusters", help="Colour by this many clusters per layer instead of cutting at --threshold.", show_default=False)]
Method = Annotated[str, typer.Option(
    "--method", help="Linkage: average, complete, single, weighted, ward, centroid or median.")]

_FORMATS = ("png", "svg", "pdf")


def tool_version() -> str:
    """The taan version recorded in figures, exports and reports."""
    from taan_viz import __version__

    return __version__


def check_format(fmt: str, dpi: int) -> str:
    """The figure format in lower case; UserError for an unknown format or a dpi out of range."""
    fmt = fmt.lower().lstrip(".")
    if fmt not in _FORMATS:
        raise UserError(f"--format must be one of {', '.join(_FORMATS)}, got {fmt!r}")
    if not 20 <= dpi <= 2400:
        raise UserError(f"--dpi must be in [20, 2400], got {dpi}")
    return fmt


def check_threshold(threshold: float, clusters: int | None) -> None:
    """UserError unless ``threshold`` is finite and >= 0 and ``clusters`` (if given) >= 1."""
    if not (threshold >= 0 and threshold < float("inf")):
        raise UserError(f"--threshold must be a finite number >= 0, got {threshold:g}")
    if clusters is not None and clusters < 1:
        raise UserError(f"--clusters must be >= 1, got {clusters}")


@dataclass(frozen=True)
class Run:
    """One run as a command handles it.

    Attributes
    ----------
    ckpt : Checkpoint
    analysis : Analysis
    out : Path or None
        The output folder the user asked for: ``--out`` itself for a single run, ``--out/<label>``
        when there are several (None: next to the checkpoint, see :func:`default_out`).
    label : str
        Short name of the run (``seed-3``).
    note : str or None
        The measure warning of the run (:mod:`taan_viz.measure_check`), for figure metadata.
    """

    ckpt: Any
    analysis: Any
    out: Optional[Path]
    label: str
    note: Optional[str] = None

    def claim(self, names: list[str], overwrite: bool) -> list[Path]:
        """The paths of this run's output files ``names`` (see :func:`claim_paths`)."""
        return claim_paths(default_out(self.ckpt, self.out), names, overwrite)


def open_runs(
    checkpoints: list[Path],
    *,
    measure: str,
    layers: str | None,
    task_names: Path | None,
    method: str = "average",
    out: Path | None = None,
    fmt: str | None = None,
    dpi: int | None = None,
    threshold: float | None = None,
    clusters: int | None = None,
    metric: str | None = None,
    labels: str | None = None,
) -> tuple[list[Run], str | None]:
    """The start every command shares: check the options it has, then read and analyse the runs.

    All of it checks what the user gave, so a refusal is a UserError (one line, exit status 2);
    what the command does afterwards (drawing, writing) is the program's, and a ValueError
    there is a bug with its traceback. Options left at None are not the command's.

    Returns
    -------
    runs : list of Run
    fmt : str or None
        The figure format, checked and lower-cased (None when the command has no ``--format``).
    """
    from taan_viz.analysis import check_metric
    from taan_viz.plots._style import check_labels

    with user_input():
        if fmt is not None or dpi is not None:
            checked = check_format(fmt or "png", 300 if dpi is None else dpi)
            fmt = checked if fmt is not None else None
        if threshold is not None:
            check_threshold(threshold, clusters)
        if metric is not None:
            check_metric(metric)
        if labels is not None:
            check_labels(labels)
        return load_runs(checkpoints, measure, layers, task_names, method, out=out), fmt


def heatmap_order(run: Run, order_by: str):
    """``--order-by`` of the heatmap for ``run``: None, ``"tree"`` or a selected layer's name."""
    with user_input():
        order = parse_order_by(order_by)
        if order in (None, "tree"):
            return order
        from taan_viz.inputs import parse_layers

        pos = parse_layers(order, run.ckpt.layer_names)[0]
    if pos not in [la.index for la in run.analysis.layers]:
        raise UserError(f"--order-by layer {order!r} must be one of the selected --layers")
    return run.ckpt.layer_names[pos]


def load_runs(paths: list[Path], measure: str, layers: str | None, task_names: Path | None,
              method: str = "average", out: Path | None = None) -> list[Run]:
    """Read and analyse every run named by ``paths`` (see :func:`taan_viz.runs.expand_runs`).

    Every checkpoint is read and checked before any output is written; several runs must have
    the same tasks and layers. Of several runs, one whose folder says it did not finish
    (:func:`taan_viz.runs.unfinished`) is left out with one warning line. A run whose figures are drawn under another measure than its
    functional regulariser used gets one warning line on stderr.
    """
    from taan_core.checkpoint import load_checkpoint
    from taan_viz.analysis import analyze, parse_measure
    from taan_viz.consensus import check_same_runs
    from taan_viz.inputs import parse_layers, read_task_names
    from taan_viz.measure_check import measure_mismatch
    from taan_viz.runs import expand_runs, run_labels

    from taan_viz.runs import unfinished

    m = parse_measure(measure)
    files = expand_runs(paths)
    ckpts = [load_checkpoint(f) for f in files]
    if len(ckpts) > 1:
        # Several runs: one that did not finish would pass for a result; leave it out, say so.
        kept = []
        for f, ckpt in zip(files, ckpts):
            reason = unfinished(f, ckpt.raw)
            if reason is None:
                kept.append((f, ckpt))
            else:
                typer.echo(f"taan-viz: warning: skipped {f.parent if f.name == 'checkpoint.pt' else f}: {reason}",
                           err=True)
        if not kept:
            raise UserError(f"none of the {len(files)} runs finished (see the warnings above); "
                             "resume them with taan-core train --resume, or name a checkpoint alone to draw it")
        files, ckpts = [f for f, _ in kept], [c for _, c in kept]
    check_same_runs(ckpts)
    names = None if task_names is None else read_task_names(task_names, ckpts[0].num_tasks)
    labels = run_labels(files)
    several = len(ckpts) > 1
    runs = []
    for ckpt, label in zip(ckpts, labels):
        analysis = analyze(ckpt, measure=m, layers=parse_layers(layers, ckpt.layer_names), task_names=names, method=method)
        mismatch = measure_mismatch(ckpt, analysis)
        note = None if mismatch is None else mismatch.message()
        if note:
            typer.echo(f"taan-viz: warning: {ckpt.path}: {note}", err=True)
        run_out = out / label if (out is not None and several) else out
        runs.append(Run(ckpt=ckpt, analysis=analysis, out=run_out, label=label, note=note))
    return runs


def note_per_run(runs: list[Run], command: str) -> None:
    """After a single-run command drew several runs one by one: say where, and how to combine them."""
    if len(runs) > 1:
        typer.echo(f"taan-viz: note: {command} drew {len(runs)} runs one by one (one folder each); "
                   "taan-viz consensus combines them into one picture with its confidence", err=True)


def warn_not_separated(run: Run, note: str | None) -> None:
    """The figure's line on groups that are not separated, on stderr too: one run cannot know its
    stability, but it can see that its groups cut a continuum."""
    if note:
        typer.echo(f"taan-viz: note: {run.label}: {note}", err=True)


def default_out(ckpt, out: Path | None, sub: str | None = None) -> Path:
    """``out``, or ``<checkpoint stem>-viz[/sub]`` next to the checkpoint."""
    if out is not None:
        return out
    base = ckpt.path.parent / f"{ckpt.path.stem}-viz"
    return base / sub if sub else base


def common_out(runs: list[Run], sub: str) -> Path:
    """``<folder holding the runs>/sub``: ``runs/NAME/consensus`` for ``runs/NAME/seed-*/checkpoint.pt``."""
    folders = {os.path.dirname(os.path.realpath(r.ckpt.path)) for r in runs}
    base = Path(os.path.commonpath(sorted(folders)))
    if len(folders) == 1:
        return base / sub
    # Keep the path as the user wrote it when the runs share a written parent.
    written = {str(r.ckpt.path.parent.parent) for r in runs}
    return (Path(written.pop()) if len(written) == 1 else base) / sub


def claim_paths(out: Path, names: list[str], overwrite: bool) -> list[Path]:
    """The target paths; refuses (before anything is written) when one exists or is a link."""
    from taan_core._atomic import refuse_link

    paths = [out / n for n in names]
    for path in paths:
        refuse_link(path)
    if not overwrite:
        existing = [p for p in paths if os.path.lexists(p)]
        if existing:
            raise FileExistsError(f"{existing[0]} exists; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return paths


def figure_metadata(ckpt, title: str, note: str | None = None) -> dict[str, str]:
    """What every figure file records about its origin: tool version and checkpoint hash, and
    the measure warning of the run when there is one."""
    description = f"taan-viz {title} of {ckpt.path.name}."
    if note:
        description += f" Warning: {note}."
    return {"version": tool_version(), "sha256": ckpt.sha256, "title": title, "source": str(ckpt.path),
            "description": description}


def save_and_echo(fig, path: Path, dpi: int, meta: dict[str, str]) -> None:
    """Write ``fig`` with its metadata and print the path (one written file per line)."""
    from taan_viz.plots._style import save_figure

    save_figure(fig, path, dpi=dpi, metadata=meta)
    typer.echo(str(path))


def metric_suffix(metric: str) -> str:
    """File-name suffix of a metric: none for the default (distance)."""
    return "" if metric == "distance" else f"-{metric}"


def parse_order_by(value: str):
    """``--order-by`` as plot_heatmaps takes it: "tree", None for "none", else a layer."""
    if value == "tree":
        return "tree"
    if value == "none":
        return None
    return value
