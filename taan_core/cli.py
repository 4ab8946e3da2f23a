"""``taan-core``: train a multi-task model and evaluate a checkpoint.

``taan-core train`` with no options trains a TAAN on the planted benchmark (about a minute on
two CPU cores) into ``runs/planted-taan``; ``taan-core eval CHECKPOINT`` prints per-task metrics.
User errors (bad options, unreadable files or checkpoints, data errors, failed writes, a run
folder locked by another training) print one line on stderr and exit with status 2; a training
that diverged prints one line naming the epoch and the step and exits with status 1; Ctrl-C
prints "interrupted" (with "continue with --resume" once an epoch is saved) and exits with
status 130, at any moment. Any other error is a bug: its traceback and status 1. ``--debug`` (or
``TAAN_DEBUG=1``) shows the traceback of every error. The error path is
:mod:`taan_core._cli_runner`'s, shared with taan-viz and taan-study.

``train`` prints the settings it resolved before it starts, one line per epoch, and at the end
whether it stopped early, the best epoch and the files it wrote (only those that exist).
"""

from __future__ import annotations

import sys

try:
    import contextlib
    import enum
    import json
    import re
    import signal
    from pathlib import Path
    from typing import Annotated, Any, Optional

    import typer

    from taan_core._cli_console import print_settings, print_table, print_test, report
    from taan_core._cli_runner import run_app, user_input
    from taan_core._names import DATASET_NAMES, LOG_NAMES, MODEL_NAMES, REG_NAMES
    from taan_core.errors import UserError
