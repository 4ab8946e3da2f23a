"""Task-adaptive layers: the activation module and the dense and convolutional layers built on it."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from taan_core.nn import functional as TF
from taan_core._validation import check_int

__all__ = ["TaskAdaptiveActivation", "TALinear", "TAConv2d", "adaptive_layers"]


class TaskAdaptiveActivation(nn.Module):
    r"""Per-task adaptive activation ``F_t(z) = relu(z) + sum_m alpha[t, m] relu(hinges[m] - z)``.

    ``alpha`` (T, M) is per task; ``hinges`` (M,) are shared by the tasks and by all units. The
    module also keeps running statistics of its input (the layer's pre-activations), updated in
    training mode like BatchNorm's: an exponential moving average with ``momentum`` of the mean
    and unbiased variance over all elements of the samples of each task (``preact_mean``,
    ``preact_var``, shape (T,)) and of the whole batch (``preact_mean_overall``,
    ``preact_var_overall``, scalars), all float32. :meth:`measure` turns them into the Gaussian
    measure (mu, sigma) under which the analysis compares the tasks' functions.

    Parameters
    ----------
    num_tasks : int
        T, the number of tasks.
    num_hinges : int, default 16
        M, the number of hinges.
    hinge_init : tuple of two floats, default (-0.5, 0.5)
        Hinges start uniform on this interval.
    alpha_std : float, default 0.01
        alpha starts as ``alpha_std * N(0, 1)``, so every task starts near relu.
    momentum : float, default 0.1
        Weight of the newest batch in the running statistics.
    """

    def __init__(
        self,
        num_tasks: int,
        num_hinges: int = 16,
        hinge_init: tuple[float, float] = (-0.5, 0.5),
        alpha_std: float = 0.01,
        momentum: float = 0.1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.num_tasks = check_int(num_tasks, "num_tasks", minimum=1)
        self.num_hinges = check_int(num_hinges, "num_hinges", minimum=0)
        if len(hinge_init) != 2 or not float(hinge_init[0]) <= float(hinge_init[1]):
            raise ValueError(f"hinge_init must be (low, high) with low <= high, got {tuple(hinge_init)}")
        self.hinge_init = (float(hinge_init[0]), float(hinge_init[1]))
        if not (math.isfinite(alpha_std) and alpha_std >= 0):
            raise ValueError(f"alpha_std must be finite and >= 0, got {alpha_std}")
        self.alpha_std = float(alpha_std)
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.momentum = float(momentum)
        factory = {"device": device, "dtype": dtype}
        self.alpha = nn.Parameter(torch.empty(num_tasks, num_hinges, **factory))
        self.hinges = nn.Parameter(torch.empty(num_hinges, **factory))
        stats = {"device": device, "dtype": torch.float32}
        self.register_buffer("preact_mean", torch.zeros(num_tasks, **stats))
        self.register_buffer("preact_var", torch.ones(num_tasks, **stats))
        self.register_buffer("preact_mean_overall", torch.zeros((), **stats))
        self.register_buffer("preact_var_overall", torch.ones((), **stats))
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Forget the running statistics (mean 0, variance 1: the standard Gaussian measure)."""
        self.preact_mean.zero_()
        self.preact_var.fill_(1.0)
        self.preact_mean_overall.zero_()
        self.preact_var_overall.fill_(1.0)

    def reset_parameters(self) -> None:
        """Draw alpha from ``alpha_std * N(0, 1)``, the hinges uniform on ``hinge_init``; reset statistics."""
        nn.init.normal_(self.alpha, 0.0, self.alpha_std)
        nn.init.uniform_(self.hinges, *self.hinge_init)
        self.reset_running_stats()

    def forward(self, z: Tensor, task: Tensor | int) -> Tensor:
        """Apply the activation of each sample's task.

        Parameters
        ----------
        z : Tensor of shape (N, ...)
        task : int or LongTensor of shape (N,)

        Returns
        -------
        Tensor of the shape of z
        """
        if not self.training:
            return TF.task_adaptive_activation(z, task, self.alpha, self.hinges)
        running = (self.preact_mean, self.preact_var, self.preact_mean_overall, self.preact_var_overall)
        return TF._lookup_train(z, task, self.alpha, self.hinges, running, self.momentum)

    def measure(self, task: int | None = None) -> tuple[float, float]:
        """The Gaussian measure (mu, sigma) of the pre-activations, of one task or overall.

        Parameters
        ----------
        task : int or None
            A task id in [0, T), or None for the statistics of all samples.

        Returns
        -------
        tuple of two floats
            The running mean and the square root of the running variance.
        """
        if task is None:
            return float(self.preact_mean_overall), math.sqrt(float(self.preact_var_overall))
        if isinstance(task, bool) or not isinstance(task, int):
            raise TypeError(f"task must be an int or None, got {type(task).__name__}")
        if not 0 <= task < self.num_tasks:
            raise IndexError(f"task must be in [0, T) with T = {self.num_tasks}, got {task}")
        return float(self.preact_mean[task]), math.sqrt(float(self.preact_var[task]))

    def extra_repr(self) -> str:
        return (
            f"num_tasks={self.num_tasks}, num_hinges={self.num_hinges}, hinge_init={self.hinge_init}, "
            f"alpha_std={self.alpha_std}, momentum={self.momentum}"
        )


def _unwrap(module: nn.Module) -> nn.Module:
    """The user's module inside a ``torch.compile`` or (Distributed)DataParallel wrapper."""
    while True:
        inner = getattr(module, "_orig_mod", None)  # torch.compile's OptimizedModule
        if inner is None and isinstance(module, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            inner = module.module
        if not isinstance(inner, nn.Module):
            return module
        module = inner


def adaptive_layers(module: nn.Module) -> list[tuple[str, TaskAdaptiveActivation]]:
    """The task-adaptive activations of any module, with their qualified names, in depth order.

    Found by type (:class:`TaskAdaptiveActivation` and its subclasses) in ``named_modules()``
    order, which is the order the submodules were assigned, so a network written top to bottom
    lists its layers from the input up. A module used at several places counts once.

    Parameters
    ----------
    module : nn.Module
        Any module; a ``torch.compile`` or DataParallel wrapper is looked through, so names
        match ``module.state_dict()`` of the unwrapped module.

    Returns
    -------
    list of (str, TaskAdaptiveActivation)
        E.g. ``[("l1.act", ...), ("l2.act", ...)]`` for a network with ``TALinear`` layers
        ``l1`` and ``l2``; empty when there are none.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    module = _unwrap(module)
    return [(name, m) for name, m in module.named_modules() if isinstance(m, TaskAdaptiveActivation)]


def _layers_of(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The adaptive layers a checkpoint or a regulariser uses: the module's own
    ``adaptive_layers()`` method where it has one (the models of taan_core, or a user's module
    with activations of its own type), else :func:`adaptive_layers`."""
    inner = _unwrap(module) if isinstance(module, nn.Module) else module
    method = getattr(inner, "adaptive_layers", None)
    # A submodule that happens to be called adaptive_layers is not the method.
    if callable(method) and not isinstance(method, nn.Module):
        return list(method())
    return adaptive_layers(module)


class _TABlock(nn.Module):
    """An affine map, an optional BatchNorm and a TaskAdaptiveActivation.

    TALinear (affine map ``.linear``) and TAConv2d (``.conv``) differ only in the affine map and
    how BatchNorm sees its output; ``_affine_name`` names the attribute.
    """

    _affine_name: str
    bn: nn.Module | None
    act: TaskAdaptiveActivation

    @property
    def alpha(self) -> nn.Parameter:
        return self.act.alpha

    @property
    def hinges(self) -> nn.Parameter:
        return self.act.hinges

    def reset_parameters(self) -> None:
        """Reinitialise the affine map, the BatchNorm and the activation."""
        getattr(self, self._affine_name).reset_parameters()
        if self.bn is not None:
            self.bn.reset_parameters()
        self.act.reset_parameters()


class TALinear(_TABlock):
    r"""Dense task-adaptive layer: ``F_task(BN(W x + c))`` (BatchNorm optional).

    Parameters
    ----------
    in_features, out_features : int
        Sizes of the affine map.
    num_tasks : int
        T.
    num_hinges : int, default 16
        M.
    bias : bool, default True
        Whether the affine map has a bias.
    batch_norm : bool, default False
        Whether a BatchNorm1d sits between the affine map and the activation.
    batch_norm_affine : bool, default True
        Whether that BatchNorm learns a scale and shift per unit. Without them every unit's
        pre-activation stays standardised over the batch, so all units (and the analysis) see
        the activations under N(0, 1).
    hinge_init : (float, float), default (-0.5, 0.5)
        Range of the uniform initial hinges.

    Shapes: x (N, ..., in_features) -> (N, ..., out_features); task int or LongTensor (N,).
    """

    _affine_name = "linear"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_tasks: int,
        num_hinges: int = 16,
        bias: bool = True,
        batch_norm: bool = False,
        batch_norm_affine: bool = True,
        hinge_init: tuple[float, float] = (-0.5, 0.5),
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_features = check_int(in_features, "in_features", minimum=1)
        self.out_features = check_int(out_features, "out_features", minimum=1)
        self.linear = nn.Linear(in_features, out_features, bias=bias, **factory)
        self.bn = nn.BatchNorm1d(out_features, affine=batch_norm_affine, **factory) if batch_norm else None
        self.act = TaskAdaptiveActivation(num_tasks, num_hinges, hinge_init=hinge_init, **factory)

    def forward(self, x: Tensor, task: Tensor | int) -> Tensor:
        """x (N, ..., in_features), task int or LongTensor (N,) -> (N, ..., out_features)."""
        z = self.linear(x)
        if self.bn is not None:
            # BatchNorm1d normalises dim 1; fold any middle dims into the batch instead.
            z = self.bn(z.reshape(-1, self.out_features)).reshape(z.shape)
        return self.act(z, task)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, num_tasks={self.act.num_tasks}, "
            f"num_hinges={self.act.num_hinges}, bias={self.linear.bias is not None}, batch_norm={self.bn is not None}"
            + (", batch_norm_affine=False" if self.bn is not None and not self.bn.affine else "")
        )


class TAConv2d(_TABlock):
    r"""Convolutional task-adaptive layer: ``F_task(BN(conv(x)))`` (BatchNorm on by default).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or tuple of two ints
    num_tasks : int
        T.
    num_hinges : int, default 16
        M.
    stride, padding : int or tuple of two ints
        As in ``nn.Conv2d``.
    bias : bool, default True
    batch_norm : bool, default True
        Whether a BatchNorm2d sits between the convolution and the activation.

    Shapes: x (N, C_in, H, W) -> (N, C_out, H_out, W_out); task int or LongTensor (N,).
    """

    _affine_name = "conv"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        num_tasks: int,
        num_hinges: int = 16,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        bias: bool = True,
        batch_norm: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias, **factory)
        self.bn = nn.BatchNorm2d(out_channels, **factory) if batch_norm else None
        self.act = TaskAdaptiveActivation(num_tasks, num_hinges, **factory)

    def forward(self, x: Tensor, task: Tensor | int) -> Tensor:
        """x (N, C_in, H, W), task int or LongTensor (N,) -> (N, C_out, H_out, W_out)."""
        z = self.conv(x)
        if self.bn is not None:
            z = self.bn(z)
        return self.act(z, task)

    def extra_repr(self) -> str:
        conv = self.conv
        return (
            f"in_channels={conv.in_channels}, out_channels={conv.out_channels}, kernel_size={conv.kernel_size}, "
            f"num_tasks={self.act.num_tasks}, num_hinges={self.act.num_hinges}, stride={conv.stride}, "
            f"padding={conv.padding}, bias={conv.bias is not None}, batch_norm={self.bn is not None}"
        )
