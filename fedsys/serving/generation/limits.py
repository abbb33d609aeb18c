"""How much one generation engine takes on: refused up front with a 4xx, never by running
out of memory half-way through a batch."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GenerationLimits(BaseModel):
    """Limits of one engine (one base model); part of the endpoint's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch: int = Field(
        default=64, ge=1, description="Sequences decoded together in one forward pass."
    )
    max_sequences: int = Field(
        default=256,
        ge=1,
        description="Sequences admitted at once (running + waiting); more are refused (429).",
    )
    max_total_tokens: int = Field(
        default=1 << 17,
        ge=1,
        description="Prompt + max_tokens summed over admitted sequences (the key/value cache "
        "budget); a request that would exceed it is refused (429).",
    )
    max_prompt_tokens: int = Field(
        default=2048, ge=1, description="Longest prompt accepted (400 beyond)."
    )
    default_max_tokens: int = Field(
        default=16, ge=1, description="max_tokens when a request does not say (OpenAI's default)."
    )
    prefills_per_step: int = Field(
        default=4,
        ge=1,
        description="New prompts prefilled between two decoding steps, so joining requests "
        "cannot stall the running ones for long.",
    )
