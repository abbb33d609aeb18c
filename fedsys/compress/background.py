"""Compression beside a training run, in a separate low-priority process.

After the publisher writes a version, the round loop hands its number to
:class:`BackgroundCompressor` and goes on at once. One supervisor thread runs
``fedsys compress`` for it as a child process at the lowest CPU priority (``nice`` 19) with
one torch thread, so the round loop's processes win every contended core and the GIL is
never shared. Versions that arrive while a compression runs are coalesced: only the newest
waiting one is compressed next. At the end of the run the newest version's compression is
awaited (bounded), so the final model always gets its variants.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedsys.config import ExperimentConfig

log = logging.getLogger("fedsys")

LOWEST_PRIORITY = 19
COMPRESS_CONFIG = "compress-config.yaml"
COMPRESS_LOG = "compress.log"
PUBLISHER_KEY_FILE = "publisher.key"  # the publisher's key in the run's output dir


class BackgroundCompressor:
    """Compress published versions of one model, newest first, one at a time."""

    def __init__(
        self,
        registry: Path,
        name: str,
        signing_key: Path,
        config: Path,
        log_path: Path,
        *,
        command: list[str] | None = None,
    ) -> None:
        self._base = command or [sys.executable, "-m", "fedsys.cli", "compress"]
        self._args = [
            "--registry", str(registry), "--name", name,
            "--signing-key", str(signing_key), "--config", str(config), "--replace",
        ]  # fmt: skip
        self._log_path = log_path
        self._cond = threading.Condition()
        self._pending: int | None = None
        self._closing = False
        self._busy = False
        self.done: list[int] = []
        self.failed: list[int] = []
        self._thread = threading.Thread(target=self._run, name="fedsys-compress", daemon=True)
        self._thread.start()

    def submit(self, version: int) -> None:
        """Compress ``version`` soon (replacing an older version still waiting)."""
        with self._cond:
            if self._pending is None or version > self._pending:
                self._pending = version
            self._cond.notify()

    def close(self, timeout: float | None) -> bool:
        """Finish the running and the waiting compression (up to ``timeout`` seconds);
        False when time ran out (the child is then left to finish on its own)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _next(self) -> int | None:
        with self._cond:
            while self._pending is None and not self._closing:
                self._cond.wait()
            version, self._pending = self._pending, None
            self._busy = version is not None
            return version

    def _run(self) -> None:
        while (version := self._next()) is not None:
            self._compress(version)

    def _compress(self, version: int) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "FLWR_TELEMETRY_ENABLED": "0"}
        cmd = [*self._base, *self._args, "--version", str(version)]
        try:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self._log_path, "ab") as sink:
                child = subprocess.Popen(cmd, stdout=sink, stderr=sink, env=env)
                # Lowered from here, not in a preexec hook (unsafe with threads); the child
                # spends its first seconds importing, long before it computes anything.
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, child.pid, LOWEST_PRIORITY)
                rc = child.wait()
        except OSError as exc:
            log.warning("compress: cannot start the compression of v%d: %s", version, exc)
            rc = -1
        (self.done if rc == 0 else self.failed).append(version)
        if rc != 0:
            log.warning("compress: v%d failed (exit %d); see %s", version, rc, self._log_path)
        else:
            log.info("compress: v%d variants written (%s)", version, self._log_path)


def background_compressor(
    cfg: ExperimentConfig, out_dir: Path, registry: Path, name: str
) -> BackgroundCompressor | None:
    """The run's compressor when ``compress.enabled``: it reads the run's resolved config
    (written to ``<out>/compress-config.yaml``) and signs with the publisher's key."""
    if not cfg.compress.enabled:
        return None
    from fedsys.config import dump_config

    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / COMPRESS_CONFIG
    dump_config(cfg, config_path)
    key = cfg.publish.signing_key or out_dir / PUBLISHER_KEY_FILE
    return BackgroundCompressor(registry, name, key, config_path, out_dir / COMPRESS_LOG)
