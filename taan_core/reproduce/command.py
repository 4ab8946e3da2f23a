"""``taan-core reproduce``: the reproduction study as one command (registered by taan_core.cli)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["reproduce_command"]


def _parse_floats(text: str, option: str) -> list[float]:
    try:
        return [float(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError as err:
        raise ValueError(f"{option} must be comma-separated numbers like 0.01,0.1,1, got {text!r}") from err


def reproduce_command(
    datasets: Annotated[str, typer.Option(
        "--datasets", help="Comma-separated data sets: planted, digits, exam, youtube8m, npz.")] = "planted,digits,exam",
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per model (0, 1, ...).")] = 3,
    quick: Annotated[bool, typer.Option("--quick", help="Tiny budgets: the whole pipeline in a few minutes.")] = False,
    out: Annotated[Path, typer.Option("--out", help="Study folder: results.json, tables, runs, figures.")] = Path(
        "runs/reproduce"),
    data: Annotated[Optional[Path], typer.Option(
        "--data", help="Data location of the file-based data set (youtube8m folder, npz file).")] = None,
    tree_from: Annotated[Optional[Path], typer.Option(
        "--tree-from", help="TAAN checkpoint whose sharing tree the branched networks follow "
        "(default: each seed's TAAN of the study).")] = None,
    grid: Annotated[Optional[str], typer.Option(
        "--grid", help="Coefficients c of the regularised TAANs (default 0.01,0.1,1; 0.01,0.1 with --quick).")] = None,
    grid_seeds: Annotated[Optional[int], typer.Option(
        "--grid-seeds", help="Run the c grid on the first N seeds only and the rest at the chosen c "
        "(default: every seed).")] = None,
    threshold: Annotated[float, typer.Option(
        "--threshold", help="Relative threshold of the sharing trees (fraction of the RMS activation norm).")] = 0.1,
    workers: Annotated[Optional[int], typer.Option(
        "--workers", help="Runs trained at the same time (default 1; 2 with --quick).")] = None,
    threads: Annotated[int, typer.Option("--threads", help="Torch threads per run.")] = 1,
    device: Annotated[str, typer.Option("--device", help="cpu|cuda|auto|...")] = "cpu",
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Reuse finished identical runs in --out.")] = True,
    figures: Annotated[bool, typer.Option("--figures/--no-figures", help="Draw heatmaps and trees with taan-viz.")] = True,
    doc: Annotated[Optional[Path], typer.Option(
        "--doc", help="Markdown file whose generated-tables block is refreshed (e.g. docs/results.md).")] = None,
) -> None:
    """Train every model on every data set with one budget, select c on validation, write results.json and tables."""
    from taan_core.reproduce.study import run_study

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results = run_study(
        datasets, seeds, quick, out, data,
        grid=_parse_floats(grid, "--grid") if grid is not None else None, tree_from=tree_from,
        grid_seeds=grid_seeds, tree_threshold=threshold, workers=workers, threads=threads, device=device, resume=resume,
        figures=figures, log=log,
    )
    if doc is not None:
        from taan_core.reproduce.tables import insert_tables

        insert_tables(doc, results)
    failed = [f for f in results["figures"] if "error" in f]
    for entry in failed:
        log(f"figure {entry['path']} not drawn: {entry['error']}")
    log(f"{len(results['runs'])} runs in {results['wall_seconds']:.0f}s; wrote {Path(out) / 'results.json'} "
        f"and {Path(out) / 'tables.md'}")
