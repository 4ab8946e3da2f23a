"""Tests of the omniglot source on a small generated tree of 105x105 1-bit PNGs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from taan_core.data import load_dataset, load_omniglot


def _png(path, value, size=105):
    # Paper white (1) with a black square whose position encodes ``value``.
    pixels = np.ones((size, size), dtype=bool)
    pixels[value:value + 10, 5:15] = False
    Image.fromarray(pixels).save(path)


def _tree(root, layout):
    """layout: {folder: {alphabet: number of characters}}; 5 drawings per character."""
    for folder, alphabets in layout.items():
        for alphabet, chars in alphabets.items():
            for c in range(chars):
                cdir = root / folder / alphabet / f"character{c + 1:02d}"
                cdir.mkdir(parents=True)
                for d in range(5):
                    _png(cdir / f"{c:04d}_{d + 1:02d}.png", value=10 * c + d)
    return root


@pytest.fixture()
def root(tmp_path):
    return _tree(tmp_path, {"images_background": {"Greek": 3, "Latin": 2}, "images_evaluation": {"Runic": 2}})


def test_one_task_per_alphabet(root):
    data = load_dataset("omniglot", data_path=str(root), seed=0)
    assert data.task_names == ["Greek", "Latin", "Runic"]
    assert [(t.kind, t.num_outputs) for t in data.tasks] == [("multiclass", 3), ("multiclass", 2), ("multiclass", 2)]
    assert data.input_shape == (1, 105, 105)
    train = data.split("train")
    x, y = train.get(0, torch.arange(train.num_samples(0)))
    assert x.dtype == torch.float32 and x.shape[1:] == (1, 105, 105)
    # Every class is in training, and every drawing is in exactly one split.
    assert set(y.tolist()) == {0, 1, 2}
    total = sum(data.split(s).num_samples(0) for s in ("train", "val", "test"))
    assert total == 15
    assert data.split("test").num_samples(0) == 3  # one of 5 drawings per character
    # Inverted: ink 1, paper 0; the ink square of class c starts at row 10 c + drawing.
    for xi, yi in zip(x, y):
        rows = torch.nonzero(xi[0].sum(dim=1)).flatten()
        assert xi.max() == 1.0 and xi.min() == 0.0
        assert 10 * int(yi) <= int(rows[0]) < 10 * int(yi) + 5


def test_resize_and_reproducible_split(root):
    data = load_omniglot(str(root), image_size=28, seed=4)
    assert data.input_shape == (1, 28, 28)
    assert data.split("val").get(1, torch.tensor([0]))[0].shape == (1, 1, 28, 28)
    again = load_dataset("omniglot", **data.config)
    torch.testing.assert_close(again.split("test").get(2, torch.tensor([0, 1]))[0], data.split("test").get(2, torch.tensor([0, 1]))[0])


def test_same_alphabet_in_both_folders_gets_prefixed(tmp_path):
    _tree(tmp_path, {"images_background": {"Greek": 2}, "images_evaluation": {"Greek": 2}})
    data = load_omniglot(str(tmp_path))
    assert data.task_names == ["images_background/Greek", "images_evaluation/Greek"]


def test_wrong_image_size_names_file(root):
    bad = root / "images_background" / "Latin" / "character02" / "0001_03.png"
    _png(bad, 0, size=64)
    with pytest.raises(ValueError, match=r"Latin/character02/0001_03\.png: image must be 105x105 pixels, got 64x64"):
        load_omniglot(str(root))


def test_corrupt_image_names_file(root):
    bad = root / "images_evaluation" / "Runic" / "character01" / "0000_01.png"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"Runic/character01/0000_01\.png: not a readable image"):
        load_omniglot(str(root))


def test_empty_class_and_small_alphabet(tmp_path):
    _tree(tmp_path, {"images_background": {"Greek": 2}})
    (tmp_path / "images_background" / "Greek" / "character03").mkdir()
    with pytest.raises(ValueError, match=r"character03: no \.png images \(empty class 2 of task 'Greek'\)"):
        load_omniglot(str(tmp_path))
    other = tmp_path / "other"
    _tree(other, {"images_background": {"Solo": 1}})
    with pytest.raises(ValueError, match=r"Solo: an alphabet needs at least 2 character folders, found 1"):
        load_omniglot(str(other))


def test_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="needs data_path"):
        load_omniglot(None)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_omniglot(str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="expected a folder images_background or images_evaluation"):
        load_omniglot(str(tmp_path))
    (tmp_path / "images_background").mkdir()
    with pytest.raises(ValueError, match="no alphabet folders"):
        load_omniglot(str(tmp_path))


@pytest.mark.slow
def test_a_png_declaring_a_huge_image_is_refused_before_decoding(root, monkeypatch):
    # A decompression bomb: a small file whose header declares 9000x9000 pixels (below Pillow's
    # own refusal, which starts at 2 * Image.MAX_IMAGE_PIXELS), and one beyond it.
    bad = root / "images_background" / "Greek" / "character01" / "0000_01.png"
    Image.new("1", (9000, 9000)).save(bad)
    assert bad.stat().st_size < 1_000_000
    with monkeypatch.context() as m:
        m.setattr(Image.Image, "convert", lambda *a, **k: pytest.fail("the image was decoded"))
        with pytest.raises(ValueError, match=r"Greek/character01/0000_01\.png: image must be 105x105 pixels, "
                                             r"got 9000x9000"):
            load_omniglot(str(root))
    Image.new("1", (40000, 40000)).save(bad)
    with pytest.raises(ValueError, match=r"Greek/character01/0000_01\.png: not a readable image \(Image size "
                                         r"\(1600000000 pixels\) exceeds limit"):
        load_omniglot(str(root))


def test_an_image_size_beyond_ten_times_the_stored_one_is_refused(root):
    with pytest.raises(ValueError, match=rf"^{root}: image_size must be at most 1050 \(ten times the stored 105 "
                                         r"pixels\), got 1000000$"):
        load_dataset("omniglot", data_path=str(root), image_size=1_000_000)
