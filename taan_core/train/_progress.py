"""Training progress on the terminal: a rich progress bar per epoch and one line per epoch.

The bar shows only on an interactive terminal; the per-epoch line is printed whenever progress
is enabled (not quiet, rank 0), so logs of batch jobs keep the essentials.
"""

from __future__ import annotations

from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__: list[str] = []


class EpochProgress:
    """Context manager driven by the trainer: ``start_epoch``, ``advance``, ``end_epoch``."""

    def __init__(self, *, enabled: bool, bar: bool, console: Console | None = None) -> None:
        self.enabled = enabled
        self.console = console or Console(stderr=True, highlight=False)
        self._progress = None
        self._task = None
        if enabled and bar:
            self._progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("val {task.fields[main]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
        self._last_main = "-"

    def __enter__(self) -> "EpochProgress":
        if self._progress is not None:
            self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        if self._progress is None:
            return
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task("train", total=batches, epoch=f"{epoch}/{epochs}", loss="-",
                                             main=self._last_main)

    def advance(self, loss: Callable[[], float]) -> None:
        # The loss is read lazily: reading it synchronises the device, only worth it for the bar.
        if self._progress is None:
            return
        self._progress.update(self._task, advance=1, loss=f"{loss():.4f}")

    def announce_starts(self, starts: int, epochs: int) -> None:
        """One line before the candidate starts (TrainConfig.starts) begin."""
        if self.enabled:
            self.console.print(f"{starts} candidate starts of {_epochs(epochs)} each, the best continues", soft_wrap=True)

    def starts_chosen(self, starts: list[dict], epochs: int) -> None:
        """One line after the choice: each start's score and the one kept."""
        if not self.enabled:
            return
        scores = ", ".join(
            f"{s['start'] + 1} " + ("-" if s["val_main"] is None else f"{s['val_main']:.4f}")
            + (" (kept)" if s["chosen"] else "") for s in starts)
        self.console.print(f"starts: {scores} — best validation of each over its {_epochs(epochs)}",
                           soft_wrap=True)

    def end_epoch(self, record: dict) -> None:
        if not self.enabled:
            return
        main = record["val"]["main"]
        self._last_main = f"{main:.4f}"
        best = " (best)" if record["best"] else ""
        # Candidate starts (TrainConfig.starts) train their first epochs before one is chosen.
        start = f"start {record['start'] + 1}/{record['starts']}  " if "start" in record else ""
        self.console.print(
            f"{start}epoch {record['epoch']:>3}  loss {record['train_loss']:.4f}  val main {main:.4f}{best}  "
            f"{record['seconds']:.1f}s"
        )


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"
