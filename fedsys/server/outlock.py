"""One writer per run output directory: an exclusive lock the ServerApp holds while it runs.

Two ServerApps on one ``out_dir`` (an orphaned one that kept running after its daemon died,
and a resumed one) would interleave ``metrics.jsonl``, overwrite each other's checkpoint and
publish the same registry versions. The ServerApp therefore takes ``flock(LOCK_EX)`` on
``<out_dir>/.writer.lock`` before it writes anything, and holds it until it returns; the
kernel drops the lock when the process dies, so a crash never leaves it behind. A second
writer is refused with the holder's pid, host and run id.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from fedsys.errors import FedsysError

LOCK_FILE = ".writer.lock"


class OutputDirBusy(FedsysError):
    """Another live ServerApp writes to this output directory."""


@contextlib.contextmanager
def exclusive_output_dir(out_dir: Path, run_id: object = None) -> Iterator[Path]:
    """Hold ``out_dir`` for this process (see the module docstring)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            raise OutputDirBusy(
                f"output directory {out_dir} is in use by another ServerApp "
                f"({holder or 'holder unknown'}); one writer per out_dir: stop it, or use "
                "another out_dir"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "run_id": str(run_id)}
        info["since"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
