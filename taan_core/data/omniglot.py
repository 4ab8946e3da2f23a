"""Omniglot handwritten characters: one multiclass task per alphabet.

Expected layout under ``data_path`` (the layout of the official archives)::

    images_background/<Alphabet>/character01/<id>_<drawer>.png
    images_evaluation/<Alphabet>/character01/...

Both folders are used when present (the paper merges them into 50 alphabets). Task names are
the alphabet folder names (prefixed by the folder when the same alphabet appears in both); a
task's classes are its character folders in sorted order. Every character's drawings are split
at random (seeded) into train, val and test, so every class appears in training. Images are
grey scale, resized to ``image_size`` if it differs from the stored size, and inverted so that
ink is 1 and paper is 0; they are held in memory as uint8 (a quarter of float32's memory).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from taan_core._validation import check_int
from taan_core.data.base import SPLITS, MultiTaskData, TaskSpec, TensorSplit, _check_fractions, _split_indices

__all__ = ["load_omniglot", "OMNIGLOT_FOLDERS"]

OMNIGLOT_FOLDERS: tuple[str, ...] = ("images_background", "images_evaluation")
_IMAGE_SIZE = 105
# Ten times the stored size: larger only invents pixels, and a checkpoint's data.config asking for
# 10^6 would allocate 10^12 bytes per image.
_MAX_IMAGE_SIZE = 10 * _IMAGE_SIZE


def _subdirs(path: str) -> list[str]:
    return sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))


def _read_image(path: str, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            # The size is in the header: check it before decoding, so a small file declaring a
            # huge image (a decompression bomb) is refused without allocating its pixels.
            if img.size != (_IMAGE_SIZE, _IMAGE_SIZE):
                raise ValueError(
                    f"{path}: image must be {_IMAGE_SIZE}x{_IMAGE_SIZE} pixels, got {img.size[0]}x{img.size[1]}"
                )
            img = img.convert("L")
            if size != _IMAGE_SIZE:
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from err
    return 255 - pixels


def load_omniglot(
    data_path: str | None = None,
    *,
    image_size: int = _IMAGE_SIZE,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> MultiTaskData:
    """Load Omniglot as one multiclass task per alphabet.

    Parameters
    ----------
    data_path : str
        Folder holding ``images_background`` and/or ``images_evaluation``.
    image_size : int
        Side of the (square) images given to the model; 105 keeps the original size.
    val_fraction, test_fraction : float
        Fractions of every character's drawings held out for validation and test.
    seed : int
        Seed of the split.

    Returns
    -------
    MultiTaskData
        One multiclass task per alphabet, input shape ``(1, image_size, image_size)``.

    Raises
    ------
    ValueError
        If no alphabet folder is found, an alphabet has fewer than two characters or a
        character has no image (naming the folder), or an image is unreadable or not 105x105
        (naming the file).
    """
    if data_path is None:
        raise ValueError("the omniglot data set needs data_path, the folder holding images_background/images_evaluation")
    check_int(image_size, "image_size", minimum=1)
    if image_size > _MAX_IMAGE_SIZE:
        raise ValueError(f"{data_path}: image_size must be at most {_MAX_IMAGE_SIZE} (ten times the stored "
                         f"{_IMAGE_SIZE} pixels), got {image_size}")
    _check_fractions(val_fraction, test_fraction)
    check_int(seed, "seed", minimum=0)
    root = str(data_path)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such folder")
    found = [f for f in OMNIGLOT_FOLDERS if os.path.isdir(os.path.join(root, f))]
    if not found:
        raise ValueError(f"{root}: expected a folder {' or '.join(OMNIGLOT_FOLDERS)} inside it")
    alphabets = [(f, a) for f in found for a in _subdirs(os.path.join(root, f))]
    if not alphabets:
        raise ValueError(f"{root}: no alphabet folders under {', '.join(found)}")
    counts: dict[str, int] = {}
    for _, a in alphabets:
        counts[a] = counts.get(a, 0) + 1

    rng = np.random.default_rng([seed, 0x0A1F])
    tasks = []
    parts: dict[str, tuple[list, list]] = {s: ([], []) for s in SPLITS}
    for folder, alphabet in alphabets:
        adir = os.path.join(root, folder, alphabet)
        characters = _subdirs(adir)
        if len(characters) < 2:
            raise ValueError(f"{adir}: an alphabet needs at least 2 character folders, found {len(characters)}")
        name = alphabet if counts[alphabet] == 1 else f"{folder}/{alphabet}"
        tasks.append(TaskSpec(name, "multiclass", len(characters)))
        split_images: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
        split_labels: dict[str, list[int]] = {s: [] for s in SPLITS}
        for label, character in enumerate(characters):
            cdir = os.path.join(adir, character)
            files = sorted(f for f in os.listdir(cdir) if f.lower().endswith(".png"))
            if not files:
                raise ValueError(f"{cdir}: no .png images (empty class {label} of task {name!r})")
            images = [_read_image(os.path.join(cdir, f), image_size) for f in files]
            for which, idx in zip(SPLITS, _split_indices(len(files), val_fraction, test_fraction, rng)):
                split_images[which].extend(images[i] for i in idx)
                split_labels[which].extend([label] * len(idx))
        for which in SPLITS:
            imgs = split_images[which]
            x = np.stack(imgs)[:, None] if imgs else np.zeros((0, 1, image_size, image_size), np.uint8)
            parts[which][0].append(torch.from_numpy(x))
            parts[which][1].append(torch.tensor(split_labels[which], dtype=torch.long))
    splits = {
        which: TensorSplit(tasks, xs, ys, source=root, feature_scale=1.0 / 255.0)
        for which, (xs, ys) in parts.items()
    }
    config = {
        "data_path": root,
        "image_size": image_size,
        "val_fraction": float(val_fraction),
        "test_fraction": float(test_fraction),
        "seed": seed,
    }
    return MultiTaskData("omniglot", config, tasks, splits, input_shape=(1, image_size, image_size))
