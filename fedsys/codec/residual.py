"""The client's error-feedback residual: what earlier rounds compressed away, owed later.

An explicit value the caller keeps between rounds (on Flower, in the node's ``context.state``,
e.g. as ``ConfigRecord({"residual": residual.to_bytes()})``). Arrays are float32 numpy on the
CPU, one per float tensor, shaped like it; a missing entry means zeros.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from safetensors import SafetensorError
from safetensors.numpy import load, save, save_file

from fedsys.errors import CodecError


@dataclass(frozen=True)
class Residual:
    """Per-tensor float32 residuals; ``Residual()`` turns error feedback on with zeros."""

    arrays: Mapping[str, NDArray[np.float32]] = field(default_factory=dict)

    def to_arrays(self) -> dict[str, NDArray[np.float32]]:
        return dict(self.arrays)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Residual:
        out: dict[str, NDArray[np.float32]] = {}
        for name, arr in arrays.items():
            a = np.asarray(arr)
            if a.dtype != np.float32:
                raise CodecError(f"residual {name!r} is {a.dtype}, expected float32")
            out[name] = a
        return cls(out)

    def to_bytes(self) -> bytes:
        """safetensors bytes (no pickle)."""
        return save({name: np.require(a, requirements="C") for name, a in self.arrays.items()})

    def to_file(self, path: Path) -> None:
        """Write safetensors straight from the arrays (no model-sized bytes object); the
        node's residual store reads them back through a memory map."""
        save_file({name: np.require(a, requirements="C") for name, a in self.arrays.items()}, path)

    @classmethod
    def from_bytes(cls, data: bytes) -> Residual:
        try:
            arrays = load(bytes(data))
        except (SafetensorError, ValueError, TypeError) as exc:
            raise CodecError(f"residual state is not valid safetensors: {exc}") from None
        return cls.from_arrays(arrays)

    def norm(self) -> float:
        return float(
            np.sqrt(sum(float(np.square(a, dtype=np.float64).sum()) for a in self.arrays.values()))
        )
