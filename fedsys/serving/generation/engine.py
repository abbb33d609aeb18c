"""Continuous batching: one thread per base model decodes every running sequence together.

Between two decoding steps the thread admits waiting requests (up to ``prefills_per_step``
prefills, so newcomers cannot stall the running batch for long) and applies adapter loads
and deletions; a sequence leaves the batch the step it finishes (end-of-text, a stop string,
``max_tokens``, or its client gone). Requests are admitted on the event loop against the
limits (prompt length, context, sequences, reserved tokens) and refused there with a 4xx, so
the cache never grows beyond what the limits allow. In the manner of Orca (OSDI 2022) and
vLLM's scheduler, without paged memory: the cache is one left-padded tensor per layer
(``kv_batch``). Hand-written because ``transformers``' ``generate`` runs a fixed batch from
start to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache

from fedsys.errors import BatcherStopped, CapacityExceeded, GenerationFailed, InvalidParameter
from fedsys.serving.generation.adapters import AdapterSet
from fedsys.serving.generation.events import Finished, FinishReason, TextDelta
from fedsys.serving.generation.kv_batch import KVBatch
from fedsys.serving.generation.limits import GenerationLimits
from fedsys.serving.generation.loading import CausalLM
from fedsys.serving.generation.sampling import SamplingParams, next_tokens
from fedsys.serving.generation.scoring import PromptScore, score_prompts
from fedsys.serving.generation.text import IncrementalText

log = logging.getLogger("fedsys.serving")

Event = TextDelta | Finished
_STOP = object()


@dataclass(eq=False)
class _Sequence:
    prompt: list[int]
    params: SamplingParams
    adapter: str | None
    text: IncrementalText
    events: asyncio.Queue[Event]
    loop: asyncio.AbstractEventLoop
    reserved: int
    generator: torch.Generator | None = None
    generated: int = 0
    last_token: int = 0
    cancelled: bool = False
    done: bool = False


@dataclass
class _Command:
    action: Callable[[], None]
    future: Future[None] = field(default_factory=Future)


class SequenceHandle:
    """One admitted sequence: iterate it for its events; ``cancel`` when the client leaves."""

    def __init__(self, seq: _Sequence) -> None:
        self._seq = seq

    @property
    def adapter(self) -> str | None:
        return self._seq.adapter

    @property
    def prompt_tokens(self) -> int:
        return len(self._seq.prompt)

    def cancel(self) -> None:
        self._seq.cancelled = True  # read by the engine thread at the next step

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            event = await self._seq.events.get()
            yield event
            if isinstance(event, Finished):
                return


class GenerationEngine:
    """Generates for many sequences at once from one base and its adapters."""

    def __init__(
        self,
        lm: CausalLM,
        limits: GenerationLimits,
        *,
        name: str = "",
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        self.lm = lm
        self.limits = limits
        self.name = name
        self.on_step = on_step
        self.adapters = AdapterSet(lm.model)
        self._inbox: queue.Queue[_Sequence | _Command | object] = queue.Queue()
        self._lock = threading.Lock()  # admission counters: event loop adds, thread releases
        self._sequences = 0
        self._reserved = 0
        self._in_use: dict[str | None, int] = {}
        self._thread: threading.Thread | None = None
        self._stopped = False

    # event-loop side ---------------------------------------------------------------------

    def start(self) -> GenerationEngine:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"fedsys-generate-{self.name}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """End the thread; sequences still running finish with reason ``shutdown``."""
        self._stopped = True
        if self._thread is not None:
            self._inbox.put(_STOP)
            self._thread.join()
            self._thread = None

    def encode(self, prompt: str) -> list[int]:
        return [int(i) for i in self.lm.tokenizer(prompt)["input_ids"]]

    def decode(self, ids: list[int]) -> str:
        return str(self.lm.tokenizer.decode(ids, skip_special_tokens=True))

    def submit(
        self, prompt: list[int], params: SamplingParams, adapter: str | None = None
    ) -> SequenceHandle:
        """Admit one sequence, or refuse it (InvalidParameter 400, CapacityExceeded 429)."""
        if self._stopped or self._thread is None:
            raise BatcherStopped("the generation engine is not running")
        limits = self.limits
        self._check_prompt(prompt)
        total = len(prompt) + params.max_tokens
        if total > self.lm.context_length:
            raise InvalidParameter(
                f"prompt ({len(prompt)} tokens) + max_tokens ({params.max_tokens}) = {total} "
                f"exceeds the model's context of {self.lm.context_length} tokens",
                param="max_tokens",
            )
        if total > limits.max_total_tokens:
            raise InvalidParameter(
                f"prompt + max_tokens = {total} exceeds the endpoint's token budget of "
                f"{limits.max_total_tokens}",
                param="max_tokens",
            )
        with self._lock:
            if self._sequences >= limits.max_sequences:
                raise CapacityExceeded(
                    f"{self._sequences} sequences are running or waiting, the limit is "
                    f"{limits.max_sequences}; retry later"
                )
            if self._reserved + total > limits.max_total_tokens:
                raise CapacityExceeded(
                    f"{self._reserved} of {limits.max_total_tokens} tokens are reserved by "
                    f"running sequences; this request needs {total}; retry later"
                )
            self._sequences += 1
            self._reserved += total
            self._in_use[adapter] = self._in_use.get(adapter, 0) + 1
        seq = _Sequence(
            prompt=prompt,
            params=params,
            adapter=adapter,
            text=IncrementalText(self.lm.tokenizer, params.stop),
            events=asyncio.Queue(),
            loop=asyncio.get_running_loop(),
            reserved=total,
            generator=params.generator(),
        )
        self._inbox.put(seq)
        return SequenceHandle(seq)

    def _check_prompt(self, prompt: list[int]) -> None:
        """InvalidParameter (400) for an empty or too long prompt or a token id outside the
        vocabulary."""
        if not prompt:
            raise InvalidParameter("the prompt is empty (no tokens)", param="prompt")
        if len(prompt) > self.limits.max_prompt_tokens:
            raise InvalidParameter(
                f"the prompt has {len(prompt)} tokens; this endpoint accepts at most "
                f"{self.limits.max_prompt_tokens}",
                param="prompt",
            )
        outside = [t for t in prompt if not 0 <= t < self.lm.vocab_size]
        if outside:
            raise InvalidParameter(
                f"prompt token {outside[0]} is outside the vocabulary "
                f"(0..{self.lm.vocab_size - 1})",
                param="prompt",
            )

    def in_use(self, adapter: str | None) -> int:
        """Sequences admitted on ``adapter`` and not yet finished."""
        with self._lock:
            return self._in_use.get(adapter, 0)

    @property
    def load(self) -> tuple[int, int]:
        """(sequences admitted, tokens reserved) now."""
        with self._lock:
            return self._sequences, self._reserved

    async def score(
        self, prompts: list[list[int]], adapter: str | None, *, top: int = 0
    ) -> list[PromptScore]:
        """Each prompt token's log-probability (see ``scoring``), between two decoding steps;
        InvalidParameter (400) for a prompt the model cannot take."""
        for prompt in prompts:
            self._check_prompt(prompt)
            if len(prompt) > self.lm.context_length:
                raise InvalidParameter(
                    f"the prompt has {len(prompt)} tokens, beyond the model's context of "
                    f"{self.lm.context_length} tokens",
                    param="prompt",
                )
        scores: list[PromptScore] = []

        def run() -> None:
            rows = self.limits.max_batch
            try:
                scores.extend(score_prompts(self.adapters, prompts, adapter, top=top, rows=rows))
            except Exception as exc:  # the model's failure answers this request only
                log.exception("scoring failed on %s", self.name)
                raise GenerationFailed(f"scoring failed: {exc}") from None

        await self._command(run)
        return scores

    async def load_adapter(self, name: str, directory: Path) -> None:
        """Load an adapter between two steps (waits until it is ready to serve)."""
        await self._command(lambda: self.adapters.add(name, directory))

    async def load_adapter_tensors(
        self, name: str, config: dict[str, Any], tensors: dict[str, torch.Tensor]
    ) -> None:
        await self._command(lambda: self.adapters.add_tensors(name, config, tensors))

    async def unload_adapter(self, name: str) -> None:
        await self._command(lambda: self.adapters.remove(name))

    async def _command(self, action: Callable[[], None]) -> None:
        if self._stopped or self._thread is None:
            raise BatcherStopped("the generation engine is not running")
        cmd = _Command(action)
        self._inbox.put(cmd)
        await asyncio.wrap_future(cmd.future)

    # engine-thread side ------------------------------------------------------------------

    def _run(self) -> None:
        running: list[_Sequence] = []
        waiting: deque[_Sequence] = deque()
        batch = KVBatch()
        outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Sequence, Event]]] = {}
        while True:
            if not self._take_inbox(waiting, block=not running and not waiting):
                self._fail_all([*running, *waiting], outbox)
                self._post(outbox)
                return
            admitted = 0
            while waiting and len(running) < self.limits.max_batch:
                if admitted >= self.limits.prefills_per_step and running:
                    break
                seq = waiting.popleft()
                if seq.cancelled:
                    self._finish(seq, "cancelled", outbox)
                    continue
                admitted += 1
                self._prefill(seq, batch, running, outbox)
            if running:
                self._decode(batch, running, outbox)
            self._post(outbox)

    def _take_inbox(self, waiting: deque[_Sequence], *, block: bool) -> bool:
        """Move new sequences to ``waiting`` and run commands; False once told to stop."""
        while True:
            try:
                item = self._inbox.get() if block else self._inbox.get_nowait()
            except queue.Empty:
                return True
            block = False
            if item is _STOP:
                return False
            if isinstance(item, _Command):
                try:
                    item.action()
                except Exception as exc:  # a failed load answers its caller only
                    item.future.set_exception(exc)
                else:
                    item.future.set_result(None)
            elif isinstance(item, _Sequence):
                waiting.append(item)

    def _prefill(
        self,
        seq: _Sequence,
        batch: KVBatch,
        running: list[_Sequence],
        outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Sequence, Event]]],
    ) -> None:
        try:
            out = self.adapters.forward(
                [seq.adapter],
                input_ids=torch.tensor([seq.prompt], dtype=torch.long),
                cache=DynamicCache(),
                use_cache=True,
                logits_to_keep=1,
            )
            token = next_tokens(out.logits[:, -1], [seq.params], [seq.generator])[0]
        except Exception as exc:  # a failing model answers the request, never ends the thread
            log.exception("prefill failed on %s", self.name)
            self._finish(seq, "error", outbox, error=str(exc))
            return
        if self._accept(seq, token, outbox):
            batch.join(out.cache, len(seq.prompt))
            running.append(seq)

    def _decode(
        self,
        batch: KVBatch,
        running: list[_Sequence],
        outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Sequence, Event]]],
    ) -> None:
        mask, positions = batch.step_inputs()
        try:
            out = self.adapters.forward(
                [s.adapter for s in running],
                input_ids=torch.tensor([[s.last_token] for s in running], dtype=torch.long),
                attention_mask=mask,
                position_ids=positions,
                cache=batch.cache,
                use_cache=True,
            )
            tokens = next_tokens(
                out.logits[:, -1], [s.params for s in running], [s.generator for s in running]
            )
        except Exception as exc:
            log.exception("decoding step failed on %s", self.name)
            for seq in running:
                self._finish(seq, "error", outbox, error=str(exc))
            running.clear()
            batch.keep([])
            return
        batch.advance(out.cache)
        if self.on_step is not None:
            self.on_step(len(running))
        keep = [
            i
            for i, (s, t) in enumerate(zip(running, tokens, strict=True))
            if self._accept(s, t, outbox)
        ]
        if len(keep) < len(running):
            running[:] = [running[i] for i in keep]
            batch.keep(keep)

    def _accept(
        self,
        seq: _Sequence,
        token: int,
        outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Sequence, Event]]],
    ) -> bool:
        """Record one generated token; True while the sequence goes on."""
        if seq.cancelled:
            self._finish(seq, "cancelled", outbox)
            return False
        seq.generated += 1
        seq.last_token = token
        reason: FinishReason | None = None
        if token in self.lm.eos_token_ids and not seq.params.ignore_eos:
            text, reason = seq.text.flush(), "stop"
        else:
            text = seq.text.add(token)
            if seq.text.stopped:
                reason = "stop"
            elif seq.generated >= seq.params.max_tokens:
                text, reason = text + seq.text.flush(), "length"
        outbox.setdefault(seq.loop, []).append((seq, TextDelta(text, token)))
        if reason is not None:
            self._finish(seq, reason, outbox)
            return False
        return True

    def _finish(
        self,
        seq: _Sequence,
        reason: FinishReason,
        outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Sequence, Event]]],
        error: str | None = None,
    ) -> None:
        if seq.done:
            return
        seq.done = True
        with self._lock:
            self._sequences -= 1
            self._reserved -= seq.reserved
            self._in_use[seq.adapter] -= 1
        event = Finished(reason, len(seq.prompt), seq.generated, seq.adapter, error)
        outbox.setdefault(seq.loop, []).append((seq, event))

    def _fail_all(
        self,
        seqs: list[_Sequence],
        outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Sequence, Event]]],
    ) -> None:
        for seq in seqs:
            self._finish(seq, "shutdown", outbox)
        while True:  # anything queued after the stop marker
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Sequence):
                self._finish(item, "shutdown", outbox)
            elif isinstance(item, _Command):
                item.future.set_exception(BatcherStopped("the generation engine stopped"))

    @staticmethod
    def _post(outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Sequence, Event]]]) -> None:
        """Hand the step's events to their event loops: one wake-up per loop per step."""
        for loop, items in outbox.items():
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(_deliver, items)
        outbox.clear()


def _deliver(items: list[tuple[_Sequence, Any]]) -> None:
    for seq, event in items:
        seq.events.put_nowait(event)
