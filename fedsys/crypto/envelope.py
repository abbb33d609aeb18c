"""Sealed, signed envelopes for update payloads: X25519 + HKDF-SHA256 + AEAD, Ed25519.

Sealing (client): a fresh ephemeral X25519 key per update agrees a secret with the
aggregator's static key; HKDF-SHA256 (salt = both public keys) turns it into a one-use
AES-256-GCM (or ChaCha20-Poly1305) key. The payload is cut into frames of at most 1 MiB;
frame ``i`` uses nonce ``i`` (safe: the key is never reused) and associated data binding run,
round, node, client, sizes and ``i`` of ``frame_count``, so frames cannot be moved between
updates, reordered, or dropped. The client signs the header (ephemeral key, metadata and a
SHA-256 over the frames' 16-byte AEAD tags) with its Ed25519 key.

Why the tags and not the whole ciphertext: a tag authenticates its frame under a key only the
client and the aggregator can derive (the signed ephemeral key pins it), so a relay cannot
change a byte without failing decryption, and signing 16 bytes per MiB keeps sealing at the
cipher's speed instead of SHA-256's (~1.8 GB/s here). Only the aggregator, which holds the
key, could craft other frames with the same tags; it is the recipient, so this costs nothing
against the threat (an untrusted relay between clients and aggregator).

Opening (aggregator) checks, in order: known sender, signature, run/round/node, size, frame
count and lengths, the signed tag digest; then decrypts each frame (AEAD) into one
preallocated buffer. No plaintext leaves on any failure.
Every failure is a typed :class:`~fedsys.errors.CodecError`.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedsys.crypto.keys import AggregatorKeys, ClientKeys, public_to_raw
from fedsys.errors import (
    CodecArgumentError,
    DecryptionFailed,
    SignatureInvalid,
    UnknownSender,
    UpdateRejected,
    WireFormatError,
)

Cipher = Literal["aes-256-gcm", "chacha20-poly1305"]
MAX_FRAME = 1 << 20
MIN_FRAME = 64
TAG = 16
U64 = Annotated[int, Field(ge=0, lt=1 << 64)]
Raw32 = Annotated[bytes, Field(min_length=32, max_length=32)]
RecordValue = bytes | list[bytes] | int | str


@dataclass(frozen=True)
class RoundBinding:
    """Where an update belongs: the Flower run, the server round and the sending node."""

    run_id: int
    round: int
    node_id: int


def _context(
    cipher: str, binding: RoundBinding, client_id: str, frame_size: int, frames: int, length: int
) -> bytes:
    """Unambiguous bytes naming the update; prefix of both the signed data and every AAD."""
    cid = client_id.encode()
    return b"".join(
        [
            b"fedsys-envelope-v1\0",
            cipher.encode(),
            b"\0",
            struct.pack("<QQQH", binding.run_id, binding.round, binding.node_id, len(cid)),
            cid,
            struct.pack("<IIQ", frame_size, frames, length),
        ]
    )


class EnvelopeHeader(BaseModel):
    """Everything about a sealed update except the ciphertext; the signature covers it all."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, ser_json_bytes="base64", val_json_bytes="base64"
    )

    format: Literal["fedsys-envelope"] = "fedsys-envelope"
    version: Literal[1] = 1
    cipher: Cipher
    run_id: U64
    round: U64
    node_id: U64
    client_id: Annotated[str, Field(min_length=1, max_length=256)]
    ephemeral_key: Raw32
    frame_size: Annotated[int, Field(ge=MIN_FRAME, le=MAX_FRAME)]
    frame_count: Annotated[int, Field(ge=1, lt=1 << 32)]
    payload_length: Annotated[int, Field(ge=0, lt=1 << 63)]
    tags_sha256: Raw32

    @property
    def binding(self) -> RoundBinding:
        return RoundBinding(self.run_id, self.round, self.node_id)

    def context(self) -> bytes:
        return _context(
            self.cipher,
            self.binding,
            self.client_id,
            self.frame_size,
            self.frame_count,
            self.payload_length,
        )

    def signed_bytes(self) -> bytes:
        return self.context() + self.ephemeral_key + self.tags_sha256


class Envelope(BaseModel):
    """Header, Ed25519 signature and ciphertext frames; maps onto a Flower ConfigRecord."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    header: EnvelopeHeader
    signature: Annotated[bytes, Field(min_length=64, max_length=64)]
    frames: list[bytes]

    @property
    def nbytes(self) -> int:
        return sum(len(f) for f in self.frames)

    def to_record_values(self) -> dict[str, RecordValue]:
        """``{"header": JSON bytes, "signature": bytes, "frames": list[bytes]}``."""
        return {
            "header": self.header.model_dump_json().encode(),
            "signature": self.signature,
            "frames": list(self.frames),
        }

    @classmethod
    def from_record_values(cls, values: Mapping[str, object]) -> Envelope:
        """Inverse of :meth:`to_record_values`; WireFormatError when anything is off."""
        header, signature, frames = (values.get(k) for k in ("header", "signature", "frames"))
        if not isinstance(header, bytes) or not isinstance(signature, bytes):
            raise WireFormatError("envelope header and signature must be bytes")
        if not isinstance(frames, list) or not all(isinstance(f, bytes) for f in frames):
            raise WireFormatError("envelope frames must be a list of bytes")
        try:
            parsed = EnvelopeHeader.model_validate_json(header)
            return cls(header=parsed, signature=signature, frames=frames)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise WireFormatError(f"envelope is invalid at {where}: {first['msg']}") from None


def _derive_key(shared: bytes, ephemeral: bytes, recipient: bytes, cipher: str) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=ephemeral + recipient,
        info=b"fedsys-envelope-v1 " + cipher.encode(),
    )
    return hkdf.derive(shared)


def _aead(cipher: Cipher, key: bytes) -> AESGCM | ChaCha20Poly1305:
    return AESGCM(key) if cipher == "aes-256-gcm" else ChaCha20Poly1305(key)


def tags_digest(frames: list[bytes]) -> bytes:
    """SHA-256 over every frame's trailing AEAD tag, in order (what the signature covers)."""
    digest = hashlib.sha256()
    for frame in frames:
        digest.update(frame[-TAG:])
    return digest.digest()


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


