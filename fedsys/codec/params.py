"""The plain values the codec is built from: the quantization widths and the pipeline's knobs.

This module imports nothing heavy (no torch, no pydantic), so the experiment config can take
its allowed values from here without loading the codec, and the codec never reads the config:
the config maps itself onto :class:`PipelineParams` (``CodecConfig.pipeline_params``) and
:func:`fedsys.codec.stages.build_pipeline` turns those into stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

QuantizeScheme = Literal["fp16", "int8", "int4"]
QuantizeBits = Literal[4, 8, 16]
DownlinkScheme = Literal["none", "fp16", "int8"]  # the global model: int4 is too coarse for it

# The one table of quantization widths: what the config offers, what the Quantize stage runs.
QUANTIZE_BITS: dict[QuantizeScheme, QuantizeBits] = {"fp16": 16, "int8": 8, "int4": 4}
SCHEME_OF_BITS: dict[QuantizeBits, QuantizeScheme] = {b: s for s, b in QUANTIZE_BITS.items()}


@dataclass(frozen=True)
class PipelineParams:
    """What a client's stage list is made of: clip -> top-k -> quantize, each optional."""

    clip_norm: float | None = None
    topk: float | None = None
    quantize: QuantizeScheme | None = None
    block_size: int = 256
    stochastic_rounding: bool = False
