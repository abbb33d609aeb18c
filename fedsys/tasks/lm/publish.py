"""What a published language-model version holds: the adapter, or the merged weights.

An adapter version is small and names its base by sha256 (the reader must hold that base);
a merged version is a whole model (``publish.merge``) that stands alone and is what the int8
copy quantizes. Both are plain tensors under peft's / transformers' own names.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from fedsys.tasks.lm.lora import adapter_parameters, load_travelling_state


def _with_state(model: nn.Module, state: Mapping[str, np.ndarray], aggregation: str) -> nn.Module:
    """A private copy of ``model`` holding ``state`` (the process's shared model is untouched)."""
    copied = copy.deepcopy(model)
    load_travelling_state(
        copied, {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, aggregation
    )
    return copied


def adapter_tensors(
    model: nn.Module, state: Mapping[str, np.ndarray], aggregation: str
) -> dict[str, np.ndarray]:
    """Every adapter tensor (A and B, whatever travelled), under peft's saved names."""
    if aggregation == "full":
        return {k: np.asarray(v) for k, v in state.items()}
    copied = _with_state(model, state, aggregation)
    return {k: p.detach().numpy().copy() for k, p in adapter_parameters(copied, "fedit").items()}


def merged_model(model: nn.Module, state: Mapping[str, np.ndarray], aggregation: str) -> nn.Module:
    """The base with the adapter folded in (peft's ``merge_and_unload``): a plain model."""
    copied = _with_state(model, state, aggregation)
    if aggregation == "full":
        return copied.eval()
    merged: nn.Module = copied.merge_and_unload()  # type: ignore[operator]
    return merged.eval()


def merged_tensors(
    model: nn.Module, state: Mapping[str, np.ndarray], aggregation: str
) -> dict[str, np.ndarray]:
    merged = merged_model(model, state, aggregation)
    return {k: v.detach().numpy().copy() for k, v in merged.state_dict().items()}
