"""In-memory dataset containers shared by every loader, partitioner and client.

All datasets in fedsys fit in memory, so a pair of numpy arrays is the whole abstraction:
clients turn them into tensors with ``torch.from_numpy`` (no copy), and a partition is
just fancy indexing. The arrays are shared between the process-level memo and every
client built from it, so callers must treat them as read-only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedsys.errors import DataError

FloatArray = npt.NDArray[np.float32]
LabelArray = npt.NDArray[np.int64]
IndexArray = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """Features ``x`` (float32, first axis = samples) and labels ``y`` (int64).

    ``groups`` holds a per-sample natural client id where the data has one (FedProx's
    Synthetic devices); it lets the natural partitioner recover the generating split.
    Equality is identity (``eq=False``) because element-wise array comparison is neither
    cheap nor a bool.
    """

    x: FloatArray
    y: LabelArray
    groups: IndexArray | None = None

    def __post_init__(self) -> None:
        if self.x.dtype != np.float32:
            raise DataError(f"dataset features must be float32, got {self.x.dtype}")
        if self.y.dtype != np.int64:
            raise DataError(f"dataset labels must be int64, got {self.y.dtype}")
        if self.y.ndim != 1 or self.x.shape[:1] != self.y.shape:
            raise DataError(
                f"dataset has {self.x.shape[:1]} feature rows but labels of shape {self.y.shape}"
            )
        if self.groups is not None and self.groups.shape != self.y.shape:
            raise DataError(f"dataset groups have shape {self.groups.shape}, labels {self.y.shape}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, indices: IndexArray) -> ArrayDataset:
        """The samples at ``indices`` (copied), keeping their groups."""
        groups = None if self.groups is None else self.groups[indices]
        return ArrayDataset(x=self.x[indices], y=self.y[indices], groups=groups)


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about its data: per-sample input shape and class count."""

    input_shape: tuple[int, ...]
    num_classes: int
