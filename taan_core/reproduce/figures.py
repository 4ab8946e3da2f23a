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


def render_figures(results: dict, out: str | os.PathLike) -> list[dict]:
    """Heatmap and sharing tree of the best TAAN run (on validation) of every data set.

    The figures are drawn by the ``taan-viz`` command from the run's checkpoint (the training
    side never imports the analysis side). Returns one entry per figure with its path, or an
    ``error`` when ``taan-viz`` is missing or failed.
    """
    out = Path(out)
    command = _taan_viz_command()
    entries = []
    for dataset in results["settings"]["datasets"]:
        candidates = [r for r in results["runs"] if r["dataset"] == dataset and r["registry"] == "taan" and r["selected"]]
        if not candidates:
            continue
        best = max(candidates, key=lambda r: r["val_main"])
        checkpoint = out / best["run_dir"] / "checkpoint.pt"
        folder = out / "figures" / dataset
        for kind in ("heatmap", "tree"):
            entry = {"dataset": dataset, "model": best["model"], "c": best["c"], "seed": best["seed"],
                     "checkpoint": str(Path(best["run_dir"]) / "checkpoint.pt"), "kind": kind,
                     "path": str(Path("figures") / dataset / f"{kind}.png")}
            if command is None:
                entry["error"] = "taan-viz is not installed"
            else:
                args = [*command, kind, str(checkpoint), "--out", str(folder), "--dpi", "120", "--overwrite",
                        "--threshold", str(results["settings"]["tree_threshold"])]
                done = subprocess.run(args, capture_output=True, text=True)
                if done.returncode != 0:
                    entry["error"] = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            entries.append(entry)
    return entries
