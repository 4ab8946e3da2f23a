"""One colour per task for every figure of an analysis.

No plotting here: the analysis decides the colours, the figures of :mod:`taan_viz.plots` use them.

A reader matches tasks across figures by colour, so the colours are decided once, from the task
groups of the analysis, and every figure asks the same :class:`TaskPalette`:

- the colour unit is a group of the deepest layer (the finest groups: tasks that share the whole
  network), or of the deepest layer with at most 32 groups when the deepest has more;
- groups are numbered along the sharing tree's order; group k gets the colour-blind-safe
  Okabe-Ito colour ``k mod 8`` and, beyond 8 groups, a second encoding ``k div 8``: a dash
  pattern for lines and a marker shape for points. 8 colours x 4 dash patterns tell 32 groups
  apart; beyond (only when even the shallowest layer has more than 32 groups) colour and dash
  repeat together, and the captions say so. Colour strips (heatmaps, clustermaps) show colour
  only, so there the caption says that colours repeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


__all__ = ["MARKERS", "OKABE_ITO", "TaskPalette", "task_palette"]

# Okabe & Ito (2008), the colour-blind-safe qualitative palette, ordered for lines on white:
# blue, orange, bluish green, vermillion, reddish purple, sky blue, yellow, black. Defined here, not beside the figures'
# style, because the analysis asks for colours without drawing anything.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")

LINESTYLES = ("-", (0, (4, 1.5)), (0, (1, 1)), (0, (4, 1.5, 1, 1.5)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


@dataclass(frozen=True)
class TaskPalette:
    """Colour (and second encoding) of every task.

    Attributes
    ----------
    keys : ndarray of shape (T,), int64
        Colour group of each task, numbered 0, 1, ... in the order given to :func:`task_palette`.
    level : int
        Depth position (0 = shallowest analysed layer) of the layer whose groups are the colour
        groups.
    level_name : str
        That layer's name, for captions.
    """

    keys: np.ndarray
    level: int
    level_name: str

    @property
    def num_tasks(self) -> int:
        return int(self.keys.shape[0])

    @property
    def num_keys(self) -> int:
        return int(self.keys.max()) + 1 if self.keys.size else 0

    @property
    def encoded(self) -> bool:
        """Whether the second encoding is in use (more than 8 colour groups)."""
        return self.num_keys > len(OKABE_ITO)

    def key_color(self, key: int) -> str:
        return OKABE_ITO[int(key) % len(OKABE_ITO)]

    def key_linestyle(self, key: int):
        return LINESTYLES[(int(key) // len(OKABE_ITO)) % len(LINESTYLES)]

    def key_marker(self, key: int) -> str:
        return MARKERS[(int(key) // len(OKABE_ITO)) % len(MARKERS)]

    def color(self, task: int) -> str:
        """Colour of task ``task`` (an index into the analysis' task names)."""
        return self.key_color(self.keys[task])

    def linestyle(self, task: int):
        """Dash pattern of task ``task``: solid unless :attr:`encoded`."""
        return self.key_linestyle(self.keys[task])

    def marker(self, task: int) -> str:
        """Marker of task ``task``: a circle unless :attr:`encoded`."""
        return self.key_marker(self.keys[task])

    @property
    def colors(self) -> list[str]:
        """Colour of every task, shape (T,)."""
        return [self.color(t) for t in range(self.num_tasks)]

    def members(self, key: int) -> np.ndarray:
        """Tasks of colour group ``key``."""
        return np.flatnonzero(self.keys == key)

    def describe(self) -> str:
        """One caption line saying what a colour means."""
        k = self.num_keys
        text = f"colours: the {k} task group{'s' * (k != 1)} of layer {self.level_name}"
        if self.encoded:
            text += ("; 8 colours, repeated with a dash pattern (lines) or marker (points) for groups 9 and on"
                     " (strips show colour only)")
            if k > len(OKABE_ITO) * len(LINESTYLES):
                text += f"; colour and dash repeat together beyond {len(OKABE_ITO) * len(LINESTYLES)} groups"
        return text


def task_palette(groups: Sequence[np.ndarray], layer_names: Sequence[str], order: Sequence[int] | None = None) -> TaskPalette:
    """The palette of tasks grouped per layer.

    Parameters
    ----------
    groups : sequence of L arrays of shape (T,)
        Group of each task at each layer, shallowest layer first.
    layer_names : sequence of L str
    order : sequence of int, optional
        Task order along which colour groups are numbered (e.g. the sharing tree's order, so
        that neighbouring groups in the figures get different colours); task order by default.

    Returns
    -------
    TaskPalette
    """
    rows = [np.asarray(g, dtype=np.int64) for g in groups]
    if not rows:
        raise ValueError("groups must hold at least one layer")
    if len(layer_names) != len(rows):
        raise ValueError(f"layer_names must have {len(rows)} entries (one per layer), got {len(layer_names)}")
    t = rows[0].shape[0]
    counts = [len(np.unique(r)) for r in rows]
    fits = [l for l, k in enumerate(counts) if k <= len(OKABE_ITO) * len(LINESTYLES)]
    level = fits[-1] if fits else 0
    walk = np.arange(t) if order is None else np.asarray(order, dtype=np.int64)
    mapping: dict[int, int] = {}
    for task in walk:
        mapping.setdefault(int(rows[level][task]), len(mapping))
    keys = np.array([mapping[int(v)] for v in rows[level]], dtype=np.int64)
    return TaskPalette(keys=keys, level=level, level_name=str(layer_names[level]))
