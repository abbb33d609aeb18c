"""The FedBuff buffer: K updates summed as they arrive, applied as one step.

Each accepted delta is added at once into a running sum weighted by ``num_examples x
staleness weight``, so the buffer costs one model-sized accumulator however large K is (no
update is held). Applying it gives ``global + server_lr * sum / sum(num_examples)``: with
fresh updates and ``server_lr = 1`` that is FedAvg over the buffer; staler updates shrink the
step instead of being renormalised away, as in the paper's aggregation rule.

The accumulator, the weight and the count are the buffer's whole state: a checkpoint carries
them (``state`` / ``from_state``) so a resumed run continues with the same partial buffer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fedsys.errors import FedsysError
from fedsys.fedbuff.staleness import staleness_weight

Arrays = dict[str, npt.NDArray[np.floating]]


class BufferError(FedsysError):
    """An update does not fit the buffer's model; the message names the tensor."""


@dataclass(frozen=True)
class BufferedUpdate:
    """What the buffer records of one accepted update (for the metrics line)."""

    client: int
    num_examples: float  # the update's example weight, as the collector capped it
    staleness: int
    weight: float  # its staleness weight


@dataclass
class FedBuffBuffer:
    """Up to ``size`` staleness-weighted deltas, summed; ``full`` says when to apply."""

    size: int
    staleness: str = "inverse_sqrt"
    exponent: float = 0.5
    total: Arrays = field(default_factory=dict)
    examples: float = 0.0
    entries: list[BufferedUpdate] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.entries)

    @property
    def full(self) -> bool:
        return self.count >= self.size

    def add(
        self, client: int, delta: Mapping[str, np.ndarray], num_examples: float, staleness: int
    ) -> BufferedUpdate:
        """Add one delta (``client``'s, trained ``staleness`` versions ago)."""
        if num_examples <= 0:
            raise BufferError(f"client {client}: num_examples must be > 0, got {num_examples}")
        s = staleness_weight(self.staleness, staleness, self.exponent)
        scale = float(num_examples) * s
        if self.total and set(delta) != set(self.total):
            raise BufferError(
                f"client {client}: update tensors {sorted(set(delta) ^ set(self.total))} do "
                "not match the buffer's"
            )
        for name, value in delta.items():
            array = np.asarray(value, dtype=np.float64)
            if name in self.total:
                if self.total[name].shape != array.shape:
                    raise BufferError(
                        f"client {client}: tensor {name!r} has shape {array.shape}, "
                        f"expected {self.total[name].shape}"
                    )
                self.total[name] += scale * array
            else:
                self.total[name] = scale * array
        self.examples += float(num_examples)
        entry = BufferedUpdate(client, float(num_examples), int(staleness), s)
        self.entries.append(entry)
        return entry

    def apply(
        self, global_arrays: Mapping[str, np.ndarray], server_lr: float = 1.0
    ) -> dict[str, np.ndarray]:
        """The new global model from the buffer; the buffer is emptied."""
        if not self.entries:
            raise BufferError("the buffer is empty: nothing to apply")
        new = {}
        for name, base in global_arrays.items():
            if name in self.total and np.issubdtype(base.dtype, np.floating):
                step = server_lr * self.total[name] / self.examples
                new[name] = (base.astype(np.float64) + step).astype(base.dtype)
            else:
                new[name] = base
        self.clear()
        return new

    def clear(self) -> None:
        self.total, self.examples, self.entries = {}, 0.0, []

    def state(self) -> tuple[Arrays, dict[str, float | int | list[list[float]]]]:
        """Arrays and scalars to checkpoint (the partial buffer)."""
        meta: dict[str, float | int | list[list[float]]] = {
            "examples": self.examples,
            "entries": [[e.client, e.num_examples, e.staleness, e.weight] for e in self.entries],
        }
        return {f"fedbuff.{k}": v for k, v in self.total.items()}, meta

    def restore(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, object]) -> None:
        """Put back a partial buffer saved by ``state``."""
        prefix = "fedbuff."
        self.total = {
            k[len(prefix) :]: np.asarray(v, dtype=np.float64)
            for k, v in arrays.items()
            if k.startswith(prefix)
        }
        examples = meta.get("examples", 0.0)
        self.examples = float(examples) if isinstance(examples, int | float) else 0.0
        raw = meta.get("entries", [])
        self.entries = [
            BufferedUpdate(int(c), float(n), int(s), float(w))
            for c, n, s, w in (raw if isinstance(raw, list) else [])
        ]
