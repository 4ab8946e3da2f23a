"""TAAN-ify an existing network: its activations become task-adaptive, its forward stays as is.

Also :func:`record_statistics`, which measures the layers' pre-activation statistics (the data
measure of the analysis) of a model that was trained elsewhere, e.g. an imported reference file,
and :func:`evaluate_tasks`, the per-task metrics of such a network on a split of a data set.

:func:`taanify` replaces every activation module of a chosen type (``nn.ReLU`` by default) in
any ``nn.Module`` (an MLP, a torchvision-style CNN) by a :class:`ContextTaskActivation`, a
:class:`~taan_core.nn.layers.TaskAdaptiveActivation` that takes its task ids from the model rather
than from ``forward``. :func:`tasks` hands them the task ids of a batch, so the network's own
``forward(x)`` is unchanged::

    net = taan_core.taanify(torchvision_style_cnn, num_tasks=4)
    with taan_core.tasks(net, task_ids):        # LongTensor (N,) or one int for the batch
        logits = net(x)

The activation works on any shape (N, ...): (N, C) after a linear map, (N, C, H, W) after a
convolution, where each sample's task applies to all its channels and pixels. Only activation
*modules* are replaced; ``F.relu`` called inside a ``forward`` stays a ReLU. A module instance
used at several places (torchvision's ``BasicBlock`` reuses ``self.relu``) becomes one
task-adaptive layer shared by those places.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor, nn

from taan_core._validation import check_int
from taan_core.nn.layers import TaskAdaptiveActivation, _unwrap

__all__ = ["ContextTaskActivation", "evaluate_tasks", "record_statistics", "set_tasks", "taanify", "tasks"]


class ContextTaskActivation(TaskAdaptiveActivation):
    """A :class:`~taan_core.nn.layers.TaskAdaptiveActivation` whose task ids are set on the module
    (by :func:`tasks` or :func:`set_tasks`) instead of passed to ``forward``.

    ``forward(z)`` applies ``F_task`` with the ids last set; ``forward(z, task)`` still takes
    them explicitly. Parameters, buffers and state_dict keys are those of the parent class, so
    checkpoints and ``taan-viz`` read it like any other task-adaptive layer.
    """

    task: Tensor | int | None = None

    def forward(self, z: Tensor, task: Tensor | int | None = None) -> Tensor:
        """z (N, ...) -> F_task(z), same shape; task defaults to the ids set by :func:`tasks`."""
        if task is None:
            task = self.task
            if task is None:
                raise RuntimeError("this task-adaptive activation has no task ids: run the model inside "
                                   "`with taan_core.tasks(model, task_ids):` (or call taan_core.set_tasks first)")
        return super().forward(z, task)


def _parent(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    *path, leaf = name.split(".")
    module = root
    for part in path:
        module = getattr(module, part)
    return module, leaf


def taanify(
    model: nn.Module,
    num_tasks: int,
    *,
    num_hinges: int = 16,
    activation: type[nn.Module] | tuple[type[nn.Module], ...] = nn.ReLU,
    hinge_init: tuple[float, float] = (-0.5, 0.5),
) -> nn.Module:
    """Replace the activation modules of ``model`` by task-adaptive ones, in place.

    Each replaced module becomes ``F_t(z) = relu(z) + sum_m alpha[t, m] relu(hinges[m] - z)``
    with alpha near 0 at initialisation, so a ReLU network starts as it was; every other weight
    is kept, and becomes shared by the tasks.

    Parameters
    ----------
    model : nn.Module
        Any network (changed in place and returned).
    num_tasks : int
        T, the number of tasks.
    num_hinges : int, default 16
        M, hinges per replaced activation.
    activation : type or tuple of types, default nn.ReLU
        The activation modules to replace (e.g. ``(nn.ReLU, nn.GELU)``).
    hinge_init : (float, float), default (-0.5, 0.5)
        Range of the uniform initial hinges.

    Returns
    -------
    nn.Module
        ``model``, whose replaced activations are listed by ``taan_core.adaptive_layers(model)``
        under the names the old ones had (``features.1``, ``classifier.2``, ...).

    Raises
    ------
    TypeError
        If ``model`` is not a module or ``activation`` not a module type.
    ValueError
        If ``model`` holds no module of type ``activation``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    kinds = activation if isinstance(activation, tuple) else (activation,)
    if not kinds or not all(isinstance(k, type) and issubclass(k, nn.Module) for k in kinds):
        raise TypeError(f"activation must be an nn.Module type or a tuple of them, got {activation!r}")
    check_int(num_tasks, "num_tasks", minimum=1)
    check_int(num_hinges, "num_hinges", minimum=1)
    root = _unwrap(model)
    found = [(name, m) for name, m in root.named_modules(remove_duplicate=False)
             if name and isinstance(m, kinds) and not isinstance(m, TaskAdaptiveActivation)]
    if not found:
        names = ", ".join(k.__name__ for k in kinds)
        raise ValueError(f"{type(root).__name__} holds no {names} module to replace (activations called as "
                         "functions in forward, like F.relu, cannot be replaced; pass activation=...)")
    reference = next(iter(root.parameters()), None)
    factory = {"device": reference.device, "dtype": reference.dtype} if reference is not None else {}
    replaced: dict[int, ContextTaskActivation] = {}
    for name, old in found:
        new = replaced.get(id(old))
        if new is None:
            new = ContextTaskActivation(num_tasks, num_hinges, hinge_init=hinge_init, **factory)
            replaced[id(old)] = new
        parent, leaf = _parent(root, name)
        setattr(parent, leaf, new)
    return model


