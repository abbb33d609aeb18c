"""Tensors of the Open Inference Protocol to numpy and back: JSON ``data`` lists and the
binary tensor data extension (raw little-endian bytes after a JSON header whose length the
``Inference-Header-Content-Length`` header gives)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from pydantic import ValidationError

from fedsys.errors import InvalidRequest, MalformedRequest
from fedsys.serving.inputs import first_non_number
from fedsys.serving.oip.schemas import InferenceRequest, InputTensor

HEADER_LENGTH = "inference-header-content-length"

DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
NUMERIC = frozenset(DTYPES) - {"BOOL"}


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tail) of a request body."""
    if header_length is None:
        return body, b""
    try:
        size = int(header_length)
    except ValueError:
        raise MalformedRequest("Inference-Header-Content-Length is not a number") from None
    if not 0 < size <= len(body):
        raise MalformedRequest(
            f"Inference-Header-Content-Length {size} is outside the body of {len(body)} bytes"
        )
    return body[:size], body[size:]


def input_array(tensor: InputTensor, binary: memoryview, offset: int) -> tuple[np.ndarray, int]:
    """The tensor as an array of its declared shape, and the offset after its binary bytes."""
    where = f"input {tensor.name!r}"
    if tensor.datatype not in NUMERIC:
        raise InvalidRequest(f"{where}: datatype {tensor.datatype} is not supported; send FP32")
    if any(d < 0 for d in tensor.shape):
        raise InvalidRequest(f"{where}: shape {tensor.shape} has a negative dimension")
    dtype = DTYPES[tensor.datatype]
    count = math.prod(tensor.shape)
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        if tensor.data is not None:
            raise InvalidRequest(f"{where}: has both data and binary_data_size")
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise MalformedRequest(
                f"{where}: binary_data_size {size} overruns the {len(binary)} binary bytes"
            )
        if size != count * dtype.itemsize:
            raise InvalidRequest(
                f"{where}: binary_data_size {size} does not match shape {tensor.shape} of "
                f"{tensor.datatype} ({count * dtype.itemsize} bytes)"
            )
        arr = np.frombuffer(binary[offset : offset + size], dtype=dtype).copy()  # writable
        return arr.reshape(tensor.shape), offset + size
    if tensor.data is None:
        raise InvalidRequest(f"{where}: has neither data nor parameters.binary_data_size")
    found = first_non_number(tensor.data, [])
    if found is not None:
        path, value = found
        at = "".join(f"[{i}]" for i in path)
        raise InvalidRequest(
            f"{where}: data{at} is {json.dumps(value)[:40]}; {tensor.datatype} needs numbers"
        )
    try:
        flat = np.asarray(tensor.data, dtype=np.float64).reshape(-1)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise InvalidRequest(f"{where}: data must be a flat or evenly nested list") from None
    if flat.size != count:
        raise InvalidRequest(
            f"{where}: {flat.size} values do not fill shape {tensor.shape} ({count} values)"
        )
    return flat.reshape(tensor.shape), offset


def parse_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest, bytes]:
    head, binary = split_body(body, header_length)
    try:
        raw = json.loads(head)
    except (ValueError, RecursionError) as exc:
        raise MalformedRequest(f"inference request is not valid JSON: {exc}") from None
    try:
        return InferenceRequest.model_validate(raw), binary
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidRequest(f"invalid inference request at {where}: {first['msg']}") from None


def wants_binary(request: InferenceRequest, output: str) -> bool:
    """Whether ``output`` goes back as binary data (asked per output, or for all)."""
    for asked in request.outputs or ():
        if asked.name == output and asked.parameters is not None:
            value = asked.parameters.get("binary_data")
            if value is not None:
                return bool(value)
    return bool((request.parameters or {}).get("binary_data_output", False))
