"""What a sequence reports back to its request: text as it is decoded, then how it ended."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FinishReason = Literal["stop", "length", "cancelled", "error", "shutdown"]


@dataclass(frozen=True)
class TextDelta:
    """Text newly decoded for one generated token (may be empty while a multi-byte character
    or a possible stop string is still incomplete)."""

    text: str
    token_id: int


@dataclass(frozen=True)
class Finished:
    """The sequence's end: why, its token counts, and the adapter (version) that produced it."""

    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    adapter: str | None
    error: str | None = None
