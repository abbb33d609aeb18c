"""A deployed node's training data as one ``.npz`` file (``x``, ``y``; never pickled).

A client machine holds its own data; ``fedsys partition`` writes one from a built-in dataset
(the partition a simulation would give that client), so a loopback federation or a test can
give each daemon its own prepared file instead of regenerating and re-splitting the dataset.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedsys.config import ExperimentConfig
from fedsys.errors import DataError


def read_node_data(
    path: Path,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """``x`` (float32, one row per example) and ``y`` (int64 labels) from ``path``."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not {"x", "y"} <= set(archive.files):
                raise DataError(f"node data {path} must hold arrays 'x' and 'y'")
            x, y = archive["x"], archive["y"]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read node data {path}: {exc}") from None
    if len(x) != len(y) or len(y) == 0:
        raise DataError(f"node data {path}: {len(x)} inputs and {len(y)} labels")
    if x.dtype.kind != "f" or y.dtype.kind not in "iu":
        raise DataError(f"node data {path}: x must be float and y integer labels")
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y, dtype=np.int64)


def write_partition(cfg: ExperimentConfig, partition_id: int, path: Path) -> int:
    """Write the built-in dataset's partition ``partition_id`` to ``path``; returns its size."""
    from fedsys.data import client_partition

    if partition_id >= cfg.data.num_partitions:
        raise DataError(
            f"partition {partition_id} does not exist: data.num_partitions is "
            f"{cfg.data.num_partitions}"
        )
    part = client_partition(cfg.data, cfg.runtime.seed, partition_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, x=part.x, y=part.y)
    tmp.replace(path)
    return len(part.y)
