"""Figures of a study: heatmaps and sharing trees of the best TAAN runs, drawn with taan_viz.

The study is an application of both packages: it analyses the runs' checkpoints with
:func:`taan_viz.analyze` and draws them with the plotting functions behind ``taan-viz heatmap``
and ``taan-viz tree`` (:func:`taan_viz.plot_heatmaps`, :func:`taan_viz.plot_sharing_tree`), in
this process, with those commands' defaults.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["FIGURE_DPI", "render_figures"]

# Resolution of the study's PNG figures (the commands' default of 300 makes large files for a
# results page).
FIGURE_DPI = 120
_KINDS = ("heatmap", "tree")
# What a figure that cannot be drawn raises (a missing or damaged checkpoint, a layer that cannot
# be analysed, a missing plotting package): it is noted in results.json and the study goes on.
_FIGURE_ERRORS = (ImportError, OSError, ValueError, TypeError, RuntimeError)


def _chosen_runs(results: dict, dataset: str) -> list[dict]:
    """The best TAAN run of any regulariser and the best unregularised TAAN run, on validation."""
    taan = [r for r in results["runs"] if r["dataset"] == dataset and r["registry"] in ("taan", "taan-conv")
            and r["selected"]]
    if not taan:
        return []
    best = max(taan, key=lambda r: r["val_main"])
    plain = [r for r in taan if r["reg"] == "none"]
    best_plain = max(plain, key=lambda r: r["val_main"]) if plain else best
    return [best] if best_plain is best else [best, best_plain]


def _analyse(checkpoint: Path):
    from taan_core.checkpoint import load_checkpoint
    from taan_viz import analyze

    ckpt = load_checkpoint(checkpoint)
    return ckpt, analyze(ckpt, measure="data")


def _draw(kind: str, ckpt, analysis, path: Path, threshold: float) -> Path:
    """Draw one figure of an analysed checkpoint, as ``taan-viz heatmap`` / ``taan-viz tree`` do."""
    from taan_core import __version__
    from taan_viz import plot_heatmaps, plot_sharing_tree, save_figure

    if kind == "heatmap":
        fig, title = plot_heatmaps(analysis, metric="distance", order_by="tree", threshold=threshold), "distance heatmap"
    else:
        tree = plot_sharing_tree(analysis.sharing_tree(threshold), note=analysis.separation_note(threshold=threshold))
        fig, title = tree.figure, "sharing tree"
    meta = {"version": __version__, "sha256": ckpt.sha256, "title": title, "source": str(ckpt.path),
            "description": f"taan-study {title} of {ckpt.path.name}."}
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path, dpi=FIGURE_DPI, metadata=meta)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def render_figures(results: dict, out: str | os.PathLike) -> list[dict]:
    """Heatmaps and sharing trees of the best TAAN runs (on validation) of every data set.

    For every data set: the best run of any TAAN variant, and the best unregularised TAAN when
    that is another run, each drawn into ``figures/<data set>/<model>-s<seed>/`` (``heatmap.png``
    with the distances under each layer's recorded pre-activation measure, ``tree.png`` at the
    study's tree threshold).

    Returns
    -------
    list of dict
        One entry per figure with its path relative to ``out``, or an ``error`` (one line) when
        it could not be drawn; a figure that fails does not stop the study.
    """
    from taan_study.runner import _slug

    out = Path(out)
    threshold = float(results["settings"]["tree_threshold"])
    entries = []
    for dataset in results["settings"]["datasets"]:
        for run in _chosen_runs(results, dataset):
            folder = Path("figures") / dataset / f"{_slug(run['model'])}-s{run['seed']}"
            try:
                ckpt, analysis = _analyse(out / run["run_dir"] / "checkpoint.pt")
                error = None
            except _FIGURE_ERRORS as err:
                error = _one_line(err)
            for kind in _KINDS:
                entry = {"dataset": dataset, "model": run["model"], "c": run["c"], "seed": run["seed"],
                         "checkpoint": str(Path(run["run_dir"]) / "checkpoint.pt"), "kind": kind,
                         "path": str(folder / f"{kind}.png")}
                if error is not None:
                    entry["error"] = error
                else:
                    try:
                        _draw(kind, ckpt, analysis, out / entry["path"], threshold)
                    except _FIGURE_ERRORS as err:
                        entry["error"] = _one_line(err)
                entries.append(entry)
    return entries
