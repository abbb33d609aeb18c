"""Serving a language-model version of the registry: verify it, load its base once (its
sha256 checked against the manifest), then load the adapter into that base's engine, or
build the merged model as an engine of its own."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors

from fedsys.errors import ArtifactRejected
from fedsys.registry import Registry
from fedsys.registry.lm_base import base_directory, tensors_sha256
from fedsys.registry.variants import (
    is_lm_variant,
    listed_manifest,
    read_variant,
    variant_module,
    variant_names,
)
from fedsys.registry.version_manifest import ModelManifest
from fedsys.serving.generation.engine import GenerationEngine
from fedsys.serving.generation.loading import CausalLM, from_module, load_causal_lm, load_tokenizer
from fedsys.serving.generation.served import LanguageModels, ServedLM

log = logging.getLogger("fedsys.serving")


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
        engine = models.find_engine(f"{name}@{version}")
        if engine is None:
            lm = await asyncio.to_thread(_load_merged, directory, weights, what)
            engine = models.engine_for(f"{name}@{version}", lm=lm)
        served = await models.add(name, version, engine, activate=activate)
    else:
        shared = models.find_engine(spec.base_sha256)
        if shared is None:
            lm = await asyncio.to_thread(_load_base, directory, spec.base_sha256)
            shared = models.engine_for(spec.base_sha256, lm=lm)
        assert spec.adapter_config is not None  # the manifest's validator requires it
        tensors = _tensors(weights, what)
        served = await models.add(
            name, version, shared, adapter=(spec.adapter_config, tensors), activate=activate
        )
    await serve_variants(models, registry, trusted, manifest, directory)
    return served


def _load_variant(
    registry: Registry,
    trusted: Ed25519PublicKey,
    manifest: ModelManifest,
    variant: str,
    directory: Path,
) -> tuple[CausalLM, str]:
    """A verified variant of ``manifest``'s version as a model with the base's tokenizer."""
    name, version = manifest.name, manifest.version
    vm, weights = read_variant(
        registry.version_dir(name, version),
        variant,
        trusted,
        name=name,
        version=version,
        base_weights_sha256=manifest.weights_sha256,
    )
    if not is_lm_variant(vm):
        raise ArtifactRejected(f"{name} v{version} variant {variant} is not a language model's")
    model = variant_module(vm, weights)
    source = f"{name} v{version} {variant}"
    return from_module(model, load_tokenizer(directory), source=source), vm.weights_sha256


async def serve_variants(
    models: LanguageModels,
    registry: Registry,
    trusted: Ed25519PublicKey,
    manifest: ModelManifest,
    directory: Path,
) -> None:
    """Serve every compressed variant stored for the version that verifies and is not served
    yet (each in an engine of its own); one bad variant is left out with a warning."""
    name, version = manifest.name, manifest.version
    version_dir = registry.version_dir(name, version)
    for variant in variant_names(version_dir):
        listed = listed_manifest(version_dir, variant)
        if listed is not None and models.has_variant(name, version, variant, listed.weights_sha256):
            continue
        try:
            lm, sha = await asyncio.to_thread(
                _load_variant, registry, trusted, manifest, variant, directory
            )
        except ArtifactRejected as exc:
            log.warning("%s v%d: variant %s not served: %s", name, version, variant, exc.reason)
            continue
        engine = GenerationEngine(lm, models.limits, name=f"{name}@{version}:{variant}"[:16])
        models.add_variant(name, version, variant, engine, sha)
