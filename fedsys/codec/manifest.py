"""The wire manifest: which stages ran, and for every tensor what it is and how it is coded.

The manifest is JSON validated by pydantic (unknown keys, stages or encodings are refused),
then :func:`check_manifest` checks what JSON schemas cannot: that the byte lengths follow from
shapes and counts, and that each tensor's coding is the one its stage list produces.
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from fedsys.codec.coded import Encoding
from fedsys.codec.dtypes import FLOAT_NAMES, DTypeName, itemsize
from fedsys.codec.quantize import Quantize
from fedsys.codec.stages import Stage, StageSpec, check_pipeline
from fedsys.codec.topk import TopK
from fedsys.errors import CodecArgumentError, WireFormatError

MAX_ELEMENTS = 1 << 31  # per tensor; bounds what a decoder may be asked to allocate
U32 = Annotated[int, Field(ge=0, lt=1 << 32)]
Size = Annotated[int, Field(ge=0, le=1 << 40)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RicePositions(Strict):
    """Rice-coded positions of a sparse tensor (see :mod:`fedsys.codec.rice`)."""

    k: Annotated[int, Field(ge=0, le=32)]
    unary_bytes: Size
    remainder_bytes: Size


class TensorEntry(Strict):
    """One tensor: sections follow in the order positions (unary, remainders), scales, values."""

    name: Annotated[str, Field(min_length=1, max_length=1024)]
    shape: Annotated[list[Annotated[int, Field(ge=0)]], Field(max_length=16)]
    dtype: DTypeName
    encoding: Encoding
    count: Size
    block_size: Annotated[int, Field(ge=0, le=1 << 20)] = 0
    positions: RicePositions | None = None
    scales_bytes: Size = 0
    values_bytes: Size = 0
    crc32: U32

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def data_bytes(self) -> int:
        pos = self.positions
        extra = pos.unary_bytes + pos.remainder_bytes if pos is not None else 0
        return extra + self.scales_bytes + self.values_bytes


MAX_NUM_EXAMPLES = 1 << 53  # exact in float64, where the server weighs updates


class Manifest(Strict):
    stages: Annotated[list[StageSpec], Field(max_length=8)]
    tensors: list[TensorEntry]
    # The aggregation weight (the client's number of training examples). Inside the payload,
    # so an envelope's signature and AEAD cover it; absent only in payloads of older clients.
    num_examples: Annotated[int, Field(ge=1, le=MAX_NUM_EXAMPLES)] | None = None


def expected_values_bytes(encoding: Encoding, dtype: str, count: int) -> int:
    per = {"f32": 4, "fp16": 2, "int8": 1}
    if encoding == "raw":
        return count * itemsize(dtype)
    if encoding == "int4":
        return -(-count // 2)
    return count * per[encoding]


def check_entry(entry: TensorEntry, stages: tuple[Stage, ...]) -> None:
    """Refuse an entry whose lengths or coding disagree with its shape and the stage list."""
    where = f"tensor {entry.name!r}"
    numel = entry.numel
    if numel > MAX_ELEMENTS:
        raise WireFormatError(f"{where} has {numel} elements, above the limit {MAX_ELEMENTS}")
    quantize = next((s for s in stages if isinstance(s, Quantize)), None)
    sparse = any(isinstance(s, TopK) for s in stages)
    if entry.dtype in FLOAT_NAMES:
        want: Encoding = quantize.scheme if quantize is not None else "f32"
        if entry.encoding != want:
            raise WireFormatError(f"{where} is coded {entry.encoding}, stages imply {want}")
        if sparse != (entry.positions is not None):
            raise WireFormatError(f"{where}: positions disagree with the stage list")
    elif entry.encoding != "raw" or entry.positions is not None:
        raise WireFormatError(f"{where} of dtype {entry.dtype} must be raw and dense")
    if entry.positions is None and entry.count != numel:
        raise WireFormatError(f"{where} is dense but holds {entry.count} of {numel} values")
    if entry.count > numel:
        raise WireFormatError(f"{where} holds more values than elements")
    if entry.encoding in ("int8", "int4"):
        assert quantize is not None
        if entry.block_size != quantize.block_size:
            raise WireFormatError(f"{where}: block size disagrees with the stage list")
        if entry.scales_bytes != 4 * -(-entry.count // entry.block_size):
            raise WireFormatError(f"{where}: scale section has the wrong length")
    elif entry.block_size or entry.scales_bytes:
        raise WireFormatError(f"{where}: {entry.encoding} values have no block scales")
    if entry.values_bytes != expected_values_bytes(entry.encoding, entry.dtype, entry.count):
        raise WireFormatError(f"{where}: value section has the wrong length")
    pos = entry.positions
    if pos is not None:
        if pos.remainder_bytes != -(-entry.count * pos.k // 8):
            raise WireFormatError(f"{where}: position remainders have the wrong length")
        if pos.unary_bytes * 8 > entry.count + (numel >> pos.k) + 8:
            raise WireFormatError(f"{where}: position stream is longer than any valid code")


def check_manifest(manifest: Manifest) -> tuple[Stage, ...]:
    """Cross-check a parsed manifest; returns the stage tuple."""
    try:
        stages = check_pipeline(manifest.stages)
    except CodecArgumentError as exc:
        raise WireFormatError(f"stage list: {exc}") from None
    names = [entry.name for entry in manifest.tensors]
    if len(set(names)) != len(names):
        raise WireFormatError("tensor names repeat")
    for entry in manifest.tensors:
        check_entry(entry, stages)
    return stages
