"""The whole-network relatedness of a run drawn: distances in the order of the main axis."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from taan_viz.plots._style import SINGLE_RUN_NOTE, add_caption, label_fontsize, paper_style, show_labels

if TYPE_CHECKING:
    from taan_viz.network import NetworkRelatedness

__all__ = ["network_note", "plot_network"]


def network_note(net: "NetworkRelatedness", single_run: bool = True) -> str:
    """The caption of :func:`plot_network`: what is compared, the order, and whether there are groups."""
    sep = net.separation
    if net.runs > 1:
        what = (f"mean over {net.runs} runs of d(fₛ, fₜ) / spread: RMS difference of the task networks' outputs on "
                f"the {net.split} inputs of every task over their RMS spread; tasks ordered along the main MDS axis "
                f"of the mean ({100 * net.axis_share:.0f} % of the variance)")
        single_run = False
    else:
        what = (f"d(fₛ, fₜ): RMS difference of the task networks' outputs on the {net.num_inputs} {net.split} "
                f"inputs of every task, over their RMS spread ({net.scale:.3g}); tasks ordered along the main MDS "
                f"axis ({100 * net.axis_share:.0f} % of the variance)")
    if np.isnan(sep.ratio):
        groups = "too few distinct tasks to judge groups"
    elif sep.separated:
        groups = (f"the tasks fall into {sep.k} separated groups (every pair inside a group closer than every pair "
                  f"across, ratio {sep.ratio:.2f} > 1)")
    else:
        groups = (f"no separated groups (best cut's ratio {sep.ratio:.2f} ≤ 1): the tasks form a continuum; "
                  f"read their order and distances, not groups")
    return f"{what}\n{groups}" + (f"\n{SINGLE_RUN_NOTE}" if single_run else "")


def plot_network(net: "NetworkRelatedness", *, labels: str = "auto", single_run: bool = True,
                 figsize: tuple[float, float] | None = None):
    """Figure of the whole-network distances: a heatmap in main-axis order beside the axis itself.

    Parameters
    ----------
    net : NetworkRelatedness
        From :func:`taan_viz.network.network_relatedness`.
    labels : {"auto", "all", "none"}, default "auto"
        Task names on the heatmap's rows (auto: up to 100 tasks).
    single_run : bool, default True
        The caption's last line says that one run cannot tell its stability, and how to find out
        (never for the mean of several runs).
    figsize : (float, float), optional

    Returns
    -------
    matplotlib Figure
    """
    from matplotlib.figure import Figure

    order = net.order
    t = len(order)
    named = show_labels(labels, t)
    names = [net.task_names[i] for i in order]
    label_in = 0.06 * max((len(n) for n in names), default=0) if named else 0.0
    with paper_style():
        side = min(4.6, max(2.4, 0.12 * t)) if named else 3.2
        fig = Figure(figsize=figsize or (side + 1.9 + label_in, side + 1.1), layout="constrained")
        heat, strip = fig.subplots(1, 2, width_ratios=[side, 0.9])
        image = heat.imshow(net.relative[np.ix_(order, order)], cmap="viridis", interpolation="nearest",
                            vmin=0.0, aspect="equal")
        fig.colorbar(image, ax=heat, shrink=0.8, label="d(fₛ, fₜ) / spread")
        heat.set_title("whole network · task distances" + (f" · mean of {net.runs} runs" if net.runs > 1 else ""))
        if named:
            size = label_fontsize(72.0 * side / max(t, 1))
            heat.set_yticks(np.arange(t), names, fontsize=size)
            heat.set_xticks([])
        else:
            heat.set_xticks([])
            heat.set_yticks([])
            heat.set_ylabel(f"{t} tasks")
        strip.plot(net.axis[order], np.arange(t), color="0.2", lw=1.0)
        strip.set_ylim(t - 0.5, -0.5)
        strip.set_yticks([])
        strip.set_xlabel("main axis")
        strip.set_title("position", fontsize=7)
        add_caption(fig, network_note(net, single_run))
    return fig
