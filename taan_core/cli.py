"""``taan-core``: train a multi-task model and evaluate a checkpoint.

``taan-core train`` with no options trains a TAAN on the planted benchmark (about a minute on
two CPU cores) into ``runs/planted-taan``; ``taan-core eval CHECKPOINT`` prints per-task metrics.
User errors (bad options, unreadable files or checkpoints, data errors) print one line on
stderr and exit with status 2; set ``TAAN_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

__all__ = ["app", "main"]

DATASETS = ("planted", "digits", "exam", "youtube8m", "omniglot", "npz")
MODELS = ("taan", "taan-conv", "stl", "hard", "soft-order", "cross-stitch", "mmoe", "branched")
REGS = ("none", "tracenorm", "rownorm", "cosine", "distance")
LOGS = ("none", "tensorboard")

# Per-data-set defaults of the options the user did not give. planted is sized to train in about
# a minute on two CPU cores; youtube8m and omniglot follow the paper's reference settings.
# --model taan on planted also takes the benchmark's student fields (taan_core.data.planted).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "planted": {"model": "taan", "hidden": [32, 32, 32], "hinges": 4, "epochs": 45, "batch_size": 16,
                "lr": 1e-2, "weight_decay": 0.0, "patience": 0, "schedule": "cosine", "threads": 1},
    "digits": {"model": "taan", "hidden": [64, 64], "hinges": 8, "epochs": 30, "batch_size": 16, "lr": 1e-3,
               "weight_decay": 0.0, "patience": 5, "schedule": "none"},
    "exam": {"model": "taan", "hidden": [32, 32], "hinges": 8, "epochs": 50, "batch_size": 8, "lr": 1e-3,
             "weight_decay": 0.0, "patience": 10, "schedule": "none"},
    "youtube8m": {"model": "taan", "hidden": [1024, 1024, 1024], "hinges": 64, "epochs": 10, "batch_size": 256,
                  "lr": 1e-4, "weight_decay": 0.005, "patience": 3, "schedule": "none"},
    "omniglot": {"model": "taan-conv", "hidden": [512], "hinges": 32, "epochs": 50, "batch_size": 5, "lr": 1e-4,
                 "weight_decay": 0.005, "patience": 10, "schedule": "none"},
    "npz": {"model": "taan", "hidden": [256, 256, 256], "hinges": 16, "epochs": 20, "batch_size": 32, "lr": 1e-3,
            "weight_decay": 0.0, "patience": 5, "schedule": "none"},
}
# Options that may accompany --resume: they extend or move a run without changing what it is.
_RESUMABLE = {"epochs", "device", "threads", "out", "dataset", "model", "log"}

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Train Task Adaptive Activation Networks and evaluate their checkpoints.")


class _UserError(Exception):
    """An error of the user's making: printed as one line, exit status 2."""


