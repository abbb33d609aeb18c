"""The inference endpoint: ``create_app(settings)`` builds one worker's FastAPI app.

Routes (a public interface): ``POST /v1/models/{name}:predict``, ``GET /v1/models``,
``GET /v1/models/{name}``, ``POST /v1/models/{name}/versions`` (signed publish),
``POST /v1/models/{name}:rollback``, ``/healthz``, ``/readyz``, ``/metrics``.
Starlette matches ``{name}`` as ``[^/]+`` and then the literal ``:predict``, and model
names cannot hold a colon, so the colon routes need no custom converter.

Every client mistake is a 4xx ``{"detail": "..."}`` naming the problem; an artifact that
fails verification is refused and the version being served stays.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from python_multipart.exceptions import FormParserError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from fedsys.errors import ArtifactRejected, FedsysError, UnknownArtifact, VersionConflict
from fedsys.serving.batcher import BatcherStopped
from fedsys.serving.inputs import (
    JSON_TYPES,
    NPY_TYPES,
    BadRequest,
    PredictRequest,
    PredictResponse,
    check_batch,
    media_type,
    parse_json,
    parse_npy,
    read_body,
)
from fedsys.serving.live import softmax
from fedsys.serving.metrics import MetricsMiddleware, ServeMetrics
from fedsys.serving.settings import SETTINGS_ENV, ServeSettings
from fedsys.serving.state import ServingState

log = logging.getLogger("fedsys.serving")

NAME_RE = re.compile(r"[A-Za-z0-9._-]+")
ACTIONS = frozenset({"predict", "rollback"})  # the POST-only routes /v1/models/{name}:{action}
ERROR = {"content": {"application/json": {"example": {"detail": "what went wrong"}}}}
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
PUBLISH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["manifest", "signature", "weights"],
                    "properties": {
                        "manifest": {"type": "string", "format": "binary"},
                        "signature": {"type": "string", "format": "binary"},
                        "weights": {"type": "string", "format": "binary"},
                        "int8_weights": {"type": "string", "format": "binary"},
                    },
                }
            }
        },
    }
}


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name) or name in (".", ".."):
        raise BadRequest(404, f"unknown model {name!r} (names are [A-Za-z0-9._-]+)")


def _check_action_method(name: str) -> None:
    """``GET /v1/models/m:predict`` reaches the describe route (``{name}`` takes the colon):
    model names cannot hold one, so it is the POST-only action asked with the wrong method."""
    model, colon, action = name.rpartition(":")
    if colon and action in ACTIONS:
        raise BadRequest(
            405, f"{action} takes POST, not GET: POST /v1/models/{model}:{action}", allow="POST"
        )


def _check_api_key(state: ServingState, request: Request, key: str | None) -> None:
    if not state.api_keys:
        return
    if key is None:
        state.audit.record(
            "refused", what="predict", reason="missing API key", client=_client(request)
        )
        raise BadRequest(401, "missing X-API-Key header")
    if not any(hmac.compare_digest(key.encode(), k.encode()) for k in state.api_keys):
        state.audit.record(
            "refused", what="predict", reason="wrong API key", client=_client(request)
        )
        raise BadRequest(403, "X-API-Key is not valid")


def _check_token(state: ServingState, request: Request, what: str, name: str) -> None:
    """Bearer token for publish and rollback: 401 when absent, 403 when wrong or disabled."""
    auth = request.headers.get("authorization")
    reason: str | None = None
    status = 403
    if state.publish_token is None:
        env = state.settings.publish_token_env
        reason = f"publishing over HTTP is disabled: set {env} on the server"
    elif auth is None or not auth.lower().startswith("bearer "):
        reason, status = "missing 'Authorization: Bearer <token>' header", 401
    elif not hmac.compare_digest(auth[7:].strip().encode(), state.publish_token.encode()):
        reason = "the bearer token is not valid"
    if reason is not None:
        state.audit.record("refused", what=what, model=name, reason=reason, client=_client(request))
        raise BadRequest(status, reason)


async def _part_bytes(form: dict[str, Any], part: str, *, required: bool) -> bytes | None:
    value = form.get(part)
    if value is None:
        if required:
            raise BadRequest(422, f"multipart part {part!r} is missing")
        return None
    if isinstance(value, UploadFile):
        return await value.read()
    if part == "signature":
        try:  # a text field may carry the signature as hex
            return bytes.fromhex(value.strip())
        except ValueError:
            raise BadRequest(
                422, "part 'signature' must be a file (64 raw bytes) or hex text"
            ) from None
    if part == "manifest":
        return str(value).encode()
    raise BadRequest(422, f"multipart part {part!r} must be sent as a file")


async def _read_multipart(request: Request, limit: int) -> dict[str, Any]:
    if media_type(request) != "multipart/form-data":
        raise BadRequest(
            415, "publish needs a multipart/form-data body (manifest, signature, weights)"
        )
    body = await read_body(request, limit)

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(
        request.headers, stream(), max_files=8, max_fields=8, max_part_size=limit
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise BadRequest(400, f"malformed multipart body: {exc.message}") from None
    except FormParserError as exc:  # the low-level parser's errors pass through Starlette
        raise BadRequest(400, f"malformed multipart body: {exc}") from None
    return dict(form.items())


def create_app(settings: ServeSettings) -> FastAPI:
    """A FastAPI app serving ``settings.registry``; its lifespan starts the inference thread
    and the registry poll, and stops both (no thread outlives the app)."""
    metrics = ServeMetrics()
    state = ServingState(settings, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(
        title="fedsys inference",
        version="1",
        summary="Serves the signed, versioned models of a fedsys registry.",
        lifespan=lifespan,
    )
    app.state.serving = state
    worker = str(state.worker)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.exception_handler(BadRequest)
    async def _bad_request(_: Request, exc: BadRequest) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        if exc.allow is not None:
            headers["Allow"] = exc.allow
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=headers)

    @app.post(
        "/v1/models/{name}:predict",
        response_class=JSONResponse,
        openapi_extra=PREDICT_BODY,
        responses={
            200: {"model": PredictResponse},
            **{c: ERROR for c in (400, 401, 403, 404, 413, 415, 422)},
        },
    )
    async def predict(
        name: str,
        request: Request,
        probabilities: Annotated[bool, Query(description="With a .npy body.")] = False,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> Response:
        """Class index per instance (and probabilities when asked), from the active version."""
        with state.batcher.announce() as ticket:
            _check_api_key(state, request, x_api_key)
            served = state.live.get(name)
            if served is None:
                raise BadRequest(404, f"unknown model {name!r}; served: {state.live.names()}")
            kind = media_type(request)
            body = await read_body(request, settings.max_body_bytes)
            if kind in JSON_TYPES:
                arr, asked = parse_json(body)
                probabilities = probabilities or asked
            elif kind in NPY_TYPES:
                arr = parse_npy(body)
            else:
                raise BadRequest(
                    415,
                    f"Content-Type {kind or '(none)'!r} is not supported; send application/json "
                    "or a .npy body as application/x-npy or application/octet-stream",
                )
            x = check_batch(arr, served.input_shape, settings.max_instances, name)
            try:
                logits = await state.batcher.submit(served, x, ticket)
            except BatcherStopped:
                raise BadRequest(503, "the endpoint is shutting down; retry") from None
        out: dict[str, Any] = {
            "predictions": logits.argmax(axis=1).tolist(),
            "version": served.version,
            "model": name,
        }
        if probabilities:
            out["probabilities"] = softmax(logits).tolist()
        # Serialized directly: response-model validation would cost more than a small model.
        return Response(
            json.dumps(out).encode(),
            media_type="application/json",
            headers={"X-Fedsys-Worker": worker},  # which worker process answered
        )

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        """Every model in the registry, with its active and served versions."""
        out = []
        for name in state.registry.models():
            served = state.live.get(name)
            out.append(
                {
                    "name": name,
                    "active_version": state.registry.active_version(name),
                    "served_version": served.version if served else None,
                    "versions": [m.version for m in state.registry.versions(name)],
                }
            )
        return {"models": out}

    @app.get("/v1/models/{name}", responses={404: ERROR, 405: ERROR})
    def describe_model(name: str) -> dict[str, Any]:
        """Versions (manifests), the active version and its central metrics."""
        _check_action_method(name)
        _check_name(name)
        if name not in state.registry.models():
            raise BadRequest(404, f"unknown model {name!r}")
        manifests = state.registry.versions(name)
        active = state.registry.active_version(name)
        served = state.live.get(name)
        current = next((m for m in manifests if m.version == active), None)
        return {
            "name": name,
            "active_version": active,
            "served_version": served.version if served else None,
            "variant": served.variant if served else None,
            "metrics": current.metrics if current else None,
            "versions": [m.model_dump(mode="json") for m in manifests],
        }

    @app.post(
        "/v1/models/{name}/versions",
        status_code=201,
        openapi_extra=PUBLISH_BODY,
        responses={c: ERROR for c in (400, 401, 403, 404, 409, 413, 415, 422)},
    )
    async def publish(name: str, request: Request) -> dict[str, Any]:
        """Add a signed version (token + Ed25519 signature + sha256 checked) and activate it."""
        _check_token(state, request, "publish", name)
        _check_name(name)
        form = await _read_multipart(request, settings.max_publish_bytes)
        manifest = await _part_bytes(form, "manifest", required=True)
        signature = await _part_bytes(form, "signature", required=True)
        weights = await _part_bytes(form, "weights", required=True)
        int8 = await _part_bytes(form, "int8_weights", required=False)
        assert manifest is not None and signature is not None and weights is not None
        try:
            added = await asyncio.to_thread(
                state.registry.add_signed,
                name,
                manifest,
                signature,
                weights,
                state.trusted(),
                int8_weights=int8,
                activate=True,
            )
        except VersionConflict as exc:
            raise BadRequest(409, f"publish refused: {exc.reason}") from None
        except ArtifactRejected as exc:
            raise BadRequest(422, f"publish refused: {exc.reason}") from None
        except FedsysError as exc:  # e.g. no publisher key configured
            raise BadRequest(409, f"publish refused: {exc}") from None
        served = await state.refresh(name)
        return {
            "name": name,
            "version": added.version,
            "served_version": served.version if served else None,
        }

    @app.post("/v1/models/{name}:rollback", responses={c: ERROR for c in (401, 403, 404, 409)})
    async def rollback(name: str, request: Request) -> dict[str, Any]:
        """Activate the version before the active one."""
        _check_token(state, request, "rollback", name)
        _check_name(name)
        try:
            manifest = await asyncio.to_thread(state.registry.rollback, name, state.trusted())
        except UnknownArtifact as exc:
            raise BadRequest(404, f"rollback refused: {exc.reason}") from None
        except ArtifactRejected as exc:
            raise BadRequest(409, f"rollback refused: {exc.reason}") from None
        except FedsysError as exc:
            raise BadRequest(409, f"rollback refused: {exc}") from None
        served = await state.refresh(name)
        return {
            "name": name,
            "active_version": manifest.version,
            "served_version": served.version if served else None,
        }

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: ERROR})
    def readyz() -> JSONResponse:
        """Ready when at least one model is loaded."""
        if len(state.live) == 0:
            return JSONResponse({"detail": "no model loaded yet"}, status_code=503)
        return JSONResponse({"status": "ready", "models": state.live.names()})

    @app.get("/metrics")
    def prometheus() -> Response:
        """Prometheus exposition of this worker's counters."""
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` worker processes: settings from the environment."""
    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        raise RuntimeError(f"{SETTINGS_ENV} is not set; start workers with `fedsys serve`")
    return create_app(ServeSettings.model_validate_json(raw))