def seal(
    payload: bytes | bytearray | memoryview,
    keys: ClientKeys,
    binding: RoundBinding,
    *,
    cipher: Cipher = "aes-256-gcm",
    frame_size: int = MAX_FRAME,
) -> Envelope:
    """Encrypt ``payload`` to the aggregator and sign it as ``keys.client_id``."""
    if not MIN_FRAME <= frame_size <= MAX_FRAME:
        raise CodecArgumentError(f"frame_size must lie in [{MIN_FRAME}, {MAX_FRAME}]")
    view = memoryview(payload).cast("B")
    count = max(1, -(-view.nbytes // frame_size))
    ephemeral = X25519PrivateKey.generate()
    ephemeral_raw = public_to_raw(ephemeral.public_key())
    shared = ephemeral.exchange(keys.aggregator_key)
    key = _derive_key(shared, ephemeral_raw, public_to_raw(keys.aggregator_key), cipher)
    context = _context(cipher, binding, keys.client_id, frame_size, count, view.nbytes)
    aead = _aead(cipher, key)
    frames = [
        aead.encrypt(
            _nonce(i), view[i * frame_size : (i + 1) * frame_size], context + struct.pack("<I", i)
        )
        for i in range(count)
    ]
    header = EnvelopeHeader(
        cipher=cipher,
        run_id=binding.run_id,
        round=binding.round,
        node_id=binding.node_id,
        client_id=keys.client_id,
        ephemeral_key=ephemeral_raw,
        frame_size=frame_size,
        frame_count=count,
        payload_length=view.nbytes,
        tags_sha256=tags_digest(frames),
    )
    return Envelope(
        header=header, signature=keys.signing_key.sign(header.signed_bytes()), frames=frames
    )


def _check_header(
    envelope: Envelope,
    keys: AggregatorKeys,
    expect: RoundBinding,
    max_payload_bytes: int,
    client_id: str | None,
) -> None:
    h = envelope.header
    if client_id is not None and h.client_id != client_id:
        raise UnknownSender(f"envelope is from client {h.client_id!r}, expected {client_id!r}")
    public = keys.allow_list.get(h.client_id)
    if public is None:
        raise UnknownSender(f"client {h.client_id!r} is not on the allow-list")
    try:
        public.verify(envelope.signature, h.signed_bytes())
    except InvalidSignature:
        raise SignatureInvalid(f"signature of client {h.client_id!r} does not verify") from None
    if h.binding != expect:
        raise UpdateRejected(
            f"envelope is for run {h.run_id} round {h.round} node {h.node_id}; expected "
            f"run {expect.run_id} round {expect.round} node {expect.node_id}"
        )
    if h.payload_length > max_payload_bytes:
        raise UpdateRejected(
            f"payload of {h.payload_length} bytes exceeds the limit of {max_payload_bytes}"
        )
    if h.frame_count != max(1, -(-h.payload_length // h.frame_size)):
        raise WireFormatError("frame count does not match payload length and frame size")
    if len(envelope.frames) != h.frame_count:
        raise DecryptionFailed(f"expected {h.frame_count} frames, got {len(envelope.frames)}")
    for i, frame in enumerate(envelope.frames):
        plain = min(h.frame_size, h.payload_length - i * h.frame_size)
        if len(frame) != plain + TAG:
            raise DecryptionFailed(f"frame {i} has {len(frame)} bytes, expected {plain + TAG}")


def open_envelope(
    envelope: Envelope,
    keys: AggregatorKeys,
    expect: RoundBinding,
    *,
    max_payload_bytes: int,
    client_id: str | None = None,
) -> bytearray:
    """Verify and decrypt; returns the payload. ``client_id`` pins the sender when known."""
    _check_header(envelope, keys, expect, max_payload_bytes, client_id)
    h = envelope.header
    try:
        shared = keys.exchange_key.exchange(X25519PublicKey.from_public_bytes(h.ephemeral_key))
    except ValueError:
        raise DecryptionFailed("ephemeral key is not a usable X25519 point") from None
    recipient = public_to_raw(keys.exchange_key.public_key())
    aead = _aead(h.cipher, _derive_key(shared, h.ephemeral_key, recipient, h.cipher))
    context = h.context()
    out = bytearray(h.payload_length)
    view = memoryview(out)
    if not hmac.compare_digest(tags_digest(envelope.frames), h.tags_sha256):
        raise DecryptionFailed("frame tags do not match the signed digest")
    for i, frame in enumerate(envelope.frames):
        target = view[i * h.frame_size : i * h.frame_size + len(frame) - TAG]
        try:
            aead.decrypt_into(_nonce(i), frame, context + struct.pack("<I", i), target)
        except InvalidTag:
            raise DecryptionFailed(f"frame {i} failed authentication") from None
    return out
