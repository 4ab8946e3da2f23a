"""The reproduction study of the paper's claims, and the sharing tree as plain data.

- :func:`run_study` / :func:`reproduce_command` (``taan-core reproduce``): every model on every
  data set with one budget, c chosen on validation, ``results.json`` and markdown tables;
- :func:`tree_from_checkpoint` and :func:`branched_overrides`: the hard-sharing architecture a
  trained TAAN implies, for ``taan-core train --model branched --tree-from CHECKPOINT``;
- :func:`format_tables` / :func:`write_tables`: the tables of a ``results.json``.

Names are imported on first use (PEP 562), so that the ``taan-core`` command line can import
:func:`reproduce_command` without loading torch and the study.
"""

from __future__ import annotations

from taan_core._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "BRANCHED_VARIANTS": "budgets",
    "BUDGETS": "budgets",
    "DEFAULT_GRID": "budgets",
    "QUICK_BUDGETS": "budgets",
    "RESULTS_FORMAT": "study",
    "VARIANTS": "budgets",
    "branched_overrides": "tree",
    "format_tables": "tables",
    "insert_tables": "tables",
    "layer_distances": "tree",
    "planted_ari": "tree",
    "render_figures": "figures",
    "reproduce_command": "command",
    "run_one": "runner",
    "run_study": "study",
    "select_coefficients": "study",
    "sharing_groups": "tree",
    "summarize": "tables",
    "time_models": "runner",
    "tree_from_checkpoint": "tree",
    "write_tables": "tables",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports("taan_core.reproduce", _EXPORTS, globals())
