"""Trace planted runs epoch by epoch: what separates a run that fits from one that stalls.

For every seed it trains the default planted TAAN (the settings of ``taan-core train``, data seed
0) with the Trainer and records after every epoch, per layer: the mean row norm of alpha, the
norm of alpha's per-hinge spread over tasks, the largest task distance under N(0, 1), the hinge
range, the smallest N(0, 1) mass of a segment between hinges (a dead segment has none), the mean
gradient norms of alpha, hinges and the layer's weights, and the ARI of the layer's clustering
against the planted groups. After training it measures each layer's share of the fit: the drop
of validation R^2 when that layer's alpha is replaced by its mean over tasks (the layer made
task-agnostic). One JSON object per seed is printed per line.

    python benchmarks/trace_planted.py --seeds 100-103 --shared-warmup 0 > trace-old.jsonl
    python benchmarks/trace_planted.py --seeds 100-103 > trace-new.jsonl
    python scripts/training_figures.py trace-old.jsonl trace-new.jsonl docs/figures
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time

import torch


def _segment_mass(hinges: torch.Tensor) -> float:
    cuts = torch.cat([hinges.double().sort().values, torch.zeros(1, dtype=torch.float64)]).sort().values
    cdf = torch.special.ndtr(cuts)
    mass = torch.diff(torch.cat([torch.zeros(1, dtype=torch.float64), cdf, torch.ones(1, dtype=torch.float64)]))
    return float(mass.min())


def trace(seed: int, shared_warmup: float, starts: int = 1) -> dict:
    from taan_core.data import load_dataset
    from taan_core.gaussian import distance_matrix
    from taan_core.metrics import evaluate
    from taan_core.models import build_model
    from taan_study.budgets import BUDGETS
    from taan_core.relatedness import planted_ari
    from taan_core.train import TrainConfig, Trainer

    torch.set_num_threads(1)
    budget = BUDGETS["planted"]
    data = load_dataset("planted")
    groups = data.ground_truth["groups"]
    torch.manual_seed(seed)
    net = build_model("taan", data.input_shape, [t.num_outputs for t in data.tasks], hidden=budget["hidden"],
                      num_hinges=budget["num_hinges"], **budget["taan"])
    grads: dict[tuple[int, int, str], list[float]] = {}

    def on_step(trainer, epoch, batch):
        for i, block in enumerate(trainer.model.blocks):
            for name, p in (("alpha", block.act.alpha), ("hinges", block.act.hinges), ("weight", block.linear.weight)):
                grads.setdefault((epoch, i, name), []).append(float(p.grad.norm()) if p.grad is not None else 0.0)

    config = TrainConfig(epochs=45, batch_size=16, lr=1e-2, schedule="cosine", threads=1, seed=seed, quiet=True,
                         shared_warmup=shared_warmup, starts=starts, out=tempfile.mkdtemp(prefix=f"trace-{seed}-"))
    tic = time.perf_counter()
    trainer = Trainer(net, data, config, on_step=on_step)
    result = trainer.fit()
    seconds = time.perf_counter() - tic
    epochs = []
    for record, snap in zip(trainer.metrics, trainer.history):
        alphas = [torch.as_tensor(a, dtype=torch.float64) for a in snap["alphas"]]
        hinges = [torch.as_tensor(h, dtype=torch.float64) for h in snap["hinges"]]
        dists = [distance_matrix(a, h) for a, h in zip(alphas, hinges)]
        ari = planted_ari([d.numpy() for d in dists], groups)
        layers = []
        for i, (a, h, d) in enumerate(zip(alphas, hinges, dists)):
            mean = lambda name: sum(grads.get((record["epoch"], i, name), [0.0])) / max(1, len(grads.get((record["epoch"], i, name), [])))  # noqa: E731
            layers.append({"alpha_norm": float(a.norm(dim=1).mean()), "alpha_spread": float(a.std(0).norm()),
                           "dmax": float(d.max()), "hinge_min": float(h.min()), "hinge_max": float(h.max()),
                           "min_segment_mass": _segment_mass(h), "ari": float(ari[i]),
                           "grad_alpha": mean("alpha"), "grad_hinges": mean("hinges"), "grad_weight": mean("weight")})
        epochs.append({"epoch": record["epoch"], "val_r2": record["val"]["main"], "train_loss": record["train_task_loss"],
                       "layers": layers})
    # Each layer's share of the fit: make it task-agnostic and see what the fit loses.
    best = trainer.model
    best.load_state_dict(torch.load(result.checkpoint, weights_only=True)["model"]["state_dict"])
    val = data.split("val")
    full = evaluate(best, val, list(data.tasks), 4096, torch.device("cpu"))["main"]
    shares = []
    for i in range(len(best.blocks)):
        probe = copy.deepcopy(best)
        with torch.no_grad():
            alpha = probe.blocks[i].act.alpha
            alpha.copy_(alpha.mean(0, keepdim=True).expand_as(alpha))
        shares.append(float(full - evaluate(probe, val, list(data.tasks), 4096, torch.device("cpu"))["main"]))
    return {"seed": seed, "shared_warmup": shared_warmup, "starts": starts, "best_val_r2": result.best_main, "seconds": seconds,
            "final_ari": [layer["ari"] for layer in epochs[result.best_epoch - 1]["layers"]],
            "layer_share_of_fit": shares, "epochs": epochs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="100-103")
    parser.add_argument("--shared-warmup", type=float, default=0.1)
    parser.add_argument("--starts", type=int, default=1,
                        help="Candidate starts (default 1: trace one start; hooks see only the chosen one).")
    args = parser.parse_args()
    from taan_core._cli_seeds import parse_seeds

    for seed in parse_seeds(args.seeds):
        print(json.dumps(trace(seed, args.shared_warmup, args.starts)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
