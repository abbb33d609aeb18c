"""Envelopes: round trips, and every tampering, replay or impersonation raising a typed error."""

from __future__ import annotations

import contextlib
import json
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import ConfigRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsys.crypto import (
    AggregatorKeys,
    ClientKeys,
    Envelope,
    EnvelopeHeader,
    RoundBinding,
    generate_exchange_key,
    generate_signing_key,
    open_envelope,
    seal,
)
from fedsys.crypto.envelope import tags_digest
from fedsys.errors import (
    CodecError,
    DecryptionFailed,
    SignatureInvalid,
    UnknownSender,
    UpdateRejected,
)

SERVER = generate_exchange_key()
SIGNER = generate_signing_key()
CLIENT = ClientKeys("client-1", SIGNER, SERVER.public_key())
KEYS = AggregatorKeys(SERVER, {"client-1": SIGNER.public_key()})
BINDING = RoundBinding(run_id=42, round=7, node_id=123456789)
PAYLOAD = os.urandom(1000)
LIMIT = 8 << 20


def sealed(payload: bytes = PAYLOAD, **kwargs: object) -> Envelope:
    return seal(payload, CLIENT, BINDING, frame_size=256, **kwargs)  # type: ignore[arg-type]


def open_(env: Envelope, expect: RoundBinding = BINDING, keys: AggregatorKeys = KEYS) -> bytearray:
    return open_envelope(env, keys, expect, max_payload_bytes=LIMIT)


def resigned(env: Envelope, frames: list[bytes], signer: Ed25519PrivateKey = SIGNER) -> Envelope:
    """What a sender with the signing key (but breaking the framing rules) could produce."""
    header = env.header.model_copy(update={"tags_sha256": tags_digest(frames)})
    return Envelope(header=header, signature=signer.sign(header.signed_bytes()), frames=frames)


