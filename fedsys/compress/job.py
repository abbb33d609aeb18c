"""Compress one registry version: verify it, build and measure its variants on the
experiment's public and test splits, and sign the accepted ones into the version.

This is the whole step between aggregation and serving; the round loop's background
worker and ``fedsys compress`` both call :func:`compress_version`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedsys.compress.pipeline import CompressReport, Variant, build_variants
from fedsys.config import ExperimentConfig, ModelConfig
from fedsys.data import load_dataset, load_public
from fedsys.data.types import DatasetInfo
from fedsys.errors import ArtifactRejected, UnknownArtifact
from fedsys.registry.store import Registry
from fedsys.registry.variants import new_manifest, write_variant

if TYPE_CHECKING:
    from fedsys.compress.lm.job import LMCompressOutcome

log = logging.getLogger("fedsys")


@dataclass(frozen=True)
class CompressOutcome:
    """What one run published into ``name`` v``version`` and what it refused."""

    name: str
    version: int
    report: CompressReport
    published: tuple[str, ...]


def variant_metrics(variant: Variant, report: CompressReport) -> dict[str, float]:
    """The manifest's figures: the variant's, the fp32 model's beside them, and the loss."""
    own = {k: float(v) for k, v in variant.metrics.model_dump().items()}
    base = {f"fp32_{k}": float(v) for k, v in report.fp32.model_dump().items()}
    return {**own, **base, "accuracy_loss": report.fp32.accuracy - variant.metrics.accuracy}


def compress_version(
    registry: Registry,
    name: str,
    version: int | None,
    cfg: ExperimentConfig,
    key: Ed25519PrivateKey,
    *,
    replace: bool = False,
) -> CompressOutcome | LMCompressOutcome:
    """Variants of ``name`` v``version`` (default: the active one, else the latest) built,
    measured, judged against ``compress.accuracy_budget`` (a language model: against
    ``compress.perplexity_budget``, see ``compress.lm.job``) and, when accepted, signed into
    the version. The version is verified under ``key``'s public half first."""
    if version is None:
        numbers = registry.version_numbers(name)
        if not numbers:
            raise UnknownArtifact(f"unknown model {name!r} in registry {registry.root}")
        version = registry.active_version(name) or numbers[-1]
    stored = next((m for m in registry.versions(name) if m.version == version), None)
    if stored is not None and stored.language_model is not None:
        from fedsys.compress.lm.job import compress_lm_version

        return compress_lm_version(registry, name, version, cfg, key, replace=replace)
    loaded = registry.load(name, version, key.public_key())
    manifest = loaded.manifest
    model_cfg = ModelConfig.model_validate(manifest.model)
    info = DatasetInfo(tuple(manifest.input_shape), manifest.num_classes)
    _, test, data_info = load_dataset(cfg.data, cfg.runtime.seed)
    if data_info != info:
        raise ArtifactRejected(
            f"{name} v{version} takes inputs {info.input_shape} with {info.num_classes} "
            f"classes; data.name={cfg.data.name!r} gives {data_info.input_shape} with "
            f"{data_info.num_classes}"
        )
    public = load_public(cfg.data, cfg.runtime.seed)
    state = {k: v.detach().clone() for k, v in loaded.module.state_dict().items()}
    report = build_variants(
        state, model_cfg, info, public, test, cfg.compress, seed=cfg.runtime.seed
    )
    published = []
    settings = cfg.compress.model_dump(mode="json")
    for variant in report.variants:
        if variant.refused is not None:
            log.warning(
                "compress: %s v%d %s refused: %s", name, version, variant.name, variant.refused
            )
            audit_variant(registry, "variant_refused", name, version, variant.name, variant.refused)
            continue
        vm = new_manifest(
            name=name,
            version=version,
            variant=variant.name,
            base_weights_sha256=manifest.weights_sha256,
            model=variant.model,
            info=info,
            weights=variant.data,
            metrics=variant_metrics(variant, report),
            settings=settings,
        )
        write_variant(registry.version_dir(name, version), vm, variant.data, key, replace=replace)
        audit_variant(registry, "variant", name, version, variant.name, None)
        published.append(variant.name)
    return CompressOutcome(name, version, report, tuple(published))


def audit_variant(
    registry: Registry, event: str, name: str, version: int, variant: str, reason: str | None
) -> None:
    if registry.audit is not None:
        fields = {"model": name, "version": version, "variant": variant}
        if reason is not None:
            fields["reason"] = reason
        registry.audit.record(event, **fields)
