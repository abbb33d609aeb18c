"""Request and response bodies of the OpenAI completions API, as far as fedsys serves it.

Parameters fedsys does not implement (penalties, logit_bias, best_of, logprobs of generated
tokens) are accepted only at their neutral value, so a client that depends on them hears so
(400) rather than getting an answer computed without them. ``echo`` is served, and with
``max_tokens: 0`` and ``logprobs`` it scores the prompt (each token's log-probability), the
legacy completions API's way of measuring likelihood through an endpoint.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedsys.errors import InvalidParameter

MAX_STOP = 4
MAX_N = 16
MAX_LOGPROBS = 5  # OpenAI's limit on top log-probabilities per position

Temperature = Annotated[float, Field(ge=0.0, le=2.0, allow_inf_nan=False)]
TopP = Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]
TokenId = Annotated[int, Field(ge=0)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class SamplingFields(BaseModel):
    """What completions and chat completions share."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="NAME (active version) or NAME@VERSION.")
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: Temperature = 1.0
    top_p: TopP = 1.0
    n: int = Field(default=1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    presence_penalty: float = Field(default=0.0, ge=0.0, le=0.0, description="0 only.")
    frequency_penalty: float = Field(default=0.0, ge=0.0, le=0.0, description="0 only.")
    logit_bias: dict[str, float] | None = Field(default=None, max_length=0)
    ignore_eos: bool = Field(
        default=False, description="Extension (as in vLLM): generate max_tokens tokens."
    )
    variant: str | None = Field(
        default=None,
        max_length=32,
        description="Extension: a compressed variant of the version (int8, lowrank) or fp32; "
        "the same as the ?variant= query parameter. Default: the endpoint's default variant "
        "where the version has it, else fp32.",
    )

    @model_validator(mode="after")
    def _stop_list(self) -> SamplingFields:
        if isinstance(self.stop, list) and len(self.stop) > MAX_STOP:
            raise ValueError(f"stop: at most {MAX_STOP} sequences")
        return self

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class CompletionRequest(SamplingFields):
    """``POST /v1/completions``."""

    prompt: str | list[str] | list[TokenId] | list[list[TokenId]] = Field(
        description="Text, several texts, token ids, or several lists of token ids."
    )
    max_tokens: int | None = Field(
        default=None, ge=0, description="0 (with echo): score the prompt, generate nothing."
    )
    echo: bool = Field(default=False, description="Return the prompt before the completion.")
    logprobs: int | None = Field(
        default=None,
        ge=0,
        le=MAX_LOGPROBS,
        description="With echo and max_tokens 0: each prompt token's log-probability and the "
        "this many most likely tokens at each position.",
    )
    best_of: Literal[1] | None = None
    suffix: None = None

    @property
    def scores_prompt(self) -> bool:
        """echo with max_tokens 0: score the prompt; InvalidParameter for what is not served."""
        if self.max_tokens == 0 and not self.echo:
            raise InvalidParameter(
                "max_tokens 0 generates nothing; set echo to score the prompt",
                param="max_tokens",
            )
        if self.logprobs is not None and self.max_tokens != 0:
            raise InvalidParameter(
                "logprobs are served for the prompt only (echo with max_tokens 0), not for "
                "generated tokens",
                param="logprobs",
            )
        return self.echo and self.max_tokens == 0


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str
    name: str | None = None


class ChatCompletionRequest(SamplingFields):
    """``POST /v1/chat/completions``; needs a base whose tokenizer has a chat template."""

    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: None = None
    max_completion_tokens: int | None = Field(default=None, ge=1)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    """A scored prompt: its tokens (decoded one by one), their offsets in ``text``, each
    token's log-probability (None for the first) and the top alternatives when asked."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None] | None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
    variant: str | None = Field(default=None, description="Extension: the form that answered.")


class ChatChoice(BaseModel):
    index: int
    message: dict[str, Any]
    finish_reason: Literal["stop", "length"] | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None
    variant: str | None = Field(default=None, description="Extension: the form that answered.")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelCard(BaseModel):
    """An entry of the OpenAI list, with fedsys's version fields beside the OpenAI ones."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "fedsys"
