"""A version's torch module, rebuilt from its manifest's architecture fields and weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load as torch_load
from torch import nn

from fedsys.config import ModelConfig
from fedsys.data.types import DatasetInfo
from fedsys.errors import ArtifactRejected, FedsysError
from fedsys.models import build_model
from fedsys.registry.version_manifest import ModelManifest


def build_module(model: dict[str, Any], input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """An uninitialised module (load weights into it) from a manifest's architecture fields.

    Built on the meta device and then given empty CPU storage: no time spent on random
    initialisation that the weights overwrite, and torch's global RNG is left alone, so
    publishing on a background thread cannot change what the main thread draws.
    """
    if model.get("task") == "language_model":
        raise ArtifactRejected(
            "a language model is rebuilt from its base directory (the manifest's "
            "language_model), not from manifest.model"
        )
    try:
        cfg = ModelConfig.model_validate(model)
        with torch.device("meta"):
            module = build_model(cfg, DatasetInfo(tuple(input_shape), num_classes))
        return module.to_empty(device="cpu")
    except (ValidationError, FedsysError) as exc:
        raise ArtifactRejected(
            f"manifest.model does not describe a buildable model: {exc}"
        ) from None


def manifest_module(manifest: ModelManifest) -> nn.Module:
    return build_module(manifest.model, manifest.input_shape, manifest.num_classes)


def with_weights(module: nn.Module, weights: bytes) -> nn.Module:
    """``module`` with the safetensors ``weights`` loaded strictly, in eval mode."""
    try:
        module.load_state_dict(dict(torch_load(weights)), strict=True)
    except (SafetensorError, RuntimeError, ValueError) as exc:
        raise ArtifactRejected(f"weights do not fit the manifest's model: {exc}") from None
    return module.eval()
