"""Quantize float values: fp16, or int8/int4 with one absmax scale per block.

Symmetric absmax quantization per block of ``block_size`` values: ``scale = max|x| / qmax``
(qmax 127 for int8, 7 for int4) and ``q = round(x / scale)``, so every dequantized value is
within ``scale / 2`` of the original. With ``stochastic=True`` the rounding is
``floor(x / scale + u)``, ``u ~ U[0, 1)``, which is unbiased: E[dequant(quant(x))] = x.
Scales are float32 (fp16 scales underflow for small deltas); at 256 values per block they cost
4/256 bytes per value. int4 codes are stored offset by 8 and packed two per byte, low nibble
first. All arithmetic is torch, so it runs where the tensor lives (CPU or CUDA).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from fedsys.codec.coded import CodedTensor, Encoding
from fedsys.codec.params import QUANTIZE_BITS, SCHEME_OF_BITS, QuantizeBits, QuantizeScheme

# the largest code of each integer scheme: 127 for int8, 7 for int4
QMAX = {s: (1 << (b - 1)) - 1 for s, b in QUANTIZE_BITS.items() if s != "fp16"}
FP16_MAX = 65504.0


def _blocks(values: torch.Tensor, block_size: int) -> list[torch.Tensor]:
    """(n, block_size) views of the full blocks, plus the zero-padded last block if partial.

    Only the tail is copied: padding the whole tensor would copy every value once more.
    """
    full = values.numel() // block_size * block_size
    parts = [values[:full].view(-1, block_size)] if full else []
    if values.numel() > full:
        tail = values[full:]
        parts.append(F.pad(tail, (0, block_size - tail.numel())).view(1, block_size))
    return parts


# Rows of blocks quantized at a time: small enough that the float temporaries stay in cache,
# which makes quantizing about 6x faster than whole-tensor ops at 10M values.
_CHUNK_VALUES = 1 << 18


def _quantize_rows(
    blocks: torch.Tensor,
    qmax: int,
    codes: torch.Tensor,
    scales: torch.Tensor,
    stochastic: bool,
    generator: torch.Generator | None,
    residual: torch.Tensor | None,
) -> None:
    """Quantize (rows, block_size) ``blocks`` into ``codes`` (int8, same shape) and ``scales``.

    With ``residual`` (float32, same shape) also write ``blocks - dequantized`` there, computed
    exactly as :func:`dequantize_blocks` would dequantize, while the chunk is still in cache.
    """
    rows_per_chunk = max(1, _CHUNK_VALUES // blocks.shape[1])
    work = torch.empty(
        (min(rows_per_chunk, blocks.shape[0]), blocks.shape[1]),
        dtype=torch.float32,
        device=blocks.device,
    )
    for first in range(0, blocks.shape[0], rows_per_chunk):
        rows = blocks[first : first + rows_per_chunk]
        tmp = work[: rows.shape[0]]
        chunk_scales = scales[first : first + rows.shape[0]]
        torch.abs(rows, out=tmp)
        torch.amax(tmp, dim=1, out=chunk_scales)
        chunk_scales.div_(qmax)
        inverse = torch.where(chunk_scales > 0, 1.0 / chunk_scales, 0.0)
        torch.mul(rows, inverse[:, None], out=tmp)
        if stochastic:
            noise = torch.rand(tmp.shape, generator=generator, device=tmp.device)
            tmp.add_(noise).floor_()
        else:
            tmp.round_()
        codes[first : first + rows.shape[0]].copy_(tmp.clamp_(-qmax, qmax))
        if residual is not None:
            tmp.mul_(chunk_scales[:, None])
            torch.sub(rows, tmp, out=residual[first : first + rows.shape[0]])


def quantize_blocks(
    values: torch.Tensor,
    scheme: Literal["int8", "int4"],
    block_size: int,
    *,
    stochastic: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat float32 ``values`` → (codes, float32 scales); int4 codes come back packed."""
    codes, scales, _ = _quantize(values, scheme, block_size, stochastic, generator, False)
    return codes, scales


