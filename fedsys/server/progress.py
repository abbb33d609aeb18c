"""What a run is doing, as it happens: start-up stages, then one row per round.

Stages and rows are progress, not diagnostics: they go to the ``fedsys.progress`` logger,
which the CLI shows at INFO whatever ``runtime.log_level`` says (that level governs the
diagnostics of the other ``fedsys`` loggers). On a terminal a rich bar names the current
stage; elsewhere each stage and round is one plain line.
"""

from __future__ import annotations

import logging
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedsys.server.records import RoundRecord

PROGRESS = logging.getLogger("fedsys.progress")
STOPPING = "writing outputs (model, summary, curves) and stopping the nodes"


def stage(text: str) -> None:
    """Say what the run is doing now (start-up and shut-down stages)."""
    PROGRESS.info(text)


class Reporter(Protocol):
    def stage(self, text: str) -> None: ...
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
        self._total = 1
        self._started = False

    def stage(self, text: str) -> None:
        if self._started:
            self._progress.update(self._task, description=text)
        else:
            stage(text)

    def start(self, total_rounds: int, done_rounds: int) -> None:
        self._total = total_rounds
        self._progress.update(
            self._task,
            total=total_rounds,
            completed=done_rounds,
            description=f"round {done_rounds + 1}: clients training",
        )
        self._progress.start()
        self._started = True

    def update(self, record: RoundRecord) -> None:
        self._progress.console.print(_row(record), highlight=False, soft_wrap=True)
        doing = (
            f"round {record.round + 1}: clients training"
            if record.round < self._total
            else "writing outputs"
        )
        self._progress.update(
            self._task,
            completed=record.round,
            description=f"acc {record.central_accuracy:.4f} · {doing}",
        )

    def stop(self) -> None:
        self._progress.stop()
        self._started = False
        stage(STOPPING)


class LogReporter:
    """One line per stage and per round, for non-interactive runs."""

    def stage(self, text: str) -> None:
        stage(text)

    def start(self, total_rounds: int, done_rounds: int) -> None:
        PROGRESS.info("round %d of %d: clients training", done_rounds + 1, total_rounds)

    def update(self, record: RoundRecord) -> None:
        PROGRESS.info(_row(record))

    def stop(self) -> None:
        stage(STOPPING)


class SilentReporter:
    """Reports nothing: for runs embedded in tests, benchmarks and other programs."""

    def stage(self, text: str) -> None:
        pass

    def start(self, total_rounds: int, done_rounds: int) -> None:
        pass

    def update(self, record: RoundRecord) -> None:
        pass

    def stop(self) -> None:
        pass
