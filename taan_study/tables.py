"""Markdown tables of a study's ``results.json``, like the paper's Tables 1 and 2.

- Table 1: test metric (mean +- sample std over seeds) of every model on every data set, with
  the parameter counts; regularised TAANs at the coefficient chosen on validation; the linear
  baselines (one deterministic fit each) above the networks.
- Table 1b: the validation metric over the c grid, the chosen c marked.
- Table 1c: test RMSE of the regression data sets.
- Table 1d: the linear baselines' penalties chosen on validation, validation and test metric, fit time.
- Table 2: training time per epoch and inference time relative to HardShare (medians over the
  selected runs), with HardShare's absolute times.
- The planted benchmark's per-layer adjusted Rand index of the learned task clustering.
- The sharing trees the branched networks were built from.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from taan_core._atomic import write_file

__all__ = ["BEGIN_MARK", "END_MARK", "format_tables", "insert_tables", "summarize", "write_tables"]

BEGIN_MARK = "<!-- generated tables: begin -->"
END_MARK = "<!-- generated tables: end -->"

_METRIC_NAMES = {"ev": "explained variance (pooled)", "r2": "R²", "accuracy": "accuracy", "rmse": "RMSE", "main": "main metric"}


def _linear_order(results: dict) -> list[str]:
    """The linear baselines present, ridge then logistic, each in :data:`LINEAR_BASELINES` order."""
    from taan_study.linear import LINEAR_BASELINES

    present = {r["model"] for r in results["runs"] if r.get("registry") == "linear"}
    names = [names[i] for i in (0, 1) for names in LINEAR_BASELINES.values()]
    return [m for m in names if m in present]


def _network_order(results: dict) -> list[str]:
    from taan_study.budgets import BRANCHED_VARIANTS, VARIANTS

    present = {r["model"] for r in results["runs"] if r.get("registry") != "linear"}
    return [m for m in (*VARIANTS, *BRANCHED_VARIANTS) if m in present]


def _order(results: dict) -> list[str]:
    return _linear_order(results) + _network_order(results)


def _sections(results: dict, width: int) -> list[tuple[str | None, list[str]]]:
    """Row groups of a table of models: the linear baselines above the networks, each under a
    label row when there are linear baselines, else the networks alone."""
    linear = _linear_order(results)
    if not linear:
        return [(None, _network_order(results))]
    blank = " |" * (width - 1)
    return [(f"| *linear baselines* |{blank}", linear), (f"| *networks* |{blank}", _network_order(results))]


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return mean, std


def _fmt(mean: float, std: float, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return "—"
    if not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summarize(results: dict) -> dict[str, dict[str, dict]]:
    """Per data set and model: test and validation mean/std over seeds, c, parameters, timings.

    Returns
    -------
    dict
        ``{dataset: {model: {"test": (mean, std), "val": (mean, std), "c", "parameters",
        "train_seconds", "inference_seconds", "seeds", "epochs_run", ...}}}`` over the selected
        runs; the times come from the timing pass when ``results["timing"]`` has it.
    """
    out: dict[str, dict[str, dict]] = {}
    timing = results.get("timing") or {}
    for dataset in results["settings"]["datasets"]:
        rows = {}
        for model in _order(results):
            runs = [r for r in results["runs"] if r["dataset"] == dataset and r["model"] == model and r["selected"]]
            if not runs:
                continue
            rows[model] = {
                "test": _mean_std([r["test_main"] for r in runs]),
                "val": _mean_std([r["val_main"] for r in runs]),
                "c": runs[0]["c"] if runs[0]["reg"] != "none" else None,
                "parameters": statistics.median(r["parameters"] for r in runs),
                "run_train_seconds": _median(r["train_seconds_per_epoch"] for r in runs),
                "run_inference_seconds": _median(r["inference_seconds"] for r in runs),
                "epochs_run": _mean_std([float(r["epochs_run"]) for r in runs])[0],
                "seeds": len(runs),
                "metric": runs[0]["metric"],
            }
        for model, row in rows.items():
            # The dedicated timing pass when there is one, else the training runs' own times.
            measured = timing.get(dataset, {}).get(model)
            row["train_seconds"] = (statistics.median(measured["train_seconds_per_epoch"]) if measured
                                    else row["run_train_seconds"])
            row["inference_seconds"] = (statistics.median(measured["inference_seconds"]) if measured
                                        else row["run_inference_seconds"])
        out[dataset] = rows
    return out


def _header(cells: list[str]) -> list[str]:
    return ["| " + " | ".join(cells) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(cells))) + "|"]


def _table1(results: dict, summary: dict) -> list[str]:
    datasets = results["settings"]["datasets"]
    cells = ["model"]
    for d in datasets:
        metric = next(iter(summary[d].values()))["metric"] if summary[d] else "main"
        cells += [f"{d}: test {_METRIC_NAMES.get(metric, metric)}", f"{d}: params"]
    lines = _header(cells)
    best = {d: max((row["test"][0] for row in summary[d].values() if math.isfinite(row["test"][0])), default=None)
            for d in datasets}
    for label, models in _sections(results, len(cells)):
        lines += [label] if label else []
        for model in models:
            row = [model]
            for d in datasets:
                entry = summary[d].get(model)
                if entry is None:
                    row += ["—", "—"]
                    continue
                text = _fmt(*entry["test"])
                if best[d] is not None and entry["test"][0] == best[d]:
                    text = f"**{text}**"
                row += [text, f"{int(entry['parameters']):,}"]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def _table1b(results: dict) -> list[str]:
    grid = results["settings"]["grid"]
    # Only the seeds the grid ran on: the numbers the choice was made from.
    seeds = set(results["settings"].get("grid_seeds") or results["settings"]["seeds"])
    lines = _header(["data set", "model", *[f"c = {c:g}" for c in grid]])
    for d in results["settings"]["datasets"]:
        for model in _order(results):
            runs = [r for r in results["runs"] if r["dataset"] == d and r["model"] == model and r["reg"] != "none"
                    and r["seed"] in seeds]
            if not runs:
                continue
            chosen = results["selected_c"].get(d, {}).get(model)
            row = [d, model]
            for c in grid:
                text = _fmt(*_mean_std([r["val_main"] for r in runs if r["c"] == c]))
                row.append(f"**{text}** ✓" if c == chosen else text)
            lines.append("| " + " | ".join(row) + " |")
    return lines


def _table1c(results: dict) -> list[str]:
    """Test RMSE (mean over tasks) of the regression data sets, lower is better."""
    datasets = [d for d in results["settings"]["datasets"]
                if any(r["dataset"] == d and "rmse" in r["test"]["mean"] for r in results["runs"])]
    if not datasets:
        return []
    lines = _header(["model", *[f"{d}: test RMSE" for d in datasets]])
    for label, models in _sections(results, len(datasets) + 1):
        # Only models with a run on a regression data set (not the logistic baselines).
        models = [m for m in models if any(r["model"] == m and r["dataset"] in datasets for r in results["runs"])]
        lines += [label] if label and models else []
        for model in models:
            row = [model]
            for d in datasets:
                runs = [r for r in results["runs"] if r["dataset"] == d and r["model"] == model and r["selected"]]
                row.append(_fmt(*_mean_std([r["test"]["mean"]["rmse"] for r in runs])) if runs else "—")
            lines.append("| " + " | ".join(row) + " |")
    return lines


def _table1d(results: dict) -> list[str]:
    """The linear baselines: penalty chosen on validation, validation and test metric, fit time."""
    runs = [r for r in results["runs"] if r.get("registry") == "linear"]
    if not runs:
        return []
    lines = _header(["data set", "model", "penalty chosen on val", "val", "test", "fit (whole grid)"])
    for d in results["settings"]["datasets"]:
        for model in _linear_order(results):
            for r in (r for r in runs if r["dataset"] == d and r["model"] == model):
                info = r["linear"]
                chosen = f"{info['penalty']} = {info['chosen']:.3g}"
                own = sum(info["own_choice"])
                if own:
                    per_task = sorted(info["chosen_per_task"])
                    chosen = (f"own {info['penalty']} on {own} of {len(per_task)} tasks (median "
                              f"{statistics.median(per_task):.3g}); {chosen} for the rest")
                lines.append(f"| {d} | {model} | {chosen} | {r['val_main']:.3f} | {r['test_main']:.3f} | "
                             f"{r['fit_seconds']:.2f} s |")
    return lines


def _table2(results: dict, summary: dict) -> list[str]:
    datasets = results["settings"]["datasets"]
    cells = ["model"]
    for d in datasets:
        cells += [f"{d}: train / epoch", f"{d}: inference"]
    lines = _header(cells)
    # The linear baselines have no epochs (Table 1d gives their fit times).
    for model in _network_order(results):
        row = [model]
        for d in datasets:
            entry, ref = summary[d].get(model), summary[d].get("HardShare")
            if entry is None or ref is None:
                row += ["—", "—"]
                continue
            row += [f"{entry['train_seconds'] / ref['train_seconds']:.2f}×",
                    f"{entry['inference_seconds'] / ref['inference_seconds']:.2f}×"]
        lines.append("| " + " | ".join(row) + " |")
    absolute = []
    for d in datasets:
        ref = summary[d].get("HardShare")
        if ref is not None:
            samples = next(r["inference_samples"] for r in results["runs"] if r["dataset"] == d)
            absolute.append(f"{d}: HardShare trains an epoch in {ref['train_seconds'] * 1000:.0f} ms and predicts "
                            f"{samples} test samples in {ref['inference_seconds'] * 1000:.1f} ms")
    return lines + ["", "Absolute reference times: " + "; ".join(absolute) + "."] if absolute else lines


def _ari_table(results: dict) -> list[str]:
    lines: list[str] = []
    for d in results["settings"]["datasets"]:
        runs = [r for r in results["runs"] if r["dataset"] == d and r["selected"] and r.get("ari")]
        if not runs:
            continue
        depth = len(runs[0]["ari"])
        truth = results["datasets"][d].get("planted_groups") or []
        counts = [len(set(g)) for g in truth]
        cells = ["model", "measure", *[f"layer {l + 1} ({counts[l]} groups)" if l < len(counts) else f"layer {l + 1}"
                                       for l in range(depth)]]
        lines += [f"{d}:", "", *_header(cells)]
        for model in _order(results):
            mine = [r for r in runs if r["model"] == model]
            if not mine:
                continue
            for label, key in (("N(0, 1)", "ari_standard"), ("data", "ari"), ("tree", "tree_ari")):
                if not all(r.get(key) for r in mine):
                    continue
                lines.append("| " + " | ".join([model, label, *[_fmt(*_mean_std([r[key][l] for r in mine]), 2)
                                                               for l in range(depth)]]) + " |")
        lines.append("")
    return lines


def _tree_table(results: dict) -> list[str]:
    lines = _header(["data set", "seed", "tree from", "groups per layer", "params (tree)", "params (HardShare)",
                     "test (tree)", "test (random)"])
    for d in results["settings"]["datasets"]:
        hard = {r["seed"]: r["parameters"] for r in results["runs"] if r["dataset"] == d and r["model"] == "HardShare"}
        shuffled = {r["seed"]: r["test_main"] for r in results["runs"]
                    if r["dataset"] == d and r["model"] == "Branched (random)"}
        for r in results["runs"]:
            if r["dataset"] == d and r["model"] == "Branched (TAAN tree)":
                lines.append(f"| {d} | {r['seed']} | `{r['tree_source']}` | {'/'.join(map(str, r['num_groups']))} | "
                             f"{r['parameters']:,} | {hard.get(r['seed'], 0):,} | {r['test_main']:.3f} | "
                             f"{shuffled.get(r['seed'], float('nan')):.3f} |")
    return lines


def _trunk(results: dict, dataset: str) -> str:
    """Every model's trunk on ``dataset``: "conv" (TAANConv's) on images, "MLP" otherwise."""
    shape = results["settings"]["budgets"][dataset].get("input_shape")
    if shape is None:  # results written before the budgets recorded it: the registry names say
        conv = any(r["dataset"] == dataset and r.get("registry", "").endswith("-conv") for r in results["runs"])
    else:
        conv = len(shape) == 3
    return "conv" if conv else "MLP"


def _budget_table(results: dict) -> list[str]:
    settings = results["settings"]
    lines = _header(["data set", "tasks", "train samples", "trunk", "hidden", "M", "max epochs", "batch", "lr",
                     "weight decay", "patience", "TAAN head"])
    for d in settings["datasets"]:
        b, info = settings["budgets"][d], results["datasets"][d]
        # balanced: batch_size samples of every task; proportional: batch_size samples in all.
        batch = f"{b['batch_size']} per task" if b.get("sampler", "balanced") == "balanced" else f"{b['batch_size']}"
        head = "shared" if (b.get("taan") or {}).get("shared_head") else "per task"
        lines.append(f"| {d} | {info['tasks']} | {info['train_samples']:,} | {_trunk(results, d)} | "
                     f"{'x'.join(map(str, b['hidden']))} | "
                     f"{b['num_hinges']} | {b['epochs']} | {batch} | {b['lr']:g} | {b['weight_decay']:g} | "
                     f"{b['patience']} | {head} |")
    return lines


def _linear_caption(results: dict) -> str:
    """Table 1's sentence on the linear baselines: what they are and where they were not fitted."""
    text = ""
    if _linear_order(results):
        text = (" The linear baselines are one deterministic fit each (no seeds), their penalty chosen on "
                "validation (Table 1d).")
    notes = results.get("linear_notes") or {}
    if notes:
        text += " Linear baselines not fitted: " + "; ".join(f"{d}: {why}" for d, why in notes.items()) + "."
    return text


