"""Checks a route makes before it does anything: credentials and model names.

Each raises a ``RequestRefused`` subclass; ``error_handlers`` turns it into the answer.
Refused credentials are written to the audit log (facts only, never the key or token).
"""

from __future__ import annotations

import hmac
import re

from fastapi import Request

from fedsys.errors import (
    CredentialsMissing,
    CredentialsRefused,
    MethodNotAllowed,
    RequestRefused,
    UnknownModel,
)
from fedsys.serving.state import ServingState

NAME_RE = re.compile(r"[A-Za-z0-9._-]+")
ACTIONS = frozenset({"predict", "rollback"})  # the POST-only routes /v1/models/{name}:{action}


def client_address(request: Request) -> str:
    return request.client.host if request.client else "?"


def check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name) or name in (".", ".."):
        raise UnknownModel(f"unknown model {name!r} (names are [A-Za-z0-9._-]+)")


def check_action_method(name: str) -> None:
    """``GET /v1/models/m:predict`` reaches the describe route (``{name}`` takes the colon):
    model names cannot hold one, so it is the POST-only action asked with the wrong method."""
    model, colon, action = name.rpartition(":")
    if colon and action in ACTIONS:
        raise MethodNotAllowed(
            f"{action} takes POST, not GET: POST /v1/models/{model}:{action}", allow="POST"
        )


def check_api_key(state: ServingState, request: Request, key: str | None) -> None:
    """X-API-Key for predict, when the endpoint has keys: 401 when absent, 403 when wrong."""
    _check_key(state, request, key, "predict", "missing X-API-Key header", "X-API-Key")


def client_key(request: Request) -> str | None:
    """The API key a client sends: ``X-API-Key``, or ``Authorization: Bearer KEY`` (what the
    OpenAI SDK and tritonclient's header options send)."""
    key = request.headers.get("x-api-key")
    if key is None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            key = auth[7:].strip()
    return key


def check_client_key(state: ServingState, request: Request, what: str) -> None:
    """API key of the OpenAI and Open Inference Protocol routes, from either header."""
    _check_key(
        state,
        request,
        client_key(request),
        what,
        "missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
        "the API key",
    )


def _check_key(
    state: ServingState, request: Request, key: str | None, what: str, missing: str, name: str
) -> None:
    if not state.api_keys:
        return
    if key is None:
        state.audit.record(
            "refused", what=what, reason="missing API key", client=client_address(request)
        )
        raise CredentialsMissing(missing)
    if not any(hmac.compare_digest(key.encode(), k.encode()) for k in state.api_keys):
        state.audit.record(
            "refused", what=what, reason="wrong API key", client=client_address(request)
        )
        raise CredentialsRefused(f"{name} is not valid")


def check_token(state: ServingState, request: Request, what: str, name: str) -> None:
    """Bearer token for publish and rollback: 401 when absent, 403 when wrong or disabled."""
    auth = request.headers.get("authorization")
    refusal: RequestRefused | None = None
    if state.publish_token is None:
        env = state.settings.publish_token_env
        refusal = CredentialsRefused(f"publishing over HTTP is disabled: set {env} on the server")
    elif auth is None or not auth.lower().startswith("bearer "):
        refusal = CredentialsMissing("missing 'Authorization: Bearer <token>' header")
    elif not hmac.compare_digest(auth[7:].strip().encode(), state.publish_token.encode()):
        refusal = CredentialsRefused("the bearer token is not valid")
    if refusal is not None:
        state.audit.record(
            "refused", what=what, model=name, reason=refusal.reason, client=client_address(request)
        )
        raise refusal
