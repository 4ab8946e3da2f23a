"""taan_study: the reproduction study of the paper's claims, an application of taan_core and taan_viz.

- :func:`run_study` with a :class:`StudyConfig` (``taan-study``): every model on every data set
  with one budget, c chosen on validation, ``results.json`` and markdown tables; each run is a
  :class:`RunSpec`;
- :func:`fit_linear` / :class:`LinearBaseline`: the linear baselines (ridge or logistic regression
  per task, pooled, pooled with task intercepts), penalty chosen on validation; the study fits
  them first on every data set where they apply;
- :func:`render_figures`: heatmaps and sharing trees of the best TAAN runs, drawn with taan_viz;
- :func:`format_tables` / :func:`write_tables` / :func:`insert_tables`: the tables of a
  ``results.json``.

The sharing tree, the ARI and the other relatedness primitives the study records come from
:mod:`taan_core.relatedness`. Names are imported on first use (PEP 562), so that the
``taan-study`` command line starts without loading torch.
"""

from __future__ import annotations

from taan_core._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "BRANCHED_VARIANTS": "budgets",
    "BUDGETS": "budgets",
    "DEFAULT_GRID": "budgets",
    "LINEAR_BASELINES": "linear",
    "LinearBaseline": "linear",
    "QUICK_BUDGETS": "budgets",
    "QUICK_GRID": "budgets",
    "RESULTS_FORMAT": "study",
    "RunSpec": "config",
    "StudyConfig": "config",
    "VARIANTS": "budgets",
    "fit_linear": "linear",
    "format_tables": "tables",
    "insert_tables": "tables",
    "render_figures": "figures",
    "registry_of": "budgets",
    "reproduce_command": "cli",
    "run_linear": "runner",
    "run_one": "runner",
    "run_study": "study",
    "select_coefficients": "study",
    "summarize": "tables",
    "time_models": "runner",
    "write_tables": "tables",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports("taan_study", _EXPORTS, globals())
