"""Variants as signed artifacts of a registry version.

A variant is written beside the version it was made from, under
``<version dir>/variants/<variant>/`` (``model.safetensors``, ``manifest.json``,
``manifest.sig``). Its manifest names the version and the sha256 of that version's fp32
weights, so a variant cannot be moved onto another version unnoticed; it carries the
architecture its weights fit and the figures measured on the test split. The publisher's
Ed25519 key signs the manifest's exact bytes; readers verify them, then the schema, the
binding and the weight hash, before anything is loaded. Like versions, a variant appears
whole or not at all (hidden temporary directory, then rename).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from fedsys.compress.artifact import load_variant
from fedsys.compress.settings import VariantName
from fedsys.config import ModelConfig
from fedsys.data.types import DatasetInfo
from fedsys.errors import ArtifactRejected, UnknownArtifact, VersionConflict
from fedsys.fsio import fsync_dir, write_synced

log = logging.getLogger("fedsys")

VARIANTS_DIR = "variants"
VARIANT_WEIGHTS = "model.safetensors"
VARIANT_MANIFEST = "manifest.json"
VARIANT_SIGNATURE = "manifest.sig"
SHA256_HEX = r"^[0-9a-f]{64}$"
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class VariantManifest(BaseModel):
    """``manifest.json`` of one variant of one registry version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    name: str
    version: int = Field(ge=1)
    variant: VariantName
    base_weights_sha256: str = Field(pattern=SHA256_HEX, description="The fp32 version's.")
    model: dict[str, Any] = Field(description="ModelConfig of the variant's own architecture.")
    input_shape: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    num_classes: int = Field(ge=2)
    weights_sha256: str = Field(pattern=SHA256_HEX)
    metrics: dict[str, FiniteFloat] = Field(
        description="bytes, parameters, accuracy, latency_p50_ms, throughput_per_s (and the "
        "fp32 model's, prefixed fp32_), measured on the test split; for a language model "
        "perplexity and loss on held-out text instead of accuracy, latency_p50_ms per "
        "generated token at batch 1 and throughput_per_s in generated tokens per second."
    )
    settings: dict[str, Any] = Field(default_factory=dict, description="The compress section.")
    created_at: datetime


def _canonical(m: VariantManifest) -> bytes:
    return (json.dumps(m.model_dump(mode="json"), sort_keys=True, indent=2) + "\n").encode()


def variant_dir(version_dir: Path, variant: str) -> Path:
    return Path(version_dir) / VARIANTS_DIR / variant


