"""Live per-round display: a rich progress bar with one table row printed per round."""

from __future__ import annotations

import logging
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedsys.server.records import RoundRecord

log = logging.getLogger("fedsys")


class Reporter(Protocol):
    def start(self, total_rounds: int, done_rounds: int) -> None: ...
    def update(self, record: RoundRecord) -> None: ...
    def stop(self) -> None: ...


def _row(r: RoundRecord) -> str:
    train = f"{r.train_loss:.4f}" if r.train_loss is not None else "  -   "
    rejected = f"  rejected {len(r.rejected)}" if r.rejected else ""
    return (
        f"round {r.round:>4}  acc {r.central_accuracy:.4f}  loss {r.central_loss:.4f}  "
        f"train {train}  clients {r.clients:>3}  up {r.bytes_up / 1e6:.3f} MB  "
        f"down {r.bytes_down / 1e6:.3f} MB  {r.seconds:.2f} s{rejected}"
    )


class RichReporter:
    """A progress bar on the terminal; each finished round prints a line above it."""

    def __init__(self, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("[bold]rounds"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=console or Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task("", total=1)

    def start(self, total_rounds: int, done_rounds: int) -> None:
        self._progress.update(self._task, total=total_rounds, completed=done_rounds)
        self._progress.start()

    def update(self, record: RoundRecord) -> None:
        self._progress.console.print(_row(record), highlight=False, soft_wrap=True)
        self._progress.update(
            self._task, completed=record.round, description=f"acc {record.central_accuracy:.4f}"
        )

    def stop(self) -> None:
        self._progress.stop()


class LogReporter:
    """One log line per round, for non-interactive runs."""

    def start(self, total_rounds: int, done_rounds: int) -> None:
        log.info("starting at round %d of %d", done_rounds + 1, total_rounds)

    def update(self, record: RoundRecord) -> None:
        log.info(_row(record))

    def stop(self) -> None:
        return None
