"""The reproduction study: every model on every data set, same budget, seeds, selection on val.

:func:`run_study` trains, for every data set and seed, the models of :data:`VARIANTS` with the
data set's budget (:data:`BUDGETS`: widths, epochs, batch, learning rate, early-stopping
patience); the regularised TAANs once per coefficient of the grid. The coefficient of each
regularised model is the one with the best mean *validation* metric over the seeds; the test
split is only evaluated, never used to choose. Then the hard-sharing network branched like the
sharing tree of each seed's TAAN (:class:`~taan_core.models.branched.Branched`) and one with the
same shape but a random task assignment are trained with the same budget. ``results.json``
holds every run; :mod:`taan_core.reproduce.tables` turns it into the markdown tables.

All models of a data set see the same splits (a data set's split depends only on its own config,
which the study fixes) and the same batches for a given seed.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from taan_core.reproduce.budgets import (
    _FILE_DATASETS,
    _TRAIN_KEYS,
    BRANCHED_VARIANTS,
    BUDGETS,
    DEFAULT_GRID,
    QUICK_BUDGETS,
    QUICK_GRID,
    VARIANTS,
    _model_config,
)
from taan_core.reproduce.figures import render_figures
from taan_core.reproduce.runner import _slug, data_fingerprint, load_study_data, run_one, time_models

__all__ = ["RESULTS_FORMAT", "run_study", "select_coefficients"]

RESULTS_FORMAT = "taan-reproduce"


def _check_datasets(datasets: Sequence[str], data_path: str | None) -> list[str]:
    if isinstance(datasets, str):
        datasets = [d for d in datasets.split(",") if d]
    names = [str(d).strip() for d in datasets]
    if not names:
        raise ValueError("datasets must name at least one data set")
    unknown = [d for d in names if d not in BUDGETS]
    if unknown:
        hint = " (omniglot needs convolutional baselines, which the study does not have)" if "omniglot" in unknown else ""
        raise ValueError(f"unknown data set {unknown[0]!r} for the study; choose from {', '.join(BUDGETS)}{hint}")
    if len(set(names)) != len(names):
        raise ValueError(f"datasets must not repeat, got {names}")
    needs_files = [d for d in names if d in _FILE_DATASETS]
    if needs_files and data_path is None:
        raise ValueError(f"data set {needs_files[0]!r} reads files: pass data_path (--data PATH)")
    if len(needs_files) > 1:
        raise ValueError(f"one data_path serves one file-based data set, got {needs_files}")
    return names


def _check_seeds(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, bool):
        raise TypeError("seeds must be an int or a list of ints, got bool")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {seeds}")
        return list(range(seeds))
    out = [int(s) for s in seeds]
    if not out or any(s < 0 for s in out) or len(set(out)) != len(out):
        raise ValueError(f"seeds must be distinct ints >= 0, got {list(seeds)}")
    return out


def _check_grid(grid: Sequence[float]) -> list[float]:
    values = [float(c) for c in grid]
    if not values or any(not (c > 0 and c < float("inf")) for c in values):
        raise ValueError(f"grid must hold finite coefficients > 0, got {list(grid)}")
    return values


def _spec(dataset: str, data_path, budget: dict, variant: str, registry: str, reg: str, c: float, seed: int,
          common: dict, model_config: dict | None = None, tree_source: str | None = None) -> dict:
    suffix = f"-c{c:g}" if reg != "none" else ""
    return {
        "dataset": dataset, "data_path": data_path, "data_config": dict(budget["data_config"]),
        "variant": variant, "registry": registry,
        "model_config": model_config if model_config is not None else _model_config(registry, budget),
        "reg": reg, "c": float(c) if reg != "none" else 0.0, "seed": seed,
        "train": {k: budget[k] for k in _TRAIN_KEYS}, "tree_source": tree_source,
        "run_dir": f"runs/{dataset}/{_slug(variant)}{suffix}-s{seed}", **common,
    }


def _reuse(spec: dict, out: Path, fingerprints: dict[str, str]) -> dict | None:
    """The stored record of an identical finished run on identical data, if any (to continue a
    stopped study)."""
    path = out / spec["run_dir"] / "run.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = (record.get("spec") == json.loads(json.dumps(spec))
            and record.get("data_fingerprint") == fingerprints[spec["dataset"]])
    return record if same else None


def _check_data(records: list[dict], fingerprints: dict[str, str]) -> None:
    """Every run of a data set must have seen the same data (same splits for every model)."""
    for record in records:
        if record["data_fingerprint"] != fingerprints[record["dataset"]]:
            raise RuntimeError(
                f"the {record['dataset']} data of run {record['run_dir']} differ from the data the study "
                "started with (did the data set's code change during the study?); rerun the study"
            )


def _run_all(specs: list[dict], out: Path, workers: int, resume: bool, log: Callable[[str], None],
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


def _branched_specs(datasets, seeds, budgets, runs, data_path, common, tree_from, threshold) -> list[dict]:
    external = None
    if tree_from is not None:
        from taan_core.checkpoint import load_checkpoint
        from taan_core.reproduce.tree import tree_from_checkpoint

        ckpt = load_checkpoint(tree_from)
        name = ckpt.data.get("name")
        if name not in datasets:
            raise ValueError(f"{tree_from}: the tree comes from a model trained on {name!r}, "
                             f"which is not among the study's data sets {list(datasets)}")
        external = (name, tree_from_checkpoint(ckpt, threshold), str(tree_from))
    specs = []
    for dataset in datasets:
        budget = budgets[dataset]
        for seed in seeds:
            if external is not None and external[0] == dataset:
                tree, source = external[1], external[2]
            else:
                taan = [r for r in runs if r["dataset"] == dataset and r["model"] == "TAAN" and r["seed"] == seed]
                tree, source = taan[0]["tree"], taan[0]["run_dir"]
            if len(tree) != len(budget["hidden"]):
                raise ValueError(f"the sharing tree from {source} has {len(tree)} layers, the study's {dataset} "
                                 f"networks {len(budget['hidden'])}")
            from taan_core.models.branched import random_assignment

            for variant, groups in zip(BRANCHED_VARIANTS, (tree, random_assignment(tree, seed))):
                config = {"groups": groups, "hidden": list(budget["hidden"])}
                specs.append(_spec(dataset, data_path if dataset in _FILE_DATASETS else None, budget, variant,
                                   "branched", "none", 0.0, seed, common, config, source))
    return specs


def run_study(
    datasets: Sequence[str] | str = ("planted", "digits", "exam"),
    seeds: int | Sequence[int] = 3,
    quick: bool = False,
    out: str | os.PathLike = "runs/reproduce",
    data_path: str | os.PathLike | None = None,
    *,
    grid: Sequence[float] | None = None,
    tree_from: str | os.PathLike | None = None,
    tree_threshold: float = 0.1,
    grid_seeds: int | None = None,
    budgets: dict[str, dict[str, Any]] | None = None,
    timing_repeats: int | None = None,
    workers: int | None = None,
    threads: int = 1,
    device: str = "cpu",
    resume: bool = True,
    figures: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Run the reproduction study and write ``out/results.json`` and the markdown tables.

    Parameters
    ----------
    datasets : sequence of str or comma-separated str
        Keys of :data:`BUDGETS` (planted, digits, exam, youtube8m, npz).
    seeds : int or sequence of int
        Number of seeds (0, 1, ...) or the seeds themselves.
    quick : bool
        Use :data:`QUICK_BUDGETS` and a two-value grid: the whole pipeline in minutes.
    out : path
        Study folder: ``results.json``, ``tables.md``, ``table1.md``, ``table2.md``, ``runs/``
        (one folder per run with its checkpoints) and ``figures/``.
    data_path : path, optional
        Data location of the file-based data set (youtube8m, npz).
    grid : sequence of float, optional
        Coefficients c tried for every regularised TAAN (default :data:`DEFAULT_GRID`).
    tree_from : path, optional
        A TAAN checkpoint whose sharing tree the branched networks of its data set follow,
        instead of the tree of each seed's TAAN trained here.
    tree_threshold : float
        Relative threshold of the sharing trees (see :mod:`taan_core.reproduce.tree`).
    grid_seeds : int, optional
        Run the grid on the first ``grid_seeds`` seeds only, choose c there, and train the
        other seeds at the chosen c (default: the grid on every seed).
    budgets : dict, optional
        Per-data-set overrides of the budget entries (``{"planted": {"epochs": 5}}``).
    timing_repeats : int, optional
        Rounds of the timing pass (every selected model trains one epoch per round, models
        interleaved, one at a time); 3 by default, 1 with ``quick``, 0 skips it.
    workers : int, optional
        Runs trained at the same time (separate processes); default 1, 2 with ``quick``.
    threads : int
        Torch threads per run (1 is fastest for these small models on a shared CPU).
    device : str
        Device of every run ("cpu", "cuda", "auto", ...).
    resume : bool
        Reuse the records of finished runs in ``out`` whose settings are identical.
    figures : bool
        Draw heatmaps and sharing trees of the best TAAN runs with ``taan-viz`` (skipped with a
        note when it is not installed).
    log : callable, optional
        Receives one line per finished run.

    Returns
    -------
    dict
        The content of ``results.json``.
    """
    from taan_core.reproduce.tables import write_tables

    log = log or (lambda line: None)
    data_path = None if data_path is None else str(data_path)
    names = _check_datasets(datasets, data_path)
    seed_list = _check_seeds(seeds)
    grid_list = _check_grid(grid if grid is not None else (QUICK_GRID if quick else DEFAULT_GRID))
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if quick else 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    if grid_seeds is None:
        grid_seeds = len(seed_list)
    if isinstance(grid_seeds, bool) or not isinstance(grid_seeds, int) or not 1 <= grid_seeds <= len(seed_list):
        raise ValueError(f"grid_seeds must be an int in [1, {len(seed_list)}] (the number of seeds), got {grid_seeds!r}")
    if timing_repeats is None:
        timing_repeats = 1 if quick else 3
    if isinstance(timing_repeats, bool) or not isinstance(timing_repeats, int) or timing_repeats < 0:
        raise ValueError(f"timing_repeats must be an int >= 0, got {timing_repeats!r}")
    base = QUICK_BUDGETS if quick else BUDGETS
    chosen_budgets = {d: copy.deepcopy(base[d]) for d in names}
    for dataset, overrides in (budgets or {}).items():
        if dataset not in chosen_budgets:
            raise ValueError(f"budgets names {dataset!r}, which is not among the study's data sets {names}")
        unknown = set(overrides) - set(chosen_budgets[dataset]) - {"num_experts"}
        if unknown:
            raise ValueError(f"unknown budget entries {sorted(unknown)}; valid: {', '.join(chosen_budgets[dataset])}")
        chosen_budgets[dataset].update(copy.deepcopy(overrides))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    common = {"threads": threads, "device": device, "tree_threshold": float(tree_threshold)}
    started = time.perf_counter()
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    machine = _machine(threads, device)

    # Pin every data set's full configuration (defaults included) and remember what its data look
    # like, so that every run of the study trains on the same splits.
    fingerprints, datasets_info = {}, {}
    for dataset in names:
        path = data_path if dataset in _FILE_DATASETS else None
        data = load_study_data({"dataset": dataset, "data_path": path,
                                "data_config": chosen_budgets[dataset]["data_config"]})
        chosen_budgets[dataset]["data_config"] = {k: v for k, v in data.config.items() if k != "data_path"}
        fingerprints[dataset] = data_fingerprint(data)
        datasets_info[dataset] = {
            "tasks": len(data.tasks), "task_names": list(data.task_names), "kinds": sorted({t.kind for t in data.tasks}),
            "config": dict(data.config), "fingerprint": fingerprints[dataset],
            "planted_groups": (data.ground_truth or {}).get("groups"),
            "train_samples": sum(data.split("train").num_samples(t) for t in range(len(data.tasks))),
        }

    # 1. Every model; the regularised TAANs over the whole grid on the first grid_seeds seeds.
    grid_seed_list = seed_list[:grid_seeds]
    specs = []
    for dataset in names:
        budget = chosen_budgets[dataset]
        path = data_path if dataset in _FILE_DATASETS else None
        for seed in seed_list:
            for variant, (registry, reg) in VARIANTS.items():
                if reg == "none":
                    specs.append(_spec(dataset, path, budget, variant, registry, reg, 0.0, seed, common))
                elif seed in grid_seed_list:
                    specs += [_spec(dataset, path, budget, variant, registry, reg, c, seed, common) for c in grid_list]
    runs = _run_all(specs, out, workers, resume, log, fingerprints)
    # 2. c chosen on validation; the other seeds train at the chosen c only.
    chosen = select_coefficients(runs)
    rest = [_spec(dataset, data_path if dataset in _FILE_DATASETS else None, chosen_budgets[dataset], variant,
                  VARIANTS[variant][0], VARIANTS[variant][1], c, seed, common)
            for dataset in names for variant, c in chosen.get(dataset, {}).items()
            for seed in seed_list if seed not in grid_seed_list]
    runs += _run_all(rest, out, workers, resume, log, fingerprints)
    # 3. Branched networks along each seed's TAAN tree (or --tree-from), and shuffled.
    branched = _branched_specs(names, seed_list, chosen_budgets, runs, data_path, common, tree_from, tree_threshold)
    runs += _run_all(branched, out, workers, resume, log, fingerprints)
    select_coefficients(runs, chosen)
    # 4. Timing of every selected model on its own, interleaved, for Table 2.
    timing = time_models(runs, out, repeats=timing_repeats, log=log) if timing_repeats else {}

    results = {
        "format": RESULTS_FORMAT, "version": 1, "created": created, "machine": machine,
        "settings": {"datasets": names, "seeds": seed_list, "quick": bool(quick), "grid": grid_list,
                     "grid_seeds": grid_seed_list, "timing_repeats": timing_repeats,
                     "tree_threshold": float(tree_threshold), "tree_from": None if tree_from is None else str(tree_from),
                     "workers": workers, "budgets": chosen_budgets, "selection": "mean validation metric over the grid seeds"},
        "datasets": datasets_info, "selected_c": chosen, "runs": runs, "timing": timing,
        "wall_seconds": time.perf_counter() - started,
    }
    results["figures"] = render_figures(results, out) if figures else []
    results["wall_seconds"] = time.perf_counter() - started
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_tables(results, out)
    return results
