"""A user-supplied public split: an ``.npz`` file with float32 features ``x`` and int64 labels
``y``, read without pickle (numpy's ``allow_pickle=False``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedsys.data.types import ArrayDataset
from fedsys.errors import DataError


def read_public_npz(path: Path) -> ArrayDataset:
    """The arrays ``x`` and ``y`` of ``path``; DataError names the file and what is wrong."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = {"x", "y"} - set(arrays.files)
            if missing:
                raise DataError(f"data.public_path {path}: missing arrays {sorted(missing)}")
            x, y = arrays["x"], arrays["y"]
    except (OSError, ValueError) as exc:
        raise DataError(f"data.public_path {path} is not a readable .npz file: {exc}") from None
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"data.public_path {path}: labels y must be integers, got {y.dtype}")
    return ArrayDataset(x=x.astype(np.float32, copy=False), y=y.astype(np.int64, copy=False))
