"""The global model on its way down: optionally fp16/int8 coded in the update wire format.

The server keeps the exact float32 model; clients train from the decoded copy and send
``local - decoded``, and the server applies the mean of those deltas to its exact model. So
the downlink's rounding error never accumulates in the global model: each round it only
perturbs the clients' starting point by at most half a quantization step.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from fedsys.codec.limits import value_bound
from fedsys.codec.params import QUANTIZE_BITS, DownlinkScheme
from fedsys.codec.pipeline import decode_update, encode_update
from fedsys.codec.quantize import Quantize
from fedsys.codec.template import check_layout, template_from
from fedsys.codec.wire import parse_update
from fedsys.errors import CodecArgumentError, UpdateRejected, WireFormatError


def encode_global(
    arrays: Mapping[str, np.ndarray], scheme: DownlinkScheme, block_size: int
) -> bytes:
    """The global model as wire bytes (float tensors coded, the rest verbatim)."""
    if scheme == "none":
        raise CodecArgumentError("encode_global needs a coding scheme (fp16 or int8)")
    # (np.ascontiguousarray would turn 0-d counters into 1-d arrays)
    tensors = {k: torch.from_numpy(np.asarray(v)).contiguous() for k, v in arrays.items()}
    stage = Quantize(bits=QUANTIZE_BITS[scheme], block_size=block_size)
    return encode_update(tensors, [stage]).payload


def decode_global(
    payload: bytes, expected: Mapping[str, torch.Tensor | np.ndarray]
) -> dict[str, torch.Tensor]:
    """Decode the server's model, checking it has exactly the local model's layout.

    Raises WireFormatError for a damaged payload and UpdateRejected for a different layout
    or non-finite values, so a client never trains from a model it did not expect.
    """
    wire = parse_update(payload)
    check_layout(wire, template_from(expected))
    for name, tensor in wire.tensors.items():
        # block-coded values are bounded by their scales up front: no full pass needed
        stats = tensor.stats(need_norm=False)
        if not stats.finite or stats.max_abs > 2 * value_bound(tensor.entry.dtype):
            raise UpdateRejected(f"global model tensor {name!r} holds non-finite values")
    return decode_update(wire)


__all__ = ["DownlinkScheme", "WireFormatError", "decode_global", "encode_global"]
