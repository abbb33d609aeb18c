"""The publish body: a multipart/form-data upload of manifest, signature and weights.

Parsed with Starlette's ``MultiPartParser`` over a body read with the publish size limit,
so a part cannot exceed it either; every malformed upload is a named 4xx.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from python_multipart.exceptions import FormParserError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from fedsys.errors import InvalidRequest, MalformedRequest, UnsupportedMediaType
from fedsys.serving.inputs import media_type, read_body

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


@dataclass(frozen=True)
class Upload:
    """The parts of one publish request."""

    manifest: bytes
    signature: bytes
    weights: bytes
    int8_weights: bytes | None


async def read_upload(request: Request, limit: int) -> Upload:
    """The publish parts; 415 for another media type, 400 when malformed, 422 when a part
    is missing or of the wrong kind."""
    form = await _read_multipart(request, limit)
    manifest = await _part_bytes(form, "manifest", required=True)
    signature = await _part_bytes(form, "signature", required=True)
    weights = await _part_bytes(form, "weights", required=True)
    int8 = await _part_bytes(form, "int8_weights", required=False)
    assert manifest is not None and signature is not None and weights is not None
    return Upload(manifest, signature, weights, int8)


async def _part_bytes(form: dict[str, Any], part: str, *, required: bool) -> bytes | None:
    value = form.get(part)
    if value is None:
        if required:
            raise InvalidRequest(f"multipart part {part!r} is missing")
        return None
    if isinstance(value, UploadFile):
        return await value.read()
    if part == "signature":
        try:  # a text field may carry the signature as hex
            return bytes.fromhex(value.strip())
        except ValueError:
            raise InvalidRequest(
                "part 'signature' must be a file (64 raw bytes) or hex text"
            ) from None
    if part == "manifest":
        return str(value).encode()
    raise InvalidRequest(f"multipart part {part!r} must be sent as a file")


async def _read_multipart(request: Request, limit: int) -> dict[str, Any]:
    if media_type(request) != "multipart/form-data":
        raise UnsupportedMediaType(
            "publish needs a multipart/form-data body (manifest, signature, weights)"
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
        raise MalformedRequest(f"malformed multipart body: {exc.message}") from None
    except FormParserError as exc:  # the low-level parser's errors pass through Starlette
        raise MalformedRequest(f"malformed multipart body: {exc}") from None
    return dict(form.items())
