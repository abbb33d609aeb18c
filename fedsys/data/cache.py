"""On-disk cache for generated datasets.

Generating a dataset is deterministic but not free, and a simulation starts many worker
processes that would otherwise each regenerate it. Writes are atomic (temporary file in the
same directory, then ``os.replace``) so concurrent workers never read a half-written file;
at worst two of them write the same bytes.
"""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

CACHE_ENV_VAR = "FEDSYS_CACHE_DIR"

log = logging.getLogger(__name__)


def resolve_cache_dir(configured: Path | None) -> Path:
    """The configured directory, else ``$FEDSYS_CACHE_DIR``, else ``~/.cache/fedsys``."""
    if configured is not None:
        return Path(configured).expanduser()
    from_env = os.environ.get(CACHE_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser()
    return Path.home() / ".cache" / "fedsys"


def load_arrays(path: Path, names: tuple[str, ...]) -> dict[str, npt.NDArray[np.generic]] | None:
    """The named arrays from an ``.npz`` cache file, or None if it is absent or unusable.

    A damaged cache is not an error: it is regenerated, so the caller only needs to know
    whether it can use what is there. Pickled (object) arrays are never loaded.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not set(names) <= set(archive.files):
                log.warning("cache file %s lacks %s; regenerating", path, names)
                return None
            return {name: archive[name] for name in names}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        log.warning("cache file %s is unreadable (%s); regenerating", path, exc)
        return None


def save_arrays(path: Path, arrays: Mapping[str, npt.NDArray[np.generic]]) -> None:
    """Write ``arrays`` to ``path`` atomically; failure only costs a later regeneration."""
    tmp_name: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
        ) as handle:
            tmp_name = handle.name
            named: dict[str, Any] = dict(arrays)  # typed loosely: savez's **kwds overlap
            np.savez(handle, **named)
        os.chmod(tmp_name, 0o644)  # mkstemp's 0600 would hide a shared cache from others
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        log.warning("could not write cache file %s (%s); continuing without it", path, exc)
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
