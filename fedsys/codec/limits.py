"""What an update for a given global model can need, computed before a byte of it is read.

Every size a payload *claims* (its envelope's payload length, its manifest's deflated and
inflated length, the number of tensors, each tensor's sections) is checked against these
bounds before memory is spent on it, so the server's memory per reply is O(model) whatever
the payload says. The bounds are generous for every honest coding (dense float32 is 1x the
fp32 model; int8 with 8-value blocks 1.5x; top-k with Rice-coded positions about 1.1x) and
tight enough that a payload cannot make the server allocate more than about twice the model.

Values: a decoded float value must be representable in its tensor's dtype with room for the
global model beside it (half the dtype's largest finite value), so neither the float64 running
sum nor the narrowing back to the model's dtype can overflow to infinity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from fedsys.codec.dtypes import FLOAT_NAMES, TORCH_DTYPES

if TYPE_CHECKING:
    from fedsys.codec.template import TensorSpec

HEADER_SLACK = 64  # the fixed wire header and rounding of section lengths
MANIFEST_BASE = 2048  # stage list and JSON framing
MANIFEST_PER_TENSOR = 512  # one tensor entry's JSON, besides its name


@dataclass(frozen=True)
class PayloadLimits:
    """Upper bounds on one update payload for a given global model."""

    payload_bytes: int
    manifest_bytes: int
    tensors: int

    @classmethod
    def for_model(cls, specs: Mapping[str, TensorSpec]) -> PayloadLimits:
        payload = HEADER_SLACK
        manifest = MANIFEST_BASE
        for name, spec in specs.items():
            numel = math.prod(spec.shape)
            if spec.dtype in FLOAT_NAMES:
                # at most 2x the float32 size: values, block scales and positions together
                payload += 8 * numel + HEADER_SLACK
            else:
                payload += 2 * TORCH_DTYPES[spec.dtype].itemsize * numel + HEADER_SLACK
            manifest += MANIFEST_PER_TENSOR + 2 * len(name.encode()) + 24 * len(spec.shape)
        return cls(payload_bytes=payload + manifest, manifest_bytes=manifest, tensors=len(specs))


def value_bound(dtype: str) -> float:
    """The largest magnitude a decoded update value of ``dtype`` may have."""
    if dtype in FLOAT_NAMES:
        return float(torch.finfo(TORCH_DTYPES[dtype]).max) / 2
    if dtype == "bool":
        return 1.0
    return float(torch.iinfo(TORCH_DTYPES[dtype]).max) / 2
