"""One tensor part-way through the pipeline, and the conversions at both ends of it.

Stages pass ``dict[str, CodedTensor]`` along. A float tensor starts as flat float32 values
(``encoding="f32"``); TopK makes it sparse (``positions``), Quantize replaces the values with
codes and per-block scales. Integer and bool tensors travel as ``encoding="raw"`` in their own
dtype and every stage passes them through untouched, so BatchNorm counters stay exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from fedsys.codec.dtypes import FLOAT_NAMES, DTypeName, dtype_name
from fedsys.errors import CodecError

Encoding = Literal["raw", "f32", "fp16", "int8", "int4"]


@dataclass(frozen=True)
class CodedTensor:
    """``values`` holds ``count`` logical values (all entries when dense, the kept ones when
    sparse): raw → the original dtype, f32 → float32, fp16 → float16, int8 → int8 codes,
    int4 → uint8 with two codes per byte. ``scales`` (float32, one per block) exist for
    int8/int4 only; ``positions`` (sorted int64 flat indices) only for sparse tensors."""

    shape: tuple[int, ...]
    dtype: DTypeName
    encoding: Encoding
    values: torch.Tensor
    count: int
    positions: torch.Tensor | None = None
    scales: torch.Tensor | None = None
    block_size: int = 0

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_NAMES


def coded_from_tensors(update: Mapping[str, torch.Tensor]) -> dict[str, CodedTensor]:
    """Flatten the caller's tensors; float values become float32 and must be finite."""
    coded: dict[str, CodedTensor] = {}
    for name, tensor in update.items():
        if not isinstance(tensor, torch.Tensor):
            raise CodecError(f"update entry {name!r} is a {type(tensor).__name__}, not a tensor")
        dtype = dtype_name(tensor.dtype)
        flat = tensor.detach().reshape(-1)
        shape = tuple(int(d) for d in tensor.shape)
        if dtype in FLOAT_NAMES:
            values = flat.to(torch.float32)
            # One dot product is inf/NaN exactly when a value is (or the squares overflow
            # float32, which no sane delta does); ~20x cheaper than torch.isfinite().all().
            if not math.isfinite(float(torch.dot(values, values))):
                raise CodecError(f"tensor {name!r} holds NaN or infinite values")
            coded[name] = CodedTensor(shape, dtype, "f32", values, values.numel())
        else:
            coded[name] = CodedTensor(shape, dtype, "raw", flat, flat.numel())
    return coded


def dense_float32(tensor: CodedTensor) -> torch.Tensor:
    """The flat float32 values of a decoded (``f32``, dense) float tensor."""
    if tensor.encoding != "f32" or tensor.positions is not None:
        raise CodecError("tensor is still encoded; decode every stage first")
    return tensor.values
