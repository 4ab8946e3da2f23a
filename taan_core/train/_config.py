"""The configuration and the result of a training run (plain data, stored in checkpoints).

``TrainConfig`` is what ``taan-core train`` and ``Trainer`` take; its ``asdict`` travels in every
checkpoint as ``extra.train_config`` so that ``--resume`` rebuilds the run. ``TrainResult`` is
what ``Trainer.fit`` returns.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from taan_core._names import MEASURE_NAMES, REG_NAMES

__all__ = ["TrainConfig", "TrainResult"]

_OPTIMIZERS = ("adam", "adamw")
_SCHEDULES = ("none", "cosine", "step")
_SAMPLERS = ("balanced", "proportional")
_MEASURES = MEASURE_NAMES
_REGS = REG_NAMES
# Upper bounds far beyond any useful value and far below where the optimiser overflows: Adam's
# first step is lr / (1 - beta1) = 10 lr in float32 (max 3.4e38), and c scales a penalty that
# can itself be large. torch seeds are 64-bit signed integers.
_MAXIMA = {"lr": 1e6, "weight_decay": 1e6, "c": 1e6}
MAX_SEED = 2**63 - 1


@dataclass
class TrainConfig:
    """Everything that decides a training run (plain types; stored in the checkpoint).

    Attributes
    ----------
    epochs : int
        Maximum number of epochs (an epoch is one pass of the batch sampler).
    batch_size : int
        Samples per task per batch in balanced mode (a batch holds T * batch_size samples), the
        whole batch size in proportional mode. Under torchrun this is the global batch.
    sampler : {"balanced", "proportional"}
    optimizer : {"adam", "adamw"}
    lr, weight_decay : float
        lr in (0, 1e6], weight_decay in [0, 1e6].
    schedule : {"none", "cosine", "step"}
        Learning-rate schedule: cosine annealing per step, reaching 0 at the end of epoch
        ``epochs``, or a factor ``lr_gamma`` every ``lr_step`` epochs.
    lr_step : int
    lr_gamma : float
    task_weights : list of float or None
        Weight of every task's loss (T values); None weighs all tasks 1.
    reg : {"none", "tracenorm", "rownorm", "cosine", "distance"}
        Regulariser of the adaptive layers (``taan_core.nn.regularizers``), with coefficient ``c``.
    c : float
        In [0, 1e6].
    measure : {"standard", "data"}
        Gaussian measure of the functional regularisers: N(0, 1) or the running statistics.
    shared_warmup : float
        Fraction of ``epochs`` (rounded to the nearest epoch, halves up, and at most
        ``epochs - 1``) at the start of training during which the
        task-adaptive coefficients ``alpha`` and the hinges stay at their initial values, so every
        task starts with the same activation and the shared weights learn the common function
        first (hard sharing); 0 adapts from the first step. Without it a run can commit, in its
        first epoch, to task differences carried by the wrong layer (docs/training.md).
    starts : int
        Candidate starts: differently initialised copies of the model trained for the first
        ``start_epochs`` of the run, of which the one with the best validation metric continues
        (start 0 is the model as given; 1 trains it alone). A run's outcome can be decided by its
        initial weights (docs/training.md); this makes it depend on the best of several.
    start_epochs : float
        Fraction of ``epochs`` (rounded, at least 1, at most ``epochs``) each candidate trains
        before the choice.
    patience : int
        Stop after this many epochs without improvement of the validation ``main`` metric
        (by more than ``min_delta``); 0 never stops early.
    min_delta : float
    eval_batch_size : int
    device : str
        "auto" (cuda, then mps, then cpu), or a torch device string.
    amp : bool
        bf16 autocast on CUDA (ignored on other devices).
    compile : bool or str
        Run the training forward through ``torch.compile``: True with its default backend
        (inductor), a str with that backend (e.g. "aot_eager", which compiles in seconds).
    seed : int
        Seeds torch, numpy, python and the batch sampler; in [0, 2**63 - 1].
    deterministic : bool
        ``torch.use_deterministic_algorithms`` and deterministic cuDNN.
    threads : int
        CPU threads of torch's intra-op pool for the run; 0 leaves torch's setting. Small models
        train fastest on one thread (a pool costs more than it gains on tiny matrices and
        collapses when the cores are shared).
    out : str
        Run folder for last.pt, checkpoint.pt and metrics.jsonl.
    quiet : bool
        No progress bar and no per-epoch lines.
    """

    epochs: int = 20
    batch_size: int = 32
    sampler: str = "balanced"
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "none"
    lr_step: int = 10
    lr_gamma: float = 0.1
    task_weights: list[float] | None = None
    reg: str = "none"
    c: float = 0.0
    measure: str = "standard"
    shared_warmup: float = 0.1
    starts: int = 3
    start_epochs: float = 0.2
    patience: int = 0
    min_delta: float = 0.0
    eval_batch_size: int = 1024
    device: str = "auto"
    amp: bool = True
    compile: bool | str = False
    seed: int = 0
    deterministic: bool = False
    threads: int = 0
    out: str = "runs/train"
    quiet: bool = False

    @property
    def warmup_epochs(self) -> int:
        """Epochs of the shared warm-up: ``shared_warmup * epochs`` rounded, at most ``epochs - 1``."""
        return min(math.floor(self.shared_warmup * self.epochs + 0.5), self.epochs - 1)

    @property
    def trial_epochs(self) -> int:
        """Epochs each candidate start trains before the choice (0 with a single start)."""
        if self.starts == 1:
            return 0
        return max(1, min(math.floor(self.start_epochs * self.epochs + 0.5), self.epochs))

    def __post_init__(self) -> None:
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("lr_step", 1), ("patience", 0), ("starts", 1),
                              ("eval_batch_size", 1), ("seed", 0), ("threads", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {value}")
        for name in ("lr", "weight_decay", "lr_gamma", "c", "min_delta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a float, got {type(value).__name__}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
            if name in _MAXIMA and value > _MAXIMA[name]:
                raise ValueError(f"{name} must be <= {_MAXIMA[name]:g}, got {value:g}")
            setattr(self, name, float(value))
        if self.seed > MAX_SEED:
            raise ValueError(f"seed must be <= 2**63 - 1, got {self.seed}")
        cores = os.cpu_count() or 1
        if self.threads > cores:
            # torch sizes its thread pool without a bound: 100,000 threads ended in a segfault.
            raise ValueError(f"threads must be at most the {cores} CPU cores of this machine (0: torch's default), "
                             f"got {self.threads}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if isinstance(self.shared_warmup, bool) or not isinstance(self.shared_warmup, (int, float)):
            raise TypeError(f"shared_warmup must be a float, got {type(self.shared_warmup).__name__}")
        if not 0.0 <= self.shared_warmup < 1.0:
            raise ValueError(f"shared_warmup must be a fraction of the epochs in [0, 1), got {self.shared_warmup}")
        self.shared_warmup = float(self.shared_warmup)
        if isinstance(self.start_epochs, bool) or not isinstance(self.start_epochs, (int, float)):
            raise TypeError(f"start_epochs must be a float, got {type(self.start_epochs).__name__}")
        if not 0.0 < self.start_epochs <= 1.0:
            raise ValueError(f"start_epochs must be a fraction of the epochs in (0, 1], got {self.start_epochs}")
        self.start_epochs = float(self.start_epochs)
        for name, choices in (("sampler", _SAMPLERS), ("optimizer", _OPTIMIZERS), ("schedule", _SCHEDULES),
                              ("reg", _REGS), ("measure", _MEASURES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if not isinstance(self.compile, (bool, str)) or self.compile == "":
            raise TypeError(f"compile must be a bool or a backend name, got {self.compile!r}")
        for name in ("amp", "deterministic", "quiet"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {type(getattr(self, name)).__name__}")
        if not isinstance(self.device, str):
            raise TypeError(f"device must be a str, got {type(self.device).__name__}")
        self.out = os.fspath(self.out)
        if self.task_weights is not None:
            weights = list(self.task_weights)
            if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
                       for w in weights):
                raise ValueError(f"task_weights must be finite floats >= 0, got {weights}")
            self.task_weights = [float(w) for w in weights]


@dataclass(frozen=True)
class TrainResult:
    """What ``Trainer.fit`` did: epochs completed, the best epoch and where the files are."""

    out: Path
    epochs: int
    steps: int
    best_epoch: int
    best_main: float
    stopped_early: bool
    seconds: float
    metrics: list[dict] = field(default_factory=list)

    @property
    def checkpoint(self) -> Path:
        return self.out / "checkpoint.pt"

    @property
    def files(self) -> list[Path]:
        """The run files now in ``out``; checkpoint.pt is missing when validation was never finite."""
        return [self.out / name for name in ("checkpoint.pt", "last.pt", "metrics.jsonl") if (self.out / name).is_file()]

    @property
    def last(self) -> Path:
        return self.out / "last.pt"
