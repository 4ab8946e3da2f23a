"""Checkpoints: the file that is the one contract between training and analysis (schema v2).

A checkpoint is a ``.pt`` file written by ``torch.save`` that holds only tensors and plain Python
types (dict, list, tuple, str, int, float, bool, None), so that ``torch.load(weights_only=True)``
reads it without running any code. ``docs/checkpoint-format.md`` documents every field.

``save_checkpoint`` writes atomically: a temporary file in the same folder, flushed and fsynced,
then moved into place with ``os.replace``; a crash at any moment leaves either the old file or
the new one, never a torn one. ``load_checkpoint`` checks the whole schema (types, shapes, the
number of tasks T and of hinges M of every layer) and also reads ``.safetensors`` exports and
bare state_dicts of the reference TAAN code. Every problem raises ``CheckpointError`` with one
line naming the file, the field and what was expected.

Modules: ``_io`` builds, saves and loads files and rebuilds models; ``_schema`` checks a
checkpoint field by field (``CheckpointError``); ``_history`` keeps the per-epoch records as
v2 stores them (``History``, ``MetricsLog``); ``_reference`` reads bare state_dicts (taan's
and the reference code's key names) and whole reference models; ``_export`` writes the
``.safetensors`` export. The public names are the ones below.
"""

from __future__ import annotations

from taan_core.checkpoint._export import export_safetensors
from taan_core.checkpoint._history import History, MetricsLog
from taan_core.checkpoint._io import (
    Checkpoint,
    build_checkpoint,
    layer_snapshot,
    load_checkpoint,
    model_from_checkpoint,
    save,
    save_checkpoint,
    validate_checkpoint,
)
from taan_core.checkpoint._schema import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CheckpointError, LayerRecord

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "History",
    "LayerRecord",
    "MetricsLog",
    "build_checkpoint",
    "export_safetensors",
    "layer_snapshot",
    "load_checkpoint",
    "model_from_checkpoint",
    "save",
    "save_checkpoint",
    "validate_checkpoint",
]
