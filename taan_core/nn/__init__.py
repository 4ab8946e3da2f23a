"""The task-adaptive activation and what is built on it.

``functional`` holds the op ``task_adaptive_activation`` (a segment lookup: a search and a
gather forward, a scatter backward) and its naive reference; ``_lookup`` its segment tables and
the ``torch.library`` custom ops; ``_kernels`` with ``_kernels.c`` the fused C kernels of those
ops on CPU. ``layers`` wraps the op as modules (``TaskAdaptiveActivation``, ``TALinear``,
``TAConv2d``); ``adapt`` puts them into any network (``taanify``, ``tasks``, ``evaluate_tasks``);
``freeze`` holds their coefficients for a shared warm-up (``adaptive_parameters``,
``freeze_adaptive``); ``regularizers`` are the functional regularisers on their coordinate
matrices.

Public names are re-exported lazily, as in :mod:`taan_core`.
"""

from __future__ import annotations

from taan_core._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "task_adaptive_activation": "functional",
    "task_adaptive_activation_reference": "functional",
    "TaskAdaptiveActivation": "layers",
    "TALinear": "layers",
    "TAConv2d": "layers",
    "adaptive_layers": "layers",
    "ContextTaskActivation": "adapt",
    "evaluate_tasks": "adapt",
    "adaptive_parameters": "freeze",
    "freeze_adaptive": "freeze",
    "record_statistics": "adapt",
    "set_tasks": "adapt",
    "taanify": "adapt",
    "tasks": "adapt",
    "REGULARIZERS": "regularizers",
    "cosine_regularizer": "regularizers",
    "distance_regularizer": "regularizers",
    "functional_penalty": "regularizers",
    "row_norm": "regularizers",
    "trace_norm": "regularizers",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports("taan_core.nn", _EXPORTS, globals())