except KeyboardInterrupt:  # Ctrl-C while the command starts: one line, as at any later moment
    print("taan-core: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

__all__ = ["app", "main"]

DATASETS = DATASET_NAMES
MODELS = MODEL_NAMES
REGS = REG_NAMES
LOGS = LOG_NAMES


def _choices(name: str, values: tuple[str, ...]) -> type[enum.Enum]:
    # typer shows an Enum's values in --help as a whole list and refuses anything else.
    return enum.Enum(name, {v: v for v in values}, type=str)


Dataset = _choices("Dataset", DATASETS)
Model = _choices("Model", MODELS)
Reg = _choices("Reg", REGS)
Optimizer = _choices("Optimizer", ("adam", "adamw"))
Schedule = _choices("Schedule", ("none", "cosine", "step"))
Sampler = _choices("Sampler", ("balanced", "proportional"))
GaussMeasure = _choices("GaussMeasure", ("standard", "data"))
Split = _choices("Split", ("train", "val", "test"))
Log = _choices("Log", LOGS)

# Options that may accompany --resume with any value: they extend or move a run without changing
# what it is. Every other option must repeat the run's stored value.
_RESUMABLE = {"epochs", "device", "threads", "out", "data", "log"}
# Settings of the stored TrainConfig that options name one to one.
_TRAIN_OPTIONS = ("batch_size", "sampler", "optimizer", "lr", "weight_decay", "schedule", "reg", "c", "measure",
                  "patience", "shared_warmup", "starts", "start_epochs", "amp", "compile", "deterministic", "seed")
# Python names in library messages, and the options that set them.
_OPTION_NAMES = {"data_path": "--data", "num_hinges": "--hinges", "val_fraction": "--val-fraction",
                 "test_fraction": "--test-fraction", "split_seed": "--split-seed", "batch_size": "--batch-size",
                 "image_size": "--image-size",
                 "weight_decay": "--weight-decay",
                 "shared_warmup": "--shared-warmup", "start_epochs": "--start-epochs", "starts": "--starts",
                 **{name: f"--{name}" for name in ("epochs", "lr", "c", "seed", "patience", "threads", "device",
                                                   "hidden", "sampler", "optimizer", "schedule", "reg", "measure")}}

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Train Task Adaptive Activation Networks and evaluate their checkpoints.")


class _Interrupted(BaseException):
    """SIGINT, raised past typer (which turns KeyboardInterrupt into a silent exit code)."""


def _value(option: Any) -> Any:
    return option.value if isinstance(option, enum.Enum) else option


def _name_options(text: str) -> str:
    """A library message in the words of the command line: "lr must" -> "--lr must"."""
    text = re.sub(r"\bdata_path=", "--data ", text)
    text = re.sub(r"\b(data_path|num_hinges|val_fraction|test_fraction|batch_size|weight_decay|image_size)\b",
                  lambda m: _OPTION_NAMES[m[1]], text)
    return re.sub(r"^(\w+)( must| and )", lambda m: _OPTION_NAMES.get(m[1], m[1]) + m[2], text)


def _as_options():
    """Checking what the user gave: the library's refusals are user errors, in the options' names."""
    return user_input(reword=_name_options)


@contextlib.contextmanager
def _in_option_words():
    """The user errors found while training (a batch larger than the data) in the options' names;
    any other error passes unchanged."""
    try:
        yield
    except UserError as err:
        text = " ".join(str(err).split())
        if _name_options(text) == text:
            raise
        raise UserError(_name_options(text)) from err


def _parse_hidden(text: str) -> list[int]:
    try:
        widths = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError as err:
        raise UserError(f"--hidden must be comma-separated positive ints like 64,64,64, got {text!r}") from err
    if not widths or any(w < 1 for w in widths):
        raise UserError(f"--hidden must be comma-separated positive ints like 64,64,64, got {text!r}")
    return widths


def _check_hinges(model: str, hinges: int | None) -> None:
    """--hinges only for models with task-adaptive activations."""
    import dataclasses

    from taan_core.models import MODELS as registry

    if hinges is not None and "num_hinges" not in {f.name for f in dataclasses.fields(registry[model].config_class)}:
        raise UserError(f"--hinges applies to models with task-adaptive activations (taan, taan-conv), not {model!r}")


def _model_fields(dataset: str, model: str, hidden: str | None, hinges: int | None, tree_from: Path | None) -> dict:
    """The config fields of the model to build: the data set's defaults and the options; a
    branched network's branches (and, unless --hidden is given, widths) come from --tree-from."""
    widths = _parse_hidden(hidden) if hidden is not None else None
    if model == "branched-conv":
        return _branched_conv_overrides(tree_from, hidden)
    if model == "branched":
        from taan_core.relatedness import branched_overrides

        return branched_overrides(tree_from, hidden=widths)
    from taan_core.train import model_settings

    return model_settings(dataset, model, hidden=widths, hinges=hinges)


def _data_config(data: Path | None, val_fraction: float | None, test_fraction: float | None,
                 split_seed: int | None = None) -> dict:
    config: dict[str, Any] = {}
    if data is not None:
        config["data_path"] = str(data)
    if val_fraction is not None:
        config["val_fraction"] = val_fraction
    if test_fraction is not None:
        config["test_fraction"] = test_fraction
    if split_seed is not None:
        config["seed"] = split_seed
    return config


def _image_config(dataset: str, image_size: int | None) -> dict:
    """``{"image_size": N}`` for a data set whose loader resizes its images; refused for others."""
    if image_size is None:
        return {}
    import inspect

    from taan_core.data import DATASETS as loaders

    if "image_size" not in inspect.signature(loaders[dataset]).parameters:
        have = [name for name, load in loaders.items() if "image_size" in inspect.signature(load).parameters]
        raise UserError(f"--image-size applies to data sets of images that are resized ({', '.join(have)}), "
                         f"not {dataset!r}")
    return {"image_size": image_size}


# Set while a training runs, for the line printed on Ctrl-C.
_RUN_OUT: Path | None = None


@app.command()
def train(
    ctx: typer.Context,
    dataset: Annotated[Optional[Dataset], typer.Option(help="Data set (default planted).")] = None,
    data: Annotated[Optional[Path], typer.Option(help="File or folder of the data set (digits, exam and planted need none).")] = None,
    val_fraction: Annotated[Optional[float], typer.Option(
        "--val-fraction", help="Share of every task's samples held out for validation (default: the data set's).")] = None,
    test_fraction: Annotated[Optional[float], typer.Option(
        "--test-fraction", help="Share of every task's samples held out for testing (default: the data set's).")] = None,
    split_seed: Annotated[Optional[int], typer.Option(
        "--split-seed", help="Seed of the data set's random split into train, val and test (planted: of its generated "
                             "samples); default 0. School's protocol averages over --split-seed 0..9.")] = None,
    model: Annotated[Optional[Model], typer.Option(
        help="Model (default: taan, taan-conv for omniglot). On images every model becomes its conv variant "
             "(taan-conv, hard-conv, stl-conv, soft-order-conv, cross-stitch-conv, mmoe-conv, branched-conv: "
             "TAANConv's trunk).")] = None,
    reg: Annotated[Optional[Reg], typer.Option(help="Regulariser of the adaptive layers (default none).")] = None,
    c: Annotated[Optional[float], typer.Option(help="Regulariser coefficient, in [0, 1e6] (default 0.1).")] = None,
    measure: Annotated[Optional[GaussMeasure], typer.Option(
        help="Gaussian measure of the cosine/distance regulariser (default standard).")] = None,
    hidden: Annotated[Optional[str], typer.Option(help="Hidden widths, comma-separated (e.g. 64,64,64).")] = None,
    tree_from: Annotated[Optional[Path], typer.Option(
        "--tree-from", help="With --model branched: the TAAN checkpoint whose sharing tree the branches follow "
                            "(a taan-conv one on images).")] = None,
    hinges: Annotated[Optional[int], typer.Option(help="Hinges M per adaptive layer.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Maximum number of epochs.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        help="Samples per task per batch (balanced sampling); at most the largest task's training samples.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate, in (0, 1e6].")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="Weight decay, in [0, 1e6].")] = None,
    optimizer: Annotated[Optional[Optimizer], typer.Option(help="Optimiser (default adam).")] = None,
    schedule: Annotated[Optional[Schedule], typer.Option(help="Learning-rate schedule.")] = None,
    sampler: Annotated[Optional[Sampler], typer.Option(help="Batch sampling (default balanced).")] = None,
    patience: Annotated[Optional[int], typer.Option(help="Early-stopping patience in epochs (0: off).")] = None,
    shared_warmup: Annotated[Optional[float], typer.Option(
        help="Fraction of the epochs trained as hard sharing before the task activations adapt, in [0, 1) "
             "(default 0.1; docs/training.md).")] = None,
    starts: Annotated[Optional[int], typer.Option(
        help="Candidate starts: differently initialised copies trained for --start-epochs, the best on validation "
             "continues (default 3; 1 trains one start).")] = None,
    start_epochs: Annotated[Optional[float], typer.Option(
        help="Fraction of the epochs each candidate start trains before the choice, in (0, 1] (default 0.2).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:N or mps (default auto).")] = None,
    amp: Annotated[Optional[bool], typer.Option("--amp/--no-amp", help="bf16 autocast on CUDA (default on).")] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile", help="Compile the model with torch.compile.")] = None,
    deterministic: Annotated[Optional[bool], typer.Option("--deterministic", help="Deterministic algorithms only.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch (0: torch's default; planted uses 1).")] = None,
    seed: Annotated[Optional[int], typer.Option(
        help="Seed of the model initialisation and the batch order, in [0, 2**63 - 1] (default 0).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default runs/DATASET-MODEL).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run in --out from its last.pt; other options may be repeated with their "
        "stored values, and only --epochs, --device, --threads and --data may change.")] = False,
    allow_data_change: Annotated[bool, typer.Option(
        "--allow-data-change", help="With --resume: continue although the data differ from the run's.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a run already in --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No settings, progress bar, per-epoch lines or summary.")] = False,
    seeds: Annotated[Optional[str], typer.Option(
        help="Train one run per seed into OUT/seed-K/ (e.g. 0,1,2,3,4 or 0-4); taan-viz consensus OUT combines them.")] = None,
    workers: Annotated[Optional[int], typer.Option(
        help="With --seeds: seeds trained side by side, as separate processes sharing the CPU cores (default 1).")] = None,
    log: Annotated[Optional[Log], typer.Option(
        help="Also log to tensorboard (OUT/tensorboard; metrics.jsonl stays the record). Default none.")] = None,
    test: Annotated[bool, typer.Option(
        "--test", help="At the end, evaluate checkpoint.pt (the best validation epoch) on the test split once: "
                       "printed, and stored in checkpoint.pt as extra.test.")] = False,
    image_size: Annotated[Optional[int], typer.Option(
        "--image-size", help="Side in pixels the images are resized to (omniglot; default its stored 105).")] = None,
) -> None:
    """Train a model; writes OUT/checkpoint.pt (best validation epoch), OUT/last.pt and OUT/metrics.jsonl."""
    global _RUN_OUT
    if seeds is not None or workers is not None:
        from taan_core._cli_seeds import train_many

        return train_many(ctx, seeds, workers, seed=seed, out=out, dataset=_value(dataset) or "planted",
                          model=_value(model), entry=main)
    options = {k: _value(v) for k, v in locals().items()
               if v is not None and k not in ("resume", "overwrite", "quiet", "allow_data_change", "ctx", "seeds",
                                               "workers", "test")}
    log = _value(log) or "none"
    dataset = _value(dataset) or "planted"
    from taan_core.train._defaults import DATASET_DEFAULTS

    defaults = DATASET_DEFAULTS[dataset]
    model = _value(model) or defaults["model"]
    out = out if out is not None else Path("runs") / f"{dataset}-{model}"
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    if allow_data_change and not resume:
        raise UserError("--allow-data-change applies only with --resume")
    _RUN_OUT = out
    from taan_core.train._support import check_run_dir

    check_run_dir(out, overwrite=overwrite, resume=resume)  # before the data load and the settings
    if log == "tensorboard":
        from taan_core.train._tensorboard import _writer_class

        _writer_class()  # a missing package is an error now, not after loading the data
    if resume:
        return _resume(out, options, allow_data_change=allow_data_change, quiet=quiet, log=log, test=test)

    import torch

    from taan_core.data import load_dataset
    from taan_core.models import build_model, conv_variant
    from taan_core.train import Trainer, resolve_device, train_config

    reg = _value(reg) or "none"
    if (model in ("branched", "branched-conv")) != (tree_from is not None):
        raise UserError("--model branched needs --tree-from CHECKPOINT, and --tree-from applies only to it")
    with _as_options():
        config = train_config(
            dataset, epochs=epochs, batch_size=batch_size, sampler=_value(sampler), optimizer=_value(optimizer),
            lr=lr, weight_decay=weight_decay, schedule=_value(schedule), reg=reg,
            c=(0.1 if c is None else c) if reg != "none" else 0.0, measure=_value(measure), patience=patience,
            shared_warmup=shared_warmup, starts=starts, start_epochs=start_epochs, device=device, amp=amp,
            compile=bool(compile), deterministic=bool(deterministic), threads=threads,
            seed=0 if seed is None else seed, out=str(out), quiet=quiet,
        )
        resolve_device(config.device)
        _check_hinges(model, hinges)  # option errors before the data
        data_set = load_dataset(dataset, **_data_config(data, val_fraction, test_fraction, split_seed),
                                **_image_config(dataset, image_size))
    # On images every model with a conv variant sees them through TAANConv's trunk.
    requested, model = model, conv_variant(model, data_set.input_shape)
    label = model if model == requested else f"{model} (--model {requested} on images: TAANConv's trunk)"
    with _as_options():
        _check_hinges(model, hinges)
        overrides = _model_fields(dataset, model, hidden, hinges, tree_from)
        torch.manual_seed(config.seed)
        net = build_model(model, data_set.input_shape, [t.num_outputs for t in data_set.tasks], **overrides)
        trainer = Trainer(net, data_set, config)
    print_settings(label, net, data_set, config, quiet, resumed_from=None)
    with _in_option_words():
        result = _fit(trainer, log, overwrite=overwrite)
    report(result, data_set, config, quiet)
    if test:
        _test(trainer, result)


def _branched_conv_overrides(tree_from: Path, hidden: str | None) -> dict:
    """The config of a branched CNN along the sharing tree of the conv TAAN in ``tree_from``."""
    from taan_core.checkpoint import load_checkpoint
    from taan_core.models.branched_conv import branched_conv_overrides
    from taan_core.relatedness import tree_from_checkpoint

    ckpt = load_checkpoint(tree_from)
    if ckpt.model_class != "TAANConv":
        raise UserError(f"{tree_from}: on images the branched network has TAANConv's trunk and follows the sharing "
                        f"tree of a conv TAAN (taan-conv); this checkpoint holds {ckpt.model_class or 'no model'}")
    return branched_conv_overrides(tree_from_checkpoint(ckpt), ckpt.model_config,
                                   hidden=_parse_hidden(hidden) if hidden is not None else None)


def _test(trainer, result) -> None:
    if result.checkpoint not in result.files:
        raise UserError("--test: no checkpoint.pt to test (val main was never finite)")
    print_test(trainer.test("test"), trainer.data.tasks)


def _fit(trainer, log: str, **fit_options):
    if log != "tensorboard":
        return trainer.fit(**fit_options)
    from taan_core.train._tensorboard import TensorBoardLogger

    logger = TensorBoardLogger(Path(trainer.config.out) / "tensorboard")
    if fit_options.get("overwrite"):
        logger.clear()
    trainer.on_epoch = logger.on_epoch
    try:
        return trainer.fit(**fit_options)
    finally:
        logger.close()


def _stored_options(ckpt) -> dict[str, Any]:
    """The values the run's options had, from its checkpoint, keyed like the train() arguments."""
    from taan_core.models import MODELS as registry

    stored = ckpt.train_config or {}
    values: dict[str, Any] = {k: stored.get(k) for k in _TRAIN_OPTIONS}
    model_config = ckpt.model_config
    data = ckpt.data or {}
    names = [name for name, cls in registry.items() if cls.__name__ == ckpt.model_class]
    values["model"] = names[0] if names else ckpt.model_class
    values["dataset"] = data.get("name")
    values["hidden"] = model_config.get("hidden")
    values["hinges"] = model_config.get("num_hinges")
    for key in ("val_fraction", "test_fraction"):
        values[key] = (data.get("config") or {}).get(key)
    values["split_seed"] = (data.get("config") or {}).get("seed")
    values["image_size"] = (data.get("config") or {}).get("image_size")
    return values


def _same(option: str, given: Any, stored: Any) -> bool:
    if option == "model":
        from taan_core.models import conv_variant

        return given == stored or conv_variant(given, (1, 1, 1)) == stored
    if option == "hidden":
        return _parse_hidden(given) == list(stored or [])
    if isinstance(given, bool) or isinstance(stored, bool):
        return given is stored or (option == "compile" and given == bool(stored))
    if isinstance(given, (int, float)) and isinstance(stored, (int, float)):
        return float(given) == float(stored)
    return given == stored


def _resume(out: Path, given: dict[str, Any], *, allow_data_change: bool, quiet: bool, log: str = "none",
            test: bool = False) -> None:
    import dataclasses

    from taan_core.checkpoint import CheckpointError, load_checkpoint
    from taan_core.data import load_dataset
    from taan_core.models import model_from_config
    from taan_core.train import TrainConfig, Trainer

    last = out / "last.pt"
    if not last.is_file():
        raise UserError(f"{last}: no such file, nothing to resume (run without --resume)")
    ckpt = load_checkpoint(last)
    if ckpt.raw is None or ckpt.train_config is None:
        raise CheckpointError(f"{last}: extra.train_config: expected the training configuration of the run")
    if "tree_from" in given:
        raise UserError("--resume continues a run with its stored settings; --tree-from cannot be given again "
                         "(the branches are stored in the run)")
    run = _stored_options(ckpt)
    for option in sorted(set(given) - _RESUMABLE):
        if not _same(option, given[option], run.get(option)):
            flag = _OPTION_NAMES.get(option, "--" + option.replace("_", "-"))
            raise UserError(f"--resume continues a run with its stored settings; only --epochs, --device, "
                             f"--threads and --quiet may change, got {flag} {given[option]} (the run has "
                             f"{run.get(option)})")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = {k: v for k, v in ckpt.train_config.items() if k in names}
    settings.update(device=given.get("device", "auto"), quiet=quiet, out=str(out))
    for key in ("epochs", "threads"):
        if key in given:
            settings[key] = given[key]
    data_config = dict(ckpt.data.get("config") or {})
    if "data" in given:
        data_config["data_path"] = str(given["data"])
    with _as_options():
        config = TrainConfig(**settings)
        data_set = load_dataset(ckpt.data["name"], **data_config)
        net = model_from_config(ckpt.model_class, ckpt.model_config)
        trainer = Trainer(net, data_set, config)
    print_settings(run["model"], net, data_set, config, quiet, resumed_from=ckpt.epoch)
    with _in_option_words():
        result = _fit(trainer, log, resume=True, allow_data_change=allow_data_change)
    report(result, data_set, config, quiet)
    if test:
        _test(trainer, result)


@app.command("eval")
def evaluate_command(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint.pt (or a run folder).")],
    split: Annotated[Split, typer.Option(help="Split to evaluate.")] = Split("test"),
    data: Annotated[Optional[Path], typer.Option(help="Data location, if it moved since training.")] = None,
    batch_size: Annotated[int, typer.Option(help="Evaluation batch size.")] = 1024,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON instead of a table.")] = False,
    dataset: Annotated[Optional[Dataset], typer.Option(
        help="Data set, for a checkpoint that names none (an imported state_dict).")] = None,
    save: Annotated[Optional[Path], typer.Option(
        help="Also write a taan checkpoint of the model with its pre-activation statistics measured on this split "
             "(the data measure of taan-viz; for imported state_dicts).")] = None,
) -> None:
    """Print the per-task metrics of a checkpoint's model on a split of its data set."""
    from taan_core.train._support import _json_safe
    from taan_core.checkpoint import load_checkpoint, model_from_checkpoint
    from taan_core.data import load_dataset
    from taan_core.metrics import evaluate
    from taan_core.train import resolve_device

    split = _value(split)
    ckpt = load_checkpoint(checkpoint)
    net = model_from_checkpoint(ckpt)
    data_config = dict(ckpt.data.get("config") or {})
    if data is not None:
        data_config["data_path"] = str(data)
    name = _value(dataset) or ckpt.data.get("name")
    if name not in DATASETS:
        raise UserError(f"{ckpt.path}: the checkpoint names no data set; pass --dataset ({', '.join(DATASETS)})")
    with _as_options():
        data_set = load_dataset(name, **data_config)
        _check_tasks(ckpt, data_set)
        dev = resolve_device(device)
        if save is None:
            result = evaluate(net.to(dev), data_set.split(split), list(data_set.tasks), batch_size, dev)
        else:
            from taan_core.nn.adapt import record_statistics
            from taan_core.checkpoint import save as save_model

            with record_statistics(net):
                result = evaluate(net.to(dev), data_set.split(split), list(data_set.tasks), batch_size, dev)
            save_model(net, save, task_names=ckpt.task_names, epoch=ckpt.epoch or 0,
                       metrics=list(ckpt.metrics), data={"name": data_set.name, "config": dict(data_set.config)})
            print(f"wrote {save}", file=sys.stderr)
    if as_json:
        typer.echo(json.dumps(_json_safe(result), indent=2, allow_nan=False))
        return
    print_table(result, data_set.tasks, ckpt, split)


@app.command("attributes")
def attributes_command(
    dataset: Annotated[Dataset, typer.Option(help="Data set whose tasks' known attributes to write.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV file to write.")],
    data: Annotated[Optional[Path], typer.Option(help="File or folder of the data set (school needs school.mat).")] = None,
) -> None:
    """Write what is known about a data set's tasks as a CSV, for taan-viz compare --against.

    school: each school's gender, denomination, percentages and size; planted: the planted group
    of every task at every layer (layer1, layer2, ...)."""
    import csv
    import io

    from taan_core._atomic import write_file
    from taan_core.data import known_attributes, load_dataset

    with _as_options():
        table = known_attributes(load_dataset(_value(dataset), **_data_config(data, None, None)))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(list(table))
    writer.writerows(zip(*table.values()))
    write_file(out, text.getvalue())
    print(f"wrote {out} ({len(table['task'])} tasks: {', '.join(list(table)[1:])})", file=sys.stderr)


def _check_tasks(ckpt, data_set) -> None:
    # An imported file may hold another number of tasks, or named heads in another order.
    names = list(data_set.task_names)
    generic = ckpt.task_names == [f"task_{t}" for t in range(len(ckpt.task_names))]
    if len(ckpt.task_names) != len(names) or not generic and ckpt.task_names != names:
        raise UserError(f"{ckpt.path}: the checkpoint's {len(ckpt.task_names)} tasks "
                         f"({', '.join(ckpt.task_names[:4])}{', ...' if len(ckpt.task_names) > 4 else ''}) are not "
                         f"the {len(names)} tasks of the data set ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})")


def _on_sigint(signum, frame) -> None:
    raise _Interrupted


def _interrupted_line() -> str:
    resumable = _RUN_OUT is not None and (_RUN_OUT / "last.pt").is_file()
    return "taan-core: interrupted" + (" (continue with --resume)" if resumable else "")


def _interrupted() -> None:
    print(_interrupted_line(), file=sys.stderr)
    sys.exit(130)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``taan-core``: runs the app, turning user errors into one line and exit 2.

    Exit status: 0 on success, 2 for a user error (one line on stderr), 1 when training diverged
    (one line naming the epoch and the step) or for a bug (its traceback), 130 on Ctrl-C (one line).
    """
    global _RUN_OUT
    _RUN_OUT = None
    try:
        previous = signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        _run(argv)
    except (_Interrupted, KeyboardInterrupt):
        _interrupted()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _run(argv: list[str] | None) -> None:
    run_app(app, "taan-core", argv, on_interrupt=_interrupted_line, expected=_expected_failures, no_args=["--help"])


def _expected_failures() -> dict[type[BaseException], int]:
    # A diverged training is nobody's bug and no input error: one line naming the epoch, status 1.
    from taan_core.train import TrainingDivergedError

    return {TrainingDivergedError: 1}


if __name__ == "__main__":
    main()
