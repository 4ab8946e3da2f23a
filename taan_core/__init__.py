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
    "task_adaptive_activation": "nn.functional",
    "task_adaptive_activation_reference": "nn.functional",
    "TaskAdaptiveActivation": "nn.layers",
    "TALinear": "nn.layers",
    "TAConv2d": "nn.layers",
    "adaptive_layers": "nn.layers",
    # TAAN-ify an existing network
    "taanify": "nn.adapt",
    "tasks": "nn.adapt",
    "set_tasks": "nn.adapt",
    "ContextTaskActivation": "nn.adapt",
    "record_statistics": "nn.adapt",
    "evaluate_tasks": "nn.adapt",
    # the shared warm-up in your own loop
    "adaptive_parameters": "nn.freeze",
    "freeze_adaptive": "nn.freeze",
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
    "trace_norm": "nn.regularizers",
    "row_norm": "nn.regularizers",
    "cosine_regularizer": "nn.regularizers",
    "distance_regularizer": "nn.regularizers",
    "functional_penalty": "nn.regularizers",
    # how related the tasks are: the sharing tree, clusters, ARI
    "separation": "relatedness",
    "network_distances": "relatedness",
    "tree_from_checkpoint": "relatedness",
    "branched_overrides": "relatedness",
    "sharing_groups": "relatedness",
    "threshold_groups": "relatedness",
    "planted_ari": "relatedness",
    "adjusted_rand_index": "relatedness",
    # data, training, checkpoints
    "load_dataset": "data",
    "Trainer": "train",
    "TrainConfig": "train",
    "TensorBoardLogger": "train._tensorboard",
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
