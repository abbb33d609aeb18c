"""What a published language-model version holds: the adapter, or the merged weights.

An adapter version is small and names its base by sha256 (the reader must hold that base);
a merged version is a whole model (``publish.merge``) that stands alone and is what the int8
copy quantizes. Both are plain tensors under peft's / transformers' own names.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsys.lm_config import LMConfig
from fedsys.tasks.lm.lora import adapter_parameters, load_travelling_state
from fedsys.tasks.lm.models import BaseModel


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


def describe(
    base: BaseModel, lm: LMConfig, content: str, weights: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """The manifest's ``model`` for a language-model version: what it holds (``content``:
    adapter or merged), its base's sha256 and architecture, the adapter's settings and shapes."""
    config = base.model.config.to_dict()  # type: ignore[union-attr, operator]
    return {
        "task": "language_model",
        "content": content,
        "base_sha256": base.sha256,
        "base": base.source,
        "architecture": config,
        "lora": lm.lora.model_dump(mode="json"),
        "tokenizer": lm.tokenizer.kind,
        "tensors": {k: list(v.shape) for k, v in weights.items()} if content == "adapter" else {},
    }


class _Tensors(nn.Module):
    """Empty parameters under dotted names: what an adapter version's weights must fill."""

    def __init__(self, shapes: Mapping[str, list[int]]) -> None:
        super().__init__()
        for name, shape in shapes.items():
            *path, leaf = name.split(".")
            owner: nn.Module = self
            for part in path:
                if not hasattr(owner, part):
                    owner.add_module(part, nn.Module())
                owner = getattr(owner, part)
            owner.register_parameter(leaf, nn.Parameter(torch.empty(shape), requires_grad=False))


def published_module(model: Mapping[str, Any]) -> nn.Module:
    """The module a language-model version's weights load into (strictly): the merged
    architecture, or the adapter's tensors (an adapter needs its base to run)."""
    if model.get("content") == "adapter":
        shapes = model.get("tensors")
        if not isinstance(shapes, dict) or not shapes:
            raise ValueError("an adapter version must list its tensors")
        return _Tensors(shapes)
    from transformers import AutoConfig, AutoModelForCausalLM

    architecture = dict(model["architecture"])
    config = AutoConfig.for_model(architecture.pop("model_type"), **architecture)
    with torch.device("meta"):
        module = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    return module.to_empty(device="cpu")  # type: ignore[no-any-return]
