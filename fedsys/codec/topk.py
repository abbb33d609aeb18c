"""Top-k sparsification per tensor: keep the ``ceil(fraction * n)`` entries of largest |x|.

Per tensor rather than global, so every layer (biases and norms included) keeps its share and
a tensor's cost is known from its size alone. The error-feedback residual that makes top-k
converge is handled by the pipeline (:mod:`fedsys.codec.pipeline`), so it also absorbs the
quantization error of later stages.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Annotated, Literal

import torch
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from fedsys.codec.coded import CodedTensor


def kept_count(fraction: float, n: int) -> int:
    """Entries kept out of ``n``: ceil(fraction * n), at least 1 for a non-empty tensor.

    The product is rounded to 6 decimals first so 0.1 * 30 keeps 3, not 4."""
    if n == 0:
        return 0
    return min(n, max(1, math.ceil(round(fraction * n, 6))))


def top_positions(values: torch.Tensor, k: int) -> torch.Tensor:
    """Sorted flat indices of the ``k`` entries of largest magnitude (ties: lowest index).

    A threshold (k-th largest via ``kthvalue``) and a mask give indices already in order,
    which is what the position coder needs, without sorting k indices."""
    n = values.numel()
    if k >= n:
        return torch.arange(n, device=values.device)
    if k == 0:
        return torch.zeros(0, dtype=torch.int64, device=values.device)
    magnitude = values.abs()
    threshold = torch.kthvalue(magnitude, n - k + 1).values
    mask = magnitude > threshold
    missing = k - int(mask.sum())
    if missing > 0:
        ties = torch.nonzero(magnitude == threshold).view(-1)[:missing]
        mask[ties] = True
    return torch.nonzero(mask).view(-1)


@dataclass(frozen=True, config=ConfigDict(extra="forbid", strict=True))
class TopK:
    """Stage: send only the largest-|x| ``fraction`` of each float tensor, with positions."""

    fraction: Annotated[float, Field(gt=0, le=1)]
    kind: Literal["topk"] = "topk"

    def encode(
        self, tensors: dict[str, CodedTensor], generator: torch.Generator | None = None
    ) -> dict[str, CodedTensor]:
        out: dict[str, CodedTensor] = {}
        for name, t in tensors.items():
            if t.encoding != "f32" or t.positions is not None:
                out[name] = t
                continue
            positions = top_positions(t.values, kept_count(self.fraction, t.count))
            out[name] = replace(
                t, values=t.values[positions], positions=positions, count=positions.numel()
            )
        return out

    def decode(self, tensors: dict[str, CodedTensor]) -> dict[str, CodedTensor]:
        """Scatter the kept values into zeros (expects float32 values: decode Quantize first)."""
        out: dict[str, CodedTensor] = {}
        for name, t in tensors.items():
            if t.positions is None:
                out[name] = t
                continue
            dense = t.values.new_zeros(t.numel)
            dense[t.positions] = t.values
            out[name] = replace(t, values=dense, positions=None, count=t.numel)
        return out