def _choice(value: str, choices: tuple[str, ...], option: str) -> str:
    if value not in choices:
        raise _UserError(f"{option} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _parse_hidden(text: str) -> list[int]:
    try:
        widths = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError as err:
        raise _UserError(f"--hidden must be comma-separated positive ints like 64,64,64, got {text!r}") from err
    if not widths or any(w < 1 for w in widths):
        raise _UserError(f"--hidden must be comma-separated positive ints like 64,64,64, got {text!r}")
    return widths


def _model_overrides(model: str, hidden: list[int], hinges: int | None, explicit_hinges: bool) -> dict:
    from taan_core.models import MODELS as registry
    import dataclasses

    fields = {f.name for f in dataclasses.fields(registry[model].config_class)}
    overrides: dict[str, Any] = {}
    if "hidden" in fields:
        overrides["hidden"] = hidden
    if "num_hinges" in fields and hinges is not None:
        overrides["num_hinges"] = hinges
    elif explicit_hinges:
        raise _UserError(f"--hinges applies to models with task-adaptive activations (taan, taan-conv), not {model!r}")
    return overrides


@app.command()
def train(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option(help="Data set: " + "|".join(DATASETS))] = "planted",
    data: Annotated[Optional[Path], typer.Option(help="File or folder of the data set (digits, exam and planted need none).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model: " + "|".join(MODELS) + " (default: taan, taan-conv for omniglot).")] = None,
    reg: Annotated[Optional[str], typer.Option(help="Regulariser of the adaptive layers: " + "|".join(REGS) + " (default none).")] = None,
    c: Annotated[Optional[float], typer.Option(help="Regulariser coefficient (default 0.1).")] = None,
    measure: Annotated[Optional[str], typer.Option(help="Gaussian measure of the cosine/distance regulariser: standard|data.")] = None,
    hidden: Annotated[Optional[str], typer.Option(help="Hidden widths, comma-separated (e.g. 64,64,64).")] = None,
    tree_from: Annotated[Optional[Path], typer.Option(
        "--tree-from", help="With --model branched: the TAAN checkpoint whose sharing tree the branches follow.")] = None,
    hinges: Annotated[Optional[int], typer.Option(help="Hinges M per adaptive layer.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Maximum number of epochs.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Samples per task per batch (balanced sampling).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate.")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="Weight decay.")] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="adam|adamw (default adam).")] = None,
    schedule: Annotated[Optional[str], typer.Option(help="Learning-rate schedule: none|cosine|step.")] = None,
    sampler: Annotated[Optional[str], typer.Option(help="Batch sampling: balanced|proportional (default balanced).")] = None,
    patience: Annotated[Optional[int], typer.Option(help="Early-stopping patience in epochs (0: off).")] = None,
    shared_warmup: Annotated[Optional[float], typer.Option(
        help="Fraction of the epochs trained as hard sharing before the task activations adapt (default 0.1).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto|cpu|cuda|cuda:N|mps (default auto).")] = None,
    amp: Annotated[Optional[bool], typer.Option("--amp/--no-amp", help="bf16 autocast on CUDA (default on).")] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile", help="Compile the model with torch.compile.")] = None,
    deterministic: Annotated[Optional[bool], typer.Option("--deterministic", help="Deterministic algorithms only.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch (0: torch's default; planted uses 1).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the model initialisation and the batch order (default 0).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default runs/<dataset>-<model>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last.pt.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a run already in --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar or per-epoch lines.")] = False,
    seeds: Annotated[Optional[str], typer.Option(
        help="Train one run per seed into OUT/seed-K/ (e.g. 0,1,2,3,4 or 0-4); taan-viz consensus OUT combines them.")] = None,
    workers: Annotated[Optional[int], typer.Option(
        help="With --seeds: seeds trained side by side, as separate processes sharing the CPU cores (default 1).")] = None,
    log: Annotated[Optional[str], typer.Option(
        help="Also log to: none|tensorboard (OUT/tensorboard; metrics.jsonl stays the record).")] = None,
) -> None:
    """Train a model; writes OUT/checkpoint.pt (best validation epoch), OUT/last.pt and OUT/metrics.jsonl."""
    if seeds is not None or workers is not None:
        from taan_core._multiseed import train_many

        return train_many(ctx, seeds, workers, seed=seed, out=out, dataset=dataset, model=model)
    options = {k: v for k, v in locals().items()
               if v is not None and k not in ("resume", "overwrite", "quiet", "ctx", "seeds", "workers")}
    dataset = _choice(dataset, DATASETS, "--dataset")
    defaults = _DEFAULTS[dataset]
    model = _choice(model or defaults["model"], MODELS, "--model")
    out = out if out is not None else Path("runs") / f"{dataset}-{model}"
    if resume and overwrite:
        raise _UserError("--resume and --overwrite exclude each other")
    if resume:
        changed = sorted(set(options) - _RESUMABLE)
        if changed:
            raise _UserError(f"--resume continues a run with its stored settings; only --epochs, --device, "
                             f"--threads and --quiet may change, got --{changed[0].replace('_', '-')}")
        return _resume(out, epochs=epochs, device=device or "auto", threads=threads, quiet=quiet,
                       log=_choice(log or "none", LOGS, "--log"))

    import torch

    from taan_core.data import load_dataset
    from taan_core.models import build_model
    from taan_core.train import TrainConfig, Trainer, resolve_device

    reg = _choice(reg or "none", REGS, "--reg")
    log = _choice(log or "none", LOGS, "--log")
    if log == "tensorboard":
        from taan_core._tensorboard import _writer_class

        _writer_class()  # a missing package is an error now, not after loading the data
    if (model == "branched") != (tree_from is not None):
        raise _UserError("--model branched needs --tree-from CHECKPOINT, and --tree-from applies only to it")
    if hinges is not None and model == "branched":
        raise _UserError("--hinges applies to models with task-adaptive activations (taan, taan-conv), not 'branched'")
    pick = lambda value, key: value if value is not None else defaults[key]  # noqa: E731
    config = TrainConfig(
        epochs=pick(epochs, "epochs"), batch_size=pick(batch_size, "batch_size"), sampler=sampler or "balanced",
        optimizer=optimizer or "adam", lr=pick(lr, "lr"), weight_decay=pick(weight_decay, "weight_decay"),
        schedule=pick(schedule, "schedule"), reg=reg, c=(0.1 if c is None else c) if reg != "none" else 0.0,
        measure=measure or "standard", patience=pick(patience, "patience"),
        shared_warmup=0.1 if shared_warmup is None else shared_warmup, device=device or "auto",
        amp=True if amp is None else amp, compile=bool(compile), deterministic=bool(deterministic),
        threads=threads if threads is not None else defaults.get("threads", 0),
        seed=0 if seed is None else seed, out=str(out), quiet=quiet,
    )
    resolve_device(config.device)
    _model_overrides(model, [1], hinges, explicit_hinges=hinges is not None)  # option errors before data
    data_set = load_dataset(dataset, data_path=str(data) if data is not None else None)
    # The planted student is twice as wide as its teacher (16 units): a narrower student fits it
    # poorly and a wider one (64) recovers its tree less often (docs/data.md).
    widths = _parse_hidden(hidden) if hidden is not None else defaults["hidden"]
    if model == "branched":
        # The branches and (unless --hidden is given) the widths come from the TAAN's sharing tree.
        from taan_core.models.branched import branched_overrides

        overrides = branched_overrides(tree_from, hidden=_parse_hidden(hidden) if hidden is not None else None)
    else:
        overrides = _model_overrides(model, widths, hinges if hinges is not None else defaults["hinges"],
                                     explicit_hinges=hinges is not None)
        if model == "taan" and dataset == "planted":
            from taan_core.data.planted import PLANTED_STUDENT_TAAN

            overrides.update(PLANTED_STUDENT_TAAN)
    torch.manual_seed(config.seed)
    net = build_model(model, data_set.input_shape, [t.num_outputs for t in data_set.tasks], **overrides)
    result = _fit(Trainer, net, data_set, config, log, overwrite=overwrite)
    _report(result, quiet)


