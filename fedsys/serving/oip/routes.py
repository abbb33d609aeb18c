"""The Open Inference Protocol (KServe V2) REST routes, over the same path as ``:predict``.

``infer`` takes its model from the live models, its API key from ``X-API-Key`` or
``Authorization: Bearer``, its rows through the same checks (``check_batch``) and the same
dynamic batcher, so batching, hot swap, metrics and the audit of refused keys are those of
``:predict``. The served tensor model has one input, ``input`` (FP32, ``[-1, *input_shape]``),
and three outputs: ``logits`` and ``probabilities`` (FP32, ``[-1, classes]``) and
``predictions`` (INT64, ``[-1]``). Errors are ``{"error": reason}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from fedsys.errors import FedsysError, InvalidRequest, UnknownModel
from fedsys.serving.error_handlers import detail_of
from fedsys.serving.guards import check_client_key
from fedsys.serving.inputs import check_batch, read_body
from fedsys.serving.live import ServedModel, softmax
from fedsys.serving.oip import schemas
from fedsys.serving.oip.tensors import HEADER_LENGTH, input_array, parse_request, wants_binary
from fedsys.serving.openapi_bodies import json_body
from fedsys.serving.protocol_errors import protocol_route
from fedsys.serving.state import Serving, ServingState

INPUT = "input"
OUTPUTS = ("predictions", "logits", "probabilities")
EXTENSIONS = ["binary_tensor_data"]
PLATFORM = "fedsys_pytorch"


def oip_error(exc: FedsysError, _: int) -> dict[str, Any]:
    return {"error": detail_of(exc)}


router = APIRouter(route_class=protocol_route(oip_error), tags=["Open Inference Protocol"])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorResponse} for code in (400, 401, 403, 404, 413, 415, 422, 503)
}
INFER_BODY = json_body(
    schemas.InferenceRequest,
    **{"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
)


def _fedsys_version() -> str:
    try:
        return package_version("fedsys")
    except PackageNotFoundError:
        return "0"


@router.get("/v2", response_model=schemas.ServerMetadata)
def server_metadata() -> dict[str, Any]:
    """Server name, version and the protocol extensions it supports."""
    return {"name": "fedsys", "version": _fedsys_version(), "extensions": EXTENSIONS}


@router.get("/v2/health/live")
def live() -> dict[str, bool]:
    """The process answers."""
    return {"live": True}


@router.get("/v2/health/ready", responses={503: {"model": dict[str, bool]}})
def ready(state: Serving) -> JSONResponse:
    """Ready once a model is loaded."""
    is_ready = len(state.live) > 0 or bool(state.language_models.names())
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


def _served(state: ServingState, name: str, version: str | None) -> ServedModel:
    served = state.live.get(name)
    if served is None:
        raise UnknownModel(f"unknown model {name!r}; served tensor models: {state.live.names()}")
    if version is not None and version != str(served.version):
        raise UnknownModel(
            f"version {version!r} of model {name!r} is not served; version {served.version} is"
        )
    return served


def _metadata(served: ServedModel) -> dict[str, Any]:
    classes = served.manifest.num_classes
    return {
        "name": served.name,
        "versions": [str(served.version)],
        "platform": PLATFORM,
        "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, *served.input_shape]}],
        "outputs": [
            {"name": "predictions", "datatype": "INT64", "shape": [-1]},
            {"name": "logits", "datatype": "FP32", "shape": [-1, classes]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
        ],
    }


@router.get("/v2/models/{name}", response_model=schemas.ModelMetadata, responses=ERRORS)
def model_metadata(name: str, state: Serving) -> dict[str, Any]:
    """Inputs and outputs (name, datatype, shape) of the served version."""
    return _metadata(_served(state, name, None))


@router.get(
    "/v2/models/{name}/versions/{version}",
    response_model=schemas.ModelMetadata,
    responses=ERRORS,
)
def version_metadata(name: str, version: str, state: Serving) -> dict[str, Any]:
    return _metadata(_served(state, name, version))


@router.get("/v2/models/{name}/ready", response_model=schemas.ModelReady, responses=ERRORS)
def model_ready(name: str, state: Serving) -> dict[str, Any]:
    return {"name": _served(state, name, None).name, "ready": True}


@router.get(
    "/v2/models/{name}/versions/{version}/ready",
    response_model=schemas.ModelReady,
    responses=ERRORS,
)
def version_ready(name: str, version: str, state: Serving) -> dict[str, Any]:
    return {"name": _served(state, name, version).name, "ready": True}


@router.post(
    "/v2/models/{name}/infer",
    openapi_extra=INFER_BODY,
    responses={200: {"model": schemas.InferenceResponse}, **ERRORS},
)
async def infer(name: str, request: Request, state: Serving) -> Response:
    """Run the served version on the ``input`` tensor (JSON or binary data)."""
    return await _infer(state, request, name, None)


@router.post(
    "/v2/models/{name}/versions/{version}/infer",
    openapi_extra=INFER_BODY,
    responses={200: {"model": schemas.InferenceResponse}, **ERRORS},
)
async def infer_version(name: str, version: str, request: Request, state: Serving) -> Response:
    return await _infer(state, request, name, version)


async def _infer(state: ServingState, request: Request, name: str, version: str | None) -> Response:
    with state.batcher.announce() as ticket:
        check_client_key(state, request, "infer")
        served = _served(state, name, version)
        body = await read_body(request, state.settings.max_body_bytes)
        req, binary = parse_request(body, request.headers.get(HEADER_LENGTH))
        arr = _input(req, binary)
        x = check_batch(arr, served.input_shape, state.settings.max_instances, name)
        asked = [o.name for o in req.outputs] if req.outputs else list(OUTPUTS)
        unknown = sorted(set(asked) - set(OUTPUTS))
        if unknown:
            raise InvalidRequest(f"unknown outputs {unknown}; model {name!r} has {list(OUTPUTS)}")
        logits = await state.batcher.submit(served, x, ticket)
    return _answer(req, served, logits, asked, worker=str(state.worker))


def _input(req: schemas.InferenceRequest, binary: bytes) -> np.ndarray:
    if len(req.inputs) != 1 or req.inputs[0].name != INPUT:
        names = [t.name for t in req.inputs]
        raise InvalidRequest(f"send exactly one input named {INPUT!r}; got {names}")
    arr, used = input_array(req.inputs[0], memoryview(binary), 0)
    if used != len(binary):
        raise InvalidRequest(f"{len(binary) - used} binary bytes follow the inputs unused")
    return arr


def _answer(
    req: schemas.InferenceRequest,
    served: ServedModel,
    logits: np.ndarray,
    asked: list[str],
    *,
    worker: str,
) -> Response:
    values: dict[str, Callable[[], np.ndarray]] = {
        "predictions": lambda: logits.argmax(axis=1).astype(np.int64),
        "logits": lambda: logits.astype(np.float32, copy=False),
        "probabilities": lambda: softmax(logits),
    }
    outputs: list[dict[str, Any]] = []
    tail: list[bytes] = []
    for out in asked:
        arr: np.ndarray = values[out]()
        tensor: dict[str, Any] = {
            "name": out,
            "shape": list(arr.shape),
            "datatype": "INT64" if arr.dtype == np.int64 else "FP32",
        }
        if wants_binary(req, out):
            raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            tensor["data"] = arr.reshape(-1).tolist()
        outputs.append(tensor)
    head = {
        "model_name": served.name,
        "model_version": str(served.version),
        "id": req.id or "",
        "outputs": outputs,
    }
    header = json.dumps(head, separators=(",", ":")).encode()
    headers = {"X-Fedsys-Worker": worker}
    if not tail:
        return Response(header, media_type="application/json", headers=headers)
    headers["Inference-Header-Content-Length"] = str(len(header))
    return Response(header + b"".join(tail), media_type="application/octet-stream", headers=headers)
