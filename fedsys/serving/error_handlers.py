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
    CredentialsMissing,
    CredentialsRefused,
    FedsysError,
    InvalidRequest,
    MalformedRequest,
    MethodNotAllowed,
    RequestConflict,
    UnknownModel,
    UnsupportedMediaType,
)

STATUS: dict[type[FedsysError], int] = {
    MalformedRequest: 400,
    CredentialsMissing: 401,
    CredentialsRefused: 403,
    UnknownModel: 404,
    MethodNotAllowed: 405,
    RequestConflict: 409,
    BodyTooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidRequest: 422,
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


def _headers(exc: Exception) -> dict[str, str]:
    if isinstance(exc, CredentialsMissing):
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, MethodNotAllowed):
        return {"Allow": exc.allow}
    return {}


def _handler(cls: type[FedsysError], status: int) -> Handler:
    public = PUBLIC_DETAIL.get(cls)

    async def answer(_: Request, exc: Exception) -> JSONResponse:
        detail = public or getattr(exc, "reason", str(exc))
        return JSONResponse({"detail": detail}, status_code=status, headers=_headers(exc))

    return answer


def add_error_handlers(app: FastAPI) -> None:
    for cls, status in STATUS.items():
        app.add_exception_handler(cls, _handler(cls, status))


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entry of a route that can answer these error codes."""
    return {code: ERROR for code in codes}
