"""Serving a language-model version of the registry: verify it, load its base once (its
sha256 checked against the manifest), then load the adapter into that base's engine, or
build the merged model as an engine of its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors

from fedsys.errors import ArtifactRejected
from fedsys.registry import Registry
from fedsys.registry.lm_base import base_directory, tensors_sha256
from fedsys.serving.generation.loading import CausalLM, from_module, load_causal_lm, load_tokenizer
from fedsys.serving.generation.served import LanguageModels, ServedLM


def _tensors(weights: bytes, what: str) -> dict[str, torch.Tensor]:
    try:
        return dict(load_tensors(weights))
    except (SafetensorError, ValueError) as exc:
        raise ArtifactRejected(f"{what}: weights are not a safetensors file: {exc}") from None


def _load_base(directory: Path, sha256: str) -> CausalLM:
    lm = load_causal_lm(directory)
    actual = tensors_sha256(lm.model.state_dict())
    if actual != sha256:
        raise ArtifactRejected(
            f"base {directory} has sha256 {actual[:12]}..., the version was made on "
            f"{sha256[:12]}...: refusing to serve it on another base"
        )
    return lm


def _load_merged(directory: Path, weights: bytes, what: str) -> CausalLM:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
    # Built on the CPU, not the meta device: buffers outside the state dict (rotary
    # frequencies) must be computed, and loading the weights overwrites the rest.
    model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    try:
        model.load_state_dict(_tensors(weights, what), strict=True)
    except RuntimeError as exc:
        raise ArtifactRejected(f"{what}: merged weights do not fit the base: {exc}") from None
    return from_module(model.eval(), load_tokenizer(directory), source=what)


async def serve_version(
    models: LanguageModels,
    registry: Registry,
    trusted: Ed25519PublicKey,
    name: str,
    version: int,
    *,
    activate: bool = True,
) -> ServedLM:
    """Load ``name`` v``version`` (verified) and serve it; ArtifactRejected if anything is off."""
    manifest, weights = await asyncio.to_thread(registry.read_weights, name, version, trusted)
    spec = manifest.language_model
    what = f"{name} v{version}"
    if spec is None:
        raise ArtifactRejected(f"{what} is not a language model")
    directory = base_directory(registry.root, spec.base)
    if spec.kind == "merged":
        lm = await asyncio.to_thread(_load_merged, directory, weights, what)
        engine = models.engine_for(f"{name}@{version}", lm=lm)
        return await models.add(name, version, engine, activate=activate)
    shared = models.find_engine(spec.base_sha256)
    if shared is None:
        lm = await asyncio.to_thread(_load_base, directory, spec.base_sha256)
        shared = models.engine_for(spec.base_sha256, lm=lm)
    assert spec.adapter_config is not None  # the manifest's validator requires it
    tensors = _tensors(weights, what)
    return await models.add(
        name, version, shared, adapter=(spec.adapter_config, tensors), activate=activate
    )
