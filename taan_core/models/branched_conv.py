"""A hard-sharing CNN with TAANConv's trunk, branched like a tree of task groups.

The conv counterpart of :class:`~taan_core.models.Branched`: layer l of a :class:`BranchedConv`
is one of TAANConv's layers (a conv stage, conv -> BatchNorm -> ReLU -> 2x2 max-pool, or a dense
ReLU layer) per task group of that depth; a group reads the output of its parent group one layer
up (the image for the first layer), and task t reads its head from the branch of its group at
the last layer. The tree has one row per task-adaptive layer of the TAANConv it mirrors
(``len(channels) + len(hidden)``), so the sharing tree of a trained TAANConv
(:func:`taan_core.relatedness.tree_from_checkpoint`) shapes it directly:
:func:`branched_conv_overrides` turns that tree and the TAANConv's config into this model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from torch import nn

from taan_core.models._base import _ImageModel, _int_list, _linear_heads
from taan_core.models.branched import _BranchRouting, check_groups
from taan_core.models.conv_baselines import ConvConfig, _conv_stage, _dense_layer

__all__ = ["BranchedConv", "BranchedConvConfig", "branched_conv_overrides"]


@dataclass
class BranchedConvConfig(ConvConfig):
    """Configuration of :class:`BranchedConv`: a :class:`ConvConfig` and the tree of task groups.

    Attributes
    ----------
    groups : list of L lists of T ints
        ``groups[l][t]``: the branch of task t at layer l, for L = ``len(channels) + len(hidden)``
        layers (the conv stages, then the dense layers); see
        :func:`~taan_core.models.branched.check_groups`. Stored renumbered by first appearance.
        Required (None only because the fields before it have defaults).

    The other attributes are :class:`ConvConfig`'s.
    """

    groups: list[list[int]] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.groups is None:
            raise ValueError("groups must be given: one row of task group ids per layer of the trunk")
        self.groups = check_groups(self.groups, len(self.output_dims))
        layers = len(self.channels) + len(self.hidden)
        if len(self.groups) != layers:
            raise ValueError(
                f"groups must have one row per layer of the trunk (L = len(channels) + len(hidden) = "
                f"{len(self.channels)} + {len(self.hidden)} = {layers}), got {len(self.groups)}"
            )

    @property
    def num_groups(self) -> list[int]:
        """Number of branches at each layer."""
        return [max(row) + 1 for row in self.groups]


class BranchedConv(_BranchRouting, _ImageModel):
    """Hard sharing along a tree with TAANConv's trunk: one conv stage or dense ReLU layer per task
    group and depth, one head per task.

    For task t with group g_l = groups[l][t] at layer l: h_0 = x, h_l = layer_{l, g_l}(h_{l-1})
    (the last conv stage's branches also flatten), y = V_t h_L + d_t. One group per layer is
    :class:`~taan_core.models.HardShareConv`; every task alone from the first layer on is
    :class:`~taan_core.models.SingleTaskConv`.

    Parameters
    ----------
    config : BranchedConvConfig
    """

    config_class = BranchedConvConfig

    def __init__(self, config: BranchedConvConfig) -> None:
        super().__init__(config)
        channels = [config.input_shape[0], *config.channels]
        widths = [config.flat_features(), *config.hidden]
        makers = [lambda i=i: _conv_stage(channels[i], channels[i + 1], config) for i in range(len(config.channels))]
        makers += [lambda i=i: _dense_layer(widths[i], widths[i + 1], config) for i in range(len(config.hidden))]
        self.branches = nn.ModuleList()
        for l, (make, count) in enumerate(zip(makers, config.num_groups)):
            flatten = [nn.Flatten()] if l == len(config.channels) - 1 else []
            self.branches.append(nn.ModuleList(nn.Sequential(*make(), *flatten) for _ in range(count)))
        self.heads = _linear_heads(config.out_features(), config.output_dims)
        # The shape of one sample after each layer, for the output of a branch without rows.
        self._shapes = self._layer_shapes(config)
        self._init_routing(config.groups)

    @staticmethod
    def _layer_shapes(config: BranchedConvConfig) -> list[tuple[int, ...]]:
        _, height, width = config.input_shape
        shapes: list[tuple[int, ...]] = []
        for c in config.channels:
            height = (height + 2 * config.padding - config.kernel_size + 1) // 2
            width = (width + 2 * config.padding - config.kernel_size + 1) // 2
            shapes.append((c, height, width))
        shapes[-1] = (config.flat_features(),)
        return shapes + [(w,) for w in config.hidden]

    def _branch_shape(self, depth: int) -> tuple[int, ...]:
        return self._shapes[depth]

    def extra_repr(self) -> str:
        return (f"num_tasks={self.num_tasks}, num_groups={self.config.num_groups}, channels={self.config.channels}, "
                f"hidden={self.config.hidden}")


# The fields of a TAANConv's config that make its trunk; a BranchedConv copies them.
_TRUNK_FIELDS = ("channels", "kernel_size", "padding", "hidden", "batch_norm", "dropout")


def branched_conv_overrides(groups: Sequence[Sequence[int]], taan_config: dict[str, Any],
                            hidden: Sequence[int] | None = None) -> dict[str, Any]:
    """Config fields of a :class:`BranchedConv` with a TAANConv's trunk, branched along ``groups``.

    ``build_model("branched-conv", shape, dims, **branched_conv_overrides(tree, config))`` builds
    the hard-sharing CNN whose branches follow a TAANConv's sharing tree.

    Parameters
    ----------
    groups : sequence of L sequences of T ints
        The tree (e.g. :func:`taan_core.relatedness.tree_from_checkpoint` of the TAANConv), one row
        per task-adaptive layer: L = ``len(channels) + len(hidden)`` of ``taan_config``.
    taan_config : dict
        ``dataclasses.asdict`` of the :class:`~taan_core.models.TAANConvConfig` (a checkpoint's
        ``model.config``); its channels, kernel size, padding, dense widths, BatchNorm and
        dropout are copied.
    hidden : sequence of int, optional
        Dense widths instead of the TAANConv's (as many as it has).

    Returns
    -------
    dict
        ``{"groups", "channels", "kernel_size", "padding", "hidden", "batch_norm", "dropout"}``.

    Raises
    ------
    ValueError
        When ``taan_config`` lacks a trunk field, ``hidden`` has another length than the
        TAANConv's dense layers, or the tree does not have one row per layer.
    """
    if not isinstance(taan_config, dict):
        raise TypeError(f"taan_config must be a dict (a TAANConv's config), got {type(taan_config).__name__}")
    missing = [name for name in _TRUNK_FIELDS if name not in taan_config]
    if missing:
        raise ValueError(f"taan_config is not a TAANConv's config: it lacks {', '.join(missing)}")
    fields = {name: taan_config[name] for name in _TRUNK_FIELDS}
    if hidden is not None:
        hidden = _int_list(list(hidden), "hidden", allow_empty=True)
        if len(hidden) != len(fields["hidden"]):
            raise ValueError(f"hidden must give one width per dense layer of the conv TAAN "
                             f"({len(fields['hidden'])}), got {hidden}")
        fields["hidden"] = hidden
    tree = check_groups(groups)
    layers = len(fields["channels"]) + len(fields["hidden"])
    if len(tree) != layers:
        raise ValueError(f"the tree must have one row per task-adaptive layer of the conv TAAN ({layers}), "
                         f"got {len(tree)}")
    return {"groups": tree, **fields}
