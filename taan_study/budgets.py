"""What the study trains: the models, the coefficient grids and each data set's budget.

Every model of a data set gets the same budget (widths, epochs, batch, learning rate, schedule,
early-stopping patience); nothing here was chosen by looking at test results.
"""

from __future__ import annotations

from typing import Any

from taan_core.data.planted import PLANTED_STUDENT_TAAN
from taan_core.models import conv_variant
from taan_core.train._defaults import DATASET_DEFAULTS

__all__ = ["BRANCHED_VARIANTS", "BUDGETS", "DEFAULT_GRID", "QUICK_BUDGETS", "QUICK_GRID", "VARIANTS", "registry_of"]

# Display name -> (model registry name, regulariser), in table order. On a data set of images
# every name stands for its conv variant (registry_of): TAAN is then TAANConv, and every
# baseline has TAANConv's trunk with ReLU.
VARIANTS: dict[str, tuple[str, str]] = {
    "STL": ("stl", "none"),
    "HardShare": ("hard", "none"),
    "SoftOrder": ("soft-order", "none"),
    "CrossStitch": ("cross-stitch", "none"),
    "MMoE": ("mmoe", "none"),
    "TAAN": ("taan", "none"),
    "TAAN+tracenorm": ("taan", "tracenorm"),
    "TAAN+cosine": ("taan", "cosine"),
    "TAAN+distance": ("taan", "distance"),
}
BRANCHED_VARIANTS = ("Branched (TAAN tree)", "Branched (random)")
DEFAULT_GRID = (0.01, 0.1, 1.0)
QUICK_GRID = (0.01, 0.1)

_TRAIN_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "schedule", "patience", "eval_batch_size")
# TrainConfig fields a budget may set; without them a run takes TrainConfig's defaults.
_OPTIONAL_TRAIN_KEYS = ("sampler", "starts", "shared_warmup")


def _from_defaults(dataset: str, **changes: Any) -> dict[str, Any]:
    """A budget that is ``taan-core train``'s defaults of ``dataset`` (DATASET_DEFAULTS), so the
    study and the command line train the same networks; ``changes`` overrides entries."""
    d = DATASET_DEFAULTS[dataset]
    budget = {"data_config": {}, "hidden": list(d["hidden"]), "num_hinges": d["hinges"], "eval_batch_size": 1024,
              "taan": {**d["model_config"], **d["taan_config"]},
              **{k: d[k] for k in ("epochs", "batch_size", "lr", "weight_decay", "schedule", "patience",
                                   *_OPTIONAL_TRAIN_KEYS)}}
    budget.update(changes)
    return budget

# The training budget and model size of each data set. Every model of a data set gets the same
# one; nothing here was chosen by looking at test results.
BUDGETS: dict[str, dict[str, Any]] = {
    # `taan-core train`'s defaults of every data set (planted: the documented student, whose
    # TAANConfig fields "taan" holds; youtube8m and omniglot: the paper's settings; on omniglot's
    # images every model has TAANConv's trunk).
    name: _from_defaults(name) for name in ("planted", "digits", "exam", "youtube8m", "npz", "school", "omniglot")
}
# Tiny budgets that run the whole pipeline in a few minutes (a smoke test, not a result).
QUICK_BUDGETS: dict[str, dict[str, Any]] = {
    "planted": {"data_config": {"samples_per_task": 100}, "hidden": [16, 16, 16], "num_hinges": 4, "epochs": 2,
                "batch_size": 16, "lr": 3e-3, "weight_decay": 0.0, "schedule": "none", "patience": 0,
                "eval_batch_size": 1024,
                "taan": PLANTED_STUDENT_TAAN},
    "digits": {"data_config": {}, "hidden": [16, 16], "num_hinges": 4, "epochs": 2, "batch_size": 32,
               "lr": 1e-3, "weight_decay": 0.0, "schedule": "none", "patience": 0, "eval_batch_size": 1024},
    "exam": {"data_config": {}, "hidden": [8, 8], "num_hinges": 4, "epochs": 2, "batch_size": 16,
             "lr": 1e-3, "weight_decay": 0.0, "schedule": "none", "patience": 0, "eval_batch_size": 1024},
    "youtube8m": {"data_config": {}, "hidden": [64, 64, 64], "num_hinges": 8, "epochs": 1, "batch_size": 32,
                  "lr": 1e-4, "weight_decay": 0.005, "schedule": "none", "patience": 0, "eval_batch_size": 1024},
    "npz": {"data_config": {}, "hidden": [16, 16], "num_hinges": 4, "epochs": 2, "batch_size": 32,
            "lr": 1e-3, "weight_decay": 0.0, "schedule": "none", "patience": 0, "eval_batch_size": 1024},
}
QUICK_BUDGETS["school"] = _from_defaults("school", hidden=[8, 8], num_hinges=4, epochs=2, patience=0)
# 48 x 48 is the smallest side that TAANConv's four conv stages leave a pixel of (48 -> 23 -> 10 -> 4 -> 1).
QUICK_BUDGETS["omniglot"] = _from_defaults("omniglot", data_config={"image_size": 48}, hidden=[32], num_hinges=4,
                                           epochs=1, patience=0)
_FILE_DATASETS = ("school", "youtube8m", "npz", "omniglot")


def registry_of(registry: str, input_shape) -> str:
    """The registry name a study model of :data:`VARIANTS` is built as on inputs of ``input_shape``:
    its conv variant on images (``hard`` -> ``hard-conv``), itself otherwise; the rule of
    ``taan-core train`` (:func:`taan_core.models.conv_variant`)."""
    return conv_variant(registry, input_shape)


def _model_config(registry: str, budget: dict) -> dict:
    hidden = list(budget["hidden"])
    if registry in ("taan", "taan-conv"):
        return {"hidden": hidden, "num_hinges": int(budget["num_hinges"]), **budget.get("taan", {})}
    if registry in ("mmoe", "mmoe-conv"):
        # Experts as deep as the other trunks, linear towers; 4 experts keep it near the others' size.
        return {"hidden": hidden, "num_experts": int(budget.get("num_experts", 4)), "tower_hidden": []}
    return {"hidden": hidden}
