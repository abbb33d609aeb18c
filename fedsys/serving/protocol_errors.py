"""Errors in the shape each protocol's clients read, from the same fedsys error classes.

fedsys's own routes answer ``{"detail": reason}``; the OpenAI API answers
``{"error": {"message", "type", "param", "code"}}`` and the Open Inference Protocol
``{"error": reason}``. A router of one of these protocols uses the route class made by
:func:`protocol_route`: it answers the fedsys errors its routes raise (and FastAPI's own
validation errors) in the protocol's shape, with the status ``error_handlers`` maps the
error's class to, so every protocol agrees on the status of every refusal.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from fedsys.errors import FedsysError, InvalidParameter
from fedsys.serving.error_handlers import headers_of, status_of

ErrorBody = Callable[[FedsysError, int], dict[str, Any]]


def validation_error(exc: RequestValidationError) -> InvalidParameter:
    """FastAPI's validation error as one InvalidParameter naming the first field."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    where = ".".join(loc) or "body"
    return InvalidParameter(f"{where}: {first.get('msg', 'invalid')}", param=where)


def error_response(error: FedsysError, body: ErrorBody) -> JSONResponse:
    status = status_of(error)
    return JSONResponse(body(error, status), status_code=status, headers=headers_of(error))


def protocol_route(body: ErrorBody) -> type[APIRoute]:
    """An APIRoute class whose routes answer fedsys errors as ``body(exc, status)``."""

    class ProtocolRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def answer(request: Request) -> Response:
                try:
                    return await handler(request)
                except RequestValidationError as exc:
                    return error_response(validation_error(exc), body)
                except FedsysError as exc:
                    return error_response(exc, body)

            return answer

    return ProtocolRoute