def format_tables(results: dict) -> dict[str, str]:
    """The markdown of every table, keyed ``budget``, ``table1``, ``table1b``, ``table2`` and, when they apply,
    ``table1c`` (regression RMSE), ``table1d`` (linear baselines), ``ari`` (planted data) and ``trees``
    (branched networks)."""
    summary = summarize(results)
    settings = results["settings"]
    seeds = len(settings["seeds"])
    tables = {
        "budget": "\n".join([
            f"Budget. Every model of a data set trains with these settings (Adam, early stopping on the "
            f"validation metric; batches balanced over the tasks unless a single size is given, which is "
            f"proportional sampling; the TAANs' head shared by all tasks or one per task, the baselines' "
            f"one per task). Every model of a data set has its TAAN's trunk: an MLP of these hidden widths, or "
            f"on images (conv) TAANConv's conv stages and then these dense widths, with ReLU in the "
            f"baselines; seeds {', '.join(map(str, settings['seeds']))}; c grid "
            f"{', '.join(f'{c:g}' for c in settings['grid'])} on seed(s) "
            f"{', '.join(map(str, settings.get('grid_seeds') or settings['seeds']))}; "
            f"{'quick budgets; ' if settings['quick'] else ''}{settings.get('workers', 1)} run(s) at a time. "
            f"The runs' own wall times sum to {sum(r['wall_seconds'] for r in results['runs']) / 60:.0f} min; "
            f"the last invocation of the study took {results.get('wall_seconds', float('nan')) / 60:.0f} min "
            "(finished runs with identical settings are reused).", "", *_budget_table(results)]),
        "table1": "\n".join([
            f"Table 1. Test metric, mean ± sample std over {seeds} seeds (best epoch on validation; regularised "
            "TAANs at the c chosen on validation). Best mean per data set in bold." + _linear_caption(results), "",
            *_table1(results, summary)]),
        "table1b": "\n".join([
            "Table 1b. Validation metric over the grid of c on the seeds the grid ran on (seeds "
            f"{', '.join(map(str, results['settings'].get('grid_seeds') or results['settings']['seeds']))}; "
            "mean ± std when more than one); ✓ marks the chosen c.", "", *_table1b(results)]),
        "table2": "\n".join([
            "Table 2. Training time per epoch (optimiser steps only) and inference time over the test split, "
            "relative to HardShare: " + (
                f"medians of {results['settings'].get('timing_repeats')} rounds of a timing pass in which the "
                "models train one epoch each in turn, one at a time." if results.get("timing") else
                "medians over the selected training runs."), "", *_table2(results, summary)]),
    }
    rmse = _table1c(results)
    if rmse:
        tables["table1c"] = "\n".join([
            f"Table 1c. Test RMSE of the regression data sets (mean over tasks; mean ± std over {seeds} seeds; "
            "lower is better).", "", *rmse])
    linear = _table1d(results)
    if linear:
        from taan_study.linear import MIN_TASK_VAL

        grid = next(r["linear"]["grid"] for r in results["runs"] if r.get("registry") == "linear")
        tables["table1d"] = "\n".join([
            "Table 1d. Linear baselines: ridge regression (regression tasks) or L2 logistic regression "
            "(classification tasks) on the flattened inputs, fitted on the training split with unpenalised "
            f"intercepts; the penalty (alpha, or C) is chosen on the validation split from {len(grid)} values "
            f"between {min(grid):g} and {max(grid):g} (regression: pooled validation MSE; classification: mean "
            f"validation accuracy), per task for a task with at least {MIN_TASK_VAL} validation samples. Val and "
            "test: the networks' metric, from the same evaluation.", "", *linear])
    ari = _ari_table(results)
    if ari:
        tables["ari"] = "\n".join([
            "Planted benchmark: adjusted Rand index (mean ± std over seeds) between the planted task groups and "
            "the learned clustering of each layer (average linkage on the function-space distances, cut at the "
            "planted number of groups), with distances under N(0, 1) (the paper's measure) and under each layer's "
            "recorded pre-activation distribution (data, the default of taan-viz); 'tree' scores the groups of "
            f"the sharing tree (relative threshold {results['settings']['tree_threshold']:g}, data measure) "
            "instead.", "", *ari]).rstrip()
    trees = _tree_table(results)
    if len(trees) > 2:
        tables["trees"] = "\n".join(["Sharing trees the branched networks follow.", "", *trees])
    order = ("budget", "table1", "table1b", "table1c", "table1d", "table2", "ari", "trees")
    return {key: tables[key] for key in order if key in tables}


