"""Does the picture use the geometry the network was trained under?

The functional regularisers (``--reg cosine`` or ``distance``) compare the tasks' activations in
L2(N(mu, sigma^2)) under the measure of ``TrainConfig.measure``: ``"standard"`` (N(0, 1), the
paper's and the default) or ``"data"`` (each layer's running pre-activation statistics). The
figures use ``--measure data`` by default: what the layer actually sees. When the two differ, a
layer trained to make tasks alike under one geometry is drawn under another, so
:func:`measure_mismatch` names the layers where they differ by more than

- ``|mu_drawn - mu_reg| > MEAN_TOLERANCE * sigma_reg`` (a shift of a tenth of a standard
  deviation), or
- ``sigma_drawn / sigma_reg`` outside ``[1 - SIGMA_TOLERANCE, 1 + SIGMA_TOLERANCE]``.

Runs without a functional regulariser (or with ``c = 0``) were trained under no measure and
never warn. The regulariser's ``"data"`` measure is taken as the layer's final recorded
statistics, the ones it used at the end of training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - only for annotations
    from taan_core.checkpoint import Checkpoint
    from taan_viz.analysis import Analysis

__all__ = ["MEAN_TOLERANCE", "SIGMA_TOLERANCE", "MeasureMismatch", "measure_mismatch", "regularizer_measure"]

MEAN_TOLERANCE = 0.1
SIGMA_TOLERANCE = 0.1
_FUNCTIONAL = ("cosine", "distance")


def regularizer_measure(ckpt: "Checkpoint") -> tuple[str, str] | None:
    """``(regulariser, measure)`` of a run trained with a functional regulariser, else None.

    Read from the checkpoint's ``extra.train_config`` (``reg``, ``c``, ``measure``); None for
    other regularisers, ``c = 0``, and checkpoints without a training configuration (exports,
    reference state_dicts).
    """
    config = ckpt.train_config
    if config is None:
        return None
    reg, c = config.get("reg"), config.get("c", 0.0)
    if reg not in _FUNCTIONAL or not isinstance(c, (int, float)) or not c > 0:
        return None
    return str(reg), str(config.get("measure", "standard"))


@dataclass(frozen=True)
class MeasureMismatch:
    """Layers drawn under another measure than their regulariser used.

    Attributes
    ----------
    regularizer, measure : str
        The run's functional regulariser and its measure ("standard" or "data").
    drawn : str
        Description of the measure of the figures.
    layers : list of tuple
        ``(name, mu_drawn, sigma_drawn, mu_reg, sigma_reg)`` of every layer beyond tolerance.
    """

    regularizer: str
    measure: str
    drawn: str
    layers: list[tuple[str, float, float, float, float]]

    def message(self) -> str:
        """One line naming the layers, the two measures and the tolerance."""
        parts = [f"{name} drawn under N({mu:.2g}, {s:.2g}²), regularised under N({rmu:.2g}, {rs:.2g}²)"
                 for name, mu, s, rmu, rs in self.layers[:3]]
        more = f" and {len(self.layers) - 3} more" if len(self.layers) > 3 else ""
        return (f"the figures' measure differs from the {self.regularizer} regulariser's "
                f"('{self.measure}') beyond tolerance (|Δμ| > {MEAN_TOLERANCE:g}σ or σ ratio outside "
                f"[{1 - SIGMA_TOLERANCE:g}, {1 + SIGMA_TOLERANCE:g}]): {'; '.join(parts)}{more}; "
                f"pass --measure {'standard' if self.measure == 'standard' else 'data'} to draw the trained geometry")


def measure_mismatch(ckpt: "Checkpoint", analysis: "Analysis") -> MeasureMismatch | None:
    """The analysed layers whose measure differs from the regulariser's beyond tolerance.

    Parameters
    ----------
    ckpt : Checkpoint
    analysis : Analysis
        An analysis of ``ckpt``.

    Returns
    -------
    MeasureMismatch or None
        None when the run had no functional regulariser or every layer is within tolerance.
    """
    found = regularizer_measure(ckpt)
    if found is None:
        return None
    reg, measure = found
    off = []
    for la in analysis.layers:
        record = ckpt.layers[la.index]
        rmu, rs = (0.0, 1.0) if measure == "standard" else (float(record.mu), float(record.sigma))
        mu, s = la.geometry.mu, la.geometry.sigma
        if abs(mu - rmu) > MEAN_TOLERANCE * rs or abs(s / rs - 1.0) > SIGMA_TOLERANCE:
            off.append((la.name, mu, s, rmu, rs))
    if not off:
        return None
    return MeasureMismatch(regularizer=reg, measure=measure, drawn=analysis.measure.describe(), layers=off)
