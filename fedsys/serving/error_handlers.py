"""One HTTP answer per fedsys error class: the status code, and ``{"detail": reason}``.

Routes raise; the handlers registered here by exception class answer. Starlette picks the
handler of the nearest class in the exception's MRO, so a subclass may get its own status.
An exception not listed here is a server error (500), never a client's fault.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from fedsys.errors import (
    BatcherStopped,
    BodyTooLarge,
    CapacityExceeded,
    CredentialsMissing,
    CredentialsRefused,
    FedsysError,
    GenerationFailed,
    InvalidParameter,
    InvalidRequest,
    MalformedRequest,
    MethodNotAllowed,
    RequestConflict,
    UnknownModel,
    UnsupportedMediaType,
)

STATUS: dict[type[FedsysError], int] = {
    MalformedRequest: 400,
    InvalidParameter: 400,
    CredentialsMissing: 401,
    CredentialsRefused: 403,
    UnknownModel: 404,
    MethodNotAllowed: 405,
    RequestConflict: 409,
    BodyTooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidRequest: 422,
    CapacityExceeded: 429,
    GenerationFailed: 500,
    BatcherStopped: 503,
}
# The detail clients see where the reason is the endpoint's own business.
PUBLIC_DETAIL: dict[type[FedsysError], str] = {
    BatcherStopped: "the endpoint is shutting down; retry",
}
ERROR: dict[str, Any] = {
    "content": {"application/json": {"example": {"detail": "what went wrong"}}}
}

Handler = Callable[[Request, Exception], Awaitable[JSONResponse]]


def headers_of(exc: Exception) -> dict[str, str]:
    """The headers an error's answer carries (what to send, how to retry)."""
    if isinstance(exc, CredentialsMissing):
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, MethodNotAllowed):
        return {"Allow": exc.allow}
    if isinstance(exc, CapacityExceeded):
        return {"Retry-After": "1"}
    return {}


def status_of(exc: FedsysError) -> int:
    """The status of the nearest class in ``exc``'s MRO that has one (else 500)."""
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return 500


def detail_of(exc: FedsysError) -> str:
    """What the client is told: the reason, or a public text where the reason is internal."""
    for cls in type(exc).__mro__:
        public = PUBLIC_DETAIL.get(cls)
        if public is not None:
            return public
    return str(getattr(exc, "reason", exc))


def _handler(cls: type[FedsysError], status: int) -> Handler:
    public = PUBLIC_DETAIL.get(cls)

    async def answer(_: Request, exc: Exception) -> JSONResponse:
        detail = public or getattr(exc, "reason", str(exc))
        return JSONResponse({"detail": detail}, status_code=status, headers=headers_of(exc))

    return answer


def add_error_handlers(app: FastAPI) -> None:
    for cls, status in STATUS.items():
        app.add_exception_handler(cls, _handler(cls, status))


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entry of a route that can answer these error codes."""
    return {code: ERROR for code in codes}
