"""Wire format: refusals of unknown formats, and fuzzing that the decoders raise only our errors."""

from __future__ import annotations

import contextlib
import json
import zlib
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedsys.codec import (
    Quantize,
    StreamingSum,
    TopK,
    UpdatePolicy,
    check_payload,
    decode_update,
    encode_update,
    parse_update,
    template_from,
)
from fedsys.codec.wire import FLAG_DEFLATED_MANIFEST, HEADER
from fedsys.errors import CodecError, WireFormatError

UPDATE = {
    "w": torch.randn(20, 13, generator=torch.Generator().manual_seed(0)),
    "b": torch.randn(5, generator=torch.Generator().manual_seed(1)),
    "n": torch.tensor(3, dtype=torch.int64),
}
TEMPLATE = template_from(UPDATE)
SPARSE = encode_update(UPDATE, [TopK(0.2), Quantize(bits=8, block_size=16)]).payload
DENSE4 = encode_update(UPDATE, [Quantize(bits=4, block_size=16)]).payload
PLAIN = encode_update(UPDATE, []).payload
PAYLOADS = [SPARSE, DENSE4, PLAIN]


def split(payload: bytes) -> tuple[dict[str, Any], bytes]:
    """Manifest (inflated when the encoder deflated it) and the data after it."""
    _, _, flags, length, _ = HEADER.unpack_from(payload)
    raw = payload[HEADER.size : HEADER.size + length]
    text = zlib.decompress(raw) if flags & FLAG_DEFLATED_MANIFEST else raw
    return json.loads(text), payload[HEADER.size + length :]


def join(manifest: dict[str, Any], data: bytes, *, version: int = 1, recrc: bool = True) -> bytes:
    """Re-pack with valid checksums, as an adversary (not line noise) would (plain JSON
    manifest, flags 0: the decoder accepts both forms)."""
    if recrc:
        offset = 0
        for entry in manifest["tensors"]:
            try:
                pos = entry.get("positions") or {}
                size = (
                    int(pos.get("unary_bytes", 0))
                    + int(pos.get("remainder_bytes", 0))
                    + int(entry["scales_bytes"])
                    + int(entry["values_bytes"])
                )
                entry["crc32"] = zlib.crc32(data[offset : offset + size])
                offset += size
            except (TypeError, ValueError, KeyError, AttributeError):
                pass
    raw = json.dumps(manifest, separators=(",", ":")).encode()
    return HEADER.pack(b"FSUP", version, 0, len(raw), zlib.crc32(raw)) + raw + data


def only_codec_errors(payload: bytes) -> None:
    """Every decoder entry point either works or raises a CodecError."""
    with contextlib.suppress(CodecError):
        decode_update(payload)
    with contextlib.suppress(CodecError):
        checked = check_payload(payload, TEMPLATE, UpdatePolicy(require_envelope=False))
        StreamingSum(TEMPLATE).add(checked.wire, 0.5)


def edited(payload: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    manifest, data = split(payload)
    edit(manifest)
    return join(manifest, data)


def test_valid_payloads_parse() -> None:
    for payload in PAYLOADS:
        assert set(parse_update(payload).tensors) == {"w", "b", "n"}
        manifest, data = split(payload)
        assert parse_update(join(manifest, data)).tensors.keys() == {"w", "b", "n"}


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: b"XXXX" + PLAIN[4:], "magic"),
        (lambda: join(*split(PLAIN), version=2), "version"),
        (lambda: PLAIN[:6] + b"\x03\x00" + PLAIN[8:], "flags"),
        (lambda: PLAIN + b"\x00", "stray"),
        (lambda: edited(PLAIN, lambda m: m["stages"].append({"kind": "dropout"})), "stages"),
        (lambda: edited(SPARSE, lambda m: m["stages"][0].update(fraction=2.0)), "stages"),
        (lambda: edited(PLAIN, lambda m: m["tensors"][0].update(encoding="int3")), "encoding"),
        (lambda: edited(PLAIN, lambda m: m["tensors"][0].update(dtype="complex64")), "dtype"),
        (lambda: edited(PLAIN, lambda m: m["tensors"][0].update(extra=1)), "extra"),
        (lambda: edited(DENSE4, lambda m: m["stages"].clear()), "stages imply"),
        (lambda: edited(SPARSE, lambda m: m["tensors"][0].update(positions=None)), "positions"),
        (
            lambda: edited(PLAIN, lambda m: m["tensors"][0].update(shape=[1 << 20, 1 << 20])),
            "limit",
        ),
        (lambda: edited(PLAIN, lambda m: m["tensors"].append(m["tensors"][0])), "repeat"),
    ],
)
def test_unknown_or_inconsistent_formats_are_refused(make: Callable[[], bytes], match: str) -> None:
    with pytest.raises(WireFormatError, match=match):
        decode_update(make())


