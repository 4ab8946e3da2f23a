"""Each data set's training defaults: what ``taan-core train`` uses for an option not given.

One table for the command line, the benchmarks and the study's exam and school budgets. Every entry names
every key, so a default is read here and nowhere else:

- ``model``, ``hidden`` (widths), ``hinges`` (M): the network;
- ``epochs``, ``batch_size``, ``sampler``, ``lr``, ``weight_decay``, ``schedule``, ``patience``,
  ``shared_warmup``, ``starts``: the :class:`~taan_core.train.TrainConfig` fields of the same names;
- ``threads``: torch's CPU threads (0: torch's default);
- ``model_config``: further fields of the model's config, applied to every model whose config
  has them (``dropout`` reaches the baselines too, so that they train like the TAAN);
- ``taan_config``: further fields of the TAAN's config only (planted's documented student).

planted is sized to train in about a minute on two CPU cores; youtube8m and omniglot follow the
paper's reference settings; school was chosen on the validation splits of split seeds 100-104
(docs/results.md), never on the 0-9 that the protocol reports.
"""

from __future__ import annotations

import copy
from typing import Any

from taan_core.data.planted import PLANTED_STUDENT_TAAN

__all__ = ["DATASET_DEFAULTS", "model_settings", "train_config"]

_COMMON: dict[str, Any] = {"sampler": "balanced", "shared_warmup": 0.1, "starts": 3, "threads": 0, "model_config": {},
                           "taan_config": {}}
# Small tabular data (school, exam): chosen on school's validation splits of split seeds 100-104
# and confirmed on exam's (docs/results.md). One head for all tasks, so the tasks differ only in
# their activations (a per-task head of 32 weights overfits a school's 14-160 training
# students); the proportional sampler weighs every student once, as the pooled explained
# variance does. Tiny models: one thread.
_SMALL_TABULAR: dict[str, Any] = {
    "model": "taan", "hidden": [32, 32], "hinges": 8, "epochs": 30, "batch_size": 64, "sampler": "proportional",
    "lr": 1e-3, "weight_decay": 0.0, "patience": 5, "schedule": "none", "threads": 1,
    "model_config": {"shared_head": True},
}

DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    # Deep copies: no two entries share a list or dict that a caller could change for both.
    name: copy.deepcopy({**_COMMON, **entry}) for name, entry in {
        # The planted student is twice as wide as its teacher (16 units): a narrower student fits
        # it poorly and a wider one (64) recovers its tree less often (docs/data.md).
        # Patience 10 never stopped any of the study's 39 planted runs (the cosine schedule puts
        # the best validation epoch at 39-45 of 45), so it costs nothing there and guards a run
        # that stalls; 5 would have cut one run short (docs/training.md).
        "planted": {"model": "taan", "hidden": [32, 32, 32], "hinges": 4, "epochs": 45, "batch_size": 16,
                    "lr": 1e-2, "weight_decay": 0.0, "patience": 10, "schedule": "cosine", "threads": 1,
                    "taan_config": PLANTED_STUDENT_TAAN},
        "digits": {"model": "taan", "hidden": [64, 64], "hinges": 8, "epochs": 30, "batch_size": 16, "lr": 1e-3,
                   "weight_decay": 0.0, "patience": 5, "schedule": "none"},
        "exam": _SMALL_TABULAR,
        "school": _SMALL_TABULAR,
        "youtube8m": {"model": "taan", "hidden": [1024, 1024, 1024], "hinges": 64, "epochs": 10, "batch_size": 256,
                      "lr": 1e-4, "weight_decay": 0.005, "patience": 3, "schedule": "none"},
        "omniglot": {"model": "taan-conv", "hidden": [512], "hinges": 32, "epochs": 50, "batch_size": 5, "lr": 1e-4,
                     "weight_decay": 0.005, "patience": 10, "schedule": "none"},
        "npz": {"model": "taan", "hidden": [256, 256, 256], "hinges": 16, "epochs": 20, "batch_size": 32, "lr": 1e-3,
                "weight_decay": 0.0, "patience": 5, "schedule": "none"},
    }.items()
}


# The entries of a DATASET_DEFAULTS entry that are TrainConfig fields of the same name.
_TRAIN_FIELDS = ("epochs", "batch_size", "sampler", "lr", "weight_decay", "schedule", "patience", "shared_warmup",
                 "starts", "threads")


def train_config(dataset: str, **given: Any):
    """The :class:`~taan_core.train.TrainConfig` that ``taan-core train`` uses on ``dataset``.

    Parameters
    ----------
    dataset : str
        A key of :data:`DATASET_DEFAULTS`.
    **given
        TrainConfig fields; a field given as None (an option left out) takes the data set's
        default, then TrainConfig's.

    Raises
    ------
    KeyError
        For an unknown data set.
    TypeError
        For a name that is no TrainConfig field.
    ValueError
        From TrainConfig's checks of the values.
    """
    import dataclasses

    from taan_core.train._config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(given) - fields)
    if unknown:
        raise TypeError(f"train_config: {', '.join(unknown)} is not a TrainConfig field")
    defaults = DATASET_DEFAULTS[dataset]
    values = {key: copy.deepcopy(defaults[key]) for key in _TRAIN_FIELDS}
    values.update({key: value for key, value in given.items() if value is not None})
    return TrainConfig(**values)


def model_settings(dataset: str, model: str, *, hidden: "list[int] | None" = None,
                   hinges: "int | None" = None) -> dict[str, Any]:
    """The config fields ``taan-core train`` gives ``model`` on ``dataset``.

    The widths and the hinge count (given, or the data set's) where the model's config has
    them, the data set's ``model_config`` fields that the config has, and for the TAAN its
    ``taan_config``. ``build_model(model, shape, dims, **model_settings(...))`` builds it.

    Returns
    -------
    dict
    """
    import dataclasses

    from taan_core.models import MODELS

    defaults = DATASET_DEFAULTS[dataset]
    fields = {f.name for f in dataclasses.fields(MODELS[model].config_class)}
    settings = {k: copy.deepcopy(v) for k, v in defaults["model_config"].items() if k in fields}
    if "hidden" in fields:
        settings["hidden"] = list(defaults["hidden"] if hidden is None else hidden)
    if "num_hinges" in fields:
        settings["num_hinges"] = defaults["hinges"] if hinges is None else hinges
    if model == "taan":
        settings.update(copy.deepcopy(defaults["taan_config"]))
    return settings