def write_tables(results: dict, out) -> Path:
    """Write ``tables.md`` (all tables), ``table1.md`` and ``table2.md`` into ``out``; returns tables.md."""
    out = Path(out)
    tables = format_tables(results)
    write_file(out / "table1.md", "\n\n".join(tables[k] for k in ("table1", "table1b", "table1c", "table1d")
                                              if k in tables) + "\n")
    write_file(out / "table2.md", tables["table2"] + "\n")
    return write_file(out / "tables.md", "\n\n".join(tables.values()) + "\n")


def insert_tables(document, results: dict) -> Path:
    """Replace the block between :data:`BEGIN_MARK` and :data:`END_MARK` of a markdown document
    with the tables of ``results`` (so a results page quotes the tables as generated).

    Raises
    ------
    ValueError
        When the document does not hold both marks, in that order.
    """
    path = Path(document)
    text = path.read_text()
    start, stop = text.find(BEGIN_MARK), text.find(END_MARK)
    if start < 0 or stop < start:
        raise ValueError(f"{path}: expected a block between {BEGIN_MARK!r} and {END_MARK!r} to put the tables in")
    body = "\n\n".join(format_tables(results).values())
    # Atomic: a full disk must not leave the document cut short.
    write_file(path, text[:start] + BEGIN_MARK + "\n" + body + "\n" + text[stop:])
    return path