def test_every_truncation_is_refused() -> None:
    for payload in PAYLOADS:
        for cut in range(len(payload)):
            with pytest.raises(WireFormatError):
                parse_update(payload[:cut])


def test_every_single_bit_flip_is_refused() -> None:
    for payload in (SPARSE, DENSE4):
        buf = bytearray(payload)
        for i in range(len(buf)):
            for bit in (0, 3, 7):
                buf[i] ^= 1 << bit
                with pytest.raises(WireFormatError):
                    parse_update(bytes(buf))
                buf[i] ^= 1 << bit


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    only_codec_errors(data)
    only_codec_errors(b"FSUP\x01\x00\x00\x00" + data)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(PAYLOADS), st.data())
def test_random_edits_of_the_data_with_valid_checksums(payload: bytes, data: st.DataObject) -> None:
    manifest, body = split(payload)
    buf = bytearray(body)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    only_codec_errors(join(manifest, bytes(buf)))


FIELDS = [
    "shape",
    "dtype",
    "encoding",
    "count",
    "block_size",
    "scales_bytes",
    "values_bytes",
    "positions",
    "name",
]
VALUES = st.one_of(
    st.integers(-2, 3),
    st.integers(-(2**63), 2**64),
    st.sampled_from([None, "", "int8", "int4", "f32", "fp16", "raw", "int64", "bool", 1.5, True]),
    st.lists(st.integers(-1, 300), max_size=4),
    st.fixed_dictionaries(
        {
            "k": st.integers(-1, 40),
            "unary_bytes": st.integers(0, 99),
            "remainder_bytes": st.integers(0, 99),
        }
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PAYLOADS), st.data())
def test_random_manifest_edits_with_valid_checksums(payload: bytes, data: st.DataObject) -> None:
    manifest, body = split(payload)
    for _ in range(data.draw(st.integers(1, 3))):
        entry = data.draw(st.sampled_from(manifest["tensors"]))
        entry[data.draw(st.sampled_from(FIELDS))] = data.draw(VALUES)
    if data.draw(st.booleans()) and manifest["stages"]:
        stage = data.draw(st.sampled_from(manifest["stages"]))
        key = data.draw(st.sampled_from(sorted(stage)))
        stage[key] = data.draw(VALUES)
    only_codec_errors(join(manifest, body))


def test_sparse_positions_beyond_a_shrunken_shape_are_refused() -> None:
    def shrink(m: dict[str, Any]) -> None:
        m["tensors"][0]["shape"] = [2, 13]

    with pytest.raises(WireFormatError):
        decode_update(edited(SPARSE, shrink))


def test_reshaped_tensor_parses_but_fails_the_template() -> None:
    def reshape(m: dict[str, Any]) -> None:
        m["tensors"][0]["shape"] = [13, 20]

    payload = edited(PLAIN, reshape)
    assert decode_update(payload)["w"].shape == (13, 20)
    with pytest.raises(CodecError, match="expected float32"):
        check_payload(payload, TEMPLATE, UpdatePolicy(require_envelope=False))


def test_bool_bytes_other_than_zero_and_one_are_refused() -> None:
    payload = encode_update({"m": torch.tensor([True, False, True])}, []).payload
    manifest, body = split(payload)
    with pytest.raises(WireFormatError, match="bool"):
        parse_update(join(manifest, body[:-1] + b"\x07"))


def test_manifest_is_deflated_and_a_deflate_bomb_is_refused() -> None:
    _, _, flags, length, _ = HEADER.unpack_from(PLAIN)
    assert flags & FLAG_DEFLATED_MANIFEST
    manifest, data = split(PLAIN)
    assert length < len(json.dumps(manifest)) / 2
    bomb = zlib.compress(b" " * (65 << 20), 9)
    payload = HEADER.pack(b"FSUP", 1, FLAG_DEFLATED_MANIFEST, len(bomb), zlib.crc32(bomb)) + bomb
    with pytest.raises(WireFormatError, match="too large"):
        parse_update(payload + data)
