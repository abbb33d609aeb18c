"""The models a worker serves right now, swapped atomically when the registry moves.

A request looks its model up once, on arrival, and keeps that object to the end, so a swap
never changes the model under a request in flight: requests admitted before the swap
finish on the old model, later ones use the new one, and none fails. Swaps happen on the
event loop only; the dict assignment is the whole swap.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from fedsys.fx_tracing import FX_TRACING
from fedsys.registry import ModelManifest
from fedsys.serving.batcher import FloatArray

log = logging.getLogger("fedsys.serving")


@dataclass(frozen=True, eq=False)
class ServedModel:
    """One loaded, verified version of a model; identity is what the batcher groups by."""

    name: str
    version: int
    manifest: ModelManifest
    module: nn.Module
    variant: str = "fp32"
    # The version's other servable forms (compressed variants), each a ServedModel of its
    # own so the batcher never mixes them; a request picks one with ?variant=.
    variants: Mapping[str, ServedModel] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest.input_shape)

    def served_variants(self) -> list[str]:
        return sorted({self.variant, *self.variants})

    def pick(self, variant: str | None) -> ServedModel | None:
        """This model (None or its own variant) or the named variant; None if not served."""
        if variant is None or variant == self.variant:
            return self
        return self.variants.get(variant)

    def run(self, x: FloatArray) -> FloatArray:
        """Logits for a batch; called from the inference thread only."""
        with FX_TRACING, torch.inference_mode():  # never inside a variant's fx trace
            logits = self.module(torch.from_numpy(x))
        out: FloatArray = logits.float().numpy()
        return out


class LiveModels:
    """name -> the ServedModel answering requests now."""

    def __init__(self) -> None:
        self._models: dict[str, ServedModel] = {}

    def get(self, name: str) -> ServedModel | None:
        return self._models.get(name)

    def names(self) -> list[str]:
        return sorted(self._models)

    def swap(self, served: ServedModel) -> ServedModel | None:
        """Serve ``served`` from now on; returns the model it replaced."""
        old = self._models.get(served.name)
        self._models[served.name] = served
        return old

    def __len__(self) -> int:
        return len(self._models)


def softmax(logits: FloatArray) -> FloatArray:
    """Row-wise probabilities (numerically stable)."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: FloatArray = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    return out
