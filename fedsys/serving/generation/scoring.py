"""Scoring prompts: the log-probability the model gives each prompt token after the ones
before it (OpenAI's ``echo`` with ``logprobs`` and ``max_tokens: 0``, what evaluation
harnesses use to measure perplexity through an endpoint). Runs on the engine thread between
decoding steps, so it shares the model with generation and never overlaps a forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedsys.serving.generation.adapters import AdapterSet


@dataclass(frozen=True)
class PromptScore:
    """Per prompt token: its log-probability (None for the first, which has no context) and,
    when asked, the ``top`` most likely tokens at that position with theirs."""

    token_ids: list[int]
    logprobs: list[float | None]
    top: list[list[tuple[int, float]] | None] | None


def score_prompts(
    adapters: AdapterSet, prompts: list[list[int]], adapter: str | None, *, top: int, rows: int
) -> list[PromptScore]:
    """Scores of ``prompts`` (at most ``rows`` of one length per forward pass) in order."""
    out: list[PromptScore | None] = [None] * len(prompts)
    by_length: dict[int, list[int]] = {}
    for index, prompt in enumerate(prompts):
        by_length.setdefault(len(prompt), []).append(index)
    for indices in by_length.values():
        for begin in range(0, len(indices), rows):
            group = indices[begin : begin + rows]
            ids = torch.tensor([prompts[i] for i in group], dtype=torch.long)
            logits = adapters.forward([adapter] * len(group), input_ids=ids, use_cache=False)
            logp = torch.log_softmax(logits.logits[:, :-1].float(), dim=-1)
            picked = logp.gather(-1, ids[:, 1:, None])[..., 0]
            best = logp.topk(top, dim=-1) if top else None
            for row, i in enumerate(group):
                top_rows: list[list[tuple[int, float]] | None] | None = None
                if best is not None:
                    top_rows = [None]
                    for values, tokens in zip(best.values[row], best.indices[row], strict=True):
                        pairs = zip(tokens.tolist(), values.tolist(), strict=True)
                        top_rows.append([(int(t), float(v)) for t, v in pairs])
                out[i] = PromptScore(
                    token_ids=list(prompts[i]),
                    logprobs=[None, *(float(v) for v in picked[row].tolist())],
                    top=top_rows,
                )
    return [s for s in out if s is not None]