def quantize_with_residual(
    values: torch.Tensor,
    scheme: Literal["int8", "int4"],
    block_size: int,
    *,
    stochastic: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`quantize_blocks` plus ``values - dequantized`` (error feedback) in the same pass."""
    codes, scales, residual = _quantize(values, scheme, block_size, stochastic, generator, True)
    assert residual is not None
    return codes, scales, residual


def _quantize(
    values: torch.Tensor,
    scheme: Literal["int8", "int4"],
    block_size: int,
    stochastic: bool,
    generator: torch.Generator | None,
    with_residual: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    count = values.numel()
    if count == 0:
        empty = values.new_zeros(0)
        return values.new_zeros(0, dtype=torch.int8), empty, empty if with_residual else None
    qmax = QMAX[scheme]
    nblocks = -(-count // block_size)
    padded = nblocks * block_size
    codes = torch.empty(padded, dtype=torch.int8, device=values.device)
    scales = torch.empty(nblocks, dtype=torch.float32, device=values.device)
    residual = (
        torch.empty(padded, dtype=torch.float32, device=values.device) if with_residual else None
    )
    row = 0
    for blocks in _blocks(values.to(torch.float32), block_size):
        rows = blocks.shape[0]
        span = slice(row * block_size, (row + rows) * block_size)
        _quantize_rows(
            blocks,
            qmax,
            codes[span].view(rows, block_size),
            scales[row : row + rows],
            stochastic,
            generator,
            residual[span].view(rows, block_size) if residual is not None else None,
        )
        row += rows
    codes = codes[:count]
    if scheme == "int4":
        codes = pack_int4(codes)
    return codes, scales, residual[:count] if residual is not None else None


def dequantize_blocks(
    codes: torch.Tensor,
    scales: torch.Tensor,
    count: int,
    scheme: Literal["int8", "int4"],
    block_size: int,
) -> torch.Tensor:
    """Inverse of :func:`quantize_blocks` for ``count`` values starting on a block boundary."""
    q = unpack_int4(codes, count) if scheme == "int4" else codes[:count]
    out = torch.empty(count, dtype=torch.float32, device=q.device)
    full = count // block_size * block_size
    nfull = full // block_size
    if full:  # widen into the output and scale in place: no padded copy, no temporaries
        main = out[:full].view(nfull, block_size)
        main.copy_(q[:full].view(nfull, block_size))
        main.mul_(scales[:nfull, None].to(torch.float32))
    if count > full:
        out[full:] = q[full:].to(torch.float32) * scales[nfull].to(torch.float32)
    return out


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """int8 codes in [-8, 7] → uint8, two per byte (low nibble = even index)."""
    nibbles = (codes.to(torch.int16) + 8).to(torch.uint8)
    if nibbles.numel() % 2:
        nibbles = F.pad(nibbles, (0, 1), value=8)
    pairs = nibbles.view(-1, 2)
    return pairs[:, 0] | (pairs[:, 1] << 4)


def unpack_int4(packed: torch.Tensor, count: int) -> torch.Tensor:
    """uint8 bytes → ``count`` int8 codes in [-8, 7]."""
    pairs = torch.stack((packed & 0x0F, packed >> 4), dim=1).view(-1)[:count]
    return pairs.to(torch.int8) - 8


@dataclass(frozen=True, config=ConfigDict(extra="forbid", strict=True))
class Quantize:
    """Stage: ``bits`` 16 → fp16, 8 → int8, 4 → int4 (block scales, optional stochastic)."""

    bits: QuantizeBits = 8
    block_size: Annotated[int, Field(ge=8, le=1 << 20, multiple_of=2)] = 256
    stochastic: bool = False
    kind: Literal["quantize"] = "quantize"

    @property
    def scheme(self) -> QuantizeScheme:
        return SCHEME_OF_BITS[self.bits]

    def encode(
        self, tensors: dict[str, CodedTensor], generator: torch.Generator | None = None
    ) -> dict[str, CodedTensor]:
        return {name: self._encode_one(t, generator) for name, t in tensors.items()}

    def decode(self, tensors: dict[str, CodedTensor]) -> dict[str, CodedTensor]:
        return {name: decode_values(t) for name, t in tensors.items()}

    def encode_with_residual(
        self, tensors: dict[str, CodedTensor], generator: torch.Generator | None = None
    ) -> tuple[dict[str, CodedTensor], dict[str, torch.Tensor]]:
        """:meth:`encode` plus, per dense float tensor, what quantization took away.

        Equal to ``values - decode(encode(values))``, but computed inside the quantizer's
        chunk loop: no second pass to dequantize and subtract.
        """
        out: dict[str, CodedTensor] = {}
        lost: dict[str, torch.Tensor] = {}
        for name, t in tensors.items():
            if t.encoding != "f32" or t.positions is not None:
                out[name] = self._encode_one(t, generator)
                continue
            if self.scheme == "fp16":
                out[name] = self._encode_one(t, generator)
                lost[name] = t.values - out[name].values.to(torch.float32)
                continue
            codes, scales, residual = quantize_with_residual(
                t.values,
                self.scheme,  # type: ignore[arg-type]
                self.block_size,
                stochastic=self.stochastic,
                generator=generator,
            )
            out[name] = replace(
                t, values=codes, encoding=self.scheme, scales=scales, block_size=self.block_size
            )
            lost[name] = residual
        return out, lost

    def _encode_one(self, t: CodedTensor, generator: torch.Generator | None) -> CodedTensor:
        if t.encoding != "f32":
            return t
        scheme = self.scheme
        if scheme == "fp16":
            half = t.values.clamp(-FP16_MAX, FP16_MAX).to(torch.float16)
            return replace(t, values=half, encoding="fp16")
        codes, scales = quantize_blocks(
            t.values, scheme, self.block_size, stochastic=self.stochastic, generator=generator
        )
        return replace(t, values=codes, encoding=scheme, scales=scales, block_size=self.block_size)


def decode_values(t: CodedTensor) -> CodedTensor:
    """Turn fp16/int8/int4 values back into float32 (positions stay as they are)."""
    encoding: Encoding = t.encoding
    if encoding == "fp16":
        return replace(t, values=t.values.to(torch.float32), encoding="f32")
    if encoding in ("int8", "int4"):
        assert t.scales is not None
        values = dequantize_blocks(t.values, t.scales, t.count, encoding, t.block_size)
        return replace(t, values=values, encoding="f32", scales=None, block_size=0)
    return t