def set_tasks(model: nn.Module, task: Tensor | int | None) -> None:
    """Set the task ids that the model's :class:`ContextTaskActivation` layers apply.

    Parameters
    ----------
    model : nn.Module
        A network changed by :func:`taanify` (a compiled or DDP wrapper is looked through).
    task : int, LongTensor of shape (N,) or None
        One task for the whole batch, each sample's task, or None to clear them.
    """
    if task is not None:
        if isinstance(task, Tensor):
            if task.ndim != 1 or task.dtype.is_floating_point or task.dtype.is_complex or task.dtype == torch.bool:
                raise TypeError(f"task must be an int or an integer tensor of shape (N,), got a tensor of dtype "
                                f"{task.dtype} and shape {tuple(task.shape)}")
        elif isinstance(task, bool) or not isinstance(task, int):
            raise TypeError(f"task must be an int or a LongTensor of shape (N,), got {type(task).__name__}")
    layers = [m for m in _unwrap(model).modules() if isinstance(m, ContextTaskActivation)]
    if not layers:
        raise ValueError(f"{type(_unwrap(model)).__name__} has no activation taking task ids from the model; "
                         "make it with taan_core.taanify(model, num_tasks)")
    for layer in layers:
        layer.task = task


@contextlib.contextmanager
def tasks(model: nn.Module, task: Tensor | int) -> Iterator[nn.Module]:
    """Run ``model`` on a batch of given tasks: ``with tasks(model, task_ids): y = model(x)``.

    Sets the task ids of every :class:`ContextTaskActivation` of ``model`` (:func:`set_tasks`)
    for the block and clears them after it, so a forward outside a block fails loudly instead
    of reusing the ids of an older batch. Works under ``torch.compile`` (the ids are read as a
    tensor input, so new ids do not recompile).

    Parameters
    ----------
    model : nn.Module
    task : int or LongTensor of shape (N,)
        One task for the whole batch or each sample's task (a mixed-task batch).

    Yields
    ------
    nn.Module
        ``model``.
    """
    if task is None:
        raise TypeError("task must be an int or a LongTensor of shape (N,), got None")
    set_tasks(model, task)
    try:
        yield model
    finally:
        set_tasks(model, None)


