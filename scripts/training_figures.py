"""Draw docs/training.md's figures from the traces of benchmarks/trace_planted.py.

    python scripts/training_figures.py OLD.jsonl NEW.jsonl OUTDIR

OLD holds runs without the shared warm-up, NEW runs with it (the same seeds). Writes
OUTDIR/training-trajectories.png (validation R^2, the ARI of every layer and alpha's norm, epoch by
epoch) and OUTDIR/training-layer-shares.png (each layer's share of the fit).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

FIT, STALL = "#0072B2", "#D55E00"  # Okabe-Ito blue and vermillion


def _load(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _outcome(run: dict) -> tuple[str, str]:
    ok = run["best_val_r2"] >= 0.97 and min(run["final_ari"]) >= 0.9
    return (FIT, "fits") if ok else (STALL, "stalls")


def trajectories(old: list[dict], new: list[dict], out: Path) -> None:
    layers = len(old[0]["epochs"][0]["layers"])
    columns = ["validation R$^2$", *[f"layer {i + 1} ARI" for i in range(layers)], "layer 1 mean |alpha row|"]
    fig, axes = plt.subplots(2, len(columns), figsize=(3.0 * len(columns), 5.6), sharex=True, constrained_layout=True)
    for row, (runs, title) in enumerate(((old, "no warm-up, one start"), (new, "shared warm-up, one start"))):
        for run in runs:
            colour, label = _outcome(run)
            epochs = [e["epoch"] for e in run["epochs"]]
            series = [[e["val_r2"] for e in run["epochs"]],
                      *[[e["layers"][i]["ari"] for e in run["epochs"]] for i in range(layers)],
                      [e["layers"][0]["alpha_norm"] for e in run["epochs"]]]
            for ax, values in zip(axes[row], series):
                ax.plot(epochs, values, color=colour, lw=1.2, alpha=0.85, label=f"seed {run['seed']} ({label})")
        if runs[0]["shared_warmup"] > 0:
            warm = round(runs[0]["shared_warmup"] * len(runs[0]["epochs"]))
            for ax in axes[row]:
                ax.axvspan(0.5, warm + 0.5, color="0.9", zorder=0)
        axes[row][0].set_ylabel(title)
    for col, name in enumerate(columns):
        axes[0][col].set_title(name, fontsize=10)
        axes[1][col].set_xlabel("epoch")
        for row in range(2):
            if name.startswith("validation"):
                axes[row][col].set_ylim(0.4, 1.0)
            elif "ARI" in name:
                axes[row][col].set_ylim(-0.15, 1.05)
    handles, labels = axes[0][0].get_legend_handles_labels()
    handles2, labels2 = axes[1][0].get_legend_handles_labels()
    axes[0][-1].legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    axes[1][-1].legend(handles2, labels2, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("Planted runs epoch by epoch (grey: the shared warm-up)", fontsize=11)
    fig.savefig(out / "training-trajectories.png", dpi=110)
    plt.close(fig)


def layer_shares(old: list[dict], new: list[dict], out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True, constrained_layout=True)
    for ax, (runs, title) in zip(axes, ((old, "no warm-up, one start"), (new, "shared warm-up, one start"))):
        layers = len(runs[0]["layer_share_of_fit"])
        width = 0.8 / len(runs)
        for k, run in enumerate(runs):
            colour, label = _outcome(run)
            x = np.arange(layers) + (k - (len(runs) - 1) / 2) * width
            ax.bar(x, run["layer_share_of_fit"], width=width * 0.95, color=colour, alpha=0.5 + 0.5 * k / len(runs),
                   label=f"seed {run['seed']} ({label})")
        ax.set_xticks(range(layers), [f"layer {i + 1}" for i in range(layers)])
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("val R$^2$ lost when the layer's\nalpha is its mean over tasks")
    fig.savefig(out / "training-layer-shares.png", dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise SystemExit(__doc__)
    old, new, out = _load(argv[0]), _load(argv[1]), Path(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    trajectories(old, new, out)
    layer_shares(old, new, out)


if __name__ == "__main__":
    main(sys.argv[1:])
