"""The closed set of pipeline stages and the one order they may appear in.

A pipeline is a plain list, e.g. ``[Clip(1.0), TopK(0.1), Quantize(bits=8)]``. Each stage is
also its own wire description (a pydantic dataclass with a ``kind`` tag), so the header lists
exactly the objects the sender ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import Field

from fedsys.codec.clip import Clip
from fedsys.codec.quantize import Quantize
from fedsys.codec.topk import TopK
from fedsys.config import CodecConfig

Stage = Clip | TopK | Quantize
StageSpec = Annotated[Clip | TopK | Quantize, Field(discriminator="kind")]

ORDER = {"clip": 0, "topk": 1, "quantize": 2}


def check_pipeline(stages: Sequence[Stage]) -> tuple[Stage, ...]:
    """Stages must be distinct kinds in the order Clip, TopK, Quantize (each optional)."""
    ranks = [ORDER[stage.kind] for stage in stages]
    if ranks != sorted(set(ranks)):
        kinds = [stage.kind for stage in stages]
        raise ValueError(
            f"pipeline {kinds} must use each stage at most once, in the order clip, topk, quantize"
        )
    return tuple(stages)


def first_lossy(stages: Sequence[Stage]) -> int:
    """Index of the first stage whose error the error-feedback residual carries."""
    for i, stage in enumerate(stages):
        if isinstance(stage, TopK | Quantize):
            return i
    return len(stages)


def pipeline_from_config(cfg: CodecConfig) -> list[Stage]:
    """The stage list a CodecConfig describes (encryption is not a stage: see fedsys.crypto)."""
    stages: list[Stage] = []
    if cfg.clip_norm is not None:
        stages.append(Clip(cfg.clip_norm))
    if cfg.topk is not None:
        stages.append(TopK(cfg.topk))
    if cfg.quantize != "none":
        bits = {"fp16": 16, "int8": 8, "int4": 4}[cfg.quantize]
        stages.append(
            Quantize(bits=bits, block_size=cfg.block_size, stochastic=cfg.stochastic_rounding)  # type: ignore[arg-type]
        )
    return stages
