"""The local socket between the thin ClientApp and the client daemon's warm trainer.

One exchange per Flower message: the ClientApp sends a request frame, the worker answers with
one reply frame. A frame is::

    b"FSW1" | u32 header length | header (JSON, a pydantic model) | u64 body length | body

and the body is Flower's own protobuf encoding of a ``Message`` and a ``Context`` (the same
bytes Flower sends between its processes), so no pickle and nothing hand-rolled crosses the
socket. Sizes are bounded on read; a peer speaking another version is refused by the magic.
"""

from __future__ import annotations

import socket
import struct
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedsys.errors import FedsysError

MAGIC = b"FSW1"
_LEN = struct.Struct(">I")
_BODY_LEN = struct.Struct(">Q")
MAX_HEADER = 64 * 1024
MAX_BODY = 4 << 30  # Flower's own messages are bounded far below this in practice
PING = "ping"  # a request without a message: is the worker there?


class WorkerError(FedsysError):
    """The warm trainer could not be reached or answered with an error."""


class Request(BaseModel):
    """What the ClientApp asks for; the body holds the Message then the Context."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    kind: str = Field(
        pattern=r"^[a-z_][a-z0-9_.]{0,63}$",
        description="The message type (train, evaluate, query, query.<action>) or ping.",
    )
    message_bytes: int = Field(ge=0)
    context_bytes: int = Field(ge=0)


class Reply(BaseModel):
    """The worker's answer; on success the body holds the reply content and the new state."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    ok: bool
    error: str = ""
    content_bytes: int = Field(default=0, ge=0)
    state_bytes: int = Field(default=0, ge=0)
    seconds: float = 0.0


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise WorkerError(f"peer closed the socket after {got} of {n} bytes")
        got += k
    return bytes(buf)


def send_frame(sock: socket.socket, header: BaseModel, body: bytes) -> None:
    head = header.model_dump_json().encode()
    sock.sendall(MAGIC + _LEN.pack(len(head)) + head + _BODY_LEN.pack(len(body)))
    if body:  # the peer may answer and close as soon as it has an empty body's header
        sock.sendall(body)


def recv_frame(sock: socket.socket, kind: type[BaseModel]) -> tuple[BaseModel, bytes]:
    """Read one frame; the header is validated as ``kind`` before the body is read."""
    magic = _recv_exact(sock, 4)
    if magic != MAGIC:
        raise WorkerError(f"not a fedsys worker frame (magic {magic!r})")
    (head_len,) = _LEN.unpack(_recv_exact(sock, 4))
    if head_len > MAX_HEADER:
        raise WorkerError(f"frame header of {head_len} bytes exceeds {MAX_HEADER}")
    try:
        header = kind.model_validate_json(_recv_exact(sock, head_len))
    except ValidationError as exc:
        raise WorkerError(f"invalid frame header: {exc}") from None
    (body_len,) = _BODY_LEN.unpack(_recv_exact(sock, 8))
    if body_len > MAX_BODY:
        raise WorkerError(f"frame body of {body_len} bytes exceeds {MAX_BODY}")
    return header, _recv_exact(sock, body_len)
