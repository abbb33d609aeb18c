"""The merged fp32 model of a language-model version: what every variant starts from.

A merged version's weights load into its base's architecture; an adapter version's LoRA
tensors are attached to the base with peft and folded in (``merge_and_unload``), so a
variant never depends on peft at serving time. The base is checked against the version's
``base_sha256`` before anything is built on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from torch import nn

from fedsys.compress.lm.architecture import (
    architecture,
    build_from_architecture,
    quiet_transformers,
)
from fedsys.errors import ArtifactRejected
from fedsys.registry.lm_base import base_directory, tensors_sha256
from fedsys.registry.store import Registry
from fedsys.registry.version_manifest import ModelManifest


@dataclass(frozen=True)
class MergedLM:
    """A version's merged model (eval mode, CPU), its manifest and its base directory."""

    manifest: ModelManifest
    model: nn.Module
    base_dir: Path


def _tensors(weights: bytes, what: str) -> dict[str, torch.Tensor]:
    try:
        return dict(load_tensors(weights))
    except (SafetensorError, ValueError) as exc:
        raise ArtifactRejected(f"{what}: weights are not a safetensors file: {exc}") from None


def _base(directory: Path, sha256: str) -> nn.Module:
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(directory), local_files_only=True, dtype=torch.float32
        )
    except (OSError, ValueError) as exc:
        raise ArtifactRejected(f"cannot load the base in {directory}: {exc}") from None
    actual = tensors_sha256(model.state_dict())
    if actual != sha256:
        raise ArtifactRejected(
            f"base {directory} has sha256 {actual[:12]}..., the version was made on "
            f"{sha256[:12]}...: refusing to compress it on another base"
        )
    return model  # type: ignore[no-any-return]


def merged_lm(registry: Registry, name: str, version: int, trusted: Ed25519PublicKey) -> MergedLM:
    """Verify ``name`` v``version`` (a language model) and return its merged fp32 model."""
    manifest, weights = registry.read_weights(name, version, trusted)
    spec = manifest.language_model
    what = f"{name} v{version}"
    if spec is None:
        raise ArtifactRejected(f"{what} is not a language model")
    directory = base_directory(registry.root, spec.base)
    tensors = _tensors(weights, what)
    if spec.kind == "merged":
        model = build_from_architecture(architecture(directory))
        try:
            model.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise ArtifactRejected(f"{what}: merged weights do not fit the base: {exc}") from None
        return MergedLM(manifest, model.eval(), directory)
    from peft import PeftModel, get_peft_config, set_peft_model_state_dict

    base = _base(directory, spec.base_sha256)
    assert spec.adapter_config is not None  # the manifest's validator requires it
    try:
        peft_config = get_peft_config(dict(spec.adapter_config))
        peft_config.inference_mode = True
        peft = PeftModel(base, peft_config)
        result = set_peft_model_state_dict(peft, tensors)
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise ArtifactRejected(f"{what}: the adapter does not fit the base: {exc}") from None
    if list(getattr(result, "unexpected_keys", []) or []):
        raise ArtifactRejected(f"{what}: the adapter has tensors the base has no place for")
    merged: nn.Module = peft.merge_and_unload()
    return MergedLM(manifest, merged.eval(), directory)
