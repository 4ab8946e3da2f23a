"""``taan-study``: the reproduction study as one command.

User errors (bad options, unknown data sets, unreadable files or checkpoints) print one line on
stderr and exit with status 2; anything else is a bug and shows its traceback (status 1).
``--debug`` (or ``TAAN_DEBUG=1``) shows every traceback. The module imports only typer (and
taan_core's light runner), so that ``taan-study --help`` answers at once.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["app", "main", "reproduce_command"]


def _parse_floats(text: str, option: str) -> list[float]:
    try:
        return [float(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError as err:
        raise ValueError(f"{option} must be comma-separated numbers like 0.01,0.1,1, got {text!r}") from err


def reproduce_command(
    datasets: Annotated[str, typer.Option(
        "--datasets", help="Comma-separated data sets: planted, digits, exam, school, youtube8m, npz, "
                           "omniglot (files: --data)."
    )] = "planted,digits,exam",
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per model (0, 1, ...).")] = 3,
    quick: Annotated[bool, typer.Option("--quick", help="Tiny budgets: the whole pipeline in a few minutes.")] = False,
    out: Annotated[Path, typer.Option("--out", help="Study folder: results.json, tables, runs, figures.")] = Path(
        "runs/reproduce"),
    data: Annotated[Optional[Path], typer.Option(
        "--data", help="Data location of the file-based data set (school.mat, youtube8m folder, npz file).")] = None,
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
    figures: Annotated[bool, typer.Option("--figures/--no-figures", help="Draw heatmaps and trees with taan_viz.")] = True,
    linear: Annotated[bool, typer.Option(
        "--linear/--no-linear", help="Fit the linear baselines (ridge / logistic regression) first.")] = True,
    doc: Annotated[Optional[Path], typer.Option(
        "--doc", help="Markdown file whose generated-tables block is refreshed (e.g. docs/results.md).")] = None,
) -> None:
    """Train every model on every data set with one budget, select c on validation, write results.json and tables."""
    from taan_study.config import StudyConfig
    from taan_study.study import run_study

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    from taan_core._cli_runner import user_input

    with user_input():
        config = StudyConfig(
            datasets, seeds, quick, out, data,
            grid=_parse_floats(grid, "--grid") if grid is not None else None, tree_from=tree_from,
            grid_seeds=grid_seeds, tree_threshold=threshold, workers=workers, threads=threads, device=device,
            resume=resume, figures=figures, linear=linear,
        )
    results = run_study(config, log=log)
    if doc is not None:
        from taan_study.tables import insert_tables

        insert_tables(doc, results)
    failed = [f for f in results["figures"] if "error" in f]
    for entry in failed:
        log(f"figure {entry['path']} not drawn: {entry['error']}")
    log(f"{len(results['runs'])} runs in {results['wall_seconds']:.0f}s; wrote {Path(out) / 'results.json'} "
        f"and {Path(out) / 'tables.md'}")


app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False,
                  help="The reproduction study of Task Adaptive Activation Networks.")
app.command()(reproduce_command)


def _interrupted_line() -> str:
    return "taan-study: interrupted (rerun the same command to continue: finished runs are reused)"


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``taan-study``: user errors are one line and exit 2, bugs a traceback and exit 1."""
    from taan_core._cli_runner import run_app

    run_app(app, "taan-study", argv, on_interrupt=_interrupted_line)


if __name__ == "__main__":
    main()
