"""The names a user chooses from, written once.

The registries (``taan_core.data.DATASETS``, ``taan_core.models.MODELS``,
``taan_core.nn.regularizers.REGULARIZERS``) map these names to code; the CLI's choices,
``TrainConfig``'s checks and the docs read them from here. This module imports nothing, so the
CLI can offer its choices without importing torch; tests/core/cli/test_cli.py checks that the
registries and ``--help`` list exactly these names.
"""

from __future__ import annotations

__all__ = ["DATASET_NAMES", "LOG_NAMES", "MEASURE_NAMES", "MODEL_NAMES", "REG_NAMES"]

DATASET_NAMES = ("planted", "digits", "exam", "school", "youtube8m", "omniglot", "npz")
MODEL_NAMES = ("taan", "taan-conv", "stl", "hard", "soft-order", "cross-stitch", "mmoe", "branched", "hard-conv",
               "stl-conv", "soft-order-conv", "cross-stitch-conv", "mmoe-conv", "branched-conv")
REG_NAMES = ("none", "tracenorm", "rownorm", "cosine", "distance")
# The Gaussian measures of the function-space geometry: each layer's recorded pre-activation
# statistics, or N(0, 1) as in the paper.
MEASURE_NAMES = ("standard", "data")
LOG_NAMES = ("none", "tensorboard")