def _fit(trainer_class, net, data_set, config, log: str, **fit_options):
    if log != "tensorboard":
        return trainer_class(net, data_set, config).fit(**fit_options)
    from taan_core._tensorboard import TensorBoardLogger

    logger = TensorBoardLogger(Path(config.out) / "tensorboard")
    if fit_options.get("overwrite"):
        logger.clear()
    try:
        return trainer_class(net, data_set, config, on_epoch=logger.on_epoch).fit(**fit_options)
    finally:
        logger.close()


def _resume(out: Path, *, epochs: int | None, device: str, threads: int | None, quiet: bool,
            log: str = "none") -> None:
    import dataclasses

    from taan_core.checkpoint import CheckpointError, load_checkpoint
    from taan_core.data import load_dataset
    from taan_core.models import model_from_config
    from taan_core.train import TrainConfig, Trainer

    last = out / "last.pt"
    if not last.is_file():
        raise _UserError(f"{last}: no such file, nothing to resume (run without --resume)")
    ckpt = load_checkpoint(last)
    raw = ckpt.raw
    stored = (raw or {}).get("extra", {}).get("train_config")
    if raw is None or not isinstance(stored, dict):
        raise CheckpointError(f"{last}: extra.train_config: expected the training configuration of the run")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = {k: v for k, v in stored.items() if k in names}
    settings.update(device=device, quiet=quiet, out=str(out))
    if epochs is not None:
        settings["epochs"] = epochs
    if threads is not None:
        settings["threads"] = threads
    config = TrainConfig(**settings)
    data_config = dict(ckpt.data.get("config") or {})
    data_set = load_dataset(ckpt.data["name"], **data_config)
    net = model_from_config(raw["model"]["class"], dict(raw["model"]["config"]))
    result = _fit(Trainer, net, data_set, config, log, resume=True)
    _report(result, quiet)


def _report(result, quiet: bool) -> None:
    if quiet:
        return
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    console.print(f"best epoch {result.best_epoch} of {result.epochs}: val main {result.best_main:.4f} "
                  f"({result.seconds:.1f}s); wrote {result.checkpoint}")


