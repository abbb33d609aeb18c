"""``POST /v1/models/{name}/versions`` (a signed publish) and ``POST /v1/models/{name}:rollback``,
both behind the publish bearer token.

The registry's refusals mean different things to the client per action: a refused upload
is the client's artifact (422), a refused rollback is the registry's state (409). Each
action's table below turns the registry's error into the request error it answers with;
the registry's reason stays the detail. An artifact that fails verification is refused and
the version being served stays.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request

from fedsys.errors import (
    ArtifactRejected,
    FedsysError,
    InvalidRequest,
    RequestConflict,
    RequestRefused,
    UnknownArtifact,
    UnknownModel,
    VersionConflict,
)
from fedsys.serving.error_handlers import error_responses
from fedsys.serving.guards import check_name, check_token
from fedsys.serving.multipart import PUBLISH_BODY, read_upload
from fedsys.serving.state import Serving

Refusals = tuple[tuple[type[FedsysError], type[RequestRefused]], ...]

# First match wins: a subclass before its base.
PUBLISH_REFUSALS: Refusals = (
    (VersionConflict, RequestConflict),
    (ArtifactRejected, InvalidRequest),
    (FedsysError, RequestConflict),  # e.g. no publisher key configured
)
ROLLBACK_REFUSALS: Refusals = (
    (UnknownArtifact, UnknownModel),
    (ArtifactRejected, RequestConflict),
    (FedsysError, RequestConflict),
)

router = APIRouter()


@contextlib.contextmanager
def refused_as(action: str, refusals: Refusals) -> Iterator[None]:
    """Re-raise the registry's error as the request error ``refusals`` names for it."""
    try:
        yield
    except FedsysError as exc:
        refused = next(request_error for error, request_error in refusals if isinstance(exc, error))
        raise refused(f"{action} refused: {exc}") from None


@router.post(
    "/v1/models/{name}/versions",
    status_code=201,
    openapi_extra=PUBLISH_BODY,
    responses=error_responses(400, 401, 403, 404, 409, 413, 415, 422),
)
async def publish(name: str, request: Request, state: Serving) -> dict[str, Any]:
    """Add a signed version (token + Ed25519 signature + sha256 checked) and activate it."""
    check_token(state, request, "publish", name)
    check_name(name)
    upload = await read_upload(request, state.settings.max_publish_bytes)
    with refused_as("publish", PUBLISH_REFUSALS):
        added = await asyncio.to_thread(
            state.registry.add_signed,
            name,
            upload.manifest,
            upload.signature,
            upload.weights,
            state.trusted(),
            int8_weights=upload.int8_weights,
            activate=True,
        )
    served = await state.refresh(name)
    return {
        "name": name,
        "version": added.version,
        "served_version": served.version if served else None,
    }


@router.post("/v1/models/{name}:rollback", responses=error_responses(401, 403, 404, 409))
async def rollback(name: str, request: Request, state: Serving) -> dict[str, Any]:
    """Activate the version before the active one."""
    check_token(state, request, "rollback", name)
    check_name(name)
    with refused_as("rollback", ROLLBACK_REFUSALS):
        manifest = await asyncio.to_thread(state.registry.rollback, name, state.trusted())
    served = await state.refresh(name)
    return {
        "name": name,
        "active_version": manifest.version,
        "served_version": served.version if served else None,
    }
