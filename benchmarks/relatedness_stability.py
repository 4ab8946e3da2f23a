"""How well each relatedness reproduces over training seeds: prints JSON.

For a folder of runs (``seed-*/checkpoint.pt``, as ``taan-core train --seeds`` writes them) of one
data set and split, computes every run's per-layer distances (data and N(0, 1) measures) and its
whole-network distances (:func:`taan_core.relatedness.network_distances` on the validation inputs
of every task pooled; ``network-layerL-only``: with every other layer's alpha replaced by its
mean over tasks, i.e. layer L's task differences as the output sees them), then, for each of
these relatednesses:

- ``spearman``: the mean over pairs of runs of the Spearman correlation of their distances over
  the task pairs (does the ranking reproduce?);
- ``relative``: median of d / scale and the fraction of pairs under 0.1 (is there a gap?);
- ``stability``: for each grouping rule, the mean over pairs of runs of the adjusted Rand index
  of their groups (what ``taan-viz consensus`` calls a layer's stability). Rules: complete linkage
  cut at a relative threshold (``thr=X``), average linkage cut into k clusters (``k=K``), and
  ``separated``: the best cut of :func:`taan_core.relatedness.separation` where it separates its
  groups, else one group (no groups claimed);
- ``separation``: per run, the best cut's separation ratio (the Dunn index: closest pair across
  groups over furthest pair within one; above 1 separated), and ``separation_thr=0.1`` that of
  the groups at the sharing threshold 0.1;
- ``axis_spearman``: the mean over pairs of runs of |Spearman| of the tasks' first classical-MDS
  coordinate (does the tasks' order along the main axis reproduce?), and ``axis_share``: per run,
  the share of the MDS eigenvalues on that axis;
- ``icc``: the share of the variance of the pairs' relative distances over runs and pairs that
  lies between pairs (1: every run gives the same distances; 0: all seed noise).

With ``--against OTHER`` (a second folder of runs of the same data and split, other seeds) it
also compares the two folders' means: ``mean_spearman`` and ``mean_axis_spearman``, the
Spearman correlation of the mean relative distances of the two sets of seeds and of the tasks'
positions along the means' main axes (does the consensus of several seeds reproduce?).

Usage::

    python benchmarks/relatedness_stability.py RUNS [--data school.mat] [--file last.pt] [--against OTHER]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

from taan_core.checkpoint import load_checkpoint, model_from_checkpoint
from taan_core.data import load_dataset
from taan_core.nn.layers import adaptive_layers
from taan_core.relatedness import (adjusted_rand_index, flat_cut, layer_distances, network_distances, separation,
                                   threshold_groups)

THRESHOLDS = (0.1, 0.25, 0.5, 1.0)
CLUSTERS = (2, 3, 4, 5, 8)


def pooled_inputs(data, split: str = "val") -> torch.Tensor:
    s = data.split(split)
    return torch.cat([s.get(t, torch.arange(s.num_samples(t)))[0] for t in range(s.num_tasks)])


def relatednesses(path: Path, data_path: str | None) -> dict[str, tuple[np.ndarray, float]]:
    ckpt = load_checkpoint(path)
    out = {}
    for measure in ("data", "standard"):
        for l, (d, scale) in enumerate(layer_distances(ckpt.layers, measure)):
            out[f"layer{l + 1}-{measure}"] = (d, scale)
    config = dict(ckpt.data.get("config") or {})
    config["data_path"] = data_path or config.get("data_path")
    data = load_dataset(ckpt.data["name"], **config)
    model = model_from_checkpoint(ckpt)
    inputs = pooled_inputs(data)
    out["network"] = network_distances(model, inputs)
    # Each layer's share of the task differences as the output sees it: the whole network with
    # every other layer's alpha replaced by its mean over tasks.
    layers = [layer for _, layer in adaptive_layers(model)]
    for l in range(len(layers)):
        alone = copy.deepcopy(model)
        with torch.no_grad():
            for k, layer in enumerate(layer for _, layer in adaptive_layers(alone)):
                if k != l:
                    layer.alpha.copy_(layer.alpha.mean(dim=0, keepdim=True).expand_as(layer.alpha))
        out[f"network-layer{l + 1}-only"] = network_distances(alone, inputs)
    return out


def rules(d: np.ndarray, scale: float) -> dict[str, np.ndarray]:
    rel = d / scale if scale > 0 else d
    out = {f"thr={t}": threshold_groups(rel, t) for t in THRESHOLDS}
    out.update({f"k={k}": flat_cut(rel, k) for k in CLUSTERS})
    sep = separation(rel)
    out["separated"] = flat_cut(rel, sep.k) if sep.separated else np.zeros(len(rel), dtype=np.int64)
    return out


def main_axis(d: np.ndarray) -> tuple[np.ndarray, float]:
    n = d.shape[0]
    j = np.eye(n) - 1.0 / n
    w, v = np.linalg.eigh(-0.5 * j @ (d ** 2) @ j)
    return v[:, -1], float(w[-1] / w[w > 0].sum())


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two (T, T) distance matrices over the task pairs."""
    iu = np.triu_indices_from(a, 1)
    return rank_correlation(a[iu], b[iu])


