"""Read one tensor straight out of a received payload, a block-aligned chunk at a time.

The server never needs a full float32 copy of an update: :meth:`WireTensor.add_into` adds
``weight * value`` chunk by chunk (about 4 MiB of scratch), or scatter-adds the kept values
of a sparse tensor. Decoding a whole tensor (for strategies that need each update) is the same
operation into zeros, so there is one decode path to trust.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from fedsys.codec.dtypes import FLOAT_NAMES, TORCH_DTYPES
from fedsys.codec.manifest import TensorEntry
from fedsys.codec.quantize import unpack_int4
from fedsys.codec.rice import decode_positions
from fedsys.errors import CodecArgumentError

CHUNK_ELEMENTS = 1 << 19  # 4 MiB of float64 scratch: aggregation measured fastest here
NUMPY_CODES = {"f32": "<f4", "fp16": "<f2", "int8": "i1", "int4": "u1"}


MAX_CODE = {"int8": 128, "int4": 8}  # largest code magnitude a payload can hold (-128, -8)


@dataclass(frozen=True)
class TensorStats:
    """What the server checks of a tensor's decoded values before they count."""

    finite: bool
    sum_of_squares: float
    max_abs: float  # the largest decoded magnitude (block-quantized: an upper bound)


@dataclass(frozen=True)
class WireTensor:
    """A tensor's manifest entry and views of its sections in the payload (no copies)."""

    entry: TensorEntry
    unary: memoryview
    remainders: memoryview
    scales: memoryview
    values: memoryview

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.entry.shape)

    @property
    def is_float(self) -> bool:
        return self.entry.dtype in FLOAT_NAMES

    @cached_property
    def positions(self) -> torch.Tensor:
        """Sorted flat indices of a sparse tensor (decoded once, then cached)."""
        pos = self.entry.positions
        assert pos is not None
        decoded = decode_positions(
            np.frombuffer(self.unary, dtype=np.uint8),
            np.frombuffer(self.remainders, dtype=np.uint8),
            self.entry.count,
            pos.k,
            self.entry.numel,
        )
        return torch.from_numpy(decoded)

    def raw(self) -> torch.Tensor:
        """The flat values of a raw (integer/bool) tensor, in its own dtype."""
        data = np.frombuffer(self.values, dtype=np.uint8).copy()
        return torch.from_numpy(data).view(TORCH_DTYPES[self.entry.dtype])

    def float_chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """(offset, float32 values) over the coded values; offsets count values, not elements."""
        e = self.entry
        chunk = max(CHUNK_ELEMENTS // max(e.block_size, 1), 1) * max(e.block_size, 1)
        codes = np.frombuffer(self.values, dtype=NUMPY_CODES[e.encoding])
        block_scaled = e.encoding in ("int8", "int4")
        if block_scaled:
            scales = self._weighted_scales(1.0, torch.empty(0, dtype=torch.float32))
        for start in range(0, e.count, chunk):
            n = min(chunk, e.count - start)
            if not block_scaled:
                yield start, torch.from_numpy(codes[start : start + n].astype(np.float32))
                continue
            values = torch.empty(n, dtype=torch.float32)
            self._fill_scaled(values, start, scales)
            yield start, values

    def add_into(
        self, out: torch.Tensor, weight: float, scratch: torch.Tensor | None = None
    ) -> None:
        """``out += weight * self`` for a flat, contiguous ``out`` shaped like the tensor.

        ``scratch`` (``out``'s dtype and device, at least CHUNK_ELEMENTS long) is where each
        chunk is widened before the add; reusing one cache-resident buffer instead of a fresh
        float64 tensor per chunk makes a float64 accumulation about 6x faster here.
        """
        if not self.is_float:
            out.add_(self.raw().to(device=out.device, dtype=out.dtype), alpha=weight)
        elif self.entry.positions is not None:
            values = torch.cat([c for _, c in self.float_chunks()]) if self.entry.count else None
            if values is not None:
                index = self.positions.to(out.device)
                out.index_add_(0, index, values.to(out.device, out.dtype), alpha=weight)
        elif self.block_scaled and scratch is not None:
            add_block_scaled(out, [(self, weight)], scratch)
        else:
            for start, chunk in self.float_chunks():
                n = chunk.numel()
                target = out[start : start + n]
                if scratch is None or scratch.numel() < n:
                    target.add_(chunk.to(out.device, out.dtype), alpha=weight)
                    continue
                wide = scratch[:n]
                wide.copy_(chunk)
                target.add_(wide, alpha=weight)

    @property
    def block_scaled(self) -> bool:
        """Dense int8/int4 codes with per-block scales (what :func:`add_block_scaled` takes)."""
        return (
            self.is_float
            and self.entry.positions is None
            and self.entry.encoding in ("int8", "int4")
        )

    def _weighted_scales(self, weight: float, like: torch.Tensor) -> torch.Tensor:
        block_scales = np.frombuffer(self.scales, dtype="<f4").astype(np.float64) * weight
        return torch.from_numpy(block_scales).to(like.device, like.dtype)

    def _fill_scaled(self, wide: torch.Tensor, start: int, scales: torch.Tensor) -> None:
        """``wide = scale_b * code`` for the ``len(wide)`` values from ``start`` (a block
        boundary): the codes widen straight into ``wide``, which is scaled in place."""
        e = self.entry
        bs, n = e.block_size, wide.numel()
        codes = np.frombuffer(self.values, dtype=NUMPY_CODES[e.encoding])
        if e.encoding == "int4":
            part = torch.from_numpy(codes[start // 2 : (start + n + 1) // 2].copy())
            wide.copy_(unpack_int4(part, n))
        else:  # read in place: the payload is only ever read
            wide.copy_(read_only_tensor(codes[start : start + n]))
        full, b0 = n // bs * bs, start // bs
        if full:
            wide[:full].view(full // bs, bs).mul_(scales[b0 : b0 + full // bs, None])
        if n > full:
            wide[full:].mul_(scales[b0 + full // bs])

    def stats(self, *, need_norm: bool = True, bound: float = math.inf) -> TensorStats:
        """Finiteness, largest magnitude and sum of squares of the decoded values.

        Cheap where it can be: block-quantized codes are integers, so such a tensor's values
        are bounded by ``max|scale| * max|code|`` up front (finite exactly when the scales
        are, and checked against the dtype before anything is summed); it is only decoded when
        the norm is needed. Plain float values are read once per chunk for their extremes
        (NaN propagates through the maximum) and, when asked, one dot product for the norm.
        Raw integer tensors report their largest magnitude and a sum of squares of 0. Above
        ``bound`` the norm is not computed (the caller refuses the tensor anyway).
        """
        if not self.is_float:
            return self._raw_stats()
        e = self.entry
        if e.encoding in ("int8", "int4"):
            scales = np.frombuffer(self.scales, dtype="<f4")
            with np.errstate(over="ignore", invalid="ignore"):
                top = float(np.max(np.abs(scales))) * MAX_CODE[e.encoding] if scales.size else 0.0
            if not math.isfinite(top):
                return TensorStats(False, float("nan"), top)
            if not need_norm or top > bound:  # out of bounds: the caller refuses it undecoded
                return TensorStats(True, 0.0, top)
            total = _sum_of_squares(chunk.numpy() for _, chunk in self.float_chunks())
            return TensorStats(math.isfinite(total), total, top)
        codes = np.frombuffer(self.values, dtype=NUMPY_CODES[e.encoding])
        top = 0.0
        for start in range(0, e.count, CHUNK_ELEMENTS):
            part = codes[start : start + CHUNK_ELEMENTS]
            with np.errstate(over="ignore", invalid="ignore"):
                hi, lo = float(np.max(part)), float(np.min(part))
            if math.isnan(hi) or math.isnan(lo):  # NaN propagates through max and min
                return TensorStats(False, float("nan"), float("nan"))
            top = max(top, hi, -lo)
        if not math.isfinite(top):
            return TensorStats(False, float("nan"), top)
        if not need_norm:
            return TensorStats(True, 0.0, top)
        parts = (codes[a : a + CHUNK_ELEMENTS] for a in range(0, e.count, CHUNK_ELEMENTS))
        total = _sum_of_squares(parts)
        return TensorStats(math.isfinite(total), total, top)

    def dot(self, other: torch.Tensor) -> float:
        """``<decoded values, other>`` in float64 for a float tensor (``other``: flat, one
        entry per element, float64); chunk by chunk, without a decoded copy. Raw: 0."""
        if not self.is_float or not self.entry.count:
            return 0.0
        if self.entry.positions is not None:
            kept = torch.cat([c for _, c in self.float_chunks()]).to(other.dtype)
            return float(torch.dot(kept, other[self.positions]))
        total = 0.0
        for start, chunk in self.float_chunks():
            total += float(torch.dot(chunk.to(other.dtype), other[start : start + chunk.numel()]))
        return total

    def _raw_stats(self) -> TensorStats:
        if not self.entry.count or self.entry.dtype == "bool":
            return TensorStats(True, 0.0, float(self.entry.count > 0))
        values = self.raw()
        top = max(abs(int(values.max())), abs(int(values.min())))
        return TensorStats(True, 0.0, float(top))

    def to_tensor(self) -> torch.Tensor:
        """The whole decoded tensor, in its original shape and dtype."""
        if not self.is_float:
            return self.raw().reshape(self.shape)
        if self.entry.positions is not None:
            out = torch.zeros(self.entry.numel, dtype=torch.float32)
            self.add_into(out, 1.0)
        else:  # dense: every value is written once, no zeroing or adding
            out = torch.empty(self.entry.numel, dtype=torch.float32)
            for start, chunk in self.float_chunks():
                out[start : start + chunk.numel()].copy_(chunk)
        return out.to(TORCH_DTYPES[self.entry.dtype]).reshape(self.shape)


def _sum_of_squares(parts: Iterator[np.ndarray]) -> float:
    """Sum of squares over float chunks: a float32 dot per chunk, redone in float64 where
    float32 overflows (large but finite values are legal; their squares may not fit)."""
    total = 0.0
    for part in parts:
        values = part if part.dtype == np.float32 else part.astype(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            square = float(np.dot(values, values))
        if not math.isfinite(square):
            wide = values.astype(np.float64)
            square = float(np.dot(wide, wide))
        total += square
    return total


def read_only_tensor(values: np.ndarray) -> torch.Tensor:
    """A tensor over a (possibly read-only) array without copying it; callers only read it."""
    with warnings.catch_warnings():  # torch warns that writing to it would be undefined
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(values)


def add_block_scaled(
    out: torch.Tensor,
    group: Sequence[tuple[WireTensor, float]],
    scratch: torch.Tensor,
    spare: torch.Tensor | None = None,
) -> None:
    """``out += sum(weight * value)`` over block-scaled tensors with one block size.

    Chunk by chunk, each value is widened and scaled by ``weight * scale`` in ``scratch``
    (``spare`` for the group's others, summed into ``scratch`` while in cache), then added to
    ``out`` once: reading and writing the model-sized float64 ``out`` bounds this loop, so a
    pair costs little more than one update. In float64 the product of an 8-bit code, a
    float32 scale and an integer weight below 2^21 is exact.
    """
    first = group[0][0]
    bs = first.entry.block_size
    if any(t.entry.block_size != bs or t.entry.count != first.entry.count for t, _ in group):
        raise CodecArgumentError("a group must share its block size and length")
    if len(group) > 1 and spare is None:
        raise CodecArgumentError("a group of several tensors needs a spare scratch buffer")
    chunk = max(min(CHUNK_ELEMENTS, scratch.numel()) // bs, 1) * bs
    scales = [t._weighted_scales(w, out) for t, w in group]
    for start in range(0, first.entry.count, chunk):
        n = min(chunk, first.entry.count - start)
        acc = scratch[:n]
        first._fill_scaled(acc, start, scales[0])
        for (t, _), sc in zip(group[1:], scales[1:], strict=True):
            assert spare is not None
            other = spare[:n]
            t._fill_scaled(other, start, sc)
            acc.add_(other)
        out[start : start + n].add_(acc)
