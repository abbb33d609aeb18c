"""Compress one language-model version of the registry: merge it, build and measure its
variants on held-out text, and sign those within ``compress.perplexity_budget`` into it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedsys.compress.job import audit_variant
from fedsys.compress.lm.architecture import architecture
from fedsys.compress.lm.pipeline import LMCompressReport, LMVariant, build_lm_variants
from fedsys.compress.lm.source import merged_lm
from fedsys.config import ExperimentConfig
from fedsys.errors import ConfigError
from fedsys.registry.store import Registry
from fedsys.registry.variants import VariantManifest, new_lm_manifest, write_variant

log = logging.getLogger("fedsys")


@dataclass(frozen=True)
class LMText:
    """Token chunks the variants are judged on (``heldout``) and tuned on (``public``)."""

    heldout: np.ndarray
    public: np.ndarray


@dataclass(frozen=True)
class LMCompressOutcome:
    name: str
    version: int
    report: LMCompressReport
    published: tuple[str, ...]


def experiment_text(cfg: ExperimentConfig, vocab_size: int) -> LMText:
    """The experiment's text (``lm`` section): the clients' held-out chunks pooled, at most
    ``compress.lm.eval_chunks``, and the server's public training chunks."""
    if cfg.task != "language_model":
        raise ConfigError(
            "compressing a language-model version needs the experiment's text: give a config "
            "with task: language_model and its lm section (the one the version was trained on)"
        )
    from fedsys.tasks.lm.text import central_sample, load_text

    tokenizer, data = load_text(cfg.lm, cfg.data.num_partitions, cfg.runtime.seed)
    if tokenizer.vocab_size > vocab_size:
        raise ConfigError(
            f"the config's tokenizer has {tokenizer.vocab_size} tokens, the model only "
            f"{vocab_size}: lm.tokenizer / lm.base do not match the version's base"
        )
    heldout = central_sample(data, cfg.compress.lm.eval_chunks, cfg.runtime.seed)
    return LMText(heldout=heldout, public=data.public.train)


def lm_metrics(variant: LMVariant, report: LMCompressReport) -> dict[str, float]:
    """The manifest's figures: the variant's, the fp32 model's beside them, and the rise."""
    own = {k: float(v) for k, v in variant.metrics.model_dump().items()}
    base = {f"fp32_{k}": float(v) for k, v in report.fp32.model_dump().items()}
    rise = variant.metrics.perplexity / report.fp32.perplexity - 1.0
    return {**own, **base, "perplexity_rise": rise}


def compress_lm_version(
    registry: Registry,
    name: str,
    version: int,
    cfg: ExperimentConfig,
    key: Ed25519PrivateKey,
    *,
    replace: bool = False,
    text: LMText | None = None,
) -> LMCompressOutcome:
    """Variants of language-model version ``name`` v``version``: built from its merged model,
    judged on ``text`` (default: :func:`experiment_text`), the accepted ones signed in."""
    source = merged_lm(registry, name, version, key.public_key())
    arch = architecture(source.base_dir)
    vocab = int(source.model.get_input_embeddings().num_embeddings)  # type: ignore[operator]
    text = text or experiment_text(cfg, vocab)
    if len(text.heldout) == 0:
        raise ConfigError("compress: there is no held-out text to measure perplexity on")
    if int(text.heldout.max()) >= vocab:
        raise ConfigError(
            f"compress: the held-out text has token {int(text.heldout.max())}, outside the "
            f"model's vocabulary of {vocab}: the config's tokenizer is not the version's"
        )
    report = build_lm_variants(
        source.model, arch, text.heldout, text.public, cfg.compress, seed=cfg.runtime.seed
    )
    published = []
    settings = cfg.compress.model_dump(mode="json")
    manifest = source.manifest
    for variant in report.variants:
        if variant.refused is not None:
            log.warning("compress: %s v%d %s refused: %s", name, version, variant.name,
                        variant.refused)  # fmt: skip
            audit_variant(registry, "variant_refused", name, version, variant.name, variant.refused)
            continue
        vm: VariantManifest = new_lm_manifest(
            name=name,
            version=version,
            variant=variant.name,
            base_weights_sha256=manifest.weights_sha256,
            architecture=arch,
            context_length=manifest.input_shape[0],
            vocab_size=vocab,
            weights=variant.data,
            metrics=lm_metrics(variant, report),
            settings=settings,
        )
        write_variant(registry.version_dir(name, version), vm, variant.data, key, replace=replace)
        audit_variant(registry, "variant", name, version, variant.name, None)
        published.append(variant.name)
    return LMCompressOutcome(name, version, report, tuple(published))
