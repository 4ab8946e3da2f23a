"""The reproduction study: every model on every data set, same budget, seeds, selection on val.

:func:`run_study` trains, for every data set and seed, the models of :data:`VARIANTS` with the
data set's budget (:data:`BUDGETS`: widths, epochs, batch, learning rate, early-stopping
patience); the regularised TAANs once per coefficient of the grid. The coefficient of each
regularised model is the one with the best mean *validation* metric over the seeds; the test
split is only evaluated, never used to choose. Then the hard-sharing network branched like the
sharing tree of each seed's TAAN (:class:`~taan_core.models.branched.Branched`) and one with the
same shape but a random task assignment are trained with the same budget. On a data set of
images (omniglot) every model is its conv variant (:func:`~taan_study.budgets.registry_of`):
TAANConv, and baselines with its trunk and ReLU, so every row compares like with like. ``results.json``
holds every run; :mod:`taan_study.tables` turns it into the markdown tables.

Before the networks, the linear baselines of :mod:`taan_study.linear` (ridge or logistic
regression per task, pooled, and pooled with one intercept per task) are fitted on every data set
where they apply, on the same splits, their penalty chosen on validation; they need no seeds and
no training loop, and their records sit in ``results.json`` beside the networks'.

All models of a data set see the same splits (a data set's split depends only on its own config,
which the study fixes) and the same batches for a given seed.
"""

from __future__ import annotations

import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from taan_core._atomic import write_file
from taan_core.errors import UserError
from taan_study.budgets import (
    _OPTIONAL_TRAIN_KEYS,
    _TRAIN_KEYS,
    BRANCHED_VARIANTS,
    VARIANTS,
    _model_config,
    registry_of,
)
from taan_study.config import RunSpec, StudyConfig
from taan_study.figures import render_figures
from taan_study.runner import _slug, data_fingerprint, load_study_data, run_linear, run_one, time_models

__all__ = ["RESULTS_FORMAT", "run_study", "select_coefficients"]

RESULTS_FORMAT = "taan-reproduce"


def _run_spec(config: StudyConfig, dataset: str, budget: dict, variant: str, seed: int, *, registry: str,
              reg: str = "none", c: float = 0.0, model_config: dict | None = None,
              tree_source: str | None = None) -> RunSpec:
    suffix = f"-c{c:g}" if reg != "none" else ""
    return RunSpec(
        dataset=dataset, data_path=config.data_path_of(dataset), data_config=dict(budget["data_config"]),
        variant=variant, registry=registry,
        model_config=model_config if model_config is not None else _model_config(registry, budget),
        reg=reg, c=float(c) if reg != "none" else 0.0, seed=seed,
        train={k: budget[k] for k in _TRAIN_KEYS + _OPTIONAL_TRAIN_KEYS if k in budget}, tree_source=tree_source,
        run_dir=f"runs/{dataset}/{_slug(variant)}{suffix}-s{seed}",
        threads=config.threads, device=config.device, tree_threshold=config.tree_threshold,
    )


def _variant_spec(config: StudyConfig, dataset: str, budget: dict, variant: str, seed: int, c: float = 0.0) -> RunSpec:
    registry, reg = VARIANTS[variant]
    # On images the model is its conv variant, so that every row of a data set has TAAN's trunk
    # (run_study pins input_shape once it has loaded the data; without it the name stays).
    registry = registry_of(registry, budget.get("input_shape", ()))
    return _run_spec(config, dataset, budget, variant, seed, registry=registry, reg=reg, c=c)


def _reuse(spec: RunSpec, out: Path, fingerprints: dict[str, str]) -> dict | None:
    """The stored record of an identical finished run on identical data, if any (to continue a
    stopped study)."""
    path = out / spec.run_dir / "run.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = (record.get("spec") == json.loads(json.dumps(spec.to_dict()))
            and record.get("data_fingerprint") == fingerprints[spec.dataset])
    return record if same else None


def _check_data(records: list[dict], fingerprints: dict[str, str]) -> None:
    """Every run of a data set must have seen the same data (same splits for every model)."""
    for record in records:
        if record["data_fingerprint"] != fingerprints[record["dataset"]]:
            raise RuntimeError(
                f"the {record['dataset']} data of run {record['run_dir']} differ from the data the study "
                "started with (did the data set's code change during the study?); rerun the study"
            )


def _run_all(specs: list[RunSpec], out: Path, workers: int, resume: bool, log: Callable[[str], None],
             fingerprints: dict[str, str]) -> list[dict]:
    records: list[dict | None] = [(_reuse(s, out, fingerprints) if resume else None) for s in specs]
    todo = [i for i, r in enumerate(records) if r is None]
    done = len(specs) - len(todo)

    def note(i: int, record: dict) -> None:
        nonlocal done
        done += 1
        c = f" c={record['c']:g}" if record["reg"] != "none" else ""
        log(f"[{done}/{len(specs)}] {record['dataset']} {record['model']}{c} seed {record['seed']}: "
            f"val {record['val_main']:.4f} test {record['test_main']:.4f} ({record['wall_seconds']:.1f}s)")

    if workers > 1 and len(todo) > 1:
        import multiprocessing

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_one, specs[i], str(out)): i for i in todo}
            from concurrent.futures import as_completed

            for future in as_completed(futures):
                i = futures[future]
                records[i] = future.result()
                note(i, records[i])
    else:
        for i in todo:
            records[i] = run_one(specs[i], out)
            note(i, records[i])
    done_records = [r for r in records if r is not None]
    _check_data(done_records, fingerprints)
    return done_records


