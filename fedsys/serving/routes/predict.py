"""``POST /v1/models/{name}:predict``: a batch in (JSON or ``.npy``), class indices out.

Starlette matches ``{name}`` as ``[^/]+`` and then the literal ``:predict``, and model names
cannot hold a colon, so the colon route needs no custom converter.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from fedsys.errors import UnknownModel, UnsupportedMediaType
from fedsys.serving.batcher import FloatArray
from fedsys.serving.error_handlers import error_responses
from fedsys.serving.guards import check_api_key
from fedsys.serving.inputs import (
    JSON_TYPES,
    NPY_TYPES,
    PredictRequest,
    PredictResponse,
    check_batch,
    media_type,
    parse_json,
    parse_npy,
    read_body,
)
from fedsys.serving.live import ServedModel, softmax
from fedsys.serving.state import Serving

PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": PredictRequest.model_json_schema()},
            "application/x-npy": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}

router = APIRouter()


@router.post(
    "/v1/models/{name}:predict",
    response_class=JSONResponse,
    openapi_extra=PREDICT_BODY,
    responses={
        200: {"model": PredictResponse},
        **error_responses(400, 401, 403, 404, 413, 415, 422),
    },
)
async def predict(
    name: str,
    request: Request,
    state: Serving,
    probabilities: Annotated[bool, Query(description="With a .npy body.")] = False,
    variant: Annotated[
        str | None,
        Query(
            max_length=32,
            description="A compressed variant of the active version (int8, pruned, distilled, "
            "lowrank, pruned_int8) or fp32; default: the endpoint's default.",
        ),
    ] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Response:
    """Class index per instance (and probabilities when asked), from the active version."""
    with state.batcher.announce() as ticket:
        check_api_key(state, request, x_api_key)
        active = state.live.get(name)
        if active is None:
            raise UnknownModel(f"unknown model {name!r}; served: {state.live.names()}")
        served = active.pick(variant)
        if served is None:
            raise UnknownModel(
                f"{name} v{active.version} has no variant {variant!r}; served: "
                f"{active.served_variants()}"
            )
        body = await read_body(request, state.settings.max_body_bytes)
        arr, asked = _parse(media_type(request), body)
        x = check_batch(arr, served.input_shape, state.settings.max_instances, name)
        logits = await state.batcher.submit(served, x, ticket)
    return _answer(served, logits, probabilities or asked, worker=str(state.worker))


def _parse(kind: str, body: bytes) -> tuple[Any, bool]:
    """The instances array, and whether the body asked for probabilities."""
    if kind in JSON_TYPES:
        return parse_json(body)
    if kind in NPY_TYPES:
        return parse_npy(body), False
    raise UnsupportedMediaType(
        f"Content-Type {kind or '(none)'!r} is not supported; send application/json "
        "or a .npy body as application/x-npy or application/octet-stream",
    )


def _answer(served: ServedModel, logits: FloatArray, probabilities: bool, worker: str) -> Response:
    out: dict[str, Any] = {
        "predictions": logits.argmax(axis=1).tolist(),
        "version": served.version,
        "model": served.name,
        "variant": served.variant,
    }
    if probabilities:
        out["probabilities"] = softmax(logits).tolist()
    # Serialized directly: response-model validation would cost more than a small model.
    return Response(
        json.dumps(out).encode(),
        media_type="application/json",
        headers={"X-Fedsys-Worker": worker},  # which worker process answered
    )
