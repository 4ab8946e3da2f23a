"""TensorBoard logging of a training run, as an ``on_epoch`` hook of the Trainer.

``metrics.jsonl`` and the checkpoints stay the record of a run; this mirrors them where many
users look while training. Every epoch: the losses and learning rate, every task's validation
metrics and their means, and each adaptive layer's ``||alpha||_F``; every ``image_every`` epochs,
each layer's task distance matrix d(F_s, F_t) under the layer's data measure (its running
pre-activation statistics), as an image. ``tensorboard`` is an optional dependency
(``pip install 'taan[tensorboard]'``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from taan_core._atomic import WriteError, _reason, refuse_link
from taan_core._validation import check_int
from taan_core.errors import MissingDependencyError

__all__ = ["TensorBoardLogger"]

_MISSING = "--log tensorboard needs the tensorboard package: pip install 'taan[tensorboard]' (or pip install tensorboard)"


def _writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:  # torch raises this when the tensorboard package is absent
        raise MissingDependencyError(_MISSING) from err
    return SummaryWriter


def _distance_image(distances: torch.Tensor, pixels: int = 192) -> torch.Tensor:
    """(T, T) distances -> (3, H, W) uint8 image in viridis, 0 dark, the layer's largest bright."""
    from matplotlib import colormaps

    scale = float(distances.max())
    values = (distances / scale if scale > 0 else torch.zeros_like(distances)).clamp(0, 1).numpy()
    rgb = torch.from_numpy(colormaps["viridis"](values)[..., :3]).permute(2, 0, 1)
    repeat = max(1, pixels // distances.shape[0])  # a task is a block of pixels, not one
    rgb = rgb.repeat_interleave(repeat, 1).repeat_interleave(repeat, 2)
    return (rgb * 255).round().to(torch.uint8)


class _WriteNow:
    """The interface of tensorboard's event writer thread (write, flush, close), writing in the
    calling thread: a failed write (a full disk) is then raised by the call that caused it, where
    the logger can name the file and cut it back, instead of a traceback printed by a dying
    thread and a file cut at whatever point the disk filled."""

    def __init__(self, records) -> None:
        self._records = records

    def write(self, data: bytes) -> None:
        self._records.write(data)

    def flush(self) -> None:
        self._records.flush()

    def close(self) -> None:
        self._records.flush()
        self._records.close()


def _event_file(writer) -> str | None:
    """Make a SummaryWriter write in the calling thread; return its event file (None when this
    tensorboard's writer is laid out otherwise, which then keeps its thread)."""
    try:
        events = writer._get_file_writer().event_writer
        threaded = events._async_writer
        threaded.flush()
        threaded._worker.stop()
        events._async_writer = _WriteNow(threaded._writer)
        return str(events._file_name)
    except AttributeError:
        return None


class TensorBoardLogger:
    """Write a run's scalars and distance images for TensorBoard.

    Use it as the Trainer's ``on_epoch`` hook (``taan-core train --log tensorboard`` does)::

        logger = TensorBoardLogger("runs/demo/tensorboard")
        Trainer(model, data, config, on_epoch=logger.on_epoch).fit()
        logger.close()

    Parameters
    ----------
    log_dir : path-like
        Folder of the event files (``tensorboard --logdir`` it).
    image_every : int, default 5
        Epochs between distance-matrix images (the first and every ``image_every``-th epoch).

    Raises
    ------
    ImportError
        With a one-line install hint, when the tensorboard package is missing.
    """

    def __init__(self, log_dir: str | os.PathLike, *, image_every: int = 5) -> None:
        self.image_every = check_int(image_every, "image_every", minimum=1)
        self.log_dir = Path(log_dir)
        self._writer_class = _writer_class()
        self._open = None
        self._clear_pending = False
        self._file: str | None = None
        self._good_size = 0  # bytes of the event file up to its last complete epoch

    @property
    def _writer(self):
        # Opened on first use, so a run that fails to start (an existing run folder) leaves nothing.
        if self._open is None:
            # A planted link would send the event files (and clear()'s deletions) elsewhere; the
            # event file's own name holds the time, host and pid, so it cannot be planted ahead.
            refuse_link(self.log_dir)
            self._open = self._writer_class(log_dir=str(self.log_dir))
            self._file = _event_file(self._open)
            self._good_size = self._size()
        return self._open

    def _size(self) -> int:
        try:
            return os.path.getsize(self._file) if self._file else 0
        except OSError:
            return 0

    def clear(self, *, deferred: bool = False) -> None:
        """Delete the event files of an earlier run in ``log_dir`` (for an overwritten run).

        With ``deferred``, they are deleted just before the first epoch is logged: the Trainer
        logs an epoch after saving it, so an overwritten run keeps its events until the new run
        has a checkpoint.
        """
        if deferred:
            self._clear_pending = True
            return
        self._clear_pending = False
        refuse_link(self.log_dir)
        if self.log_dir.is_dir():
            for path in self.log_dir.glob("events.out.tfevents.*"):
                path.unlink()

    def on_epoch(self, trainer: Any, record: Mapping[str, Any]) -> None:
        """Log one epoch: ``record`` is the line the Trainer appended to ``metrics.jsonl``."""
        if self._clear_pending:
            self.clear()
        epoch = int(record["epoch"])
        try:
            self.log_scalars(record, epoch)
            self.log_layers(trainer.model, epoch, images=epoch == 1 or epoch % self.image_every == 0)
            self._writer.flush()
        except OSError as err:
            if isinstance(err, WriteError):
                raise
            self._cut_back()
            raise WriteError(f"cannot write {self._file or self.log_dir}: {_reason(err)}; the events of the "
                             "earlier epochs are intact") from err
        self._good_size = self._size()

    def _cut_back(self) -> None:
        """After a failed write: close the event file and cut it back to its last complete
        epoch (remove it when it holds none), so no torn record stays."""
        writer, self._open = self._open, None
        if writer is not None:
            try:
                writer.close()
            except OSError:
                pass
        if self._file and os.path.isfile(self._file):
            if self._good_size:
                os.truncate(self._file, self._good_size)
            else:
                os.unlink(self._file)

    def log_scalars(self, record: Mapping[str, Any], step: int) -> None:
        """Losses, learning rate and validation metrics of a metrics.jsonl record."""
        add = self._writer.add_scalar
        for key, tag in (("train_loss", "loss/train"), ("train_task_loss", "loss/train_task"),
                         ("train_reg", "loss/train_reg"), ("lr", "lr")):
            if isinstance(record.get(key), (int, float)):
                add(tag, float(record[key]), step)
        val = record.get("val") or {}
        if isinstance(val.get("main"), (int, float)):
            add("val/main", float(val["main"]), step)
        for name, value in (val.get("mean") or {}).items():
            add(f"val_mean/{name}", float(value), step)
        for task, metrics in (val.get("per_task") or {}).items():
            for name, value in metrics.items():
                add(f"val_{name}/{task}", float(value), step)

    @torch.no_grad()
    def log_layers(self, model: nn.Module, step: int, *, images: bool = True) -> None:
        """Each adaptive layer's ||alpha||_F and, with ``images``, its task distance matrix."""
        from taan_core.gaussian import distance_matrix
        from taan_core.nn.layers import _layers_of

        for i, (name, act) in enumerate(_layers_of(model), start=1):
            alpha = act.alpha.detach().double().cpu()
            self._writer.add_scalar(f"alpha_norm/L{i}-{name}", float(alpha.norm()), step)
            if images:
                mu, sigma = act.measure(None) if hasattr(act, "measure") else (0.0, 1.0)
                distances = distance_matrix(alpha, act.hinges.detach().double().cpu(), mu, max(sigma, 1e-6))
                self._writer.add_image(f"distance/L{i}-{name}", _distance_image(distances), step)

    def close(self) -> None:
        """Flush and close the event file."""
        if self._open is not None:
            self._open.close()
            self._open = None
