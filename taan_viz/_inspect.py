"""``taan-viz inspect``: a checkpoint summarised in rich tables on the terminal."""

from __future__ import annotations

import numpy as np

from taan_viz.analysis import Analysis

__all__ = ["render_inspect"]

_TASKS_SHOWN = 30


def _g(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.{digits}g}"


def render_inspect(ckpt, analysis: Analysis, *, all_tasks: bool = False, console=None) -> None:
    """Print the summary tables of ``ckpt`` and its ``analysis`` to ``console`` (stdout by default)."""
    from rich.console import Console
    from rich.table import Table

    from taan_viz.plots.training import flatten_metrics

    if console is None:
        console = Console()
        if not console.is_terminal:
            # Piped into a file or another program: no terminal width to respect, and the wide
            # tables stay readable instead of truncating names.
            console = Console(width=140)
    t = analysis.num_tasks
    head = Table(show_header=False, box=None, pad_edge=False)
    head.add_column(style="dim")
    head.add_column()
    head.add_row("checkpoint", str(ckpt.path))
    head.add_row("sha256", ckpt.sha256)
    kind = f"schema v{ckpt.format_version}" if ckpt.format_version else "state_dict (imported)"
    head.add_row("format", kind)
    head.add_row("data set", str((ckpt.data or {}).get("name", "")))
    head.add_row("tasks", f"{t}")
    head.add_row("layers", f"{len(ckpt.layers)} ({len(analysis.layers)} shown)")
    head.add_row("history", f"{len(ckpt.history)} snapshots")
    head.add_row("measure", analysis.describe_measure())
    console.print(head)

    layers = Table(title="Layers", title_justify="left")
    columns = ("#", "layer", "M", "μ", "σ", "‖α‖_F", "mean ‖F_t‖", "mean d", "max d", "cophenetic r", "ARI")
    for col in columns:
        layers.add_column(col, justify="left" if col == "layer" else "right")
    for la in analysis.layers:
        g = la.geometry
        off = g.distance[~np.eye(t, dtype=bool)]
        layers.add_row(str(la.index + 1), la.name, str(g.hinges.shape[0]), _g(g.mu), _g(g.sigma),
                       _g(float(np.linalg.norm(g.alpha))), _g(float(g.norms.mean())),
                       _g(float(off.mean()) if off.size else None), _g(float(off.max()) if off.size else None),
                       _g(la.clustering.cophenetic_correlation), _g(la.ari))
    console.print(layers)

    shown = range(t) if all_tasks else range(min(t, _TASKS_SHOWN))
    tasks = Table(title="Nearest task per layer  (name, d)", title_justify="left")
    tasks.add_column("task")
    for la in analysis.layers:
        tasks.add_column(f"{la.index + 1}: {la.name}")
    nearest = [la.geometry.nearest() for la in analysis.layers]
    for i in shown:
        row = [analysis.task_names[i]]
        for idx, dist in nearest:
            row.append("–" if idx[i] < 0 else f"{analysis.task_names[idx[i]]}  {dist[i]:.3g}")
        tasks.add_row(*row)
    console.print(tasks)
    if len(shown) < t:
        console.print(f"[dim]… {t - len(shown)} more tasks (--all lists them)[/dim]")

    flat = flatten_metrics(ckpt.metrics)
    if flat:
        last, best = flat[-1], None
        for row, entry in zip(flat, ckpt.metrics):
            if entry.get("best"):
                best = row
        metrics = Table(title="Metrics", title_justify="left")
        metrics.add_column("metric")
        metrics.add_column(f"last (epoch {int(last.get('epoch', len(flat)))})", justify="right")
        if best is not None:
            metrics.add_column(f"best (epoch {int(best.get('epoch', 0))})", justify="right")
        for key in last:
            if key in ("epoch", "step"):
                continue
            row = [key, _g(last.get(key), 4)]
            if best is not None:
                row.append(_g(best.get(key), 4))
            metrics.add_row(*row)
        console.print(metrics)
    else:
        console.print("[dim]no per-epoch metrics recorded[/dim]")