def icc(rel: np.ndarray) -> float:
    """rel: (runs, pairs). Between-pair share of the variance (one-way random effects, ICC(1))."""
    r, p = rel.shape
    between = r * rel.mean(axis=0).var(ddof=1)
    within = rel.var(axis=0, ddof=1).mean()
    return float((between - within) / (between + (r - 1) * within))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--data", default=None, help="data file; default the path the checkpoints record")
    parser.add_argument("--file", default="checkpoint.pt", help="file of each seed folder (last.pt: the last epoch)")
    parser.add_argument("--against", type=Path, default=None, help="a second folder of runs whose mean to compare")
    args = parser.parse_args()
    paths = sorted(args.runs.glob(f"seed-*/{args.file}"), key=lambda p: int(p.parent.name.split("-")[1]))
    if len(paths) < 2:
        sys.exit(f"{args.runs}: need at least two seed-*/checkpoint.pt")
    runs = [relatednesses(p, args.data) for p in paths]
    report = {"runs": [str(p) for p in paths]}
    others = None
    if args.against is not None:
        other_paths = sorted(args.against.glob(f"seed-*/{args.file}"), key=lambda p: int(p.parent.name.split("-")[1]))
        others = [relatednesses(p, args.data) for p in other_paths]
        report["against"] = [str(p) for p in other_paths]
    for name in runs[0]:
        mats = [r[name] for r in runs]
        groups = [rules(d, s) for d, s in mats]
        pairs = list(itertools.combinations(range(len(runs)), 2))
        iu = np.triu_indices_from(mats[0][0], 1)
        rel = [d[iu] / s for d, s in mats]
        axes, shares = zip(*(main_axis(d) for d, _ in mats))
        report[name] = {
            "spearman": round(float(np.mean([spearman(mats[i][0], mats[j][0]) for i, j in pairs])), 3),
            "axis_spearman": round(float(np.mean([abs(rank_correlation(axes[i], axes[j])) for i, j in pairs])), 3),
            "axis_share": [round(a, 3) for a in shares],
            "separation": [round(separation(d).ratio, 3) for d, _ in mats],
            "separation_thr=0.1": [round(separation(d, g["thr=0.1"]).ratio, 3) for (d, _), g in zip(mats, groups)],
            "icc": round(icc(np.stack(rel)), 3),
            "median_relative": [round(float(np.median(r)), 3) for r in rel],
            "under_0.1": [round(float((r <= 0.1).mean()), 3) for r in rel],
            "stability": {rule: round(float(np.mean([adjusted_rand_index(groups[i][rule], groups[j][rule])
                                                      for i, j in pairs])), 3) for rule in groups[0]},
            "num_groups": {rule: [int(g[rule].max()) + 1 for g in groups] for rule in groups[0]},
        }
        if others is not None:
            mine = np.mean([d / sc for d, sc in mats], axis=0)
            theirs = np.mean([r[name][0] / r[name][1] for r in others], axis=0)
            report[name]["mean_spearman"] = round(spearman(mine, theirs), 3)
            report[name]["mean_axis_spearman"] = round(abs(rank_correlation(main_axis(mine)[0], main_axis(theirs)[0])), 3)
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
