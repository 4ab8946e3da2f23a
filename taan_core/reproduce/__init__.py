"""The reproduction study of the paper's claims, and the sharing tree as plain data.

- :func:`run_study` / :func:`reproduce_command` (``taan-core reproduce``): every model on every
  data set with one budget, c chosen on validation, ``results.json`` and markdown tables;
- :func:`tree_from_checkpoint` and :func:`branched_overrides`: the hard-sharing architecture a
  trained TAAN implies, for ``taan-core train --model branched --tree-from CHECKPOINT``;
- :func:`format_tables` / :func:`write_tables`: the tables of a ``results.json``.
"""

from __future__ import annotations

from taan_core.reproduce.command import reproduce_command
from taan_core.reproduce.figures import render_figures
from taan_core.reproduce.runner import run_one, time_models
from taan_core.reproduce.study import (
    BRANCHED_VARIANTS,
    BUDGETS,
    DEFAULT_GRID,
    QUICK_BUDGETS,
    RESULTS_FORMAT,
    VARIANTS,
    run_study,
    select_coefficients,
)
from taan_core.reproduce.tables import format_tables, summarize, write_tables
from taan_core.reproduce.tree import (
    branched_overrides,
    layer_distances,
    planted_ari,
    sharing_groups,
    tree_from_checkpoint,
)

__all__ = [
    "BRANCHED_VARIANTS",
    "BUDGETS",
    "DEFAULT_GRID",
    "QUICK_BUDGETS",
    "RESULTS_FORMAT",
    "VARIANTS",
    "branched_overrides",
    "format_tables",
    "layer_distances",
    "planted_ari",
    "render_figures",
    "reproduce_command",
    "run_one",
    "run_study",
    "select_coefficients",
    "sharing_groups",
    "summarize",
    "time_models",
    "tree_from_checkpoint",
    "write_tables",
]
