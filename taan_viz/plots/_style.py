"""Shared look of taan figures: palette, colour maps, paper rc settings, saving with metadata.

Library functions never change global rcParams: drawing happens inside :func:`paper_style`
(a ``matplotlib.rc_context``), and :func:`save_figure` applies the settings that matter when
writing (editable SVG/PDF text, deterministic SVG ids, no timestamps).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from taan_viz.palette import OKABE_ITO

__all__ = [
    "DIVERGING_CMAP",
    "FORMATS",
    "LABELS",
    "LABELS_AUTO_MAX",
    "OKABE_ITO",
    "PAPER_RC",
    "SEQUENTIAL_CMAP",
    "SINGLE_RUN_NOTE",
    "add_caption",
    "category_color",
    "category_linestyle",
    "check_labels",
    "join_to_width",
    "label_fontsize",
    "measure_label",
    "paper_style",
    "readable_color",
    "save_figure",
    "savefig_once",
    "show_labels",
    "short_label",
    "text_color_for",
    "text_width_pt",
    "wrap_to_width",
]

_LINESTYLES = ("-", (0, (4, 1.5)), (0, (1, 1)), (0, (4, 1.5, 1, 1.5)))
# Perceptually uniform and readable in grey scale and by colour-blind readers.
SEQUENTIAL_CMAP = "viridis"
DIVERGING_CMAP = "RdBu_r"
FORMATS = ("png", "svg", "pdf")

# Under the figures of one run: its groups may not come back with another seed, and one run
# cannot tell (taan_viz.consensus measures it over several).
SINGLE_RUN_NOTE = "one run, stability unknown: taan-core train --seeds 0-4, then taan-viz consensus"

PAPER_RC: dict = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "figure.titlesize": 9,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "xtick.minor.size": 1.5,
    "ytick.minor.size": 1.5,
    "lines.linewidth": 1.2,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlepad": 4,
    "svg.fonttype": "none",
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "figure.dpi": 100,
    "savefig.facecolor": "white",
}


# Task names: "auto" shows them up to LABELS_AUTO_MAX tasks, with figures growing so that each
# name gets LABEL_ROW_PT points (a 5 pt font); beyond that a name would be narrower than its
# letters, and the figures say where the names are (the export's tables).
LABELS = ("auto", "all", "none")
LABELS_AUTO_MAX = 100
LABEL_ROW_PT = 6.0


def check_labels(labels: str) -> str:
    """``labels`` if it is one of :data:`LABELS`, else ValueError."""
    if labels not in LABELS:
        raise ValueError(f"labels must be one of {', '.join(LABELS)}, got {labels!r}")
    return labels


def show_labels(labels: "str | bool | None", t: int, auto_max: int = LABELS_AUTO_MAX) -> bool:
    """Whether task names are drawn for ``t`` tasks under the rule ``labels``.

    ``labels`` means the same in every figure: "auto" (or None) draws them up to ``auto_max``
    tasks (:data:`LABELS_AUTO_MAX` unless the figure has less room), "all" (or True) always,
    "none" (or False) never. The names themselves are a figure's ``names``.
    """
    if isinstance(labels, bool):
        return labels
    if labels is None:
        labels = "auto"
    check_labels(labels)
    return labels == "all" or (labels == "auto" and t <= auto_max)


def label_fontsize(row_pt: float, largest: float = 7.0) -> float:
    """Font size of task names given the room of one row in points: 85 % of the row, between
    3 pt (still legible when printed) and ``largest``."""
    return float(min(largest, max(3.0, 0.85 * row_pt)))


NAME_GID = "task-name"


def draw_names(ax, positions, names: Sequence[str], colors: Sequence | None = None, *, side: str = "right",
               fontsize: float = 7.0, pad_pt: float = 2.0) -> list:
    """Task names along one side of ``ax``, one ``Text`` each at its data position.

    Tick labels would do the same at several times the cost: every tick is five artists, and the
    layout measures every label of every tick again for each axis label. At 50 tasks and 5
    panels that was most of a figure's drawing time. The names stay inside the layout
    (constrained layout makes room for them) and are found again with :func:`name_texts`.

    Parameters
    ----------
    ax : matplotlib Axes
    positions : sequence of float, length T
        Data coordinate of each name along the axis (y for "right", x for "bottom").
    names : sequence of str, length T
    colors : sequence of colours, length T, optional (default black)
    side : {"right", "bottom"}
        "right": left-aligned beside the right spine; "bottom": under the x axis, rotated 90°.
    fontsize : float
    pad_pt : float
        Gap between the axis and the names, in points.

    Returns
    -------
    list of matplotlib Text
    """
    from matplotlib.transforms import offset_copy

    if side not in ("right", "bottom"):
        raise ValueError(f"side must be 'right' or 'bottom', got {side!r}")
    if len(positions) != len(names) or (colors is not None and len(colors) != len(names)):
        raise ValueError(f"positions, names and colors must have one entry per task ({len(names)})")
    colors = ["black"] * len(names) if colors is None else colors
    if side == "right":
        where = offset_copy(ax.get_yaxis_transform(), fig=ax.figure, x=pad_pt, y=0, units="points")
        place = {"ha": "left", "va": "center", "rotation": 0}
        at = [(1.0, float(p)) for p in positions]
    else:
        where = offset_copy(ax.get_xaxis_transform(), fig=ax.figure, x=0, y=-pad_pt, units="points")
        place = {"ha": "center", "va": "top", "rotation": 90}
        at = [(float(p), 0.0) for p in positions]
    return [ax.text(x, y, name, transform=where, fontsize=fontsize, color=c, clip_on=False, gid=NAME_GID, **place)
            for (x, y), name, c in zip(at, names, colors)]


def name_texts(ax) -> list:
    """The task names :func:`draw_names` put on ``ax``, in drawing order."""
    return [t for t in ax.texts if t.get_gid() == NAME_GID]


def wrap_to_width(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` points (an average
    letter is a little over half an em wide); existing line breaks are kept."""
    import textwrap

    chars = max(20, int(width_in * 72 / (0.56 * fontsize)))
    # Not at hyphens: "taan-viz" and "--seeds" are commands and options, read whole.
    return "\n".join(textwrap.fill(part, chars, break_on_hyphens=False) for part in text.split("\n"))


