"""What a study runs, typed: :class:`StudyConfig` (the whole study) and :class:`RunSpec` (one run).

A :class:`StudyConfig` checks and normalises its fields when it is made, so that a bad setting
fails before anything trains. A :class:`RunSpec` is plain data (strings, numbers, lists and dicts)
so that it can be shipped to a worker process and stored beside its result in ``run.json``; a
finished run is reused when the stored spec equals the new one (:meth:`RunSpec.to_dict`).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from taan_study.budgets import _FILE_DATASETS, BUDGETS, DEFAULT_GRID, QUICK_BUDGETS, QUICK_GRID

__all__ = ["RunSpec", "StudyConfig"]


@dataclass(frozen=True)
class RunSpec:
    """One run of the study: a model, its data, its coefficient, its seed and its budget.

    Attributes
    ----------
    dataset : str
        A key of :data:`~taan_study.budgets.BUDGETS`.
    variant : str
        Display name of the model (``"TAAN+cosine"``, ``"Branched (random)"``, ...).
    registry : str
        Model registry name for :func:`taan_core.models.build_model`.
    model_config : dict
        Keyword arguments of ``build_model``.
    reg : str
        Regulariser (``"none"`` for the unregularised models).
    c : float
        Coefficient of the regulariser (0 without one).
    seed : int
    train : dict
        ``TrainConfig`` fields of the budget.
    run_dir : str
        The run's folder, relative to the study folder.
    data_path : str or None
        Data location of a file-based data set.
    data_config : dict
        Keyword arguments of ``load_dataset`` (the data set's full configuration).
    tree_source : str or None
        For branched networks: the run folder or checkpoint their tree came from.
    threads : int
        Torch threads of the run.
    device : str
    tree_threshold : float
        Relative threshold of the sharing tree recorded for TAANs.
    """

    dataset: str
    variant: str
    registry: str
    model_config: dict[str, Any]
    reg: str
    c: float
    seed: int
    train: dict[str, Any]
    run_dir: str
    data_path: str | None = None
    data_config: dict[str, Any] = field(default_factory=dict)
    tree_source: str | None = None
    threads: int = 1
    device: str = "cpu"
    tree_threshold: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (the form ``run.json`` stores)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunSpec":
        """The spec of a stored ``to_dict()`` (extra keys are an error)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown run spec fields {unknown}; valid: {', '.join(sorted(names))}")
        return cls(**copy.deepcopy(data))


def _check_datasets(datasets: Sequence[str] | str, data_path: str | None) -> tuple[str, ...]:
    if isinstance(datasets, str):
        datasets = [d for d in datasets.split(",") if d]
    names = [str(d).strip() for d in datasets]
    if not names:
        raise ValueError("datasets must name at least one data set")
    unknown = [d for d in names if d not in BUDGETS]
    if unknown:
        raise ValueError(f"unknown data set {unknown[0]!r} for the study; choose from {', '.join(BUDGETS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"datasets must not repeat, got {names}")
    needs_files = [d for d in names if d in _FILE_DATASETS]
    if needs_files and data_path is None:
        raise ValueError(f"data set {needs_files[0]!r} reads files: pass data_path (--data PATH)")
    if len(needs_files) > 1:
        raise ValueError(f"one data_path serves one file-based data set, got {needs_files}")
    return tuple(names)


def _check_seeds(seeds: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(seeds, bool):
        raise TypeError("seeds must be an int or a list of ints, got bool")
    from taan_core._cli_seeds import MAX_SEEDS

    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {seeds}")
        if seeds > MAX_SEEDS:
            raise ValueError(f"seeds must be at most {MAX_SEEDS}, got {seeds}")
        return tuple(range(seeds))
    if hasattr(seeds, "__len__") and len(seeds) > MAX_SEEDS:
        raise ValueError(f"seeds must name at most {MAX_SEEDS} seeds, got {len(seeds)}")
    out = [int(s) for s in seeds]
    if not out or any(s < 0 for s in out) or len(set(out)) != len(out):
        raise ValueError(f"seeds must be distinct ints >= 0, got {list(seeds)}")
    return tuple(out)


def _check_grid(grid: Sequence[float]) -> tuple[float, ...]:
    values = [float(c) for c in grid]
    if not values or any(not (c > 0 and c < float("inf")) for c in values):
        raise ValueError(f"grid must hold finite coefficients > 0, got {list(grid)}")
    return tuple(values)


@dataclass(frozen=True)
class StudyConfig:
    """Settings of a reproduction study (:func:`~taan_study.study.run_study`).

    The fields are checked and normalised when the config is made: ``datasets``, ``seeds`` and
    ``grid`` become tuples, the defaults that depend on ``quick`` are filled in, paths become
    strings (``out`` a Path).

    Attributes
    ----------
    datasets : sequence of str or comma-separated str
        Keys of :data:`~taan_study.budgets.BUDGETS` (planted, digits, exam, school, youtube8m, npz,
        omniglot). On omniglot's images every model has TAANConv's trunk.
    seeds : int or sequence of int
        Number of seeds (0, 1, ...) or the seeds themselves.
    quick : bool
        Use :data:`~taan_study.budgets.QUICK_BUDGETS` and a two-value grid: the whole pipeline
        in minutes.
    out : path
        Study folder: ``results.json``, ``tables.md``, ``table1.md``, ``table2.md``, ``runs/``
        (one folder per run with its checkpoints) and ``figures/``.
    data_path : path, optional
        Data location of the file-based data set (school, youtube8m, npz, omniglot).
    grid : sequence of float, optional
        Coefficients c tried for every regularised TAAN (default
        :data:`~taan_study.budgets.DEFAULT_GRID`, :data:`~taan_study.budgets.QUICK_GRID` with
        ``quick``).
    tree_from : path, optional
        A TAAN checkpoint whose sharing tree the branched networks of its data set follow,
        instead of the tree of each seed's TAAN trained here.
    tree_threshold : float
        Relative threshold of the sharing trees (see :mod:`taan_core.relatedness`).
    grid_seeds : int, optional
        Run the grid on the first ``grid_seeds`` seeds only, choose c there, and train the
        other seeds at the chosen c (default: the grid on every seed).
    budgets : dict, optional
        Per-data-set overrides of the budget entries (``{"planted": {"epochs": 5}}``).
    timing_repeats : int, optional
        Rounds of the timing pass (every selected model trains one epoch per round, models
        interleaved, one at a time); 3 by default, 1 with ``quick``, 0 skips it.
    workers : int, optional
        Runs trained at the same time (separate processes); default 1, 2 with ``quick``.
    threads : int
        Torch threads per run (1 is fastest for these small models on a shared CPU).
    device : str
        Device of every run ("cpu", "cuda", "auto", ...).
    resume : bool
        Reuse the records of finished runs in ``out`` whose settings are identical.
    figures : bool
        Draw heatmaps and sharing trees of the best TAAN runs with taan_viz.
    linear : bool
        Fit the linear baselines of :mod:`taan_study.linear` (ridge or logistic regression per
        task, pooled, pooled with task intercepts) on every data set where they apply.

    Raises
    ------
    TypeError, ValueError
        For a setting out of its range (the message names the field).
    """

    datasets: Sequence[str] | str = ("planted", "digits", "exam")
    seeds: int | Sequence[int] = 3
    quick: bool = False
    out: str | os.PathLike = "runs/reproduce"
    data_path: str | os.PathLike | None = None
    grid: Sequence[float] | None = None
    tree_from: str | os.PathLike | None = None
    tree_threshold: float = 0.1
    grid_seeds: int | None = None
    budgets: dict[str, dict[str, Any]] | None = None
    timing_repeats: int | None = None
    workers: int | None = None
    threads: int = 1
    device: str = "cpu"
    resume: bool = True
    figures: bool = True
    linear: bool = True

    def __post_init__(self) -> None:
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        put("data_path", None if self.data_path is None else str(self.data_path))
        put("datasets", _check_datasets(self.datasets, self.data_path))
        put("seeds", _check_seeds(self.seeds))
        put("grid", _check_grid(self.grid if self.grid is not None else (QUICK_GRID if self.quick else DEFAULT_GRID)))
        workers = self.workers
        if workers is None:
            workers = min(2, os.cpu_count() or 1) if self.quick else 1
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        put("workers", workers)
        grid_seeds = len(self.seeds) if self.grid_seeds is None else self.grid_seeds
        if isinstance(grid_seeds, bool) or not isinstance(grid_seeds, int) or not 1 <= grid_seeds <= len(self.seeds):
            raise ValueError(f"grid_seeds must be an int in [1, {len(self.seeds)}] (the number of seeds), "
                             f"got {grid_seeds!r}")
        put("grid_seeds", grid_seeds)
        repeats = (1 if self.quick else 3) if self.timing_repeats is None else self.timing_repeats
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 0:
            raise ValueError(f"timing_repeats must be an int >= 0, got {repeats!r}")
        put("timing_repeats", repeats)
        base = QUICK_BUDGETS if self.quick else BUDGETS
        for dataset, overrides in (self.budgets or {}).items():
            if dataset not in self.datasets:
                raise ValueError(f"budgets names {dataset!r}, which is not among the study's data sets "
                                 f"{list(self.datasets)}")
            unknown = set(overrides) - set(base[dataset]) - {"num_experts"}
            if unknown:
                raise ValueError(f"unknown budget entries {sorted(unknown)}; valid: {', '.join(base[dataset])}")
        put("budgets", copy.deepcopy(dict(self.budgets or {})))
        put("out", Path(self.out))
        put("tree_from", None if self.tree_from is None else str(self.tree_from))
        put("tree_threshold", float(self.tree_threshold))
        if not isinstance(self.linear, bool):
            raise TypeError(f"linear must be a bool, got {type(self.linear).__name__}")

    def data_path_of(self, dataset: str) -> str | None:
        """The data location of ``dataset``: :attr:`data_path` for a file-based one, else None."""
        return self.data_path if dataset in _FILE_DATASETS else None

    def budget(self, dataset: str) -> dict[str, Any]:
        """A fresh copy of ``dataset``'s budget (quick or full) with :attr:`budgets` applied."""
        base = QUICK_BUDGETS if self.quick else BUDGETS
        chosen = copy.deepcopy(base[dataset])
        chosen.update(copy.deepcopy(self.budgets.get(dataset, {})))
        return chosen
