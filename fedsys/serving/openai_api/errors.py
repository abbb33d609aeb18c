"""fedsys errors in the OpenAI error shape, ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

from typing import Any

from fedsys.errors import FedsysError, InvalidParameter
from fedsys.serving.error_handlers import detail_of

# The ``type`` and ``code`` OpenAI's API gives each status.
TYPES: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", None),
    422: ("invalid_request_error", None),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    503: ("server_error", "service_unavailable"),
}


def openai_error(exc: FedsysError, status: int) -> dict[str, Any]:
    kind, code = TYPES.get(status, ("server_error", None))
    param = exc.param if isinstance(exc, InvalidParameter) else None
    if isinstance(exc, InvalidParameter) and param in ("prompt", "messages", "max_tokens"):
        code = "context_length_exceeded" if "context" in detail_of(exc) else code
    return {"error": {"message": detail_of(exc), "type": kind, "param": param, "code": code}}
