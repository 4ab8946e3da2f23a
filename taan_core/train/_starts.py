"""Several starts, one run: the weights a Trainer's candidate starts begin from.

A planted run's outcome is decided by its initial weights (docs/training.md): the same start
lands in the same minimum whatever the schedule does later. The Trainer therefore trains
``TrainConfig.starts`` differently initialised copies of the model for the first
``start_epochs`` of the run and continues the one with the best validation metric; start 0 is
the model as it was given, so ``starts=1`` is an ordinary run.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

__all__ = ["fresh_state", "start_seed"]


def start_seed(seed: int, start: int) -> int:
    """The seed of candidate start ``start`` (>= 1) of a run seeded with ``seed``.

    Parameters
    ----------
    seed : int
        The run's seed.
    start : int
        The candidate, 1 <= start.

    Returns
    -------
    int
        A seed in [0, 2**63), different for every (seed, start) pair of realistic size.
    """
    return (seed * 1_000_003 + start * 7_919) % (2**63)


def fresh_state(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The state_dict of a newly initialised copy of ``model``, drawn with ``seed``.

    A model with a dataclass ``config`` (every :mod:`taan_core.models` model) is rebuilt from
    it, so the new weights follow exactly the initialisation of its constructor; any other
    module is deep-copied and every submodule's ``reset_parameters()`` is called. The global
    random state is left as it was.

    Parameters
    ----------
    model : nn.Module
    seed : int

    Returns
    -------
    dict of str to Tensor
        Loadable with ``model.load_state_dict``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = getattr(model, "config", None)
        if dataclasses.is_dataclass(config) and not isinstance(config, type):
            fresh = type(model)(copy.deepcopy(config))
        else:
            fresh = copy.deepcopy(model).cpu()
            for module in fresh.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
    return fresh.state_dict()