class _Moments:
    """Float64 count, sum and sum of squares of one layer's inputs, per task and overall."""

    def __init__(self, num_tasks: int) -> None:
        self.per_task = torch.zeros(num_tasks, 3, dtype=torch.float64)

    def add(self, z: Tensor, task: Tensor | int) -> None:
        flat = z.detach().reshape(z.shape[0], -1).double().cpu()
        rows = torch.stack([torch.full((flat.shape[0],), float(flat.shape[1]), dtype=torch.float64),
                            flat.sum(1), flat.square().sum(1)], 1)
        if isinstance(task, Tensor):
            self.per_task.index_add_(0, task.detach().long().cpu(), rows)
        else:
            self.per_task[task] += rows.sum(0)

    def write(self, act: TaskAdaptiveActivation) -> None:
        def mean_var(count: Tensor, total: Tensor, total_sq: Tensor) -> tuple[Tensor, Tensor]:
            mean = total / count.clamp(min=1.0)
            var = (total_sq - count * mean.square()).clamp(min=0.0) / (count - 1.0).clamp(min=1.0)
            return mean, var

        count, total, total_sq = self.per_task.unbind(1)
        mean, var = mean_var(count, total, total_sq)
        seen = count > 0
        with torch.no_grad():
            # Tasks without samples keep what they had (the layer's defaults: mean 0, variance 1).
            act.preact_mean.copy_(torch.where(seen, mean, act.preact_mean.double().cpu()))
            act.preact_var.copy_(torch.where(count > 1, var, act.preact_var.double().cpu()))
            if bool(seen.any()):
                mean_all, var_all = mean_var(*self.per_task.sum(0).unbind(0))
                act.preact_mean_overall.fill_(float(mean_all))
                act.preact_var_overall.fill_(float(var_all))


@contextlib.contextmanager
def record_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Measure the pre-activation statistics of every task-adaptive layer over the forward
    passes run inside the block; on exit they replace the layers' running statistics.

    The running statistics are what the analysis takes as each layer's data measure
    (``taan-viz --measure data``). Training updates them as moving averages; this measures
    them exactly (float64 sums: the mean and unbiased variance of all elements of the samples
    of each task, and of all samples) for a model trained elsewhere, such as a reference
    state_dict rebuilt by ``model_from_checkpoint``::

        with taan_core.record_statistics(model):
            for x, task in batches:
                model(x, task)

    Parameters
    ----------
    model : nn.Module
        Any module with task-adaptive activations; its mode is left alone (use eval mode, so
        BatchNorm and dropout act as at test time).

    Yields
    ------
    nn.Module
        ``model``.
    """
    from taan_core.nn.layers import adaptive_layers

    layers = [act for _, act in adaptive_layers(model)]
    if not layers:
        raise ValueError(f"{type(_unwrap(model)).__name__} holds no task-adaptive activation to measure")
    moments = [_Moments(act.num_tasks) for act in layers]

    def hook_for(acc: _Moments):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            z = args[0] if args else kwargs["z"]
            task = args[1] if len(args) > 1 else kwargs.get("task")
            task = getattr(module, "task", None) if task is None else task
            if task is not None:
                acc.add(z, task)
        return hook

    handles = [act.register_forward_pre_hook(hook_for(acc), with_kwargs=True) for act, acc in zip(layers, moments)]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()
    for act, acc in zip(layers, moments):
        acc.write(act)


class _TaskForward(nn.Module):
    """``forward(x, task)`` of a network whose own forward takes only ``x`` (see :func:`tasks`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, task: Tensor | int) -> Tensor:
        with tasks(self.model, task):
            return self.model(x)


def evaluate_tasks(model: nn.Module, data_split, tasks, batch_size: int = 1024,
                   device: torch.device | str = "cpu", *, k: int = 10) -> dict:
    """Every task's metrics of ``model`` on a split: :func:`taan_core.metrics.evaluate` for any network.

    A network changed by :func:`taanify` (its ``forward(x)`` takes the task ids through
    :func:`tasks`) is run with each task's id; any other model is called as ``model(x, task)``,
    like the models of :mod:`taan_core.models`.

    Parameters
    ----------
    model : nn.Module
        Put in eval mode for the call and restored afterwards.
    data_split : MultiTaskSplit
        E.g. ``load_dataset(...).split("val")``, or a :class:`~taan_core.data.TensorSplit` of
        your own tensors.
    tasks : sequence of TaskSpec
        The split's task specs (name and kind of every task).
    batch_size, device, k
        As in :func:`taan_core.metrics.evaluate`.

    Returns
    -------
    dict
        ``{"per_task", "mean", "main"}`` and, with regression tasks, ``"pooled"``
        (:func:`taan_core.metrics.evaluate`).
    """
    from taan_core.metrics import evaluate

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    context = any(isinstance(m, ContextTaskActivation) for m in _unwrap(model).modules())
    return evaluate(_TaskForward(model) if context else model, data_split, tasks, batch_size, device, k=k)
