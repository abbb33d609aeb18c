"""The generation engine on a tiny Llama: continuous batching gives each sequence what
``generate`` gives it alone, a short request finishes while a long one runs, limits refuse
up front, sampling is reproducible, stop strings cut the text, adapters mix in one batch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from lm_support import write_adapter, write_tiny_lm

from fedsys.errors import CapacityExceeded, InvalidParameter
from fedsys.serving.generation.engine import GenerationEngine
from fedsys.serving.generation.events import Finished, TextDelta
from fedsys.serving.generation.limits import GenerationLimits
from fedsys.serving.generation.loading import CausalLM, load_causal_lm
from fedsys.serving.generation.sampling import SamplingParams
from fedsys.serving.generation.text import IncrementalText

PROMPTS = ["def f(x):", "import os\nimport sys", "hi", "class A:\n    pass\n" * 3]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_lm(tmp_path_factory.mktemp("lm") / "base")


@pytest.fixture()
def lm(lm_dir: Path) -> CausalLM:
    return load_causal_lm(lm_dir)


def reference(lm: CausalLM, prompt: str, n: int) -> list[int]:
    """Greedy tokens from transformers' own generate, one request alone."""
    ids = lm.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = lm.model.generate(  # type: ignore[operator]
            ids, max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=256
        )
    return [int(t) for t in out[0, ids.shape[1] :]]


async def run(
    engine: GenerationEngine, prompt: str, params: SamplingParams, adapter: str | None = None
) -> tuple[list[int], str, Finished]:
    handle = engine.submit(engine.encode(prompt), params, adapter)
    tokens: list[int] = []
    text = ""
    async for event in handle:
        if isinstance(event, TextDelta):
            tokens.append(event.token_id)
            text += event.text
        else:
            return tokens, text, event
    raise AssertionError("no Finished event")


def with_engine(
    lm: CausalLM, body: Callable[[GenerationEngine], Awaitable[Any]], **limits: Any
) -> Any:
    async def main() -> Any:
        engine = GenerationEngine(lm, GenerationLimits(**limits)).start()
        try:
            return await body(engine)
        finally:
            engine.stop()

    return asyncio.run(main())


GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


def test_joining_and_leaving_the_batch_matches_generate_alone(lm: CausalLM) -> None:
    async def body(engine: GenerationEngine) -> list[Any]:
        async def one(i: int, prompt: str) -> Any:
            for _ in range(i):  # join at different steps (several event-loop turns apart)
                await asyncio.sleep(0)
            return await run(engine, prompt, SamplingParams(max_tokens=6 + 3 * i, temperature=0))

        return await asyncio.gather(*(one(i, p) for i, p in enumerate(PROMPTS)))

    results = with_engine(lm, body)
    for i, (prompt, (tokens, text, end)) in enumerate(zip(PROMPTS, results, strict=True)):
        expected = reference(lm, prompt, 6 + 3 * i)
        assert tokens == expected
        assert text == lm.tokenizer.decode(expected)
        assert end.reason == "length"
        assert (end.prompt_tokens, end.completion_tokens) == (len(prompt.encode()), len(expected))


def test_a_short_request_finishes_while_a_long_one_runs(lm: CausalLM) -> None:
    async def body(engine: GenerationEngine) -> list[str]:
        order: list[str] = []

        async def go(tag: str, n: int) -> None:
            await run(engine, "x = 1", SamplingParams(max_tokens=n, temperature=0))
            order.append(tag)

        await asyncio.gather(go("long", 150), go("short", 3))
        return order

    assert with_engine(lm, body) == ["short", "long"]


def test_limits_are_refused_up_front(lm: CausalLM) -> None:
    async def body(engine: GenerationEngine) -> None:
        with pytest.raises(InvalidParameter, match="at most 8") as exc:
            engine.submit(list(range(9)), GREEDY)
        assert exc.value.param == "prompt"
        with pytest.raises(InvalidParameter, match="context of 256") as exc:
            engine.submit([1, 2], SamplingParams(max_tokens=255))
        assert exc.value.param == "max_tokens"
        with pytest.raises(InvalidParameter, match="empty"):
            engine.submit([], GREEDY)
        held = engine.submit([1, 2, 3], SamplingParams(max_tokens=200, temperature=0))
        with pytest.raises(CapacityExceeded, match="limit is 1"):
            engine.submit([1], GREEDY)
        held.cancel()
        async for event in held:
            last = event
        assert isinstance(last, Finished) and last.reason == "cancelled"
        assert engine.load == (0, 0)  # the cancelled sequence gave back its reservation

    with_engine(lm, body, max_prompt_tokens=8, max_sequences=1)


