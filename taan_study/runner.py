"""One run of the study: train a model, pick its best validation epoch, test it, time it.

A run is described by a :class:`~taan_study.config.RunSpec` (plain data, so that it can be
shipped to a worker process and stored beside its result); :func:`run_one` trains it with
:class:`~taan_core.train.Trainer` into its own folder and returns the run record that
``results.json`` collects.

Timing: the training time of an epoch is measured from the optimiser steps alone (the time
between the first and the last step of the epoch, scaled to the number of steps), so the
validation pass and checkpoint writes do not count; the run reports the median over its epochs,
which is robust to other jobs on a shared machine. Inference time is the median of five timed
forward passes over the test split (after one warm-up pass) in evaluation mode.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from taan_core._atomic import write_file
from taan_core.train._support import data_fingerprint  # re-exported: the study's records use it
from taan_study.config import RunSpec

__all__ = ["data_fingerprint", "load_study_data", "run_linear", "run_one", "time_models", "time_one"]

_INFERENCE_REPEATS = 5
# At most this many test samples are timed for inference (large data sets stream from disk).
_INFERENCE_SAMPLES = 20000


def _slug(text: str) -> str:
    """A folder name for a model's display name: "TAAN+cosine" -> "taan-cosine"."""
    slug = "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    return slug


@functools.lru_cache(maxsize=8)
def _load_data(name: str, data_path: str | None, config_json: str):
    from taan_core.data import load_dataset

    return load_dataset(name, data_path=data_path, **json.loads(config_json))


def load_study_data(dataset: str, data_path: str | None = None, data_config: dict | None = None):
    """A data set of the study (cached per process: every run of a data set shares it).

    The loader's refusals (a malformed file, a bad configuration) are the user's input errors.
    """
    from taan_core._cli_runner import user_input

    with user_input():
        return _load_data(dataset, data_path, json.dumps(data_config or {}, sort_keys=True))


def _build(spec: RunSpec, data) -> torch.nn.Module:
    from taan_core.models import build_model

    dims = [t.num_outputs for t in data.tasks]
    return build_model(spec.registry, data.input_shape, dims, **spec.model_config)