@app.command("eval")
def evaluate_command(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint.pt (or a run folder).")],
    split: Annotated[str, typer.Option(help="Split to evaluate: train|val|test.")] = "test",
    data: Annotated[Optional[Path], typer.Option(help="Data location, if it moved since training.")] = None,
    batch_size: Annotated[int, typer.Option(help="Evaluation batch size.")] = 1024,
    device: Annotated[str, typer.Option(help="auto|cpu|cuda|cuda:N|mps")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON instead of a table.")] = False,
    dataset: Annotated[Optional[str], typer.Option(
        help="Data set, for a checkpoint that names none (an imported state_dict): " + "|".join(DATASETS))] = None,
    save: Annotated[Optional[Path], typer.Option(
        help="Also write a taan checkpoint of the model with its pre-activation statistics measured on this split "
             "(the data measure of taan-viz; for imported state_dicts).")] = None,
) -> None:
    """Print the per-task metrics of a checkpoint's model on a split of its data set."""
    from taan_core.checkpoint import load_checkpoint, model_from_checkpoint
    from taan_core.data import load_dataset
    from taan_core.metrics import evaluate
    from taan_core.train import resolve_device

    split = _choice(split, ("train", "val", "test"), "--split")
    ckpt = load_checkpoint(checkpoint)
    net = model_from_checkpoint(ckpt)
    data_config = dict(ckpt.data.get("config") or {})
    if data is not None:
        data_config["data_path"] = str(data)
    name = _choice(dataset, DATASETS, "--dataset") if dataset is not None else ckpt.data["name"]
    if name not in DATASETS:
        raise _UserError(f"{ckpt.path}: the checkpoint names no data set; pass --dataset ({'|'.join(DATASETS)})")
    data_set = load_dataset(name, **data_config)
    _check_tasks(ckpt, data_set)
    dev = resolve_device(device)
    if save is None:
        result = evaluate(net.to(dev), data_set.split(split), list(data_set.tasks), batch_size, dev)
    else:
        from taan_core.adapt import record_statistics
        from taan_core.checkpoint import save as save_model

        with record_statistics(net):
            result = evaluate(net.to(dev), data_set.split(split), list(data_set.tasks), batch_size, dev)
        save_model(net, save, task_names=ckpt.task_names, epoch=int((ckpt.raw or {}).get("epoch", 0)),
                   metrics=list(ckpt.metrics), data={"name": data_set.name, "config": dict(data_set.config)})
        print(f"wrote {save}", file=sys.stderr)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    _print_table(result, ckpt, split)


def _check_tasks(ckpt, data_set) -> None:
    # An imported file may hold another number of tasks, or named heads in another order.
    names = list(data_set.task_names)
    generic = ckpt.task_names == [f"task_{t}" for t in range(len(ckpt.task_names))]
    if len(ckpt.task_names) != len(names) or not generic and ckpt.task_names != names:
        raise _UserError(f"{ckpt.path}: the checkpoint's {len(ckpt.task_names)} tasks "
                         f"({', '.join(ckpt.task_names[:4])}{', ...' if len(ckpt.task_names) > 4 else ''}) are not "
                         f"the {len(names)} tasks of the data set ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})")


def _print_table(result: dict, ckpt, split: str) -> None:
    from rich.console import Console
    from rich.table import Table

    per_task = result["per_task"]
    metrics = list(next(iter(per_task.values())).keys()) if per_task else []
    table = Table(title=f"{ckpt.path} ({ckpt.data.get('name')}, {split} split, epoch {ckpt.raw.get('epoch')})")
    table.add_column("task")
    for name in metrics:
        table.add_column(name, justify="right")
    for task, values in per_task.items():
        table.add_row(task, *(f"{values.get(name, float('nan')):.4f}" for name in metrics))
    table.add_section()
    table.add_row("mean", *(f"{result['mean'].get(name, float('nan')):.4f}" for name in metrics), style="bold")
    console = Console(highlight=False)
    console.print(table)
    console.print(f"main: {result['main']:.4f}")


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _click_exception(name: str) -> type[BaseException]:
    # typer raises click's exceptions (vendored in newer typer, the click package in older):
    # find the classes through typer's public BadParameter instead of importing either.
    return next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == name)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``taan-core``: runs the app, turning user errors into one line and exit 2."""
    from taan_core.checkpoint import CheckpointError

    usage_error = _click_exception("UsageError")
    user_errors: tuple[type[BaseException], ...] = (_UserError, CheckpointError, ValueError, TypeError, OSError,
                                                    ImportError)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = app(args=args or ["--help"], prog_name="taan-core", standalone_mode=False)
    except usage_error as err:
        print(f"taan-core: error: {_one_line(err.format_message())}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("taan-core: aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("taan-core: interrupted (continue with --resume)", file=sys.stderr)
        sys.exit(130)
    except user_errors as err:
        if os.environ.get("TAAN_DEBUG"):
            raise
        print(f"taan-core: error: {_one_line(err)}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
