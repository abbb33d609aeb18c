"""The closed set of pipeline stages and the one order they may appear in.

A pipeline is a plain list, e.g. ``[Clip(1.0), TopK(0.1), Quantize(bits=8)]``. Each stage is
also its own wire description (a pydantic dataclass with a ``kind`` tag), so the header lists
exactly the objects the sender ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Protocol

from pydantic import Field

from fedsys.codec.clip import Clip
from fedsys.codec.params import QUANTIZE_BITS, PipelineParams
from fedsys.codec.quantize import Quantize
from fedsys.codec.topk import TopK
from fedsys.errors import CodecArgumentError

Stage = Clip | TopK | Quantize
StageSpec = Annotated[Clip | TopK | Quantize, Field(discriminator="kind")]

ORDER = {"clip": 0, "topk": 1, "quantize": 2}


def check_pipeline(stages: Sequence[Stage]) -> tuple[Stage, ...]:
    """Stages must be distinct kinds in the order Clip, TopK, Quantize (each optional)."""
    ranks = [ORDER[stage.kind] for stage in stages]
    if ranks != sorted(set(ranks)):
        kinds = [stage.kind for stage in stages]
        raise CodecArgumentError(
            f"pipeline {kinds} must use each stage at most once, in the order clip, topk, quantize"
        )
    return tuple(stages)


def first_lossy(stages: Sequence[Stage]) -> int:
    """Index of the first stage whose error the error-feedback residual carries."""
    for i, stage in enumerate(stages):
        if isinstance(stage, TopK | Quantize):
            return i
    return len(stages)


def build_pipeline(params: PipelineParams) -> list[Stage]:
    """The stage list ``params`` describe (encryption is not a stage: see fedsys.crypto)."""
    stages: list[Stage] = []
    if params.clip_norm is not None:
        stages.append(Clip(params.clip_norm))
    if params.topk is not None:
        stages.append(TopK(params.topk))
    if params.quantize is not None:
        stages.append(
            Quantize(
                bits=QUANTIZE_BITS[params.quantize],
                block_size=params.block_size,
                stochastic=params.stochastic_rounding,
            )
        )
    return stages


class HasPipelineParams(Protocol):
    """Anything that maps itself onto pipeline parameters (``fedsys.config.CodecConfig``)."""

    def pipeline_params(self) -> PipelineParams: ...


def pipeline_from_config(cfg: HasPipelineParams) -> list[Stage]:
    """The stage list a codec config describes; the config does the mapping, so the codec
    never imports it (kept for callers of this name: new code calls :func:`build_pipeline`)."""
    return build_pipeline(cfg.pipeline_params())
