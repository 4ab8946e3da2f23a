"""The school protocol: every model on the literature's 10 random splits, test touched once.

For each split seed K (default 0-9) the school data are split as the literature does (25 % of
every school's students for test, validation carved from the rest: ``load_school(seed=K)``), and
on that one split:

- the three linear baselines of ``taan_study.linear`` (ridge per school, pooled ridge, pooled
  ridge with one intercept per school), their penalty chosen on validation;
- every network with ``taan-core train``'s school defaults (``DATASET_DEFAULTS["school"]``: the
  same widths, epochs, batches, learning rate, patience and starts for every network; model
  config defaults such as ``shared_head`` go to the models whose config has them), the epoch
  chosen on the pooled validation explained variance.

The test split of each is evaluated once, at the chosen penalty or epoch. The figure is the
pooled test explained variance, ``1 - MSE / Var(y_test)``, in percent, mean +- std over the
splits; the pooled RMSE is in exam points. Usage::

    python benchmarks/bench_school.py --data ../shared/data/school/school.mat \
        [--splits 0-9] [--models taan,hard,...] [--workers 2] [--out docs/results/school.json]

Prints the JSON it writes (``runs``: one record per split and model; ``summary``: per model).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

NETWORKS = ("taan", "hard", "mmoe", "cross-stitch", "soft-order", "stl")
LINEAR = ("ridge-task", "ridge-pooled", "ridge-pooled-intercept")
DISPLAY = {"taan": "TAAN", "hard": "HardShare", "mmoe": "MMoE", "cross-stitch": "CrossStitch",
           "soft-order": "SoftOrder", "stl": "STL", "ridge-task": "Ridge per school",
           "ridge-pooled": "Ridge pooled", "ridge-pooled-intercept": "Ridge pooled + school intercepts"}


def _parse_splits(text: str) -> list[int]:
    from taan_core._cli_seeds import parse_seeds

    return parse_seeds(text)


def _record(model: str, split: int, val: dict, test: dict, **extra) -> dict:
    return {"model": model, "display": DISPLAY.get(model, model), "split": split,
            "val_ev": val["pooled"]["ev"], "test_ev": test["pooled"]["ev"], "test_rmse": test["pooled"]["rmse"],
            "test_mean_r2": test["mean"]["r2"], **extra}


def run_one(job: tuple[str, int, str, dict]) -> dict:
    """Fit one model on one split and evaluate it; runs in a worker process."""
    model, split, data_path, overrides = job
    import torch

    torch.set_num_threads(1)
    from taan_core.data import load_dataset
    from taan_core.metrics import evaluate

    data = load_dataset("school", data_path=data_path, seed=split)
    tic = time.perf_counter()
    if model in LINEAR:
        from taan_study.linear import fit_linear

        net, info = fit_linear(data, model)
        extra = {"chosen": info["chosen"], "seconds": time.perf_counter() - tic}
    else:
        net, extra = _train(model, data, overrides)
        extra["seconds"] = time.perf_counter() - tic
    val = evaluate(net, data.split("val"), data.tasks)
    test = evaluate(net, data.split("test"), data.tasks)
    return _record(model, split, val, test, **extra)


def _train(model: str, data, overrides: dict):
    import torch

    from taan_core.checkpoint import load_checkpoint
    from taan_core.models import build_model
    from taan_core.train import Trainer, model_settings, train_config

    overrides = dict(overrides)
    widths, hinges = overrides.pop("hidden", None), overrides.pop("hinges", None)
    config = model_settings("school", model, hidden=widths, hinges=hinges)
    torch.manual_seed(0)
    net = build_model(model, data.input_shape, [t.num_outputs for t in data.tasks], **config)
    with tempfile.TemporaryDirectory() as out:
        train = train_config("school", **{"threads": 1, **overrides}, device="cpu", seed=0, out=out, quiet=True)
        result = Trainer(net, data, train).fit()
        net.load_state_dict(load_checkpoint(result.checkpoint).raw["model"]["state_dict"])
    return net, {"best_epoch": int(result.best_epoch), "epochs_run": int(result.epochs),
                 "parameters": int(sum(p.numel() for p in net.parameters()))}


def summarise(runs: list[dict]) -> dict:
    """Per model: mean and std over splits of the test explained variance (percent) and RMSE."""
    out: dict[str, dict] = {}
    for model in dict.fromkeys(r["model"] for r in runs):
        rows = [r for r in runs if r["model"] == model]
        ev = [100 * r["test_ev"] for r in rows]
        rmse = [r["test_rmse"] for r in rows]
        out[model] = {"display": rows[0]["display"], "splits": len(rows),
                      "test_ev_mean": statistics.fmean(ev), "test_ev_std": statistics.stdev(ev) if len(ev) > 1 else 0.0,
                      "test_rmse_mean": statistics.fmean(rmse),
                      "val_ev_mean": 100 * statistics.fmean(r["val_ev"] for r in rows)}
    return out


def markdown_table(result: dict) -> str:
    """The summary as a markdown table, best test explained variance first."""
    rows = sorted(result["summary"].values(), key=lambda r: -r["test_ev_mean"])
    lines = [f"| model | test explained variance, % (mean ± std over {len(result['splits'])} splits) "
             "| test RMSE (points) | validation EV, % |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['display']} | {r['test_ev_mean']:.1f} ± {r['test_ev_std']:.1f} | {r['test_rmse_mean']:.2f} "
                     f"| {r['val_ev_mean']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="path of school.mat")
    parser.add_argument("--splits", default="0-9", help="split seeds, e.g. 0-9 or 0,3")
    parser.add_argument("--models", default=",".join(LINEAR + NETWORKS), help="comma-separated models")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", default=None, help="JSON file to write (default: print only); the markdown "
                                                    "table goes beside it (.md)")
    parser.add_argument("--table", default=None, metavar="JSON",
                        help="print the markdown table of a JSON this benchmark wrote, and exit")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override a school default for the networks, e.g. --set epochs=5")
    args = parser.parse_args(argv)
    if args.table:
        result = json.loads(Path(args.table).read_text())
        print(markdown_table(result), end="")
        return result
    if not args.data:
        parser.error("--data PATH/school.mat is needed")
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in LINEAR + NETWORKS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(LINEAR + NETWORKS)}")
    jobs = [(m, s, args.data, overrides) for s in _parse_splits(args.splits) for m in models]
    tic = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(args.workers) as pool:
        runs = []
        for record in pool.imap_unordered(run_one, jobs):
            runs.append(record)
            print(f"split {record['split']} {record['display']}: test EV {100 * record['test_ev']:.2f} %",
                  file=sys.stderr, flush=True)
    runs.sort(key=lambda r: (r["split"], models.index(r["model"])))
    from taan_core.train import DATASET_DEFAULTS

    result = {"benchmark": "school", "protocol": "25 % of every school for test, 15 % of the rest for validation; "
                                                 "pooled test explained variance, mean +- std over splits",
              "splits": sorted({r["split"] for r in runs}), "defaults": {**DATASET_DEFAULTS["school"], **overrides},
              "wall_seconds": time.perf_counter() - tic, "summary": summarise(runs), "runs": runs}
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
        Path(args.out).with_suffix(".md").write_text(markdown_table(result))
    print(text)
    return result


if __name__ == "__main__":
    main()
