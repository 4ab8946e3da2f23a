"""taan_viz.plots._style: saving with metadata, editable SVG/PDF text, deterministic files."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from taan_viz.plots._style import (
    OKABE_ITO,
    category_color,
    category_linestyle,
    draw_names,
    measure_label,
    name_texts,
    paper_style,
    save_figure,
    short_label,
    text_color_for,
)

META = {"version": "9.9", "sha256": "ab" * 32, "title": "t", "description": "d.", "source": "run/checkpoint.pt"}


def _fig():
    fig = Figure(figsize=(2, 1.5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1])
    ax.set_title("editable title")
    return fig


def test_png_metadata(tmp_path):
    path = save_figure(_fig(), tmp_path / "f.png", dpi=100, metadata=META)
    info = Image.open(path).info
    assert info["Software"] == "taan-viz 9.9"
    assert info["Checkpoint-SHA256"] == "ab" * 32
    assert info["Source"] == "run/checkpoint.pt"
    assert "ab" * 32 in info["Description"]


def _laid_out_fig():
    fig = Figure(figsize=(2.4, 1.6), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1])
    ax.set_title("laid out")
    draw_names(ax, [0.2, 0.8], ["first", "second"], ["C0", "C1"])
    return fig


def test_png_of_a_laid_out_figure_is_what_savefig_draws(tmp_path):
    """The one-pass PNG writer: the same pixels as matplotlib's savefig, RGB when the page is
    opaque, RGBA when it is not, with the metadata and the resolution."""
    fig = _laid_out_fig()
    path = save_figure(fig, tmp_path / "fast.png", dpi=80, metadata=META)
    _laid_out_fig().savefig(tmp_path / "plain.png", dpi=80, facecolor="white")
    fast, plain = Image.open(path), Image.open(tmp_path / "plain.png")
    assert fast.mode == "RGB" and fast.size == plain.size == (192, 128)
    np.testing.assert_array_equal(np.asarray(fast), np.asarray(plain.convert("RGB")))
    assert fast.info["Software"] == "taan-viz 9.9" and round(fast.info["dpi"][0]) == 80
    # The figure is left as it was: its canvas, resolution and layout engine.
    assert fig.dpi == 100 and fig.get_layout_engine() is not None and fig.canvas.figure is fig
    from taan_viz.plots._style import savefig_once

    savefig_once(_laid_out_fig(), tmp_path / "clear.png", format="png", dpi=80, facecolor="none")
    assert Image.open(tmp_path / "clear.png").mode == "RGBA"


def test_draw_names():
    fig = _laid_out_fig()
    ax = fig.axes[0]
    texts = name_texts(ax)
    assert [t.get_text() for t in texts] == ["first", "second"] and texts[1].get_color() == "C1"
    bottom = draw_names(ax, [0.5], ["under"], side="bottom", fontsize=5)
    assert bottom[0].get_rotation() == 90 and len(name_texts(ax)) == 3
    with pytest.raises(ValueError, match="side must be 'right' or 'bottom'"):
        draw_names(ax, [0.5], ["x"], side="left")
    with pytest.raises(ValueError, match=r"one entry per task \(2\)"):
        draw_names(ax, [0.5], ["x", "y"])


def test_svg_text_is_editable_and_deterministic(tmp_path):
    a = save_figure(_fig(), tmp_path / "a.svg", metadata=META).read_text()
    b = save_figure(_fig(), tmp_path / "b.svg", metadata=META).read_text()
    assert a == b
    assert "<text" in a and "editable title" in a
    assert f"sha256:{'ab' * 32}" in a and "taan-viz 9.9" in a


def test_pdf_metadata_and_fonts(tmp_path):
    data = save_figure(_fig(), tmp_path / "f.pdf", metadata=META).read_bytes()
    assert data.startswith(b"%PDF")
    assert b"checkpoint-sha256:" + b"ab" * 32 in data
    assert b"/FontFile2" in data  # TrueType (Type 42) fonts: text stays text
    assert b"/CreationDate" not in data


@pytest.mark.parametrize("name, dpi, match", [
    ("f.jpg", 100, "format must be one of png, svg, pdf"),
    ("f", 100, "no suffix"),
    ("f.png", 5, r"dpi must be an int in \[20, 2400\]"),
    ("f.png", 100.0, "dpi must be an int"),
])
def test_save_figure_rejects(tmp_path, name, dpi, match):
    with pytest.raises(ValueError, match=match):
        save_figure(_fig(), tmp_path / name, dpi=dpi)


def test_palette_helpers():
    assert category_color(0) == OKABE_ITO[0] and category_color(8) == OKABE_ITO[0]
    assert category_linestyle(0) == "-" and category_linestyle(8) != "-"
    assert short_label("x" * 30, 10) == "x" * 9 + "…" and short_label("abc") == "abc"
    assert text_color_for((1.0, 1.0, 0.9)) == "black" and text_color_for((0.1, 0.0, 0.3)) == "white"


def test_paper_style_restores_rc():
    import matplotlib

    before = matplotlib.rcParams["font.size"]
    with paper_style():
        assert matplotlib.rcParams["svg.fonttype"] == "none"
    assert matplotlib.rcParams["font.size"] == before
    assert np.isfinite(before)


@pytest.mark.parametrize(
    ("mu", "sigma", "label"),
    [(4e-10, 1.0, "N(0, 1²)"), (-0.5, 1.3, "N(-0.5, 1.3²)"), (1e-4, 1e-3, "N(0.0001, 0.001²)"), (2e-7, 1e-3, "N(0, 0.001²)")],
)
def test_measure_label_rounds_only_negligible_means(mu, sigma, label):
    assert measure_label(mu, sigma) == label


def test_save_figure_replaces_a_link_instead_of_writing_through_it(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep")
    link = tmp_path / "f.png"
    link.symlink_to(target)
    save_figure(_fig(), link, dpi=50)
    assert not link.is_symlink() and link.read_bytes().startswith(b"\x89PNG")
    assert target.read_text() == "keep"


def test_the_figure_commands_refuse_a_planted_link_in_one_line(tmp_path, checkpoint_path, capsys):
    from taan_viz.cli import main

    target = tmp_path / "precious.txt"
    target.write_text("keep")
    out = tmp_path / "figs"
    out.mkdir()
    (out / "heatmap.png").symlink_to(target)
    with pytest.raises(SystemExit) as exc:
        main(["heatmap", str(checkpoint_path), "-o", str(out), "--overwrite"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"taan-viz: error: {out / 'heatmap.png'} is a symbolic link")
    assert target.read_text() == "keep"