def _test_batch(split, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The test split as one mixed batch (at most ``_INFERENCE_SAMPLES`` samples)."""
    per_task = max(1, -(-_INFERENCE_SAMPLES // max(split.num_tasks, 1)))
    xs, ts = [], []
    for t in range(split.num_tasks):
        n = min(split.num_samples(t), per_task)
        if n == 0:
            continue
        x, _ = split.get(t, torch.arange(n))
        xs.append(x)
        ts.append(torch.full((n,), t, dtype=torch.long))
    return torch.cat(xs).to(device), torch.cat(ts).to(device)


@torch.no_grad()
def _inference_seconds(model: torch.nn.Module, split, batch_size: int, device: torch.device) -> tuple[float, int]:
    x, task = _test_batch(split, device)
    model.eval()
    times = []
    for _ in range(_INFERENCE_REPEATS + 1):
        tic = time.perf_counter()
        for start in range(0, x.shape[0], batch_size):
            model(x[start:start + batch_size], task[start:start + batch_size])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - tic)
    return statistics.median(times[1:]), int(x.shape[0])


def _epoch_train_seconds(stamps: dict[int, list[float]], metrics: list[dict]) -> float:
    """Median over epochs of the time spent in optimiser steps, scaled to the epoch's steps."""
    per_epoch = []
    for record in metrics:
        s = stamps.get(int(record["epoch"]), [])
        if len(s) >= 2:
            per_epoch.append((s[-1] - s[0]) * len(s) / (len(s) - 1))
        else:
            # One step per epoch: the epoch's own time (it includes the validation pass).
            per_epoch.append(float(record["seconds"]))
    return statistics.median(per_epoch) if per_epoch else float("nan")


def _geometry(ckpt, spec: RunSpec, planted) -> dict:
    """Sharing tree and planted ARI of a checkpoint with task-adaptive layers."""
    from taan_core.relatedness import adjusted_rand_index, layer_distances, planted_ari, sharing_groups

    geometry = layer_distances(ckpt.layers, "data")
    dists = [d for d, _ in geometry]
    tree = sharing_groups(dists, spec.tree_threshold, scales=[s for _, s in geometry])
    out: dict[str, Any] = {"tree": tree, "num_groups": [max(row) + 1 for row in tree], "ari": None,
                           "ari_standard": None, "tree_ari": None}
    if planted is not None and len(planted) == len(dists):
        # Under the recorded pre-activation measure (taan-viz's default) and under N(0, 1).
        out["ari"] = planted_ari(dists, planted)
        out["ari_standard"] = planted_ari([d for d, _ in layer_distances(ckpt.layers, "standard")], planted)
        out["tree_ari"] = [float(adjusted_rand_index(p, g)) for p, g in zip(planted, tree)]
    return out


def _fit(spec: RunSpec, out: str | Path, **train_overrides: Any):
    """Build the run's model and train it into its folder; returns what evaluation needs."""
    from taan_core.train import TrainConfig, Trainer, resolve_device

    if spec.threads:
        torch.set_num_threads(int(spec.threads))
    run_dir = Path(out) / spec.run_dir
    data = load_study_data(spec.dataset, spec.data_path, spec.data_config)
    torch.manual_seed(int(spec.seed))
    model = _build(spec, data)
    device = resolve_device(spec.device)
    config = TrainConfig(**{**spec.train, **train_overrides}, reg=spec.reg, c=float(spec.c),
                         seed=int(spec.seed), device=str(device), out=str(run_dir), quiet=True)
    stamps: dict[int, list[float]] = {}

    def on_step(trainer, epoch: int, batch: int) -> None:
        stamps.setdefault(epoch, []).append(time.perf_counter())

    result = Trainer(model, data, config, on_step=on_step).fit(overwrite=True)
    return model, data, config, device, result, stamps


def time_one(spec: RunSpec, out: str | Path) -> dict:
    """Train the run's model for one epoch and time it: ``{"train_seconds_per_epoch",
    "inference_seconds", "inference_samples"}`` (used by the study's dedicated timing pass)."""
    model, data, config, device, result, stamps = _fit(spec, out, epochs=1, patience=0)
    seconds, samples = _inference_seconds(model, data.split("test"), config.eval_batch_size, device)
    return {"train_seconds_per_epoch": _epoch_train_seconds(stamps, result.metrics),
            "inference_seconds": seconds, "inference_samples": samples}


def run_one(spec: RunSpec, out: str | Path) -> dict:
    """Train, select, test and time one run of the study.

    Parameters
    ----------
    spec : RunSpec
        The run (its ``run_dir`` is relative to ``out``).
    out : str or Path
        The study folder.

    Returns
    -------
    dict
        The run record (see ``docs/results.md`` for the fields); also written to
        ``out/run_dir/run.json``.
    """
    from taan_core.checkpoint import load_checkpoint
    from taan_core.metrics import evaluate, main_metric

    tic = time.perf_counter()
    model, data, config, device, result, stamps = _fit(spec, out)
    run_dir = Path(out) / spec.run_dir
    ckpt = load_checkpoint(result.checkpoint)
    model.load_state_dict(ckpt.raw["model"]["state_dict"])
    model.to(device)
    tasks = list(data.tasks)
    test = evaluate(model, data.split("test"), tasks, config.eval_batch_size, device)
    seconds, samples = _inference_seconds(model, data.split("test"), config.eval_batch_size, device)
    record: dict[str, Any] = {
        "dataset": spec.dataset, "model": spec.variant, "registry": spec.registry, "reg": spec.reg,
        "c": float(spec.c), "seed": int(spec.seed), "selected": None,
        "metric": main_metric(tasks),
        "val_main": float(result.best_main), "test_main": float(test["main"]),
        "test": {"per_task": test["per_task"], "mean": test["mean"], "main": float(test["main"])},
        "parameters": int(model.num_parameters()),
        "train_seconds_per_epoch": _epoch_train_seconds(stamps, result.metrics),
        "epoch_seconds": statistics.median(float(m["seconds"]) for m in result.metrics),
        "inference_seconds": seconds, "inference_samples": samples,
        "best_epoch": int(result.best_epoch), "epochs_run": int(result.epochs),
        "stopped_early": bool(result.stopped_early), "wall_seconds": time.perf_counter() - tic,
        "run_dir": spec.run_dir, "tree": None, "num_groups": None, "ari": None, "ari_standard": None,
        "tree_ari": None,
        "tree_source": spec.tree_source, "data_fingerprint": data_fingerprint(data), "spec": spec.to_dict(),
    }
    if ckpt.layers:
        record.update(_geometry(ckpt, spec, (data.ground_truth or {}).get("groups")))
    elif "groups" in spec.model_config:
        tree = spec.model_config["groups"]
        record.update(tree=tree, num_groups=[max(row) + 1 for row in tree])
    write_file(run_dir / "run.json", json.dumps(record, indent=1))
    return record


def run_linear(dataset: str, kind: str, out: str | Path, *, data_path: str | None = None,
               data_config: dict | None = None, grid: list[float] | None = None,
               eval_batch_size: int = 1024) -> dict:
    """Fit, validate and test one linear baseline (:func:`taan_study.linear.fit_linear`) of the study.

    The data are the study's (same configuration, same splits as the networks); the penalty is
    chosen on validation, the test split only evaluated, with the networks' ``evaluate``.

    Returns
    -------
    dict
        A run record with the networks' keys (``registry`` "linear", ``seed`` None: the fit is
        deterministic; no epochs, ``train_seconds_per_epoch`` None, ``fit_seconds`` the whole fit
        over the grid), plus ``val`` (validation metrics) and ``linear`` (the fit's info). Also
        written to ``out/run_dir/run.json``, with the weights in ``weights.pt``.
    """
    from taan_core.metrics import evaluate, main_metric
    from taan_study.linear import fit_linear

    tic = time.perf_counter()
    data = load_study_data(dataset, data_path, data_config)
    model, info = fit_linear(data, kind, grid=grid)
    tasks = list(data.tasks)
    val = evaluate(model, data.split("val"), tasks, eval_batch_size)
    test = evaluate(model, data.split("test"), tasks, eval_batch_size)
    seconds, samples = _inference_seconds(model, data.split("test"), eval_batch_size, torch.device("cpu"))
    run_dir = f"runs/{dataset}/{_slug(info['model'])}"
    record: dict[str, Any] = {
        "dataset": dataset, "model": info["model"], "registry": "linear", "reg": "none", "c": 0.0, "seed": None,
        "selected": True, "metric": main_metric(tasks),
        "val_main": float(val["main"]), "test_main": float(test["main"]), "val": val, "test": test,
        "parameters": int(model.num_parameters()), "train_seconds_per_epoch": None, "epoch_seconds": None,
        "fit_seconds": info["fit_seconds"], "inference_seconds": seconds, "inference_samples": samples,
        "best_epoch": None, "epochs_run": 0, "stopped_early": False, "wall_seconds": time.perf_counter() - tic,
        "run_dir": run_dir, "tree": None, "num_groups": None, "ari": None, "ari_standard": None, "tree_ari": None,
        "tree_source": None, "data_fingerprint": data_fingerprint(data), "spec": None, "linear": info,
    }
    folder = Path(out) / run_dir
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"config": {"in_features": model.in_features, "output_dims": model.output_dims,
                           "sharing": model.sharing}, "state_dict": model.state_dict()}, folder / "weights.pt")
    write_file(folder / "run.json", json.dumps(record, indent=1))
    return record