def test_token_budget_is_refused_with_429(lm: CausalLM) -> None:
    async def body(engine: GenerationEngine) -> None:
        held = engine.submit([1, 2, 3], SamplingParams(max_tokens=40, temperature=0))
        with pytest.raises(CapacityExceeded, match="tokens are reserved"):
            engine.submit([1, 2, 3], SamplingParams(max_tokens=10))
        held.cancel()
        async for _ in held:
            pass

    with_engine(lm, body, max_total_tokens=50)


def test_seeded_sampling_is_reproducible_and_top_p_narrows_to_greedy(lm: CausalLM) -> None:
    seeded = SamplingParams(max_tokens=10, temperature=1.5, seed=7)

    async def body(engine: GenerationEngine) -> list[Any]:
        return await asyncio.gather(
            run(engine, "a", seeded),
            run(engine, "a", seeded),
            run(engine, "b", SamplingParams(max_tokens=20, temperature=1.0, seed=1)),
            run(engine, "a", SamplingParams(max_tokens=10, temperature=1.0, seed=8)),
            run(engine, "a", SamplingParams(max_tokens=10, temperature=1.0, top_p=1e-6, seed=9)),
        )

    first, again, _, other_seed, nucleus = with_engine(lm, body)
    assert first[0] == again[0]
    assert first[0] != other_seed[0]
    assert nucleus[0] == reference(lm, "a", 10)


def test_a_stop_string_ends_the_text_before_it(lm: CausalLM) -> None:
    full = lm.tokenizer.decode(reference(lm, "def f(x):", 30))
    stop = full[10:13]
    expected = full[: full.index(stop)]

    async def body(engine: GenerationEngine) -> Any:
        params = SamplingParams(max_tokens=30, temperature=0, stop=(stop, "never-seen"))
        return await run(engine, "def f(x):", params)

    tokens, text, end = with_engine(lm, body)
    assert text == expected
    assert end.reason == "stop"
    assert len(tokens) < 30


class _Bytes:
    """A byte tokenizer stand-in: ids are byte values."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


def test_text_waits_for_whole_characters_and_possible_stop_strings() -> None:
    text = IncrementalText(_Bytes(), stop=("END",))
    released = [text.add(b) for b in "é1EN".encode()]
    assert released == ["", "é", "1", "", ""]  # é is two bytes; "EN" may begin "END"
    assert text.add(ord("X")) == "ENX"
    assert text.add(ord("E")) + text.add(ord("N")) + text.add(ord("D")) == ""
    assert text.stopped and text.text == "é1ENX"


def test_adapters_share_one_base_in_one_batch(lm_dir: Path, tmp_path: Path) -> None:
    write_adapter(lm_dir, tmp_path / "a1", seed=1)
    write_adapter(lm_dir, tmp_path / "a2", seed=2)

    def alone(adapter: str | None) -> list[int]:
        async def body(engine: GenerationEngine) -> list[int]:
            if adapter is not None:
                await engine.load_adapter(adapter, tmp_path / adapter)
            return (await run(engine, "def f(x):", GREEDY, adapter))[0]

        return with_engine(load_causal_lm(lm_dir), body)  # type: ignore[no-any-return]

    async def together(engine: GenerationEngine) -> list[Any]:
        await engine.load_adapter("a1", tmp_path / "a1")
        await engine.load_adapter("a2", tmp_path / "a2")
        return await asyncio.gather(
            *(run(engine, "def f(x):", GREEDY, a) for a in ("a1", None, "a2"))
        )

    mixed = with_engine(load_causal_lm(lm_dir), together)
    assert [m[0] for m in mixed] == [alone("a1"), alone(None), alone("a2")]
    assert [m[2].adapter for m in mixed] == ["a1", None, "a2"]
    assert mixed[0][0] != mixed[1][0] != mixed[2][0]
