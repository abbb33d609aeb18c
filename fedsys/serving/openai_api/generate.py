"""From an OpenAI request to sequences in the engine, and from their events to the answer:
one JSON body, or server-sent events with one chunk per generated token and ``[DONE]``."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fedsys.errors import BatcherStopped, FedsysError, GenerationFailed, InvalidParameter
from fedsys.serving.error_handlers import status_of
from fedsys.serving.generation.events import Finished, TextDelta
from fedsys.serving.generation.sampling import SamplingParams
from fedsys.serving.generation.served import ServedLM
from fedsys.serving.openai_api.errors import openai_error
from fedsys.serving.openai_api.schemas import SamplingFields

if TYPE_CHECKING:
    from fedsys.serving.generation.engine import SequenceHandle

Chunk = Callable[[int, str, str | None], dict[str, Any]]  # (index, text, finish) -> choice


@dataclass
class Outcome:
    """One choice's text and end."""

    text: str = ""
    finish: Finished | None = None


def sampling_params(req: SamplingFields, max_tokens: int | None, default: int) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens or default,
        temperature=req.temperature,
        top_p=req.top_p,
        seed=req.seed,
        stop=req.stop_strings(),
        ignore_eos=req.ignore_eos,
    )


def submit_all(
    served: ServedLM, prompts: list[list[int]], params: SamplingParams, n: int
) -> list[SequenceHandle]:
    """One sequence per (prompt, sample); all admitted or none (a refusal cancels the rest)."""
    handles: list[SequenceHandle] = []
    try:
        for prompt in prompts:
            for i in range(n):
                # Each of n samples of a seeded request draws from its own stream.
                seeded = params
                if params.seed is not None and i:
                    seeded = dataclasses.replace(params, seed=params.seed + i)
                handles.append(served.engine.submit(prompt, seeded, served.adapter))
    except FedsysError:
        for h in handles:
            h.cancel()
        raise
    return handles


async def events(handles: list[SequenceHandle]) -> AsyncIterator[tuple[int, TextDelta | Finished]]:
    """The events of all ``handles`` as they come, tagged with the choice index."""
    if len(handles) == 1:
        async for event in handles[0]:
            yield 0, event
        return
    merged: asyncio.Queue[tuple[int, TextDelta | Finished]] = asyncio.Queue()

    async def pump(index: int, handle: SequenceHandle) -> None:
        async for event in handle:
            merged.put_nowait((index, event))

    tasks = [asyncio.create_task(pump(i, h)) for i, h in enumerate(handles)]
    left = len(handles)
    try:
        while left:
            index, event = await merged.get()
            if isinstance(event, Finished):
                left -= 1
            yield index, event
    finally:
        for task in tasks:
            task.cancel()


async def collect(handles: list[SequenceHandle]) -> list[Outcome]:
    """Run every sequence to its end; BatcherStopped if the engine stopped under them."""
    out = [Outcome() for _ in handles]
    try:
        async for index, event in events(handles):
            if isinstance(event, TextDelta):
                out[index].text += event.text
            else:
                out[index].finish = event
                failure = failure_of(event)
                if failure is not None:
                    raise failure
    finally:
        for h in handles:
            h.cancel()
    return out


def failure_of(event: Finished) -> FedsysError | None:
    """The error a sequence ended with, if it did not end normally."""
    if event.reason == "shutdown":
        return BatcherStopped("the endpoint stopped during generation")
    if event.reason == "error":
        return GenerationFailed(f"generation failed: {event.error}")
    return None


def usage(outcomes: list[Outcome]) -> dict[str, int]:
    prompt = sum(o.finish.prompt_tokens for o in outcomes if o.finish)
    completion = sum(o.finish.completion_tokens for o in outcomes if o.finish)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def finish_reason(f: Finished | None) -> str | None:
    return None if f is None else ("length" if f.reason == "length" else "stop")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def sse(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


async def stream(
    handles: list[SequenceHandle],
    envelope: dict[str, Any],
    choice: Chunk,
    *,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """Server-sent events: a chunk per generated token, a chunk with each choice's finish
    reason, the usage when asked, then ``[DONE]``. The sequences are cancelled if the client
    goes away."""
    finished: list[Outcome] = [Outcome() for _ in handles]
    try:
        async for index, event in events(handles):
            if isinstance(event, TextDelta):
                yield sse({**envelope, "choices": [choice(index, event.text, None)]})
                continue
            finished[index].finish = event
            failure = failure_of(event)
            if failure is not None:
                yield sse(openai_error(failure, status_of(failure)))
                return
            yield sse({**envelope, "choices": [choice(index, "", finish_reason(event))]})
        if include_usage:
            yield sse({**envelope, "choices": [], "usage": usage(finished)})
        yield sse("[DONE]")
    finally:
        for h in handles:
            h.cancel()


def envelope(kind: str, served: ServedLM) -> dict[str, Any]:
    return {
        "id": new_id("cmpl" if kind == "text_completion" else "chatcmpl"),
        "object": kind,
        "created": int(time.time()),
        "model": served.id,
        "system_fingerprint": f"fedsys-{served.id}"
        + ("" if served.variant == "fp32" else f"-{served.variant}"),
        "variant": served.variant,
    }


def prompts_of(prompt: Any, encode: Callable[[str], list[int]]) -> list[list[int]]:
    """Every prompt form of the OpenAI API as lists of token ids."""
    if isinstance(prompt, str):
        return [encode(prompt)]
    if not prompt:
        raise InvalidParameter("prompt is an empty list", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        return [list(prompt)]
    if all(isinstance(p, str) for p in prompt):
        return [encode(p) for p in prompt]
    return [list(p) for p in prompt]
