"""The ``taan-viz`` command line: thin typer commands over taan_viz's library functions.

Heavy modules (sympy, training code) are imported inside the commands that need them, so that
``taan-viz heatmap`` starts fast.
"""

from __future__ import annotations

import typer

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


def main() -> None:
    """Console-script entry point."""
    app()
