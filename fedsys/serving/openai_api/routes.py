"""``POST /v1/completions`` and ``POST /v1/chat/completions`` (the OpenAI API).

API keys are the endpoint's (``Authorization: Bearer KEY``, as the OpenAI SDK sends them, or
``X-API-Key``); errors are in OpenAI's shape with the status ``error_handlers`` gives their
class. The request's ``model`` is ``NAME`` (the active version) or ``NAME@VERSION``, and ``variant``
(a body field or ``?variant=``) picks a compressed variant of that version; every
answer and every chunk names the version that produced it (``model``), and a stream stays on
the version it started with even when a new one is published meanwhile.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError

from fedsys.errors import InvalidParameter, MalformedRequest, UnsupportedMediaType
from fedsys.serving.generation.served import LanguageModels, ServedLM
from fedsys.serving.guards import check_client_key
from fedsys.serving.inputs import media_type, read_body
from fedsys.serving.openai_api import echo, generate
from fedsys.serving.openai_api.errors import openai_error
from fedsys.serving.openai_api.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    ErrorResponse,
)
from fedsys.serving.openapi_bodies import json_body
from fedsys.serving.protocol_errors import protocol_route
from fedsys.serving.state import Serving, ServingState

router = APIRouter(route_class=protocol_route(openai_error), tags=["OpenAI API"])

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 415, 429, 503)
}
Req = TypeVar("Req", bound=BaseModel)


async def _parse(state: ServingState, request: Request, schema: type[Req]) -> Req:
    """The body as ``schema``; InvalidParameter names the first field that does not fit."""
    kind = media_type(request)
    if kind != "application/json":
        raise UnsupportedMediaType(f"Content-Type {kind or '(none)'!r}: send application/json")
    body = await read_body(request, state.settings.max_body_bytes)
    try:
        return schema.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise MalformedRequest(f"body is not valid JSON: {first['msg']}") from None
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidParameter(f"{where}: {first['msg']}", param=where) from None


def _models(state: ServingState) -> LanguageModels:
    models: LanguageModels = state.language_models
    return models


VariantQuery = Annotated[
    str | None,
    Query(
        max_length=32,
        description="A compressed variant of the version (int8, lowrank) or fp32; the same "
        "as the body's variant field.",
    ),
]


def _served(state: ServingState, model: str, body: str | None, query: str | None) -> ServedLM:
    """The version the request names, in the variant it names (body field or ``?variant=``),
    else in the endpoint's default variant where the version has one, else fp32."""
    if body is not None and query is not None and body != query:
        raise InvalidParameter(
            f"variant {body!r} in the body and {query!r} in the query differ", param="variant"
        )
    models = _models(state)
    asked = body if body is not None else query
    if asked is None:
        served = models.resolve(model)
        default = state.settings.default_variant
        if default is not None and default in models.variants_of(served.name, served.version):
            return models.resolve(model, default)
        return served
    return models.resolve(model, asked)


@router.post(
    "/v1/completions",
    openapi_extra=json_body(CompletionRequest),
    responses={200: {"model": Completion}, **ERRORS},
)
async def completions(request: Request, state: Serving, variant: VariantQuery = None) -> Response:
    """Text completions of one or several prompts; ``stream`` for server-sent events;
    ``echo`` with ``max_tokens: 0`` and ``logprobs``: the prompt's token log-probabilities."""
    check_client_key(state, request, "completions")
    req = await _parse(state, request, CompletionRequest)
    served = _served(state, req.model, req.variant, variant)
    engine = served.engine
    prompts = generate.prompts_of(req.prompt, engine.encode)
    envelope = generate.envelope("text_completion", served)
    include = bool(req.stream_options and req.stream_options.include_usage)
    if req.scores_prompt:  # echo with max_tokens 0: the prompt's log-probabilities
        scored, used = await echo.scored_choices(served, req, prompts)
        if req.stream:
            return _sse(echo.scored_stream(envelope, scored, used, include_usage=include))
        return JSONResponse({**envelope, "choices": scored, "usage": used})
    params = generate.sampling_params(req, req.max_tokens, engine.limits.default_max_tokens)
    handles = generate.submit_all(served, prompts, params, req.n)

    def plain(index: int, text: str, finish: str | None) -> dict[str, Any]:
        return {"text": text, "index": index, "logprobs": None, "finish_reason": finish}

    choice = echo.echoed(prompts, req.n, engine.decode, plain) if req.echo else plain
    if req.stream:
        return _sse(generate.stream(handles, envelope, choice, include_usage=include))
    outcomes = await generate.collect(handles)
    choices = [choice(i, o.text, generate.finish_reason(o.finish)) for i, o in enumerate(outcomes)]
    return JSONResponse({**envelope, "choices": choices, "usage": generate.usage(outcomes)})


@router.post(
    "/v1/chat/completions",
    openapi_extra=json_body(ChatCompletionRequest),
    responses={200: {"model": ChatCompletion}, **ERRORS},
)
async def chat_completions(
    request: Request, state: Serving, variant: VariantQuery = None
) -> Response:
    """A chat reply, for models whose tokenizer carries a chat template."""
    check_client_key(state, request, "chat")
    req = await _parse(state, request, ChatCompletionRequest)
    served = _served(state, req.model, req.variant, variant)
    prompt = _chat_prompt(served, req)
    engine = served.engine
    params = generate.sampling_params(
        req, req.max_completion_tokens or req.max_tokens, engine.limits.default_max_tokens
    )
    handles = generate.submit_all(served, [prompt], params, req.n)
    envelope = generate.envelope("chat.completion", served)

    if req.stream:
        first: set[int] = set()

        def delta(index: int, text: str, finish: str | None) -> dict[str, Any]:
            body: dict[str, Any] = {"content": text} if text or finish is None else {}
            if index not in first:  # the first chunk of a choice names the role
                first.add(index)
                body["role"] = "assistant"
            return {"index": index, "delta": body, "finish_reason": finish, "logprobs": None}

        include = bool(req.stream_options and req.stream_options.include_usage)
        chunks = {**envelope, "object": "chat.completion.chunk"}
        return _sse(generate.stream(handles, chunks, delta, include_usage=include))
    outcomes = await generate.collect(handles)
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": o.text},
            "finish_reason": generate.finish_reason(o.finish),
            "logprobs": None,
        }
        for i, o in enumerate(outcomes)
    ]
    return JSONResponse({**envelope, "choices": choices, "usage": generate.usage(outcomes)})


def _chat_prompt(served: ServedLM, req: ChatCompletionRequest) -> list[int]:
    lm = served.engine.lm
    if lm.chat_template is None:
        raise InvalidParameter(
            f"model {served.id!r} has no chat template (its tokenizer defines none); "
            "use /v1/completions",
            param="model",
        )
    messages = [m.model_dump(exclude_none=True) for m in req.messages]
    try:
        ids = lm.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
    except Exception as exc:  # the template is the model's: any failure is its refusal
        raise InvalidParameter(
            f"the chat template cannot render these messages: {exc}", param="messages"
        ) from None
    if hasattr(ids, "get") and "input_ids" in ids:
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def _sse(body: Any) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