def time_models(runs: list[dict], out: str | os.PathLike, repeats: int = 3,
                log: Callable[[str], None] | None = None) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Time every selected model of every data set on its own, for Table 2.

    Each round trains every model (seed 0's configuration, the chosen c) for one epoch and
    times its optimiser steps and its inference over the test split; the models take turns
    within a round, so a change of load on the machine touches all of them alike.

    Returns
    -------
    dict
        ``{dataset: {model: {"train_seconds_per_epoch": [...], "inference_seconds": [...]}}}``,
        one value per round.
    """
    log = log or (lambda line: None)
    first: dict[tuple[str, str], dict] = {}
    # The linear baselines have no epochs to time (their records hold the fit time).
    networks = [r for r in runs if r.get("registry") != "linear"]
    for run in sorted(networks, key=lambda r: r["seed"]):
        if run["selected"]:
            first.setdefault((run["dataset"], run["model"]), run)
    timing: dict[str, dict[str, dict[str, list[float]]]] = {}
    for round_ in range(repeats):
        for (dataset, model), run in first.items():
            spec = RunSpec.from_dict({**run["spec"], "run_dir": f"timing/{dataset}/{_slug(model)}"})
            measured = time_one(spec, out)
            entry = timing.setdefault(dataset, {}).setdefault(model, {"train_seconds_per_epoch": [],
                                                                       "inference_seconds": []})
            entry["train_seconds_per_epoch"].append(measured["train_seconds_per_epoch"])
            entry["inference_seconds"].append(measured["inference_seconds"])
        log(f"timing round {round_ + 1}/{repeats} done")
    shutil.rmtree(Path(out) / "timing", ignore_errors=True)
    return timing
