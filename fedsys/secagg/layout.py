"""The model's float tensors as one flat vector (what is quantized and masked) and back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Slot:
    name: str
    shape: tuple[int, ...]
    start: int
    size: int


@dataclass(frozen=True)
class FlatLayout:
    """Float tensors in key order; integer tensors (e.g. BatchNorm counters) are not summed."""

    slots: tuple[Slot, ...]

    @property
    def length(self) -> int:
        return self.slots[-1].start + self.slots[-1].size if self.slots else 0

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray | torch.Tensor]) -> FlatLayout:
        slots: list[Slot] = []
        start = 0
        for name, arr in arrays.items():
            is_float = (
                arr.is_floating_point()
                if isinstance(arr, torch.Tensor)
                else (np.asarray(arr).dtype.kind == "f")
            )
            if not is_float:
                continue
            shape = tuple(int(d) for d in arr.shape)
            size = int(np.prod(shape, dtype=np.int64))
            slots.append(Slot(name, shape, start, size))
            start += size
        return cls(tuple(slots))

    def flatten(self, tensors: Mapping[str, torch.Tensor]) -> np.ndarray:
        """One float32 vector of the float tensors (CPU)."""
        out = np.empty(self.length, dtype=np.float32)
        for slot in self.slots:
            t = tensors[slot.name].detach().to("cpu", torch.float32).reshape(-1)
            out[slot.start : slot.start + slot.size] = t.numpy()
        return out

    def add_to(self, base: Mapping[str, np.ndarray], flat: np.ndarray) -> dict[str, np.ndarray]:
        """``base + flat`` per tensor, in each tensor's dtype; other tensors pass through."""
        out = dict(base)
        for slot in self.slots:
            arr = base[slot.name]
            piece = flat[slot.start : slot.start + slot.size].reshape(slot.shape)
            out[slot.name] = np.asarray(arr + piece, dtype=arr.dtype)
        return out
