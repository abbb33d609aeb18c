"""``echo`` on ``/v1/completions``: the prompt returned before the completion, and with
``max_tokens: 0`` a scored prompt (each token's log-probability, ``logprobs.token_logprobs``;
the first token has none). This is how the legacy OpenAI completions API measures likelihood,
and what ``fedsys simulate`` uses to compute ``served_perplexity`` over HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from fedsys.serving.generation.scoring import PromptScore
from fedsys.serving.generation.served import ServedLM
from fedsys.serving.openai_api import generate
from fedsys.serving.openai_api.schemas import CompletionRequest


def logprobs_json(score: PromptScore, decode: Callable[[list[int]], str]) -> dict[str, Any]:
    """OpenAI's ``logprobs`` object of one scored prompt (tokens decoded one at a time)."""
    tokens = [decode([t]) for t in score.token_ids]
    offsets, at = [], 0
    for token in tokens:
        offsets.append(at)
        at += len(token)
    top = None
    if score.top is not None:
        top = [
            None if alternatives is None else {decode([t]): lp for t, lp in alternatives}
            for alternatives in score.top
        ]
    return {
        "tokens": tokens,
        "token_logprobs": score.logprobs,
        "top_logprobs": top,
        "text_offset": offsets,
    }


async def scored_choices(
    served: ServedLM, req: CompletionRequest, prompts: list[list[int]]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The choices (``n`` per prompt, prompt-major) and usage of a scoring request."""
    engine = served.engine
    scores = await engine.score(prompts, served.adapter, top=req.logprobs or 0)
    choices: list[dict[str, Any]] = []
    for score in scores:
        text = engine.decode(score.token_ids)
        logprobs = logprobs_json(score, engine.decode) if req.logprobs is not None else None
        for _ in range(req.n):
            choice = {"text": text, "index": len(choices), "finish_reason": "length"}
            choices.append({**choice, "logprobs": logprobs})
    prompt_tokens = req.n * sum(len(p) for p in prompts)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 0, "total_tokens": prompt_tokens}
    return choices, usage


async def scored_stream(
    envelope: dict[str, Any],
    choices: list[dict[str, Any]],
    usage: dict[str, int],
    *,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """A scored prompt as server-sent events: one chunk per choice, the usage, ``[DONE]``."""
    for choice in choices:
        yield generate.sse({**envelope, "choices": [choice]})
    if include_usage:
        yield generate.sse({**envelope, "choices": [], "usage": usage})
    yield generate.sse("[DONE]")


def echoed(
    prompts: list[list[int]], n: int, decode: Callable[[list[int]], str], choice: generate.Chunk
) -> generate.Chunk:
    """``choice`` with each choice's prompt text before its first piece of text."""
    started: set[int] = set()

    def with_prompt(index: int, text: str, finish: str | None) -> dict[str, Any]:
        if index not in started:
            started.add(index)
            text = decode(prompts[index // n]) + text
        return choice(index, text, finish)

    return with_prompt
