"""Figures of a study, drawn by ``taan-viz`` from the checkpoints of the best TAAN runs.

The training side never imports the analysis side; the study hands the checkpoint files to the
``taan-viz`` command, as a user would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["render_figures"]


def _taan_viz_command() -> list[str] | None:
    script = Path(sys.executable).with_name("taan-viz")
    if script.is_file():
        return [str(script)]
    found = shutil.which("taan-viz")
    return [found] if found else None


def _chosen_runs(results: dict, dataset: str) -> list[dict]:
    """The best TAAN run of any regulariser and the best unregularised TAAN run, on validation."""
    taan = [r for r in results["runs"] if r["dataset"] == dataset and r["registry"] == "taan" and r["selected"]]
    if not taan:
        return []
    best = max(taan, key=lambda r: r["val_main"])
    plain = [r for r in taan if r["reg"] == "none"]
    best_plain = max(plain, key=lambda r: r["val_main"]) if plain else best
    return [best] if best_plain is best else [best, best_plain]


def render_figures(results: dict, out: str | os.PathLike) -> list[dict]:
    """Heatmaps and sharing trees of the best TAAN runs (on validation) of every data set.

    For every data set: the best run of any TAAN variant, and the best unregularised TAAN when
    that is another run. The figures are drawn by the ``taan-viz`` command from the runs'
    checkpoints (the training side never imports the analysis side) into
    ``figures/<data set>/<model>-s<seed>/``. Returns one entry per figure with its path, or an
    ``error`` when ``taan-viz`` is missing or failed.
    """
    from taan_core.reproduce.runner import _slug

    out = Path(out)
    command = _taan_viz_command()
    entries = []
    for dataset in results["settings"]["datasets"]:
        for run in _chosen_runs(results, dataset):
            checkpoint = out / run["run_dir"] / "checkpoint.pt"
            folder = Path("figures") / dataset / f"{_slug(run['model'])}-s{run['seed']}"
            for kind in ("heatmap", "tree"):
                entry = {"dataset": dataset, "model": run["model"], "c": run["c"], "seed": run["seed"],
                         "checkpoint": str(Path(run["run_dir"]) / "checkpoint.pt"), "kind": kind,
                         "path": str(folder / f"{kind}.png")}
                if command is None:
                    entry["error"] = "taan-viz is not installed"
                else:
                    args = [*command, kind, str(checkpoint), "--out", str(out / folder), "--dpi", "120",
                            "--overwrite", "--threshold", str(results["settings"]["tree_threshold"])]
                    done = subprocess.run(args, capture_output=True, text=True)
                    if done.returncode != 0:
                        entry["error"] = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
                entries.append(entry)
    return entries
