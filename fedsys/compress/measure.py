"""What a variant costs and gives: file bytes, test accuracy, batch-1 latency and batch-32
throughput, all measured in this process on the CPU with the same inputs for every variant."""

from __future__ import annotations

import statistics
import time

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from fedsys.training import evaluate

THROUGHPUT_BATCH = 32
WARMUP_CALLS = 3


class VariantMetrics(BaseModel):
    """One variant's figures, as they go into its manifest (``metrics``) and reports."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bytes: int = Field(ge=0)
    parameters: int = Field(ge=0)
    accuracy: float = Field(ge=0, le=1)
    latency_p50_ms: float = Field(ge=0, allow_inf_nan=False)
    throughput_per_s: float = Field(ge=0, allow_inf_nan=False)


def _timed_calls(module: nn.Module, x: torch.Tensor, repeats: int) -> list[float]:
    with torch.inference_mode():
        for _ in range(WARMUP_CALLS):
            module(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            module(x)
            times.append(time.perf_counter() - start)
    return times


def measure(
    module: nn.Module,
    data_bytes: int,
    parameters: int,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    repeats: int,
) -> VariantMetrics:
    """Accuracy on (x, y); p50 latency of one row; rows per second at batch 32 (median)."""
    cpu = torch.device("cpu")
    with torch.inference_mode():
        accuracy = evaluate(module, x, y, batch_size=1024, device=cpu).accuracy
    single = _timed_calls(module, x[:1], repeats)
    batch = _timed_calls(module, x[:THROUGHPUT_BATCH], repeats)
    rows = min(THROUGHPUT_BATCH, len(x))
    return VariantMetrics(
        bytes=data_bytes,
        parameters=parameters,
        accuracy=accuracy,
        latency_p50_ms=statistics.median(single) * 1000.0,
        throughput_per_s=rows / max(statistics.median(batch), 1e-9),
    )


def within_budget(fp32_accuracy: float, accuracy: float, budget: float) -> str | None:
    """None when ``accuracy`` loses at most ``budget`` against fp32, else the reason."""
    loss = fp32_accuracy - accuracy
    if loss <= budget + 1e-12:
        return None
    return (
        f"loses {loss * 100:.2f} accuracy points against fp32 ({accuracy:.4f} vs "
        f"{fp32_accuracy:.4f}), more than compress.accuracy_budget={budget}"
    )
