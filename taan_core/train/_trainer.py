"""The Trainer: fit, evaluate and resume (the package docstring says how a run works)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from taan_core._atomic import atomic_write, remove_stale_temporaries
from taan_core.train._distributed import (
    _all_sum,
    _average_buffers,
    _barrier,
    _setup_world,
    _shard_batch,
    _teardown_world,
    _World,
    _wrap_ddp,
)
from taan_core.train._config import TrainConfig, TrainResult
from taan_core.train._support import (
    RUN_FILES,
    RunLock,
    _append_jsonl,
    _per_sample_loss,
    _plain,
    _rng_state,
    _seed_everything,
    _set_rng_state,
    _write_jsonl,
    data_fingerprint,
    run_threads,
    discard_staging,
    publish_run_dir,
    resolve_device,
    stage_run_dir,
)
from taan_core.checkpoint import (
    CheckpointError,
    History,
    MetricsLog,
    build_checkpoint,
    layer_snapshot,
    load_checkpoint,
    save_checkpoint,
)
from taan_core.checkpoint._history import metrics_records
from taan_core.checkpoint._io import _current_layout
from taan_core.errors import UserError

__all__ = ["Trainer", "TrainingDivergedError"]

# On accelerators the loss is checked for NaN every this many steps (a check waits for the
# device); on CPU it is checked at every step, before the optimiser sees it.
_FINITE_CHECK_EVERY = 32


class TrainingDivergedError(RuntimeError):
    """The loss or the weights became NaN or infinite; one line naming the epoch and the step."""

# ------------------------------------------------------------------------------ the trainer


class Trainer:
    """Train a multi-task model with mixed-task batches, early stopping and checkpoints.

    Parameters
    ----------
    model : nn.Module
        A :mod:`taan_core.models` model (``forward(x, task)`` with a LongTensor of task ids
        returns one output per task); its weights are trained in place.
    data : MultiTaskData
        The data set (``taan_core.data.load_dataset``); its tasks must match the model's heads.
    config : TrainConfig
    on_step : callable, optional
        ``on_step(trainer, epoch, batch)`` after every optimiser step, on every process
        (``epoch`` counts from 1, ``batch`` from 0 within the epoch; ``trainer.step`` is the
        global step count). For progress hooks and tests; keep it cheap.
    on_epoch : callable, optional
        ``on_epoch(trainer, record)`` after every epoch, on the main process, once the epoch's
        files are written: ``record`` is the line appended to ``metrics.jsonl`` (``epoch``,
        ``step``, ``lr``, ``train_loss``, ``train_task_loss``, ``train_reg``, ``val``, ``best``,
        ``seconds``) and ``trainer.model``, ``trainer.history`` are current. Loggers hook in
        here (``taan_core.TensorBoardLogger.on_epoch``).

    Attributes
    ----------
    epoch, step : int
        Completed epochs and optimiser steps.
    history : History
        Per-epoch layer snapshots, appended in place and stored stacked (schema v2);
        ``history[k]`` is ``{"epoch", "step", "alphas", "hinges"}``.
    metrics : MetricsLog
        Per-epoch metrics (a list of dicts that keeps their JSON text for the checkpoint).
    """

    def __init__(self, model: nn.Module, data: Any, config: TrainConfig | None = None, *,
                 on_step: Callable[["Trainer", int, int], None] | None = None,
                 on_epoch: Callable[["Trainer", dict], None] | None = None) -> None:
        config = TrainConfig() if config is None else config
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        if not hasattr(model, "adaptive_layers") or not dataclasses.is_dataclass(getattr(model, "config", None)):
            raise TypeError(f"model must be a taan_core.models model (config dataclass and adaptive_layers()), "
                            f"got {type(model).__name__}")
        self.model = model
        self.data = data
        self.config = config
        self.on_step = on_step
        self.on_epoch = on_epoch
        self.tasks = list(data.tasks)
        num_tasks = len(self.tasks)
        dims = list(getattr(model.config, "output_dims", [t.num_outputs for t in self.tasks]))
        if dims != [t.num_outputs for t in self.tasks]:
            raise ValueError(f"model output_dims {dims} do not match the data set's task outputs "
                             f"{[t.num_outputs for t in self.tasks]}")
        for name, act in model.adaptive_layers():
            if act.alpha.shape[0] != num_tasks:
                raise ValueError(f"layer {name} has {act.alpha.shape[0]} tasks, the data set {num_tasks}")
        if config.task_weights is not None and len(config.task_weights) != num_tasks:
            raise ValueError(f"task_weights must have T = {num_tasks} values, got {len(config.task_weights)}")
        _check_batch_size(data.split("train"), config.batch_size, config.sampler)
        from taan_core._memory import check_model

        # Gradients and Adam's two moments add three copies of the weights: refuse before the first step.
        check_model(model.config, training=True)
        self.out = Path(config.out)
        self.epoch = 0
        self.step = 0
        self.history = History()
        self.metrics = MetricsLog()
        self.best_main = -math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self._best: dict | None = None
        self._starts: list[dict] = []
        self._trial = False
        self._trial_start = 0
        self._fingerprint: str | None = None

    # -------------------------------------------------------------------------- setup

    def _setup(self, world: _World) -> None:
        cfg = self.config
        device = resolve_device(cfg.device)
        if device.type == "cuda" and world.distributed:
            device = torch.device("cuda", world.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        self.model.to(device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self._adaptive_params = [p for _, act in self.model.adaptive_layers() for p in (act.alpha, act.hinges)]
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        # The fused step instead of torch's default Python loop over every parameter tensor on
        # CPU: with one head per task that loop cost 10 ms a step at 139 tasks, more than the
        # model's forward and backward. Fused Adam exists for CPU and CUDA only.
        fused = {"fused": True} if device.type in ("cpu", "cuda") else {}
        self.optimizer = opt_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
        from taan_core.data import MultiTaskBatchSampler

        self.sampler = MultiTaskBatchSampler(self.data.split("train"), cfg.batch_size, mode=cfg.sampler,
                                             seed=cfg.seed)
        if cfg.schedule == "cosine":
            total = cfg.epochs * len(self.sampler)

            def cosine(step: int) -> float:
                # A closed form of the step (not a recursion on the last lr), so a resumed run that
                # extends ``epochs`` follows the longer curve from where it is.
                return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, cosine)
        elif cfg.schedule == "step":
            self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
        else:
            self.scheduler = None
        # With balanced batches that split evenly every rank uses every head on every step;
        # otherwise DDP has to look for parameters a rank did not use.
        even = cfg.sampler == "balanced" and cfg.batch_size % world.size == 0
        self._forward = _wrap_ddp(self.model, world, device, find_unused=not even)
        if cfg.compile:
            backend = {} if cfg.compile is True else {"backend": cfg.compile}
            self._forward = torch.compile(self._forward, **backend)
        # A compiled model takes the batch's task counts from the caller instead of counting them
        # (a data-dependent host sync that breaks the graph). Balanced batches have the same
        # counts every step, so the graph is compiled once; proportional ones would recompile.
        self._pass_counts = bool(cfg.compile) and cfg.sampler == "balanced"
        self._weights = torch.tensor(cfg.task_weights or [1.0] * len(self.tasks), dtype=torch.float32)
        # The float32 weights as Python floats, the values the loss used to read one by one.
        self._weight_values = self._weights.tolist()

    def _data_record(self) -> dict:
        truth = getattr(self.data, "ground_truth", None) or {}
        groups = truth.get("groups")
        return {"name": self.data.name, "config": dict(self.data.config),
                "groups": [[int(g) for g in row] for row in groups] if groups is not None else None}

    @property
    def threads(self) -> int:
        """Torch's CPU threads while this Trainer runs: ``config.threads``, or when that is 0 at
        most the physical cores and no more than a step's work needs (:func:`default_threads`)."""
        return run_threads(self.config, self.model, len(self.data.tasks))

    def _checkpoint(self, world: _World) -> dict:
        from taan_core.models import trunk_description

        return build_checkpoint(
            self.model, task_names=self.data.task_names, data=self._data_record(), history=self.history,
            metrics=self.metrics, epoch=self.epoch, step=self.step, optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict() if self.scheduler is not None else None,
            rng=_rng_state(self.device), sampler=self.sampler.state_dict(),
            extra={"train_config": dataclasses.asdict(self.config), "best_epoch": self.best_epoch,
                   "best_main": self.best_main, "bad_epochs": self.bad_epochs, "world_size": world.size,
                   "data_fingerprint": self._fingerprint, "starts": self._starts,
                   "trunk": trunk_description(self.model)},
        )

    def _restore(self, path: Path, allow_data_change: bool = False) -> None:
        ckpt = load_checkpoint(path)
        raw = None if ckpt.raw is None else _current_layout(ckpt.raw)
        if raw is None:
            raise CheckpointError(f"{path}: expected a full taan checkpoint to resume from")
        model_info = raw["model"]
        if model_info["class"] != type(self.model).__name__ or model_info["config"] != dataclasses.asdict(self.model.config):
            raise UserError(f"cannot resume from {path}: it holds a {model_info['class']} with config "
                             f"{model_info['config']}, this run builds a {type(self.model).__name__} with "
                             f"{dataclasses.asdict(self.model.config)}")
        if ckpt.task_names != self.data.task_names or ckpt.data.get("name") != self.data.name:
            raise UserError(f"cannot resume from {path}: it was trained on {ckpt.data.get('name')!r} with tasks "
                             f"{ckpt.task_names}, this run uses {self.data.name!r} with tasks {self.data.task_names}")
        stored = (raw.get("extra") or {}).get("data_fingerprint")
        if stored is not None and stored != self._fingerprint and not allow_data_change:
            raise UserError(f"cannot resume from {path}: the data changed since the run started (fingerprint "
                             f"{stored}, now {self._fingerprint}); pass --allow-data-change (allow_data_change=True) "
                             "to continue on the new data")
        for key in ("optimizer", "rng", "sampler"):
            if raw.get(key) is None:
                raise CheckpointError(f"{path}: {key}: expected resume state, got None")
        self._load_state(raw)
        # checkpoint.pt is written before last.pt, so a run killed between the two has a best
        # file one epoch ahead of last.pt; keep it only if it is the best epoch last.pt knows.
        best_path = path.parent / "checkpoint.pt"
        best = load_checkpoint(best_path).raw if best_path.is_file() else None
        best = None if best is None else _current_layout(best)
        if best is not None and best["epoch"] == self.best_epoch:
            self._best = best
        elif self.best_epoch == self.epoch:
            self._best = dict(raw)

    def _load_state(self, raw: dict) -> None:
        """Put the model, optimiser, schedule, sampler, counters and random state of ``raw``
        (a checkpoint dict of this run) in place."""
        self.model.load_state_dict(raw["model"]["state_dict"])
        self.optimizer.load_state_dict(raw["optimizer"])
        if self.scheduler is not None and raw.get("scheduler") is not None:
            self.scheduler.load_state_dict(raw["scheduler"])
        self.sampler.load_state_dict(raw["sampler"])
        self.epoch, self.step = int(raw["epoch"]), int(raw["step"])
        self.history = History.from_value(raw["history"])
        self.metrics = MetricsLog(metrics_records(raw["metrics"]))
        extra = raw.get("extra") or {}
        self.best_epoch = int(extra.get("best_epoch", 0))
        self.best_main = float(extra.get("best_main", -math.inf))
        self.bad_epochs = int(extra.get("bad_epochs", 0))
        self._starts = list(extra.get("starts") or [])
        _set_rng_state(raw["rng"], self.device)

    # -------------------------------------------------------------------------- training

    def fit(self, *, resume: bool = False, overwrite: bool = False, stop_after: int | None = None,
            allow_data_change: bool = False) -> TrainResult:
        """Train until ``config.epochs`` or early stopping.

        Parameters
        ----------
        resume : bool
            Continue the run in ``config.out`` from its ``last.pt``.
        overwrite : bool
            Replace a run already in ``config.out`` (only its run files): the new run writes
            into a private folder inside it until its first epoch is saved, then its files
            take the old ones' place, so a run that fails or is stopped before that leaves
            the old run intact.
        stop_after : int, optional
            Return after this many epochs of this call, as an interruption would (the run can be
            resumed later and ends as if it had not stopped).
        allow_data_change : bool
            With ``resume``: continue even if the data's fingerprint differs from the stored one.

        Returns
        -------
        TrainResult

        Raises
        ------
        RunLockedError
            Another live process trains into ``config.out``.
        TrainingDivergedError
            A non-finite loss or weight; the files of the last completed epoch stay as they were.

        Notes
        -----
        Folders that ``fit`` created are removed again when it fails before writing anything.
        """
        cfg = self.config
        start = time.perf_counter()
        world = _setup_world(resolve_device(cfg.device).type)
        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        lock: RunLock | None = None
        created: list[Path] = []
        self._final_out = self.out
        try:
            if world.is_main:
                created, lock = self._lock_run_dir()
                # With overwrite, the old run stays until this one has saved its first epoch.
                self.out = stage_run_dir(self.out, overwrite=overwrite, resume=resume)
            _barrier(world)
            self._setup(world)
            self._fingerprint = data_fingerprint(self.data)
            if resume:
                self._restore(self.out / "last.pt", allow_data_change=allow_data_change)
                if world.is_main:
                    _write_jsonl(self.out / "metrics.jsonl", self.metrics)
            else:
                _seed_everything(cfg.seed)
            stopped = cfg.patience > 0 and self.bad_epochs >= cfg.patience
            ran = 0
            with self._progress(world) as progress:
                if not resume and cfg.starts > 1:
                    ran = self._choose_start(world, progress)
                    stopped = cfg.patience > 0 and self.bad_epochs >= cfg.patience
                while not stopped and self.epoch < cfg.epochs and (stop_after is None or ran < stop_after):
                    self._run_epoch(world, progress)
                    ran += 1
                    stopped = cfg.patience > 0 and self.bad_epochs >= cfg.patience
            if world.is_main and self._best is not None:
                # The best epoch's coordinates, with the history and metrics of the whole run.
                final = dict(self._best, history=self.history.record(), metrics=self.metrics.json())
                final["extra"] = dict(final.get("extra") or {}, stopped_early=stopped, epochs_run=self.epoch)
                save_checkpoint(final, self.out / "checkpoint.pt")
            _barrier(world)
        finally:
            discard_staging(self.out, self._final_out)  # a run that saved nothing replaces nothing
            self.out = self._final_out
            torch.set_num_threads(threads)
            if lock is not None:
                lock.release()
            # Only empty folders go, deepest first: a run that wrote any file keeps its folder.
            for folder in reversed(created):
                try:
                    folder.rmdir()
                except OSError:
                    break
            _teardown_world(world)
        return TrainResult(out=self.out, epochs=self.epoch, steps=self.step, best_epoch=self.best_epoch,
                           best_main=self.best_main, stopped_early=stopped, seconds=time.perf_counter() - start,
                           metrics=list(self.metrics))

    @torch.no_grad()
    def test(self, split: str = "test") -> dict:
        """Evaluate the run's chosen checkpoint (``checkpoint.pt``) on ``split``, once, and record it.

        Call after :meth:`fit`. The model of the best validation epoch, not the last, is
        evaluated, so the result is the one a report should quote; ``self.model`` is left as it
        was. The result is stored in ``checkpoint.pt`` as ``extra["test"]`` (with the split and
        the epoch), written atomically.

        Parameters
        ----------
        split : {"test", "val", "train"}

        Returns
        -------
        dict
            :func:`taan_core.metrics.evaluate`'s result (``main``, ``mean``, ``per_task`` and,
            with regression tasks, ``pooled``) plus ``split`` and ``epoch``.

        Raises
        ------
        FileNotFoundError
            No ``checkpoint.pt`` in ``config.out`` (no epoch had a finite validation metric).
        """
        from taan_core.metrics import evaluate

        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        path = self.out / "checkpoint.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no checkpoint to test (val main was never finite)")
        raw = load_checkpoint(path).raw
        model = copy.deepcopy(self.model)
        model.load_state_dict(raw["model"]["state_dict"])
        device = next(model.parameters()).device
        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            result = evaluate(model, self.data.split(split), self.tasks, self.config.eval_batch_size, device)
        finally:
            torch.set_num_threads(threads)
        record = {"split": split, "epoch": int(raw["epoch"]), **_plain(result)}
        if int(os.environ.get("RANK", "0")) == 0:
            raw["extra"] = dict(raw.get("extra") or {}, test=record)
            save_checkpoint(raw, path)
        return record

    def _lock_run_dir(self) -> tuple[list[Path], RunLock]:
        """Create the run folder if needed and lock it; returns the folders created and the lock."""
        if self.out.exists() and not self.out.is_dir():
            raise FileExistsError(f"{self.out} exists and is not a folder")
        created = []
        folder = self.out.absolute()
        while not folder.exists():
            created.append(folder)
            folder = folder.parent
        created.reverse()
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            lock = RunLock(self.out).acquire()
        except BaseException:
            for made in reversed(created):
                made.rmdir()
            raise
        # Holding the lock, no live trainer writes here: temporaries of the run files are leftovers.
        remove_stale_temporaries(self.out, names=RUN_FILES)
        return created, lock

    def _progress(self, world: _World):
        from taan_core.train._progress import EpochProgress

        enabled = world.is_main and not self.config.quiet
        return EpochProgress(enabled=enabled, bar=enabled and sys.stderr.isatty())

    def _batch_loss(self, task: Tensor, index: Tensor, world: _World) -> tuple[Tensor, Tensor | None]:
        """The batch's data loss (a sum over ranks gives the full-batch mean) and the
        regulariser, None when there is none."""
        from taan_core.data.sampler import _collate

        split = self.data.split("train")
        # The sampler's batches are valid by construction, and its balanced ones sorted by task
        # (a rank's share of one is not).
        if world.distributed:
            task, index, global_counts = _shard_batch(task, index, len(self.tasks), world)
            batch = _collate(split, task, index, check=False)
        else:
            batch = _collate(split, task, index, check=False, ordered=self.config.sampler == "balanced")
        local_counts = [int(y.shape[0]) for y in batch.targets]
        counts = global_counts.tolist() if world.distributed else local_counts
        x = batch.x.to(self.device, non_blocking=True)
        tids = batch.task.to(self.device, non_blocking=True)
        autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16)
                    if self.config.amp and self.device.type == "cuda" else contextlib.nullcontext())
        given = {"counts": local_counts} if self._pass_counts else {}
        with autocast:
            outputs = self._forward(x, tids, **given)
        # The counts are Python numbers, read once: a .item() per task and batch costs more than
        # the loss at thousands of tasks. Each task's weight and count make one factor, so a
        # task's term is one operation on the tensor (and one in the backward pass).
        loss = torch.zeros((), device=self.device)
        for t, (spec, out, target) in enumerate(zip(self.tasks, outputs, batch.targets)):
            if out.shape[0] == 0:
                # Keeps every head in the graph, so all ranks reduce the same parameters.
                loss = loss + 0.0 * out.float().sum()
                continue
            per_sample = _per_sample_loss(spec.kind, out, target.to(self.device, non_blocking=True))
            # Dividing by the global count makes the ranks' losses sum to the full-batch mean.
            loss = loss + per_sample.sum() * (self._weight_values[t] / counts[t])
        if self.config.reg == "none" or self.config.c == 0:
            return loss, None
        from taan_core.nn.regularizers import functional_penalty

        return loss, functional_penalty(self.model, self.config.reg, self.config.c, self.config.measure)

    def _run_epoch(self, world: _World, progress) -> None:
        """One epoch: the steps, the validation and the bookkeeping of the best epoch, then the
        files (or, for a candidate start, its best state kept in memory)."""
        epoch = self.epoch + 1
        tic = time.perf_counter()
        lr = float(self.optimizer.param_groups[0]["lr"])
        task_loss, reg_loss = self._train_steps(epoch, world, progress)
        self.epoch = epoch
        self.history.append(epoch, self.step, *layer_snapshot(self.model, copy=False))
        val = self._evaluate()
        improved = self._track_best(float(val["main"]), epoch)
        if self.config.schedule == "step":
            self.scheduler.step()
        record = {"epoch": epoch, "step": self.step, "lr": lr, "train_loss": task_loss + reg_loss,
                  "train_task_loss": task_loss, "train_reg": reg_loss, "val": val, "best": improved,
                  "seconds": time.perf_counter() - tic}
        self.metrics.append(record)
        if self._trial:
            progress.end_epoch({**record, "start": self._trial_start, "starts": self.config.starts})
            # A candidate start writes nothing; it keeps its best epoch for the choice.
            if improved:
                self._best = copy.deepcopy(self._checkpoint(world))
        else:
            progress.end_epoch(record)
            if world.is_main:
                self._write_epoch(record, improved, world)
        _barrier(world)

    def _train_steps(self, epoch: int, world: _World, progress) -> tuple[float, float]:
        """The optimiser steps of one epoch; returns its mean data loss and mean regulariser.

        Raises TrainingDivergedError at the first non-finite loss (checked at every step on
        CPU, every ``_FINITE_CHECK_EVERY`` steps on accelerators) or non-finite weight.
        """
        cfg = self.config
        self.model.train()
        self.sampler.set_epoch(epoch)
        task_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        reg_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        no_reg = torch.zeros((), device=self.device)
        batches = 0
        num_batches = len(self.sampler)
        # The first non-finite step of the epoch and its loss terms, kept on the device so that
        # accelerators need not wait for every step's loss.
        first_bad = torch.zeros((), dtype=torch.long, device=self.device)
        bad_terms = torch.zeros(2, device=self.device)
        freeze = epoch <= cfg.warmup_epochs
        progress.start_epoch(epoch, cfg.epochs, num_batches)
        # One process on CPU reads the loss as Python numbers: a step's check and sums are then
        # plain arithmetic instead of a dozen small tensor operations.
        local = self.device.type == "cpu" and not world.distributed
        sums = [0.0, 0.0]
        for b, (task, index) in enumerate(self.sampler):
            loss, reg = self._batch_loss(task, index, world)
            # DDP averages gradients over ranks; the data term is a sum over ranks, hence * size.
            total = loss if world.size == 1 else loss * world.size
            total = total if reg is None else total + reg
            reg = no_reg if reg is None else reg
            if local:
                terms = [float(loss.detach()), float(reg.detach())]
                if not math.isfinite(terms[0] + terms[1]):
                    self._check_finite(torch.tensor(b + 1), torch.tensor(terms), epoch, num_batches, world)
                sums[0] += terms[0]
                sums[1] += terms[1]
            else:
                new = (first_bad == 0) & ~torch.isfinite(total.detach())
                first_bad = torch.where(new, b + 1, first_bad)
                bad_terms = torch.where(new, torch.stack([loss.detach().float(), reg.detach().float()]), bad_terms)
                if self.device.type == "cpu" or (b + 1) % _FINITE_CHECK_EVERY == 0 or b + 1 == num_batches:
                    self._check_finite(first_bad, bad_terms, epoch, num_batches, world)
                task_sum += loss.detach().double()
                reg_sum += reg.detach().double()
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            if freeze:
                # No gradient (rather than a zero one) leaves Adam's moments of the coefficients
                # untouched, so they start fresh when adaptation begins.
                for p in self._adaptive_params:
                    p.grad = None
            self.optimizer.step()
            if cfg.schedule == "cosine":
                self.scheduler.step()
            _average_buffers(self.model, world)
            self.step += 1
            batches += 1
            progress.advance(lambda: float(loss.detach()) * world.size + float(reg.detach()))
            if self.on_step is not None and not self._trial:
                self.on_step(self, epoch, b)
        self._check_finite(first_bad, bad_terms, epoch, num_batches, world, weights=True)
        task_value, reg_value = sums if local else (float(task_sum), float(reg_sum))
        task_total, = _all_sum([task_value], world, self.device)
        return task_total / max(batches, 1), reg_value / max(batches, 1)

    def _track_best(self, main: float, epoch: int) -> bool:
        """Record the epoch's validation ``main`` for early stopping; True if it improved."""
        improved = math.isfinite(main) and main > self.best_main + self.config.min_delta
        if improved:
            self.best_main, self.best_epoch, self.bad_epochs = main, epoch, 0
        elif epoch > self.config.warmup_epochs:
            # The warm-up's plateau is not a reason to stop: patience counts adaptive epochs.
            self.bad_epochs += 1
        return improved

    def _write_epoch(self, record: dict, improved: bool, world: _World) -> None:
        """The epoch's files: checkpoint.pt when it improved, last.pt, its metrics.jsonl line."""
        ckpt = self._checkpoint(world)
        if improved:
            save_checkpoint(ckpt, self.out / "checkpoint.pt")
            self._best = ckpt
            # The same dict: copy the file's bytes instead of serialising it a second time
            # (torch.save costs ~0.1 ms a tensor, and the optimiser state has three a parameter).
            _copy_file(self.out / "checkpoint.pt", self.out / "last.pt")
        else:
            save_checkpoint(ckpt, self.out / "last.pt")
        self.out = publish_run_dir(self.out, self._final_out)
        _append_jsonl(self.out / "metrics.jsonl", record)
        if self.on_epoch is not None:
            self.on_epoch(self, record)

    def _choose_start(self, world: _World, progress) -> int:
        """Train every candidate start for ``trial_epochs`` and continue from the best one.

        A start's score is the best validation metric of its trial epochs. The candidates see
        the same batches and differ only in their initial weights. Nothing
        is written while they train; afterwards the chosen candidate's epochs are written as
        if it had been the only run. Returns the number of epochs the chosen candidate ran.

        Only the best candidate so far is kept (its end state and its best epoch's, one copy
        when they are the same epoch), not every candidate's: at YouTube-8M's shapes each copy
        holds the weights and Adam's two moments.
        """
        from taan_core.train._starts import fresh_state, start_seed

        cfg = self.config
        initial = copy.deepcopy(self._checkpoint(world))
        given = copy.deepcopy(initial["model"]["state_dict"])
        scores: list[float] = []
        kept: tuple[dict, dict | None] | None = None
        progress.announce_starts(cfg.starts, cfg.trial_epochs)
        self._trial = True
        try:
            for k in range(cfg.starts):
                self._trial_start = k
                self._load_state(initial)
                self.history, self.metrics, self._best = History(), MetricsLog(), None
                if k:
                    self.model.load_state_dict(fresh_state(self.model, start_seed(cfg.seed, k)))
                else:
                    self.model.load_state_dict(given)
                while self.epoch < cfg.trial_epochs and not (cfg.patience > 0 and self.bad_epochs >= cfg.patience):
                    self._run_epoch(world, progress)
                # A start is judged on its best validation epoch, the one its checkpoint.pt would
                # hold, not on its last: one unlucky final epoch must not discard a good start.
                mains = [float(m["val"]["main"]) for m in self.metrics]
                score = max((m for m in mains if math.isfinite(m)), default=-math.inf)
                scores.append(score)
                # Strictly better: on ties the earlier start is kept, as max() over the starts did.
                if kept is None or score > max(scores[:-1]):
                    kept = None  # the old candidate's copies go before the new one is made
                    if self._best is not None and self._best["epoch"] == self.epoch:
                        end = self._best  # its best epoch is its last: one copy serves both
                    else:
                        end = copy.deepcopy(self._checkpoint(world))
                    kept = (end, self._best)
                self._best = None
        finally:
            self._trial = False
        chosen = max(range(len(scores)), key=lambda k: scores[k])
        state, best = kept
        self._load_state(state)
        self._best = best
        self._starts = [{"start": k, "seed": cfg.seed if k == 0 else start_seed(cfg.seed, k),
                         "val_main": score if math.isfinite(score) else None, "chosen": k == chosen}
                        for k, score in enumerate(scores)]
        progress.starts_chosen(self._starts, cfg.trial_epochs)
        if self._best is not None:
            self._best["extra"] = dict(self._best.get("extra") or {}, starts=self._starts)
        if world.is_main:
            if self._best is not None:
                save_checkpoint(self._best, self.out / "checkpoint.pt")
            save_checkpoint(self._checkpoint(world), self.out / "last.pt")
            self.out = publish_run_dir(self.out, self._final_out)
            for record in self.metrics:
                _append_jsonl(self.out / "metrics.jsonl", record)
                if self.on_epoch is not None:
                    self.on_epoch(self, record)
        _barrier(world)
        return self.epoch

    def _check_finite(self, first_bad: Tensor, terms: Tensor, epoch: int, num_batches: int, world: _World,
                      weights: bool = False) -> None:
        """Raise TrainingDivergedError if a step of this epoch had a non-finite loss (or, with
        ``weights``, if a weight is non-finite); every rank raises together."""
        step = int(first_bad)
        broken = ""
        if weights and not step:
            for name, value in self.model.state_dict().items():
                if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                    broken = name
                    break
        # One collective on every rank, so that all ranks stop together.
        steps, broken_ranks = _all_sum([float(step), float(bool(broken))], world, self.device)
        step = step or int(steps)
        broken = broken or ("a weight" if broken_ranks else "")
        if not step and not broken:
            return
        kept = (f"{self.out} keeps epoch {self.epoch}" if self.epoch else "no epoch was completed, nothing was saved")
        if broken:
            raise TrainingDivergedError(
                f"training diverged in epoch {epoch}: the weights ({broken}) became NaN or infinite although the "
                f"loss stayed finite; lower the learning rate (lr {self.config.lr:g}); {kept}")
        loss, reg = (float(v) for v in terms)
        value = f"loss {loss:g}" + (f", regulariser {reg:g}" if self.config.reg != "none" else "")
        if math.isfinite(loss) and not math.isfinite(reg):
            cause = f"the regulariser overflowed: lower its coefficient (c {self.config.c:g})"
        elif epoch == 1 and step == 1:
            cause = "the first batch, before any update, is already non-finite: check the data for NaN or inf values"
        else:
            cause = (f"the learning rate (lr {self.config.lr:g}) is probably too high; lower it, or check the data "
                     "for extreme values")
        raise TrainingDivergedError(f"training diverged at epoch {epoch}, step {step} of {num_batches} ({value}): "
                                    f"{cause}; {kept}")

    @torch.no_grad()
    def _evaluate(self) -> dict:
        from taan_core.metrics import evaluate

        was_training = self.model.training
        self.model.eval()
        try:
            result = evaluate(self.model, self.data.split("val"), self.tasks, self.config.eval_batch_size, self.device)
        finally:
            self.model.train(was_training)
        return _plain(result)


def _copy_file(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` atomically (``dst`` is the old file or the whole copy)."""
    with open(src, "rb") as fh_in:
        atomic_write(dst, lambda fh: shutil.copyfileobj(fh_in, fh, 1 << 20))


def _check_batch_size(split, batch_size: int, mode: str) -> None:
    """Refuse a batch larger than the training data: the sampler would cycle the data to fill it
    (a batch of 1e8 takes minutes to draw), which no one means."""
    counts = [split.num_samples(t) for t in range(split.num_tasks)]
    limit = max(counts, default=0) if mode == "balanced" else sum(counts)
    if batch_size > limit:
        what = (f"the largest task has {limit} training samples (balanced batches take batch_size samples of "
                "every task)" if mode == "balanced" else f"the training split has {limit} samples")
        raise UserError(f"batch_size must be at most the size of the training data, got {batch_size}: {what}")
