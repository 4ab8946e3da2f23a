"""scikit-learn's handwritten digits (1797 images of 8x8) as 10 one-vs-rest binary tasks.

Task ``t`` ("digit_t") asks whether an image shows the digit ``t``. The images are first split
into train, val and test (seeded, stratified by digit), so no image used for testing any task
is ever trained on by another. With ``balanced=True`` (default) a task holds all positives of
its split and an equal number of negatives drawn (seeded) from the other nine digits, so chance
accuracy is 0.5 and the tasks see different inputs; with ``balanced=False`` every task holds
every image of the split (10% positives). Features are the 64 pixel intensities standardised
with the training images' mean and standard deviation.
"""

from __future__ import annotations

import numpy as np
import torch

from taan_core._validation import check_int
from taan_core.data.base import MultiTaskData, TaskSpec, TensorSplit, _check_fractions

__all__ = ["load_digits"]


def _stratified_split(y: np.ndarray, val_fraction: float, test_fraction: float, rng: np.random.Generator):
    from taan_core.data.base import _split_indices

    parts: list[list[np.ndarray]] = [[], [], []]
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        for part, idx in zip(parts, _split_indices(rows.size, val_fraction, test_fraction, rng)):
            part.append(rows[idx])
    return [np.sort(np.concatenate(p)) for p in parts]


def load_digits(
    data_path: str | None = None,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    balanced: bool = True,
    seed: int = 0,
) -> MultiTaskData:
    """Load the digits data set as 10 binary tasks.

    Parameters
    ----------
    data_path : None
        Unused (the data ship with scikit-learn).
    val_fraction, test_fraction : float
        Fractions of the images (per digit) held out for validation and test.
    balanced : bool
        Pair each task's positives with as many negatives (see the module docstring).
    seed : int
        Seed of the split and of the negative sampling.

    Returns
    -------
    MultiTaskData
        10 binary tasks ``digit_0`` .. ``digit_9``, input shape (64,).
    """
    from taan_core.errors import require

    _sklearn_digits = require("sklearn.datasets", package="scikit-learn", extra="digits",
                              purpose="the digits data set").load_digits

    if data_path is not None:
        raise ValueError(f"the digits data set ships with scikit-learn, it reads no files; got data_path={data_path!r}")
    _check_fractions(val_fraction, test_fraction)
    check_int(seed, "seed", minimum=0)
    if not isinstance(balanced, bool):
        raise TypeError(f"balanced must be a bool, got {type(balanced).__name__}")
    bunch = _sklearn_digits()
    x = bunch.data.astype(np.float64)
    digit = bunch.target.astype(np.int64)
    rng = np.random.default_rng([seed, 0xD161])
    rows = _stratified_split(digit, val_fraction, test_fraction, rng)
    mean = x[rows[0]].mean(axis=0)
    std = x[rows[0]].std(axis=0)
    # Border pixels are always 0 in training: leave them at 0 instead of dividing by 0.
    std = np.where(std > 1e-8, std, 1.0)
    x = (x - mean) / std

    tasks = [TaskSpec(f"digit_{t}", "binary", 1) for t in range(10)]
    splits = {}
    for which, part in zip(("train", "val", "test"), rows):
        xs, ys = [], []
        for t in range(10):
            pos = part[digit[part] == t]
            neg = part[digit[part] != t]
            if balanced:
                neg = np.sort(rng.choice(neg, size=min(pos.size, neg.size), replace=False))
            take = np.concatenate([pos, neg])
            take.sort()
            xs.append(torch.from_numpy(x[take]).float())
            ys.append(torch.from_numpy((digit[take] == t).astype(np.float32)).reshape(-1, 1))
        splits[which] = TensorSplit(tasks, xs, ys, source="digits (scikit-learn)")
    config = {"val_fraction": float(val_fraction), "test_fraction": float(test_fraction), "balanced": balanced, "seed": seed}
    return MultiTaskData("digits", config, tasks, splits, input_shape=(64,))