@pytest.mark.parametrize("cipher", ["aes-256-gcm", "chacha20-poly1305"])
@pytest.mark.parametrize("size", [0, 1, 255, 256, 257, 1000])
def test_round_trip(cipher: str, size: int) -> None:
    env = sealed(PAYLOAD[:size], cipher=cipher)
    assert env.header.frame_count == max(1, -(-size // 256))
    assert bytes(open_(env)) == PAYLOAD[:size]


def test_default_frames_are_one_mebibyte() -> None:
    payload = os.urandom((1 << 20) * 2 + 5)
    env = seal(payload, CLIENT, BINDING)
    assert [len(f) for f in env.frames] == [(1 << 20) + 16, (1 << 20) + 16, 5 + 16]
    assert bytes(open_(env)) == payload
    with pytest.raises(ValueError):
        seal(payload, CLIENT, BINDING, frame_size=(1 << 20) + 1)


def test_record_values_fit_a_flower_config_record() -> None:
    env = sealed()
    record = ConfigRecord(env.to_record_values())  # type: ignore[arg-type]
    back = Envelope.from_record_values(dict(record))
    assert back == env
    assert bytes(open_(back)) == PAYLOAD


def test_each_encryption_uses_a_fresh_ephemeral_key() -> None:
    a, b = sealed(), sealed()
    assert a.header.ephemeral_key != b.header.ephemeral_key
    assert a.frames[0] != b.frames[0]


def test_tampering_any_frame_byte_is_detected() -> None:
    env = sealed()
    for f, frame in enumerate(env.frames):
        for i in range(len(frame)):
            bad = bytearray(frame)
            bad[i] ^= 0x01
            frames = [*env.frames[:f], bytes(bad), *env.frames[f + 1 :]]
            with pytest.raises(DecryptionFailed):
                open_(env.model_copy(update={"frames": frames}))


def test_aead_catches_tampering_even_with_a_matching_hash() -> None:
    env = sealed()
    bad = bytearray(env.frames[1])
    bad[5] ^= 0x80
    with pytest.raises(DecryptionFailed, match="frame 1 failed"):
        open_(resigned(env, [env.frames[0], bytes(bad), *env.frames[2:]]))


def test_reordered_dropped_or_extra_frames_are_detected() -> None:
    env = sealed()
    swapped = [env.frames[1], env.frames[0], *env.frames[2:]]
    with pytest.raises(DecryptionFailed):
        open_(env.model_copy(update={"frames": swapped}))
    with pytest.raises(DecryptionFailed, match="failed authentication"):
        open_(resigned(env, swapped))  # AAD binds each frame's index
    with pytest.raises(DecryptionFailed, match="expected 4 frames"):
        open_(env.model_copy(update={"frames": env.frames[:-1]}))
    with pytest.raises(DecryptionFailed, match="expected 4 frames"):
        open_(env.model_copy(update={"frames": [*env.frames, env.frames[-1]]}))


def test_truncation_cannot_be_hidden_by_rewriting_the_header() -> None:
    """Dropping the last frame and shrinking payload_length changes the AAD of every frame."""
    env = sealed()
    header = env.header.model_copy(update={"payload_length": 768, "frame_count": 3})
    frames = env.frames[:3]
    header = header.model_copy(update={"tags_sha256": tags_digest(frames)})
    forged = Envelope(header=header, signature=SIGNER.sign(header.signed_bytes()), frames=frames)
    with pytest.raises(DecryptionFailed):
        open_(forged)


@pytest.mark.parametrize(
    "expect",
    [RoundBinding(42, 8, 123456789), RoundBinding(41, 7, 123456789), RoundBinding(42, 7, 5)],
    ids=["round", "run", "node"],
)
def test_wrong_round_run_or_node_is_rejected(expect: RoundBinding) -> None:
    with pytest.raises(UpdateRejected, match="expected"):
        open_(sealed(), expect=expect)


def test_rewritten_binding_breaks_the_signature_and_the_aead() -> None:
    env = sealed()
    moved = env.header.model_copy(update={"round": 8})
    with pytest.raises(SignatureInvalid):
        open_(env.model_copy(update={"header": moved}), expect=RoundBinding(42, 8, 123456789))
    forged = Envelope(header=moved, signature=SIGNER.sign(moved.signed_bytes()), frames=env.frames)
    with pytest.raises(DecryptionFailed):
        open_(forged, expect=RoundBinding(42, 8, 123456789))


def test_unknown_sender_and_wrong_signature() -> None:
    stranger = ClientKeys("client-9", generate_signing_key(), SERVER.public_key())
    with pytest.raises(UnknownSender):
        open_(seal(PAYLOAD, stranger, BINDING))
    impostor = ClientKeys("client-1", generate_signing_key(), SERVER.public_key())
    with pytest.raises(SignatureInvalid):
        open_(seal(PAYLOAD, impostor, BINDING))
    env = sealed()
    with pytest.raises(SignatureInvalid):
        open_(env.model_copy(update={"signature": bytes(64)}))
    with pytest.raises(UnknownSender, match="expected 'client-2'"):
        open_envelope(env, KEYS, BINDING, max_payload_bytes=LIMIT, client_id="client-2")


def test_wrong_aggregator_key_fails_decryption() -> None:
    other = AggregatorKeys(generate_exchange_key(), KEYS.allow_list)
    with pytest.raises(DecryptionFailed):
        open_(sealed(), keys=other)


def test_oversized_payload_is_rejected_before_decryption() -> None:
    with pytest.raises(UpdateRejected, match="exceeds"):
        open_envelope(sealed(), KEYS, BINDING, max_payload_bytes=999)


FUZZ_BASE = sealed()


@settings(max_examples=200, deadline=None)
@given(
    header=st.one_of(st.binary(max_size=200), st.sampled_from([b"{}", b"[]", b"null"])),
    signature=st.binary(max_size=70),
    frames=st.lists(st.binary(max_size=40), max_size=3),
)
def test_fuzzed_record_values_raise_only_codec_errors(
    header: bytes, signature: bytes, frames: list[bytes]
) -> None:
    valid = FUZZ_BASE.to_record_values()
    for values in (
        {"header": header, "signature": signature, "frames": frames},
        {**valid, "signature": signature},
        {**valid, "frames": frames},
        {**valid, "header": header},
        {"header": 3, "signature": [b"x"], "frames": b"x"},
    ):
        with contextlib.suppress(CodecError):
            open_(Envelope.from_record_values(values))


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_fuzzed_header_fields_raise_only_codec_errors(data: st.DataObject) -> None:
    env = FUZZ_BASE
    field = data.draw(st.sampled_from(sorted(EnvelopeHeader.model_fields)))
    value = data.draw(
        st.one_of(st.integers(-5, 2**64 + 5), st.binary(max_size=40), st.text(max_size=5))
    )
    values = env.to_record_values()
    raw = env.header.model_dump(mode="json")
    raw[field] = value if not isinstance(value, bytes) else value.hex()
    values["header"] = json.dumps(raw).encode()
    with contextlib.suppress(CodecError):
        open_(Envelope.from_record_values(values))


def test_signed_tag_digest_must_match_the_frames() -> None:
    env = sealed()
    header = env.header.model_copy(update={"tags_sha256": bytes(32)})
    forged = Envelope(
        header=header, signature=SIGNER.sign(header.signed_bytes()), frames=env.frames
    )
    with pytest.raises(DecryptionFailed, match="signed digest"):
        open_(forged)
