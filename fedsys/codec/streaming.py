"""Server-side aggregation in O(model) memory: add each update into running sums as it arrives.

Buffers are preallocated like the global model, in float64 (see ``StreamingSum.__init__``).
Each :meth:`StreamingSum.add` dequantizes block-wise straight into the buffers, or
scatter-adds a sparse tensor's kept values, so no update is ever held as a full float32 copy.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from fedsys.codec.dtypes import TORCH_DTYPES
from fedsys.codec.template import TensorSpec, check_layout, template_from
from fedsys.codec.wire import WireUpdate
from fedsys.codec.wiretensor import CHUNK_ELEMENTS, add_block_scaled
from fedsys.errors import CodecArgumentError


class StreamingSum:
    """Running ``sum(weight_i * update_i)`` over validated updates, plus the total weight."""

    def __init__(
        self,
        template: Mapping[str, torch.Tensor | np.ndarray | TensorSpec],
        *,
        device: torch.device | str = "cpu",
    ) -> None:
        self.template = template_from(template)
        self.total_weight = 0.0
        self.count = 0
        # float64 accumulators: weight * float32 value is exact in float64, and so are sums of
        # a few hundred of them, so the aggregate does not depend on the order replies arrive
        # in (a resumed run ends bit-identical to an uninterrupted one). Cost: 8 bytes/param.
        self._buffers = {
            name: torch.zeros(int(np.prod(spec.shape)), dtype=torch.float64, device=device)
            for name, spec in self.template.items()
        }
        self._scratch = torch.empty(CHUNK_ELEMENTS, dtype=torch.float64, device=device)
        self._spare = torch.empty(CHUNK_ELEMENTS, dtype=torch.float64, device=device)
        # An int8/int4 update waiting for a partner: a pair goes over the float64 sums in one
        # pass, about halving the memory traffic that bounds aggregation. Holding it costs its
        # payload (a quarter of a float32 model for int8), which the reply holds anyway.
        self._held: tuple[WireUpdate, float] | None = None

    def add(self, update: WireUpdate, weight: float, *, scale: float = 1.0) -> None:
        """Add ``weight * scale * update`` and count ``weight`` (``scale`` < 1 clips an update
        without lowering its weight); a layout mismatch raises UpdateRejected before any
        change."""
        check_layout(update, self.template)
        for t in update.tensors.values():  # decode positions first: a bad stream changes nothing
            if t.entry.positions is not None:
                _ = t.positions
        contribution = weight * scale
        if not _pairable(update):
            self._add_one(update, contribution)
        elif self._held is None:
            self._held = (update, contribution)
        else:
            held, self._held = self._held, None
            self._add_pair(held, (update, contribution))
        self.total_weight += weight
        self.count += 1

    def remove(self, update: WireUpdate, weight: float, *, scale: float = 1.0) -> None:
        """Undo an :meth:`add` of the same arguments (exact: float64 sums of these terms are)."""
        self.add(update, -weight, scale=scale)
        self.count -= 2

    def dot(self, update: WireUpdate) -> float:
        """``<update, sum>`` over the float tensors, in float64."""
        self._flush()
        return sum(t.dot(self._buffers[n]) for n, t in update.tensors.items() if t.is_float)

    def square(self) -> float:
        """``|sum|^2`` over the float tensors."""
        self._flush()
        return sum(
            float(torch.dot(buf, buf))
            for name, buf in self._buffers.items()
            if self.template[name].is_float
        )

    def _add_one(self, update: WireUpdate, weight: float) -> None:
        for name, t in update.tensors.items():
            t.add_into(self._buffers[name], weight, self._scratch)

    def _add_pair(self, a: tuple[WireUpdate, float], b: tuple[WireUpdate, float]) -> None:
        for name, ta in a[0].tensors.items():
            tb = b[0].tensors[name]
            same = ta.block_scaled and tb.block_scaled
            if same and ta.entry.block_size == tb.entry.block_size:
                add_block_scaled(
                    self._buffers[name], [(ta, a[1]), (tb, b[1])], self._scratch, self._spare
                )
            else:
                ta.add_into(self._buffers[name], a[1], self._scratch)
                tb.add_into(self._buffers[name], b[1], self._scratch)

    def _flush(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._add_one(*held)

    def sum(self) -> dict[str, torch.Tensor]:
        """The weighted sums, shaped like the model (float64 buffers, not copies)."""
        self._flush()
        return {name: buf.view(self.template[name].shape) for name, buf in self._buffers.items()}

    def consume_into_weights(self, base: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``base + sum / total weight`` in ``base``'s dtypes, written over the sum's buffers.

        Chunk by chunk, each float64 sum is divided, offset by ``base`` (added in float64 and
        rounded once) and narrowed to the model's dtype into the front of its own storage, so
        the result needs no new model-sized allocation: the aggregation's peak stays at the
        sums plus one chunk. The price: each result array keeps its float64 buffer's storage
        (twice its own size) alive until it is dropped. Integer tensors get the rounded mean.
        """
        if self.total_weight == 0:
            raise CodecArgumentError("no weight has been added")
        self._flush()
        out: dict[str, np.ndarray] = {}
        for name, buf in self._buffers.items():
            spec = self.template[name]
            flat = np.asarray(base[name]).reshape(-1)
            # only read; a read-only base (e.g. loaded from a checkpoint) is copied instead
            start = torch.from_numpy(flat) if flat.flags.writeable else torch.tensor(flat)
            result = _narrow_in_place(buf, TORCH_DTYPES[spec.dtype])
            for a in range(0, buf.numel(), CHUNK_ELEMENTS):
                part = buf[a : a + CHUNK_ELEMENTS]
                part.div_(self.total_weight)
                if not spec.is_float:
                    part.round_()
                part.add_(start[a : a + CHUNK_ELEMENTS])
                # materialized before the write: the bytes written belong to float64 values
                # of this chunk or earlier ones, all read by now
                narrowed = part.to(result.dtype)
                result[a : a + CHUNK_ELEMENTS].copy_(narrowed)
            out[name] = result.numpy().reshape(spec.shape)
        self.count, self.total_weight = 0, 0.0
        self._buffers = {}
        return out

    def mean(self) -> dict[str, torch.Tensor]:
        """Sum / total weight in the model's dtypes (integer tensors rounded)."""
        if self.total_weight == 0:
            raise CodecArgumentError("no weight has been added")
        out: dict[str, torch.Tensor] = {}
        for name, buf in self.sum().items():
            spec = self.template[name]
            avg = buf / self.total_weight
            if not spec.is_float:
                avg = torch.round(avg)
            out[name] = avg.to(TORCH_DTYPES[spec.dtype])
        return out


def _narrow_in_place(buf: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A ``dtype`` view of the first ``numel`` elements' worth of ``buf``'s bytes."""
    itemsize = torch.empty(0, dtype=dtype).element_size()
    if itemsize > buf.element_size():
        raise CodecArgumentError(f"cannot narrow {buf.dtype} into the wider {dtype}")
    return buf.view(torch.uint8)[: buf.numel() * itemsize].view(dtype)


def _pairable(update: WireUpdate) -> bool:
    """Every float tensor block-quantized and dense (so holding it is cheap)."""
    return all(t.block_scaled for t in update.tensors.values() if t.is_float)
