"""The console of ``taan-core``: the settings a training resolved, its closing summary, and the
per-task table of ``eval`` (one column group per metric kind)."""

from __future__ import annotations

from typing import Any

__all__ = ["main_description", "print_settings", "print_table", "print_test", "report"]


def main_description(tasks) -> str:
    """What "val main" is, e.g. "pooled explained variance over the 139 tasks' samples"."""
    from collections import Counter

    from taan_core.metrics import headline_metric

    kinds = Counter("pooled explained variance" if t.kind == "regression" else headline_metric(t.kind) for t in tasks)
    if set(kinds) == {"pooled explained variance"}:
        return f"pooled explained variance over the {len(tasks)} tasks' samples"
    if len(kinds) == 1:
        return f"mean over the {len(tasks)} tasks of their {next(iter(kinds))}"
    parts = ", ".join(f"{metric} ({n} task{'s' if n > 1 else ''})" for metric, n in kinds.items())
    return f"mean over the {len(tasks)} tasks of each task's headline metric: {parts}"


def print_settings(model: str, net, data_set, config, quiet: bool, resumed_from: int | None) -> None:
    """The settings the run resolved (defaults included), before it starts."""
    if quiet:
        return
    import dataclasses

    from rich.console import Console

    from taan_core.train import resolve_device

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    model_config = dataclasses.asdict(net.config)
    from taan_core.models import trunk_description

    arch = [model, "trunk " + trunk_description(net)]
    if model_config.get("num_hinges") is not None:
        arch.append(f"hinges {model_config['num_hinges']}")
    arch.append(f"{sum(p.numel() for p in net.parameters()):,} parameters")
    train_split = data_set.split("train")
    samples = sum(train_split.num_samples(t) for t in range(train_split.num_tasks))
    reg = "none" if config.reg == "none" else f"{config.reg} (c {config.c:g}, measure {config.measure})"
    from taan_core.train._support import physical_cores, run_threads

    cores = physical_cores()
    threads = run_threads(config, net, len(data_set.tasks), cores)
    why = "" if config.threads else (f" (default: {cores} physical core{'s' if cores != 1 else ''}"
                                     + (", fewer for this small a step" if threads < cores else "")
                                     + "; --threads N to choose)")
    lines = [
        ("model", ", ".join(arch)),
        ("data", f"{data_set.name}, {len(data_set.tasks)} tasks, {samples} training samples"),
        ("optimiser", f"{config.optimizer}, lr {config.lr:g}, schedule {config.schedule}, weight decay "
                      f"{config.weight_decay:g}, regulariser {reg}"),
        ("epochs", f"{config.epochs}, patience {config.patience or 'off'}, batch {config.batch_size} "
                   f"({config.sampler}), seed {config.seed}"),
        ("device", f"{resolve_device(config.device)}, {threads} thread{'s' if threads != 1 else ''}{why}"),
        ("val main", main_description(data_set.tasks) + " (higher is better; picks checkpoint.pt)"),
        ("out", config.out + (f" (resuming after epoch {resumed_from})" if resumed_from is not None else "")),
    ]
    for key, text in lines:
        console.print(f"[dim]{key:<10}[/dim]{text}")


def report(result, data_set, config, quiet: bool) -> None:
    if quiet:
        return
    from rich.console import Console

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    if result.stopped_early:
        console.print(f"stopped early after epoch {result.epochs} of {config.epochs}: val main did not improve for "
                      f"{config.patience} epochs")
    else:
        console.print(f"ran {result.epochs} of {config.epochs} epochs (no early stop)")
    files = result.files
    if result.checkpoint in files:
        console.print(f"best epoch {result.best_epoch}: val main {result.best_main:.4f} "
                      f"({main_description(data_set.tasks)}); {result.seconds:.1f}s")
    else:
        console.print("val main was never finite (NaN in every epoch: too few validation samples per task?), so "
                      f"no checkpoint.pt was written; last.pt holds the final epoch; {result.seconds:.1f}s")
    console.print("wrote " + ", ".join(str(path) for path in files))


def print_test(result: dict, tasks) -> None:
    """The chosen checkpoint's test metrics, once, on stdout: the headline that "val main"
    names and, with regression tasks, the pooled RMSE."""
    split, epoch = result.get("split", "test"), result.get("epoch")
    line = f"{split} main {_fmt(result['main'])} at epoch {epoch} ({main_description(tasks)})"
    pooled = result.get("pooled")
    if pooled:
        line += f"; pooled RMSE {_fmt(pooled.get('rmse'))} over {pooled.get('n')} samples"
    print(line)


def _fmt(value: Any) -> str:
    return "–" if value is None or value != value else f"{value:.4f}"


def print_table(result: dict, tasks, ckpt, split: str) -> None:
    """One row per task and one column group per metric kind (r2 and rmse for regression,
    accuracy for classes, map@k for multilabel); a task shows only its own kind's metrics, and
    the mean row averages each metric over the tasks that have it."""
    from rich.console import Console
    from rich.table import Table

    kinds = {t.name: t.kind for t in tasks}
    per_task = result["per_task"]
    metrics: list[str] = []
    for values in per_task.values():
        metrics += [m for m in values if m not in metrics]
    table = Table(title=f"{ckpt.path} ({ckpt.data.get('name')}, {split} split, epoch {ckpt.epoch})",
                  title_justify="left")
    table.add_column("task")
    table.add_column("kind")
    for name in metrics:
        table.add_column(name, justify="right")
    for task, values in per_task.items():
        table.add_row(task, kinds.get(task, ""), *(_fmt(values[m]) if m in values else "" for m in metrics))
    table.add_section()
    counts = [sum(m in v for v in per_task.values()) for m in metrics]
    table.add_row("mean", "", *(_fmt(result["mean"].get(m)) for m in metrics), style="bold")
    if len(set(counts)) > 1:
        table.add_row("of tasks", "", *(str(n) for n in counts), style="dim")
    console = Console(highlight=False)
    console.print(table)
    console.print(f"main: {_fmt(result['main'])} ({main_description([t for t in tasks if t.name in per_task])})")
    pooled = result.get("pooled")
    if pooled:
        console.print(f"pooled over the regression tasks' {pooled['n']} samples: explained variance "
                      f"{_fmt(pooled['ev'])}, RMSE {_fmt(pooled['rmse'])}")
