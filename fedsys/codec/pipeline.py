"""Encode a model update through a stage list into wire bytes, and decode it back.

Client::

    pipeline = [Clip(1.0), TopK(0.1), Quantize(bits=8)]
    encoded = encode_update(delta, pipeline, residual=residual)   # residual: Residual | None
    payload, residual = encoded.payload, encoded.residual

Error feedback (when a ``Residual`` is passed): the residual is added just before the first
lossy stage (TopK or Quantize, i.e. after clipping), and the new residual is what that
compensated update lost through *all* lossy stages, quantization included. The sent update's
norm can therefore exceed ``Clip.max_norm`` by the residual's norm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from fedsys.codec.coded import CodedTensor, coded_from_tensors, dense_float32
from fedsys.codec.quantize import Quantize
from fedsys.codec.residual import Residual
from fedsys.codec.stages import Stage, check_pipeline, first_lossy
from fedsys.codec.wire import WireUpdate, pack_update, parse_update
from fedsys.codec.wiretensor import read_only_tensor
from fedsys.errors import CodecError, WireFormatError


@dataclass(frozen=True)
class EncodedUpdate:
    payload: bytes
    residual: Residual | None


def _run_encode(
    stages: Sequence[Stage], tensors: dict[str, CodedTensor], generator: torch.Generator | None
) -> dict[str, CodedTensor]:
    for stage in stages:
        tensors = stage.encode(tensors, generator)
    return tensors


def _run_decode(stages: Sequence[Stage], tensors: dict[str, CodedTensor]) -> dict[str, CodedTensor]:
    for stage in reversed(stages):
        tensors = stage.decode(tensors)
    return tensors


def _compensate(tensors: dict[str, CodedTensor], residual: Residual) -> dict[str, CodedTensor]:
    floats = {name for name, t in tensors.items() if t.encoding == "f32"}
    unknown = set(residual.arrays) - floats
    if unknown:
        raise CodecError(f"residual holds tensors the update lacks: {sorted(unknown)[:3]}")
    out = dict(tensors)
    for name, arr in residual.arrays.items():
        t = tensors[name]
        if tuple(arr.shape) != t.shape:
            raise CodecError(f"residual {name!r} has shape {arr.shape}, tensor has {t.shape}")
        # the residual may be a read-only mapping of the node's file: read, never written
        carried = read_only_tensor(np.ascontiguousarray(arr).reshape(-1)).to(t.values.device)
        out[name] = replace(t, values=t.values + carried)
    return out


def _difference(target: torch.Tensor, sent: torch.Tensor) -> torch.Tensor:
    """``target - sent``, written over ``sent`` (a decoded copy nobody else holds) if it can."""
    if sent.data_ptr() == target.data_ptr():
        return target - sent
    return sent.neg_().add_(target)


def encode_update(
    update: Mapping[str, torch.Tensor],
    pipeline: Sequence[Stage],
    *,
    residual: Residual | None = None,
    generator: torch.Generator | None = None,
    num_examples: int | None = None,
) -> EncodedUpdate:
    """Run ``pipeline`` over ``update`` and serialize; returns the payload and new residual.

    ``generator`` drives stochastic rounding (it must live on the tensors' device);
    ``num_examples`` is the aggregation weight, written into the payload (the server
    requires it there, where the envelope authenticates it)."""
    stages = check_pipeline(pipeline)
    lossy = first_lossy(stages)
    tensors = _run_encode(stages[:lossy], coded_from_tensors(update), generator)
    new_residual = None
    if residual is None:
        tensors = _run_encode(stages[lossy:], tensors, generator)
    else:
        target = _compensate(tensors, residual)
        only = stages[lossy:]
        if len(only) == 1 and isinstance(only[0], Quantize):
            # fast path: the quantizer hands back what it rounded away as it goes
            tensors, lost = only[0].encode_with_residual(target, generator)
            new_residual = Residual(
                {
                    name: lost[name].reshape(t.shape).cpu().numpy()
                    for name, t in target.items()
                    if t.encoding == "f32" and t.positions is None
                }
            )
            return EncodedUpdate(
                pack_update(stages, tensors, num_examples=num_examples), new_residual
            )
        tensors = _run_encode(only, target, generator)
        sent = _run_decode(only, tensors)
        new_residual = Residual(
            {
                name: _difference(dense_float32(target[name]), dense_float32(sent[name]))
                .reshape(t.shape)
                .cpu()
                .numpy()
                for name, t in target.items()
                if t.encoding == "f32"
            }
        )
    return EncodedUpdate(pack_update(stages, tensors, num_examples=num_examples), new_residual)


def decode_update(payload: bytes | bytearray | memoryview | WireUpdate) -> dict[str, torch.Tensor]:
    """Every tensor of an update, in its original shape and dtype (CPU).

    For robust strategies that need individual updates; FedAvg-style sums should use
    :class:`~fedsys.codec.streaming.StreamingSum` instead. Raises only WireFormatError."""
    wire = payload if isinstance(payload, WireUpdate) else parse_update(payload)
    try:
        return {name: t.to_tensor() for name, t in wire.tensors.items()}
    except WireFormatError:
        raise
    except (ValueError, RuntimeError, IndexError) as exc:  # defence in depth at the boundary
        raise WireFormatError(f"payload could not be decoded: {exc}") from None
