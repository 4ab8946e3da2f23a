"""Training: any model of :mod:`taan_core.models` on a multi-task data set.

``Trainer(model, data, TrainConfig(...)).fit()`` runs mixed-task batches (per-sample task ids)
through the model, sums the per-task losses (weighted), adds the functional regulariser, and
after every epoch evaluates the validation split, snapshots every adaptive layer's alpha and
hinges, appends a line to ``metrics.jsonl``, writes ``last.pt`` and, when the validation
``main`` metric improved, ``checkpoint.pt`` (see ``docs/checkpoint-format.md``).

Training stops with ``TrainingDivergedError`` at the first non-finite loss or weight, naming the
epoch and the step; nothing of that epoch is written, and ``save_checkpoint`` refuses non-finite
weights in any case. While ``fit`` runs, the run folder is locked (``RunLock``): a second
training into it is refused. ``last.pt`` stores a fingerprint of the data, and ``fit(resume=True)``
refuses data that changed since (unless ``allow_data_change``).

A run is reproducible: ``fit(resume=True)`` continues from ``last.pt`` with the optimiser,
schedule, random states and sampler state, so on CPU an interrupted run (even one killed in the
middle of an epoch) ends with exactly the coordinates of an uninterrupted one. Under torchrun
every rank draws the same global batch and trains on its shard of it (DDP, gloo on CPU, nccl
on CUDA); rank 0 writes the files.

Modules: ``_trainer`` (the Trainer), ``_config`` (TrainConfig, TrainResult), ``_starts`` (the
candidate starts), ``_support`` (device choice, run folders and their lock, losses, random
states, the data fingerprint, metrics.jsonl), ``_distributed`` (torchrun / DDP), ``_progress``
(the progress line), ``_defaults`` (each data set's training defaults), ``_tensorboard`` (the
TensorBoard hook). Several seeds are the CLI's concern (``taan_core._cli_seeds``). The public names are the ones below.
"""

from __future__ import annotations

from taan_core.train._config import TrainConfig, TrainResult
from taan_core.train._defaults import DATASET_DEFAULTS, model_settings, train_config
from taan_core.train._support import (
    RUN_FILES,
    RunLock,
    RunLockedError,
    data_fingerprint,
    prepare_run_dir,
    resolve_device,
)
from taan_core.train._trainer import Trainer, TrainingDivergedError

__all__ = ["DATASET_DEFAULTS", "model_settings", "train_config", "RUN_FILES", "RunLock", "RunLockedError", "TrainConfig", "TrainResult", "Trainer", "TrainingDivergedError",
           "data_fingerprint", "prepare_run_dir", "resolve_device"]