def select_coefficients(runs: list[dict], chosen: dict[str, dict[str, float]] | None = None
                        ) -> dict[str, dict[str, float]]:
    """For every data set and regularised model, the c of the best mean validation metric.

    Marks ``run["selected"]`` on every run (unregularised runs are always selected) and returns
    ``{dataset: {model: c}}``. Ties go to the smaller c. With ``chosen`` given, only marks the
    runs with those coefficients.
    """
    if chosen is None:
        means: dict[tuple[str, str], dict[float, list[float]]] = {}
        for run in runs:
            if run["reg"] != "none":
                means.setdefault((run["dataset"], run["model"]), {}).setdefault(run["c"], []).append(run["val_main"])
        chosen = {}
        for (dataset, model), by_c in means.items():
            score = {c: sum(v) / len(v) for c, v in by_c.items()}
            best = max(sorted(score), key=lambda c: score[c])
            chosen.setdefault(dataset, {})[model] = best
    for run in runs:
        run["selected"] = run["reg"] == "none" or chosen.get(run["dataset"], {}).get(run["model"]) == run["c"]
    return chosen


def _machine(threads: int, device: str) -> dict:
    import torch

    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "threads_per_run": threads, "device": device}
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        if names:
            info["processor"] = names[0]
    except OSError:
        pass
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    return info


def _branched_specs(config: StudyConfig, budgets: dict[str, dict], runs: list[dict]) -> list[RunSpec]:
    external = None
    if config.tree_from is not None:
        from taan_core.checkpoint import load_checkpoint
        from taan_core.relatedness import tree_from_checkpoint

        ckpt = load_checkpoint(config.tree_from)
        name = ckpt.data.get("name")
        if name not in config.datasets:
            raise UserError(f"{config.tree_from}: the tree comes from a model trained on {name!r}, "
                             f"which is not among the study's data sets {list(config.datasets)}")
        external = (name, tree_from_checkpoint(ckpt, config.tree_threshold), config.tree_from)
    specs = []
    for dataset in config.datasets:
        budget = budgets[dataset]
        for seed in config.seeds:
            if external is not None and external[0] == dataset:
                tree, source = external[1], external[2]
            else:
                taan = [r for r in runs if r["dataset"] == dataset and r["model"] == "TAAN" and r["seed"] == seed]
                tree, source = taan[0]["tree"], taan[0]["run_dir"]
            registry = registry_of("branched", budget.get("input_shape", ()))
            layers = len(budget["hidden"])
            if registry == "branched-conv":
                # The conv TAAN's tree has a level per conv stage too (TAANConv's default channels).
                from taan_core.models import ConvConfig

                layers += len(ConvConfig(output_dims=[1], input_shape=budget["input_shape"]).channels)
            if len(tree) != layers:
                raise ValueError(f"the sharing tree from {source} has {len(tree)} layers, the study's {dataset} "
                                 f"networks {layers}")
            from taan_core.models.branched import random_assignment

            for variant, groups in zip(BRANCHED_VARIANTS, (tree, random_assignment(tree, seed))):
                specs.append(_run_spec(config, dataset, budget, variant, seed, registry=registry,
                                       model_config={"groups": groups, "hidden": list(budget["hidden"])},
                                       tree_source=source))
    return specs


# Above this many training values (samples x features) the linear baselines are not fitted: the
# fit holds the whole design matrix in float64.
_MAX_LINEAR_VALUES = 50_000_000


def _linear_runs(config: StudyConfig, budgets: dict[str, dict], out: Path, log: Callable[[str], None]
                 ) -> tuple[list[dict], dict[str, str]]:
    """The linear baselines' records of every data set, and why a data set has none (or fewer)."""
    import math

    from taan_study.linear import LINEAR_BASELINES, linear_family

    records, notes = [], {}
    for dataset in config.datasets:
        data = load_study_data(dataset, config.data_path_of(dataset), budgets[dataset]["data_config"])
        size = sum(data.split("train").num_samples(t) for t in range(data.num_tasks)) * math.prod(data.input_shape)
        try:
            linear_family(data)
        except ValueError as err:
            notes[dataset] = str(err)
            continue
        if size > _MAX_LINEAR_VALUES:
            notes[dataset] = (f"{size:,} training values (samples x features) are more than the in-memory fit "
                              f"takes ({_MAX_LINEAR_VALUES:,})")
            continue
        failed = []
        for kind in LINEAR_BASELINES:
            try:
                record = run_linear(dataset, kind, out, data_path=config.data_path_of(dataset),
                                    data_config=budgets[dataset]["data_config"],
                                    eval_batch_size=budgets[dataset]["eval_batch_size"])
            except ValueError as err:
                failed.append(f"{kind}: {err}")
                continue
            records.append(record)
            penalty = record["linear"]["penalty"]
            log(f"{dataset} {record['model']} ({penalty}={record['linear']['chosen']:g}): "
                f"val {record['val_main']:.4f} test {record['test_main']:.4f} ({record['wall_seconds']:.1f}s)")
        if failed:
            notes[dataset] = "; ".join(failed)
    return records, notes


