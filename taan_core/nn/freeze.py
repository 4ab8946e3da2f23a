"""The shared warm-up in a user's own loop: the task-adaptive parameters, held or released.

The Trainer starts every run as hard sharing: for the first epochs every activation's ``alpha``
and ``hinges`` stay where they were initialised, so the shared weights learn the function
common to all tasks before the tasks' activations move apart (docs/training.md measures why).
:func:`adaptive_parameters` lists those parameters for any module, and :func:`freeze_adaptive`
holds them, as a call or as a ``with`` block::

    optimizer = torch.optim.Adam(model.parameters())        # every parameter, frozen or not
    for epoch in range(1, epochs + 1):
        taan_core.freeze_adaptive(model, frozen=epoch <= warmup)
        ...                                                 # the usual loop

A held parameter gets no gradient (None, not zero), so Adam skips it and its moment
estimates start fresh when it is released, exactly as in the Trainer.
"""

from __future__ import annotations

from torch import nn

from taan_core.nn.layers import _unwrap, adaptive_layers

__all__ = ["adaptive_parameters", "freeze_adaptive"]


def adaptive_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The task-adaptive parameters of any module: ``alpha`` and ``hinges`` of every activation.

    Parameters
    ----------
    model : nn.Module
        Any module (a :mod:`taan_core.models` model, a network of ``TALinear`` layers, one
        changed by :func:`~taan_core.nn.adapt.taanify`); compile and DataParallel wrappers are
        looked through.

    Returns
    -------
    list of Parameter
        ``[layer_1.alpha, layer_1.hinges, layer_2.alpha, ...]`` in depth order
        (:func:`~taan_core.nn.layers.adaptive_layers`), each once; empty without such layers.
        Every other parameter of ``model`` is shared by all tasks or belongs to one task's head.
    """
    return [p for _, act in adaptive_layers(model) for p in (act.alpha, act.hinges)]


class freeze_adaptive:  # noqa: N801 - lower case like torch.no_grad: a call and a context manager
    """Hold (``frozen=True``) or release every task-adaptive parameter of ``model``.

    Sets ``requires_grad`` of :func:`adaptive_parameters`; a held parameter receives no
    gradient, so an optimiser over all of ``model.parameters()`` leaves it, and its moment
    estimates, untouched. Used as a call it applies at once and stays; used as ``with
    freeze_adaptive(model): ...`` it applies for the block and then restores each parameter's
    previous setting.

    Parameters
    ----------
    model : nn.Module
        A module holding task-adaptive activations.
    frozen : bool
        True holds the parameters, False releases them.

    Raises
    ------
    TypeError
        If ``frozen`` is not a bool.
    ValueError
        If ``model`` holds no task-adaptive activation (nothing would be frozen).

    Notes
    -----
    Build the optimiser from all parameters (``model.parameters()``), not from those that
    require a gradient at that moment, or the held ones would never be trained. A parameter
    frozen after it has had gradients keeps its last ``.grad`` unless the loop zeroes
    gradients with ``set_to_none=True`` (torch's default).
    """

    def __init__(self, model: nn.Module, frozen: bool = True) -> None:
        if not isinstance(frozen, bool):
            raise TypeError(f"frozen must be a bool, got {type(frozen).__name__}")
        params = adaptive_parameters(model)
        if not params:
            raise ValueError(f"{type(_unwrap(model)).__name__} holds no task-adaptive activation to freeze; "
                             "use taan_core.TALinear, TAConv2d or taan_core.taanify")
        self._previous = [p.requires_grad for p in params]
        self._params = params
        for p in params:
            p.requires_grad_(not frozen)

    def __enter__(self) -> "freeze_adaptive":
        return self

    def __exit__(self, *exc) -> None:
        for p, previous in zip(self._params, self._previous):
            p.requires_grad_(previous)
