"""Choosing the next token of each row: greedy at temperature 0, else temperature + nucleus
(top-p) sampling with a per-sequence generator, so a seeded request draws the same tokens
whatever else shares its batch."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class SamplingParams:
    """One sequence's decoding parameters (validated by the protocol schema before here)."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    ignore_eos: bool = False  # run to max_tokens (benchmarks: equal lengths everywhere)

    def generator(self) -> torch.Generator | None:
        """The sequence's random stream; None when greedy."""
        if self.temperature == 0.0:
            return None
        gen = torch.Generator()
        gen.manual_seed(self.seed if self.seed is not None else secrets.randbits(63))
        return gen


def next_tokens(
    logits: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator | None],
) -> list[int]:
    """One token per row of ``logits`` (rows, vocab)."""
    greedy = logits.argmax(dim=-1).tolist()
    out: list[int] = []
    for row, (p, gen) in enumerate(zip(params, generators, strict=True)):
        if gen is None:
            out.append(int(greedy[row]))
            continue
        # Shifted first: the best token scores 0 at any temperature, so a tiny temperature
        # gives -inf for the others (greedy), never inf/inf.
        row_logits = logits[row].double()
        probs = torch.softmax((row_logits - row_logits.max()) / p.temperature, dim=-1)
        if p.top_p < 1.0:
            probs = _nucleus(probs, p.top_p)
        out.append(int(torch.multinomial(probs, 1, generator=gen).item()))
    return out


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """The smallest set of most likely tokens whose mass reaches ``top_p``, renormalised."""
    sorted_probs, order = probs.sort(descending=True)
    before = sorted_probs.cumsum(0) - sorted_probs  # mass of the tokens ranked above
    sorted_probs[before >= top_p] = 0.0
    kept = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return kept / kept.sum()
