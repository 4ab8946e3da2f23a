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

__all__ = ["DATASET_DEFAULTS"]

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