def write_variant(
    version_dir: Path,
    manifest: VariantManifest,
    weights: bytes,
    key: Ed25519PrivateKey,
    *,
    replace: bool = False,
) -> Path:
    """Sign and store one variant of the version in ``version_dir``; VersionConflict when the
    variant exists (unless ``replace``)."""
    if hashlib.sha256(weights).hexdigest() != manifest.weights_sha256:
        raise ArtifactRejected(f"variant {manifest.variant}: weights do not match their hash")
    parent = Path(version_dir) / VARIANTS_DIR
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / manifest.variant
    if final.exists() and not replace:
        raise VersionConflict(f"{manifest.name} v{manifest.version} already has {manifest.variant}")
    data = _canonical(manifest)
    tmp = parent / f".tmp-{manifest.variant}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        write_synced(tmp / VARIANT_WEIGHTS, weights)
        write_synced(tmp / VARIANT_SIGNATURE, key.sign(data))
        write_synced(tmp / VARIANT_MANIFEST, data)
        fsync_dir(tmp)
        if final.exists():  # replace: move the old one aside first, then drop it
            old = parent / f".old-{manifest.variant}-{uuid.uuid4().hex}"
            os.rename(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(parent)
    return final


def _verified(data: bytes, signature: bytes, trusted: Ed25519PublicKey) -> VariantManifest:
    try:
        trusted.verify(signature, data)
    except InvalidSignature:
        raise ArtifactRejected(
            "variant manifest signature does not verify under the trusted publisher key"
        ) from None
    try:
        return VariantManifest.model_validate_json(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise ArtifactRejected(f"malformed variant manifest: {where}: {err['msg']}") from None


def read_variant(
    version_dir: Path,
    variant: str,
    trusted: Ed25519PublicKey,
    *,
    name: str,
    version: int,
    base_weights_sha256: str,
) -> tuple[VariantManifest, bytes]:
    """The verified manifest and weights of one variant, bound to ``name`` v``version``."""
    vdir = variant_dir(version_dir, variant)
    if not vdir.is_dir():
        raise UnknownArtifact(f"{name} v{version} has no variant {variant!r}")
    try:
        data = (vdir / VARIANT_MANIFEST).read_bytes()
        signature = (vdir / VARIANT_SIGNATURE).read_bytes()
        weights = (vdir / VARIANT_WEIGHTS).read_bytes()
    except FileNotFoundError as exc:
        raise ArtifactRejected(
            f"{name} v{version} variant {variant} is incomplete: {Path(exc.filename).name}"
        ) from None
    manifest = _verified(data, signature, trusted)
    facts = (manifest.name, manifest.version, manifest.variant, manifest.base_weights_sha256)
    if facts != (name, version, variant, base_weights_sha256):
        raise ArtifactRejected(
            f"variant manifest is for {manifest.name} v{manifest.version} "
            f"{manifest.variant}, not {name} v{version} {variant} (or another fp32 file)"
        )
    if hashlib.sha256(weights).hexdigest() != manifest.weights_sha256:
        raise ArtifactRejected(f"{name} v{version} variant {variant}: weights sha256 mismatch")
    return manifest, weights


def variant_names(version_dir: Path) -> list[str]:
    """Variants stored for the version (complete ones; not verified), sorted."""
    parent = Path(version_dir) / VARIANTS_DIR
    if not parent.is_dir():
        return []
    return sorted(p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))


def listed_manifest(version_dir: Path, variant: str) -> VariantManifest | None:
    """A variant's manifest for listings (schema checked, signature not); None if unreadable."""
    try:
        data = (variant_dir(version_dir, variant) / VARIANT_MANIFEST).read_bytes()
        return VariantManifest.model_validate_json(data)
    except (OSError, ValidationError):
        return None


LM_TASK = "language_model"  # manifest.model["task"] of a language model's variant


def is_lm_variant(manifest: VariantManifest) -> bool:
    return manifest.model.get("task") == LM_TASK


def variant_module(manifest: VariantManifest, weights: bytes) -> nn.Module:
    """The servable module of a verified variant (a causal LM for a language model's)."""
    if is_lm_variant(manifest):
        architecture = manifest.model.get("architecture")
        if not isinstance(architecture, dict):
            raise ArtifactRejected("a language model variant's manifest needs its architecture")
        # Imported here: transformers and torchao load only with a language model.
        from fedsys.compress.lm.artifact import load_lm_variant

        return load_lm_variant(weights, architecture)
    try:
        cfg = ModelConfig.model_validate(manifest.model)
    except ValidationError as exc:
        raise ArtifactRejected(f"variant manifest.model is not buildable: {exc}") from None
    info = DatasetInfo(tuple(manifest.input_shape), manifest.num_classes)
    return load_variant(weights, cfg, info)


def new_manifest(
    *,
    name: str,
    version: int,
    variant: VariantName,
    base_weights_sha256: str,
    model: ModelConfig,
    info: DatasetInfo,
    weights: bytes,
    metrics: dict[str, float],
    settings: dict[str, Any],
) -> VariantManifest:
    return VariantManifest(
        name=name,
        version=version,
        variant=variant,
        base_weights_sha256=base_weights_sha256,
        model=model.model_dump(mode="json"),
        input_shape=list(info.input_shape),
        num_classes=info.num_classes,
        weights_sha256=hashlib.sha256(weights).hexdigest(),
        metrics=metrics,
        settings=settings,
        created_at=datetime.now(UTC),
    )


def new_lm_manifest(
    *,
    name: str,
    version: int,
    variant: VariantName,
    base_weights_sha256: str,
    architecture: dict[str, Any],
    context_length: int,
    vocab_size: int,
    weights: bytes,
    metrics: dict[str, float],
    settings: dict[str, Any],
) -> VariantManifest:
    """The manifest of a language model's variant: ``model`` holds the task marker and the
    Hugging Face architecture its weights fit (``config.to_dict()``)."""
    return VariantManifest(
        name=name,
        version=version,
        variant=variant,
        base_weights_sha256=base_weights_sha256,
        model={"task": LM_TASK, "architecture": architecture},
        input_shape=[context_length],
        num_classes=vocab_size,
        weights_sha256=hashlib.sha256(weights).hexdigest(),
        metrics=metrics,
        settings=settings,
        created_at=datetime.now(UTC),
    )


def variants_stamp(version_dir: Path) -> int:
    """A cheap change marker for a version's variants (0: none yet): the directory's mtime
    and the names in it, since two variants renamed in within one clock tick share an mtime."""
    parent = Path(version_dir) / VARIANTS_DIR
    try:
        mtime = parent.stat().st_mtime_ns
        names = tuple(sorted(p.name for p in parent.iterdir() if not p.name.startswith(".")))
    except OSError:
        return 0
    return hash((mtime, names)) or 1


def load_verified_variants(
    version_dir: Path,
    trusted: Ed25519PublicKey,
    *,
    name: str,
    version: int,
    base_weights_sha256: str,
) -> dict[str, tuple[VariantManifest, nn.Module]]:
    """Every variant of the version that verifies, rebuilt for serving; the others are left
    out with a warning (one bad file must not take down the version it belongs to)."""
    out: dict[str, tuple[VariantManifest, nn.Module]] = {}
    for variant in variant_names(version_dir):
        try:
            manifest, weights = read_variant(
                version_dir,
                variant,
                trusted,
                name=name,
                version=version,
                base_weights_sha256=base_weights_sha256,
            )
            out[variant] = (manifest, variant_module(manifest, weights))
        except ArtifactRejected as exc:
            log.warning("%s v%d: variant %s not served: %s", name, version, variant, exc.reason)
    return out
