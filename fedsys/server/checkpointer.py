"""Writes the run's checkpoints on one background thread, at most one write in flight.

A large model's write and fsync then overlap the next round instead of delaying it. The
``RoundGate`` learns which rounds are durable, so the publisher can hold each version until
the checkpoint of its round is on disk.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from fedsys.server.checkpoint import Checkpoint, save_checkpoint
from fedsys.server.durable import RoundGate


class Checkpointer:
    """``write`` hands a checkpoint to the writer thread; errors surface at the next call."""

    def __init__(self, directory: Path, gate: RoundGate) -> None:
        self.directory = directory
        self.gate = gate
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="fedsys-checkpoint")
        self._pending: Future[Path] | None = None

    def write(self, ckpt: Checkpoint) -> None:
        """Queue ``ckpt`` once the previous write has finished."""
        self.wait()
        self._pending = self._writer.submit(save_checkpoint, self.directory, ckpt)
        self.gate.watch(ckpt.round, self._pending)

    def wait(self) -> None:
        """Block until the checkpoint in flight is on disk; its errors surface here."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        """Wait for the last write, then stop the thread."""
        try:
            self.wait()
        finally:
            self._writer.shutdown()
