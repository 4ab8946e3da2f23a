"""The planted recovery protocol: the default `taan-core train` on many seeds, and what each recovered.

Every seed is one run of ``taan-core train --seed S`` with no other option changed (the planted
benchmark, data seed 0), started as its own process; ``--workers`` runs that many side by side
(one torch thread each). For every run the script reports the best validation R^2, the test R^2
of the best checkpoint, the adjusted Rand index of every layer's average-linkage clustering
against the planted groups (under N(0, 1) and under the recorded pre-activation measure), and the
wall time. It prints one JSON object: the runs, the success counts against the targets of
docs/training.md, and the spread of the test R^2.

    python benchmarks/bench_recovery.py --seeds 1000-1019 --workers 2 > docs/results/recovery.json
    python benchmarks/bench_recovery.py --seeds 1000-1019 -- --shared-warmup 0   # the old training

Arguments after ``--`` are passed to every ``taan-core train``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

R2_TARGET = 0.97
ARI_TARGET = 0.9


def _train(seed: int, root: Path, extra: list[str]) -> dict:
    out = root / f"seed-{seed}"
    cmd = [sys.executable, "-m", "taan_core.cli", "train", "--seed", str(seed), "--out", str(out),
           "--overwrite", "--quiet", *extra]
    tic = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    seconds = time.perf_counter() - tic
    if proc.returncode != 0:
        return {"seed": seed, "error": proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"],
                "seconds": seconds}
    return {"seed": seed, "checkpoint": str(out / "checkpoint.pt"), "seconds": seconds}


def _score(run: dict) -> dict:
    import torch

    from taan_core.checkpoint import load_checkpoint, model_from_checkpoint
    from taan_core.data import load_dataset
    from taan_core.metrics import evaluate
    from taan_core.relatedness import layer_distances, planted_ari

    ckpt = load_checkpoint(run.pop("checkpoint"))
    groups = ckpt.data["groups"]
    data = load_dataset(ckpt.data["name"], **dict(ckpt.data.get("config") or {}))
    net = model_from_checkpoint(ckpt)
    test = evaluate(net, data.split("test"), list(data.tasks), 4096, torch.device("cpu"))
    run["val_r2"] = max(m["val"]["main"] for m in ckpt.metrics)
    run["test_r2"] = float(test["main"])
    run["best_epoch"] = ckpt.epoch
    for measure in ("standard", "data"):
        run[f"ari_{measure}"] = [round(float(a), 4) for a in
                                 planted_ari([d for d, _ in layer_distances(ckpt.layers, measure)], groups)]
    run["fits"] = run["val_r2"] >= R2_TARGET
    run["recovers"] = min(run["ari_standard"] + run["ari_data"]) >= ARI_TARGET
    return run


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1000-1019", help="Seeds, e.g. 1000-1019 or 3,5,8.")
    parser.add_argument("--workers", type=int, default=2, help="Runs side by side.")
    parser.add_argument("--out", default=None, help="Folder for the runs (default: a temporary folder).")
    args = parser.parse_args(argv)
    from taan_core._cli_seeds import parse_seeds

    seeds = parse_seeds(args.seeds)
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="taan-recovery-"))
    root.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
        runs = list(pool.map(lambda s: _train(s, root, extra), seeds))
    wall = time.perf_counter() - tic
    runs = [run if "error" in run else _score(run) for run in runs]
    done = [run for run in runs if "error" not in run]
    test = [run["test_r2"] for run in done]
    print(json.dumps({
        "protocol": "taan-core train --seed S (planted defaults)" + (" " + " ".join(extra) if extra else ""),
        "seeds": seeds,
        "targets": {"val_r2": R2_TARGET, "ari": ARI_TARGET, "test_r2_spread": 0.01},
        "fits": sum(run["fits"] for run in done),
        "recovers": sum(run["recovers"] for run in done),
        "failed_runs": len(runs) - len(done),
        "test_r2_mean": statistics.fmean(test) if test else None,
        "test_r2_std": statistics.stdev(test) if len(test) > 1 else None,
        "test_r2_range": [min(test), max(test)] if test else None,
        "train_seconds_mean": statistics.fmean(run["seconds"] for run in runs),
        "wall_seconds": wall,
        "workers": args.workers,
        "runs": runs,
    }, indent=2))


if __name__ == "__main__":
    main()
