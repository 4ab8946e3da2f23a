"""taan_core: Task Adaptive Activation Networks.

The closed-form Gaussian function-space math, fast task-adaptive layers, TAAN models and
baselines, functional regularisers, data sets, the trainer and checkpoints.

Public names are re-exported lazily (PEP 562) so that ``import taan_core`` stays cheap and
commands that need only one piece (``taan-viz heatmap``) never import the rest.
"""

from __future__ import annotations

from taan_core._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # Gaussian function-space math
    "gram_matrix": "gaussian",
    "inner_product_matrix": "gaussian",
    "distance_matrix": "gaussian",
    "cosine_matrix": "gaussian",
    # layers
    "task_adaptive_activation": "functional",
    "task_adaptive_activation_reference": "functional",
    "TaskAdaptiveActivation": "layers",
    "TALinear": "layers",
    "TAConv2d": "layers",
    "adaptive_layers": "layers",
    # TAAN-ify an existing network
    "taanify": "adapt",
    "tasks": "adapt",
    "set_tasks": "adapt",
    "ContextTaskActivation": "adapt",
    "record_statistics": "adapt",
    # models
    "TAAN": "models",
    "TAANConv": "models",
    "SingleTask": "models",
    "HardShare": "models",
    "SoftOrder": "models",
    "CrossStitch": "models",
    "MMoE": "models",
    "MODELS": "models",
    "build_model": "models",
    "model_from_config": "models",
    # regularisers
    "trace_norm": "regularizers",
    "row_norm": "regularizers",
    "cosine_regularizer": "regularizers",
    "distance_regularizer": "regularizers",
    "functional_penalty": "regularizers",
    # how related the tasks are: the sharing tree, clusters, ARI
    "tree_from_checkpoint": "relatedness",
    "sharing_groups": "relatedness",
    "planted_ari": "relatedness",
    "adjusted_rand_index": "relatedness",
    # data, training, checkpoints
    "load_dataset": "data",
    "Trainer": "train",
    "TrainConfig": "train",
    "TensorBoardLogger": "_tensorboard",
    "Checkpoint": "checkpoint",
    "CheckpointError": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "build_checkpoint": "checkpoint",
    "model_from_checkpoint": "checkpoint",
    "save": "checkpoint",
}

__all__ = ["__version__", *_EXPORTS]

__getattr__, __dir__ = lazy_exports("taan_core", _EXPORTS, globals())
