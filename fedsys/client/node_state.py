"""Node-local files for the client state that is too large to travel with every message.

Flower ships a node's ``context.state`` to the ClientApp and back with every message (through
Ray in simulation, to a fresh ``flwr-clientapp`` process when deployed). The error-feedback
residual is as large as the model, so it lives in a file on the node instead:
``<dir>/<run id>/<client id>.residual`` (safetensors), written atomically.

A simulation's residuals live only as long as the run, so they go to shared memory when all
of them fit (:func:`simulation_state_dir`): a 40 MB residual is read and rewritten by every
client every round, and on a disk-backed directory that write also becomes disk traffic.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from fedsys.codec import Residual
from fedsys.data.cache import resolve_cache_dir
from fedsys.errors import CodecError

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def state_root(configured: Path | None) -> Path:
    """``runtime.node_state_dir``, else ``<fedsys cache>/node-state``."""
    return configured if configured is not None else resolve_cache_dir(None) / "node-state"


SHARED_MEMORY = Path("/dev/shm")
SHARED_MEMORY_SHARE = 0.25  # of its free space, at most, for one run's residuals


def simulation_state_dir(
    configured: Path | None, residual_bytes: int, shm: Path = SHARED_MEMORY
) -> Path | None:
    """The node-state directory for a simulation whose residuals total ``residual_bytes``.

    ``runtime.node_state_dir`` when set; else a directory in shared memory when the residuals
    take at most a quarter of its free space; else None (the fedsys cache, as deployed).
    """
    if configured is not None or residual_bytes <= 0:
        return configured
    try:
        usage = shutil.disk_usage(shm)
    except OSError:
        return None
    if residual_bytes > usage.free * SHARED_MEMORY_SHARE:
        return None
    return shm / "fedsys-node-state"


def _path(root: Path, run_id: int, client_id: str) -> Path:
    return root / str(run_id) / f"{_SAFE.sub('_', client_id)}.residual"


def load_residual(root: Path, run_id: int, client_id: str) -> Residual:
    """The stored residual, or zeros (``Residual()``) on the first round or if unreadable."""
    path = _path(root, run_id, client_id)
    try:
        return Residual.from_file(path)
    except (OSError, CodecError):
        return Residual()


def save_residual(root: Path, run_id: int, client_id: str, residual: Residual) -> None:
    path = _path(root, run_id, client_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    residual.to_file(tmp)
    os.replace(tmp, path)


def drop_run(root: Path, run_id: int) -> None:
    """Remove a finished run's node state (simulation: the server and nodes share a disk)."""
    shutil.rmtree(root / str(run_id), ignore_errors=True)
