"""Global L2-norm clipping: scale every float tensor by one factor so the update's norm is
at most ``max_norm`` (per-tensor clipping would change the update's direction)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Annotated, Literal

import torch
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from fedsys.codec.coded import CodedTensor


def global_norm(tensors: dict[str, CodedTensor]) -> float:
    """L2 norm over the float32 values of every float tensor together."""
    total = 0.0
    for t in tensors.values():
        if t.encoding == "f32":
            total += float(torch.linalg.vector_norm(t.values, dtype=torch.float64)) ** 2
    return math.sqrt(total)


@dataclass(frozen=True, config=ConfigDict(extra="forbid", strict=True))
class Clip:
    """Stage: scale the float tensors so their joint L2 norm is at most ``max_norm``."""

    max_norm: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    kind: Literal["clip"] = "clip"

    def encode(
        self, tensors: dict[str, CodedTensor], generator: torch.Generator | None = None
    ) -> dict[str, CodedTensor]:
        norm = global_norm(tensors)
        if norm <= self.max_norm:
            return tensors
        factor = self.max_norm / norm
        return {
            name: replace(t, values=t.values * factor) if t.encoding == "f32" else t
            for name, t in tensors.items()
        }

    def decode(self, tensors: dict[str, CodedTensor]) -> dict[str, CodedTensor]:
        """Clipping cannot be undone; decoding passes the tensors through."""
        return tensors