def run_study(config: StudyConfig, log: Callable[[str], None] | None = None) -> dict:
    """Run the reproduction study and write ``results.json`` and the markdown tables into ``config.out``.

    Parameters
    ----------
    config : StudyConfig
        The data sets, seeds, grid, budgets and how to run them.
    log : callable, optional
        Receives one line per finished run.

    Returns
    -------
    dict
        The content of ``results.json``.
    """
    from taan_study.tables import write_tables

    if not isinstance(config, StudyConfig):
        raise TypeError(f"config must be a StudyConfig, got {type(config).__name__}")
    log = log or (lambda line: None)
    names = list(config.datasets)
    seed_list = list(config.seeds)
    chosen_budgets = {d: config.budget(d) for d in names}
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    machine = _machine(config.threads, config.device)

    # Pin every data set's full configuration (defaults included) and remember what its data look
    # like, so that every run of the study trains on the same splits.
    fingerprints, datasets_info = {}, {}
    for dataset in names:
        data = load_study_data(dataset, config.data_path_of(dataset), chosen_budgets[dataset]["data_config"])
        chosen_budgets[dataset]["data_config"] = {k: v for k, v in data.config.items() if k != "data_path"}
        # What the models are built for: on images (C, H, W) every model is its conv variant.
        chosen_budgets[dataset]["input_shape"] = list(data.input_shape)
        fingerprints[dataset] = data_fingerprint(data)
        datasets_info[dataset] = {
            "tasks": len(data.tasks), "task_names": list(data.task_names), "kinds": sorted({t.kind for t in data.tasks}),
            "config": dict(data.config), "fingerprint": fingerprints[dataset],
            "planted_groups": (data.ground_truth or {}).get("groups"),
            "train_samples": sum(data.split("train").num_samples(t) for t in range(len(data.tasks))),
        }

    # 0. The linear baselines: no seeds, no training loop, penalty chosen on validation.
    linear_runs, linear_notes = _linear_runs(config, chosen_budgets, out, log) if config.linear else ([], {})
    # 1. Every model; the regularised TAANs over the whole grid on the first grid_seeds seeds.
    grid_seed_list = seed_list[:config.grid_seeds]
    specs = []
    for dataset in names:
        budget = chosen_budgets[dataset]
        for seed in seed_list:
            for variant, (registry, reg) in VARIANTS.items():
                if reg == "none":
                    specs.append(_variant_spec(config, dataset, budget, variant, seed))
                elif seed in grid_seed_list:
                    specs += [_variant_spec(config, dataset, budget, variant, seed, c) for c in config.grid]
    runs = linear_runs + _run_all(specs, out, config.workers, config.resume, log, fingerprints)
    _check_data(runs, fingerprints)
    # 2. c chosen on validation; the other seeds train at the chosen c only.
    chosen = select_coefficients(runs)
    rest = [_variant_spec(config, dataset, chosen_budgets[dataset], variant, seed, c)
            for dataset in names for variant, c in chosen.get(dataset, {}).items()
            for seed in seed_list if seed not in grid_seed_list]
    runs += _run_all(rest, out, config.workers, config.resume, log, fingerprints)
    # 3. Branched networks along each seed's TAAN tree (or tree_from), and shuffled.
    branched = _branched_specs(config, chosen_budgets, runs)
    runs += _run_all(branched, out, config.workers, config.resume, log, fingerprints)
    select_coefficients(runs, chosen)
    # 4. Timing of every selected model on its own, interleaved, for Table 2.
    repeats = config.timing_repeats
    timing = time_models(runs, out, repeats=repeats, log=log) if repeats else {}

    results: dict[str, Any] = {
        "format": RESULTS_FORMAT, "version": 1, "created": created, "machine": machine,
        "settings": {"datasets": names, "seeds": seed_list, "quick": bool(config.quick), "grid": list(config.grid),
                     "grid_seeds": grid_seed_list, "timing_repeats": repeats,
                     "tree_threshold": config.tree_threshold, "tree_from": config.tree_from,
                     "workers": config.workers, "budgets": chosen_budgets,
                     "selection": "mean validation metric over the grid seeds",
                     "linear": bool(config.linear)},
        "datasets": datasets_info, "selected_c": chosen, "runs": runs, "timing": timing,
        "linear_notes": linear_notes,
        "wall_seconds": time.perf_counter() - started,
    }
    results["figures"] = render_figures(results, out) if config.figures else []
    results["wall_seconds"] = time.perf_counter() - started
    write_file(out / "results.json", json.dumps(results, indent=1))
    write_tables(results, out)
    return results