def join_to_width(parts: list[str], width_in: float, fontsize: float, sep: str = " · ") -> str:
    """``parts`` joined by ``sep``, starting a new line where the next part would not fit
    ``width_in`` inches at ``fontsize`` points (a part itself is never broken)."""
    chars = max(20, int(width_in * 72 / (0.56 * fontsize)))
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + len(sep) + len(part) <= chars:
            lines[-1] += sep + part
        else:
            lines.append(part)
    return "\n".join(lines)


def add_caption(fig, text: str, fontsize: float = 6.5, color: str = "0.35"):
    """A note under the panels (``Figure.supxlabel``), wrapped to the figure's width: figures are
    saved without a tight bounding box, so a line wider than the figure would be cut."""
    return fig.supxlabel(wrap_to_width(text, fig.get_figwidth() * 0.96, fontsize), fontsize=fontsize, color=color)


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """Temporarily apply :data:`PAPER_RC` (restored on exit)."""
    import matplotlib

    with matplotlib.rc_context(PAPER_RC):
        yield


def category_color(i: int) -> str:
    """Colour of category ``i`` (cycles through the Okabe-Ito palette)."""
    return OKABE_ITO[int(i) % len(OKABE_ITO)]


def category_linestyle(i: int):
    """Line style of category ``i``: solid for the first 8, then dashed, dotted, dash-dotted,
    so that categories stay distinct when the 8 colours repeat."""
    return _LINESTYLES[(int(i) // len(OKABE_ITO)) % len(_LINESTYLES)]


def measure_label(mu: float, sigma: float) -> str:
    """``N(mu, sigma²)`` with two significant digits; a mean below 0.1 % of sigma reads as 0
    (standardised pre-activations record means like 4e-10)."""
    mu = 0.0 if abs(mu) < 1e-3 * abs(sigma) else mu
    return f"N({mu:.2g}, {sigma:.2g}²)"


def text_width_pt(text: str, fontsize: float) -> float:
    """Width of the widest line of ``text`` in points at ``fontsize``, from the font's metrics
    (no figure needed)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    font = FontProperties(size=fontsize)
    return max((text_to_path.get_text_width_height_descent(line, font, ismath=False)[0]
                for line in str(text).split("\n")), default=0.0)


def short_label(name: str, width: int = 22) -> str:
    """``name`` cut to ``width`` characters with an ellipsis, for tick labels."""
    name = str(name)
    return name if len(name) <= width else name[: width - 1] + "…"


def readable_color(color) -> tuple[float, float, float]:
    """``color`` darkened just enough to read as text on white (the palette's yellow and sky
    blue are fine for lines and fills but faint as letters); dark colours pass unchanged."""
    from matplotlib.colors import to_rgb

    rgb = np.asarray(to_rgb(color))
    lum = float(np.dot(rgb ** 2.2, [0.2126, 0.7152, 0.0722]))
    if lum <= 0.3:
        return tuple(rgb)
    return tuple(rgb * (0.3 / lum) ** (1 / 2.2))


def text_color_for(rgba) -> str:
    """Black or white, whichever reads better on the colour ``rgba`` (relative luminance)."""
    r, g, b = (np.asarray(rgba[:3], dtype=float) ** 2.2)
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.2 else "white"


def _metadata(fmt: str, meta: Mapping[str, str] | None) -> dict:
    meta = dict(meta or {})
    creator = f"taan-viz {meta.get('version', '')}".strip()
    title = meta.get("title", "")
    sha = meta.get("sha256", "")
    description = meta.get("description", "")
    if sha:
        description = (description + f" Checkpoint sha256: {sha}.").strip()
    if fmt == "png":
        out = {"Software": creator, "Title": title, "Description": description}
        if sha:
            out["Checkpoint-SHA256"] = sha
        if meta.get("source"):
            out["Source"] = meta["source"]
    elif fmt == "svg":
        # No Date: identical inputs give byte-identical files.
        out = {"Creator": creator, "Title": title, "Description": description, "Date": None}
        if sha:
            out["Identifier"] = f"sha256:{sha}"
        if meta.get("source"):
            out["Source"] = meta["source"]
    else:
        out = {"Creator": creator, "Title": title, "Subject": description, "CreationDate": None}
        if sha:
            out["Keywords"] = f"checkpoint-sha256:{sha}"
    return {k: v for k, v in out.items() if v != ""}


def save_figure(fig, path: "str | Path", *, dpi: int = 300, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix: png, svg or pdf) with metadata.

    Parameters
    ----------
    fig : matplotlib Figure
    path : path-like
    dpi : int, default 300
        Resolution of PNG files and of raster parts of SVG/PDF.
    metadata : mapping, optional
        ``version`` (tool), ``sha256`` (checkpoint), ``title``, ``description``, ``source``;
        stored as PNG text chunks, SVG Dublin Core fields or PDF info entries.

    Returns
    -------
    Path
    """
    import matplotlib

    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt or 'no suffix'!r} ({path.name})")
    if isinstance(dpi, bool) or not isinstance(dpi, int) or not 20 <= dpi <= 2400:
        raise ValueError(f"dpi must be an int in [20, 2400], got {dpi!r}")
    from taan_core._atomic import atomic_write

    rc = {"svg.fonttype": "none", "pdf.fonttype": 42, "svg.hashsalt": "taan-viz", "savefig.facecolor": "white"}
    with matplotlib.rc_context(rc):
        # Atomic, like every taan output: a link at ``path`` is replaced, never written through.
        atomic_write(path, lambda fh: savefig_once(fig, fh, format=fmt, dpi=dpi, metadata=_metadata(fmt, metadata)))
    return path


def savefig_once(fig, target, **kwargs) -> None:
    """``fig.savefig(target, **kwargs)`` with one layout pass.

    A figure with a layout engine (every taan figure: constrained layout) keeps its artists
    inside the page, so no tight bounding box is needed (it would draw the figure twice more).
    ``savefig`` itself draws twice, once to lay out and once to render, and constrained layout
    runs in both; here it runs once, then the figure is saved with the positions fixed, and
    the engine is put back. Figures without an engine get a tight bounding box.
    """
    engine = fig.get_layout_engine()
    if engine is None:
        fig.savefig(target, bbox_inches="tight", pad_inches=0.03, **kwargs)
        return
    if kwargs.get("format") == "png" and set(kwargs) <= {"format", "dpi", "metadata", "facecolor"}:
        _save_png(fig, target, dpi=kwargs.get("dpi", fig.dpi), metadata=kwargs.get("metadata"),
                  facecolor=kwargs.get("facecolor"))
        return
    # Lay out at the saving resolution: text extents are cached per dpi, so the render then
    # reuses them instead of measuring every label again.
    dpi = fig.dpi
    fig.set_dpi(kwargs.get("dpi", dpi))
    try:
        fig.draw_without_rendering()
    finally:
        fig.set_dpi(dpi)
    fig.set_layout_engine(None)
    try:
        fig.savefig(target, **kwargs)
    finally:
        fig.set_layout_engine(engine)


# zlib level 3 compresses an RGB figure as small as level 6 does RGBA, in about half the time.
_PNG_COMPRESS_LEVEL = 3


def _save_png(fig, target, *, dpi: float, metadata: Mapping[str, str | None] | None = None,
              facecolor=None) -> None:
    """Render ``fig`` once on an Agg canvas and write it as a PNG with Pillow.

    One ``draw`` both lays the figure out (its layout engine runs inside ``Figure.draw``) and
    renders it, where ``savefig`` after a layout pass walks every artist twice. The page is
    written as RGB when it is opaque (every taan figure has a white page): Pillow compresses
    three channels in about half the time of four, and the file is no larger. The canvas is
    swapped in and back the way ``savefig`` itself does for another format.
    """
    import matplotlib as mpl
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    old_canvas, old_dpi, old_face = fig.canvas, fig.dpi, fig.get_facecolor()
    face = facecolor if facecolor is not None else mpl.rcParams["savefig.facecolor"]
    canvas = FigureCanvasAgg(fig)
    try:
        fig.set_dpi(dpi)
        fig.set_facecolor(old_face if isinstance(face, str) and face == "auto" else face)
        canvas.draw()
        # A view: it keeps the renderer's buffer alive after the canvas is swapped back.
        rgba = np.asarray(canvas.buffer_rgba())
    finally:
        fig.set_canvas(old_canvas)
        fig.set_dpi(old_dpi)
        fig.set_facecolor(old_face)
    opaque = bool((rgba[..., 3] == 255).all())
    image = Image.fromarray(np.ascontiguousarray(rgba[..., :3]) if opaque else rgba)
    info = PngInfo()
    for key, value in (metadata or {}).items():
        if value is not None:
            info.add_text(key, value)
    image.save(target, format="png", pnginfo=info, dpi=(dpi, dpi), compress_level=_PNG_COMPRESS_LEVEL)
