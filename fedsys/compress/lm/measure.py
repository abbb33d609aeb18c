"""What a language-model variant costs and gives, measured the same way for every variant:
file bytes, perplexity on held-out text, and the speed of greedy generation through
``transformers``' ``generate`` on this CPU (one prompt, and a batch of prompts)."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from fedsys.compress.settings import LMCompressConfig
from fedsys.tasks.lm.train import evaluate_lm


class LMVariantMetrics(BaseModel):
    """One variant's figures, as they go into its manifest (``metrics``) and reports.

    ``latency_p50_ms`` is the median time per generated token at batch 1 (prefill of the
    prompt included); ``throughput_per_s`` is generated tokens per second with
    ``throughput_batch`` prompts generated together."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bytes: int = Field(ge=0)
    parameters: int = Field(ge=0)
    perplexity: float = Field(gt=0, allow_inf_nan=False)
    loss: float = Field(ge=0, allow_inf_nan=False)
    latency_p50_ms: float = Field(ge=0, allow_inf_nan=False)
    tokens_per_s_batch1: float = Field(ge=0, allow_inf_nan=False)
    throughput_per_s: float = Field(ge=0, allow_inf_nan=False)


def count_parameters(model: nn.Module) -> int:
    """Weights the model holds (an int8 weight counts as many as the fp32 one it replaces)."""
    return sum(int(p.numel()) for p in model.parameters())


def _generate_seconds(model: nn.Module, prompts: torch.Tensor, new: int, repeats: int) -> float:
    """Median seconds to generate ``new`` tokens greedily after each row of ``prompts``."""
    kwargs = {
        "max_new_tokens": new,
        "min_new_tokens": new,
        "do_sample": False,
        "pad_token_id": _pad_id(model),
        "attention_mask": torch.ones_like(prompts),
    }
    times = []
    with torch.inference_mode():
        model.generate(prompts, **kwargs)  # type: ignore[operator]  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model.generate(prompts, **kwargs)  # type: ignore[operator]
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _pad_id(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    for field in ("pad_token_id", "eos_token_id"):
        value = getattr(config, field, None)
        if isinstance(value, list | tuple) and value:
            value = value[0]
        if isinstance(value, int):
            return value
    return 0


def prompts_from(chunks: np.ndarray, rows: int, length: int) -> torch.Tensor:
    """``rows`` prompts of ``length`` tokens: the starts of held-out chunks (reused in turn)."""
    index = np.arange(rows) % len(chunks)
    return torch.from_numpy(np.ascontiguousarray(chunks[index, :length])).long()


def measure_lm(
    model: nn.Module, data_bytes: int, parameters: int, heldout: np.ndarray, cfg: LMCompressConfig
) -> LMVariantMetrics:
    """Perplexity over ``heldout`` chunks; generation speed at batch 1 and batch
    ``cfg.throughput_batch``."""
    result = evaluate_lm(model, heldout, batch_size=8, device=torch.device("cpu"))
    length = min(cfg.prompt_tokens, heldout.shape[1])
    one = _generate_seconds(model, prompts_from(heldout, 1, length), cfg.new_tokens, cfg.repeats)
    batch = _generate_seconds(
        model, prompts_from(heldout, cfg.throughput_batch, length), cfg.new_tokens, cfg.repeats
    )
    return LMVariantMetrics(
        bytes=data_bytes,
        parameters=parameters,
        perplexity=result.perplexity,
        loss=result.loss,
        latency_p50_ms=one / cfg.new_tokens * 1000.0,
        tokens_per_s_batch1=cfg.new_tokens / max(one, 1e-9),
        throughput_per_s=cfg.throughput_batch * cfg.new_tokens / max(batch, 1e-9),
    )


def within_perplexity_budget(fp32: float, perplexity: float, budget: float) -> str | None:
    """None when ``perplexity`` rises at most ``budget`` (relative) over fp32's, else why."""
    rise = perplexity / fp32 - 1.0
    if rise <= budget + 1e-12:
        return None
    return (
        f"raises held-out perplexity by {rise * 100:.2f}% against fp32 ({perplexity:.3f} vs "
        f"{fp32:.3f}), more than compress.perplexity_budget={budget}"
    )
