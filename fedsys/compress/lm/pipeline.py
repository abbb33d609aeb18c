"""Build and measure the variants of one merged language model.

``int8``: every Linear weight int8 per output channel (torchao, weight-only). ``lowrank``:
every Linear weight factorised by SVD to ``compress.lowrank_rank`` or the
``compress.lowrank_energy`` share of its squared singular values, where that saves weights,
then optionally ``compress.lm.finetune_steps`` next-token steps on the public text. The
classifier-only variants (pruned, distilled, pruned_int8) are not built for language models.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as st_save
from torch import nn

from fedsys.compress.lm.artifact import lm_variant_bytes, load_lm_variant
from fedsys.compress.lm.int8 import quantize_weights
from fedsys.compress.lm.measure import (
    LMVariantMetrics,
    count_parameters,
    measure_lm,
    within_perplexity_budget,
)
from fedsys.compress.lowrank import factorise
from fedsys.compress.settings import CompressConfig, VariantName
from fedsys.errors import ConfigError
from fedsys.tasks.lm.train import next_token_loss

log = logging.getLogger("fedsys")

LM_VARIANTS: tuple[VariantName, ...] = ("int8", "lowrank")


@dataclass(frozen=True)
class LMVariant:
    name: VariantName
    data: bytes
    metrics: LMVariantMetrics
    refused: str | None  # None: within the perplexity budget


@dataclass(frozen=True)
class LMCompressReport:
    fp32: LMVariantMetrics
    variants: tuple[LMVariant, ...]
    skipped: tuple[tuple[str, str], ...]  # (variant, why it was not built)


def _finetune(model: nn.Module, public: np.ndarray, cfg: CompressConfig, seed: int) -> None:
    """A few next-token AdamW steps on the public chunks (in place)."""
    steps = cfg.lm.finetune_steps
    if steps == 0 or len(public) == 0:
        return
    data = torch.from_numpy(public)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        rows = torch.randint(len(data), (min(cfg.batch_size, len(data)),), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss = next_token_loss(model, data[rows])
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()


def fp32_bytes(model: nn.Module) -> int:
    """Size of the merged model's fp32 safetensors file (what every variant is compared to)."""
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return len(st_save(tensors))


def build_lm_variant(
    name: str, merged: nn.Module, public: np.ndarray, cfg: CompressConfig, seed: int
) -> bytes:
    """The weight file of variant ``name`` of ``merged`` (which is left untouched)."""
    model = copy.deepcopy(merged)
    if name == "int8":
        return lm_variant_bytes(quantize_weights(model), variant=name, quantized=True, ranks={})
    if name == "lowrank":
        ranks = factorise(model, cfg.lowrank_rank, cfg.lowrank_energy)
        if not ranks:
            raise ConfigError(
                "compress: no Linear layer of the language model gets smaller at "
                f"lowrank_energy={cfg.lowrank_energy} / lowrank_rank={cfg.lowrank_rank}"
            )
        _finetune(model, public, cfg, seed)
        return lm_variant_bytes(model, variant=name, quantized=False, ranks=ranks)
    raise ConfigError(
        f"compress: variant {name!r} is not built for language models (only {LM_VARIANTS})"
    )


def build_lm_variants(
    merged: nn.Module,
    arch: dict[str, Any],
    heldout: np.ndarray,
    public: np.ndarray,
    cfg: CompressConfig,
    *,
    seed: int = 0,
) -> LMCompressReport:
    """Every variant of ``cfg.variants`` that applies to a language model, measured on
    ``heldout`` against ``merged`` and judged against ``cfg.perplexity_budget``."""
    parameters = count_parameters(merged)
    fp32 = measure_lm(merged, fp32_bytes(merged), parameters, heldout, cfg.lm)
    variants: list[LMVariant] = []
    skipped: list[tuple[str, str]] = []
    for name in cfg.variants:
        try:
            data = build_lm_variant(name, merged, public, cfg, seed)
        except ConfigError as exc:
            log.warning("compress: variant %s skipped: %s", name, exc)
            skipped.append((name, str(exc)))
            continue
        # Measure what a reader of the file gets, so the figures describe the artifact.
        served = load_lm_variant(data, arch)
        metrics = measure_lm(served, len(data), count_parameters(served), heldout, cfg.lm)
        refused = within_perplexity_budget(
            fp32.perplexity, metrics.perplexity, cfg.perplexity_budget
        )
        variants.append(LMVariant(name, data, metrics, refused))
    return LMCompressReport(fp32, tuple(variants), tuple(skipped))
