"""The tensor dtypes an update may carry, by the names the wire manifest uses."""

from __future__ import annotations

from typing import Literal

import torch

from fedsys.errors import CodecError

DTypeName = Literal[
    "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"
]

TORCH_DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
DTYPE_NAMES: dict[torch.dtype, DTypeName] = {
    torch.float64: "float64",
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.int64: "int64",
    torch.int32: "int32",
    torch.int16: "int16",
    torch.int8: "int8",
    torch.uint8: "uint8",
    torch.bool: "bool",
}
FLOAT_NAMES = frozenset({"float64", "float32", "float16", "bfloat16"})


def dtype_name(dtype: torch.dtype) -> DTypeName:
    """The manifest name of ``dtype``; dtypes outside the table cannot travel."""
    try:
        return DTYPE_NAMES[dtype]
    except KeyError:
        raise CodecError(f"tensors of dtype {dtype} cannot be encoded") from None


def itemsize(name: str) -> int:
    return TORCH_DTYPES[name].itemsize
