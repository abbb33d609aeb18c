"""StreamingSum against a plain weighted sum, and the server's validation rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsys.codec import (
    Clip,
    Quantize,
    Stage,
    StreamingSum,
    TopK,
    UpdatePolicy,
    check_payload,
    decode_update,
    encode_update,
    parse_update,
    template_from,
    validate_update,
)
from fedsys.codec.coded import CodedTensor
from fedsys.codec.wire import pack_update
from fedsys.crypto import (
    AggregatorKeys,
    ClientKeys,
    RoundBinding,
    generate_exchange_key,
    generate_signing_key,
    seal,
)
from fedsys.errors import CodecError, UpdateRejected, WireFormatError

GLOBAL = {
    "a.weight": torch.zeros(33, 17),
    "a.bias": torch.zeros(17),
    "bn.num_batches_tracked": torch.tensor(0, dtype=torch.int64),
    "big": torch.zeros(3000),
}
TEMPLATE = template_from(GLOBAL)
OPEN = UpdatePolicy(require_envelope=False)


def delta(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {
        n: torch.randn(t.shape, generator=gen) for n, t in GLOBAL.items() if t.is_floating_point()
    }
    out["bn.num_batches_tracked"] = torch.tensor(10 + seed)
    return {n: out[n] for n in GLOBAL}


PIPELINES: list[list[Stage]] = [
    [],
    [Quantize(bits=16)],
    [Quantize(bits=8, block_size=64)],
    [Clip(5.0), Quantize(bits=4, block_size=32)],
    [TopK(0.1), Quantize(bits=8)],
    [TopK(0.3)],
]


def test_streaming_sum_equals_the_weighted_sum_of_decoded_updates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("fedsys.codec.wiretensor.CHUNK_ELEMENTS", 256)  # many chunks per tensor
    total = StreamingSum(GLOBAL)
    expected = {n: torch.zeros(t.shape, dtype=torch.float64) for n, t in GLOBAL.items()}
    weights = [3.0, 0.5, 1.0, 7.0, 2.0, 1.5]
    for i, (pipeline, w) in enumerate(zip(PIPELINES, weights, strict=True)):
        payload = encode_update(delta(i), pipeline).payload
        total.add(check_payload(payload, TEMPLATE, OPEN).wire, w)
        for name, t in decode_update(payload).items():
            expected[name] += w * t.double()
    assert total.count == len(PIPELINES) and total.total_weight == sum(weights)
    for name, got in total.sum().items():
        assert got.shape == GLOBAL[name].shape
        assert torch.allclose(got.double(), expected[name], rtol=1e-5, atol=1e-4), name
    mean = total.mean()
    assert mean["bn.num_batches_tracked"].dtype == torch.int64
    assert mean["bn.num_batches_tracked"].item() == round(
        float(expected["bn.num_batches_tracked"]) / sum(weights)
    )


def test_a_rejected_add_leaves_the_sum_untouched() -> None:
    total = StreamingSum(GLOBAL)
    total.add(parse_update(encode_update(delta(0), [TopK(0.1)]).payload), 1.0)
    before = {n: t.clone() for n, t in total.sum().items()}
    wrong = {**delta(1), "extra": torch.zeros(2)}
    with pytest.raises(UpdateRejected):
        total.add(parse_update(encode_update(wrong, []).payload), 1.0)
    assert all(torch.equal(before[n], t) for n, t in total.sum().items())
    assert total.count == 1


@pytest.mark.parametrize(
    ("update", "match"),
    [
        ({n: t for n, t in delta(0).items() if n != "big"}, "names differ"),
        ({**delta(0), "big": torch.zeros(2999)}, "expected float32"),
        ({**delta(0), "a.bias": torch.zeros(17, dtype=torch.float64)}, "expected float32"),
        ({**delta(0), "bn.num_batches_tracked": torch.tensor(1, dtype=torch.int32)}, "int64"),
    ],
)
def test_layout_must_equal_the_global_model(update: dict[str, torch.Tensor], match: str) -> None:
    with pytest.raises(UpdateRejected, match=match):
        check_payload(encode_update(update, [Quantize(bits=8)]).payload, TEMPLATE, OPEN)


@pytest.mark.parametrize("encoding", ["f32", "fp16", "int8"])
def test_non_finite_values_are_rejected(encoding: str) -> None:
    tensors = {}
    for name, t in GLOBAL.items():
        if not t.is_floating_point():
            tensors[name] = CodedTensor((), "int64", "raw", torch.tensor([0]), 1)
            continue
        n = t.numel()
        values = torch.zeros(n)
        values[3] = float("inf")
        if encoding == "f32":
            tensors[name] = CodedTensor(tuple(t.shape), "float32", "f32", values, n)
        elif encoding == "fp16":
            tensors[name] = CodedTensor(tuple(t.shape), "float32", "fp16", values.half(), n)
        else:
            scales = torch.ones(-(-n // 256))
            scales[0] = float("nan")
            codes = torch.ones(n, dtype=torch.int8)
            tensors[name] = CodedTensor(
                tuple(t.shape), "float32", "int8", codes, n, None, scales, 256
            )
    bits = {"f32": None, "fp16": 16, "int8": 8}[encoding]
    stages: list[Stage] = [] if bits is None else [Quantize(bits=bits)]  # type: ignore[arg-type]
    payload = pack_update(stages, tensors)
    with pytest.raises(UpdateRejected, match="NaN or infinite"):
        check_payload(payload, TEMPLATE, OPEN)


def test_norm_bound_and_size_limit() -> None:
    update = delta(0)
    payload = encode_update(update, [Quantize(bits=8)]).payload
    assert check_payload(payload, TEMPLATE, OPEN).norm is None  # no bound: not computed
    norm = check_payload(payload, TEMPLATE, UpdatePolicy(max_norm=1e9, require_envelope=False)).norm
    assert norm is not None
    true_norm = sum(float(t.double().norm()) ** 2 for t in update.values() if t.is_floating_point())
    assert norm == pytest.approx(true_norm**0.5, rel=1e-2)
    with pytest.raises(UpdateRejected, match="norm"):
        check_payload(payload, TEMPLATE, UpdatePolicy(max_norm=norm * 0.99, require_envelope=False))
    check_payload(payload, TEMPLATE, UpdatePolicy(max_norm=norm * 1.01, require_envelope=False))
    with pytest.raises(UpdateRejected, match="exceeds the limit"):
        check_payload(
            payload, TEMPLATE, UpdatePolicy(max_payload_bytes=100, require_envelope=False)
        )
    clipped = encode_update(update, [Clip(2.0), Quantize(bits=8)]).payload
    check_payload(clipped, TEMPLATE, UpdatePolicy(max_norm=2.05, require_envelope=False))


def test_validate_update_end_to_end() -> None:
    server = generate_exchange_key()
    signer = generate_signing_key()
    client = ClientKeys("client-7", signer, server.public_key())
    keys = AggregatorKeys(server, {"client-7": signer.public_key()})
    binding = RoundBinding(run_id=11, round=3, node_id=2**63 + 5)
    payload = encode_update(delta(0), [TopK(0.1), Quantize(bits=8)]).payload
    values = seal(payload, client, binding, frame_size=256).to_record_values()
    policy = UpdatePolicy(max_norm=1e6)
    checked = validate_update(values, TEMPLATE, policy, keys=keys, expect=binding)
    assert checked.client_id == "client-7" and checked.payload_bytes == len(payload)
    total = StreamingSum(GLOBAL)
    total.add(checked.wire, 2.0)
    got = total.sum()["big"]
    assert torch.allclose(got.float(), 2 * decode_update(payload)["big"])
    with pytest.raises(UpdateRejected, match="requires an envelope"):
        validate_update(payload, TEMPLATE, policy)
    with pytest.raises(UpdateRejected, match="round 4"):
        validate_update(values, TEMPLATE, policy, keys=keys, expect=RoundBinding(11, 4, 2**63 + 5))
    with pytest.raises(WireFormatError):
        validate_update(
            {"header": b"{}", "signature": b"", "frames": []},
            TEMPLATE,
            policy,
            keys=keys,
            expect=binding,
        )
    assert issubclass(UpdateRejected, CodecError)


@pytest.mark.parametrize("chunk", [7, 1 << 20])
def test_consume_into_weights_is_base_plus_the_mean(
    monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr("fedsys.codec.streaming.CHUNK_ELEMENTS", chunk)  # chunk boundaries
    total = StreamingSum(GLOBAL)
    weights = [3.0, 1.0, 2.0]
    updates = [delta(i) for i in range(len(weights))]
    for update, w in zip(updates, weights, strict=True):
        payload = encode_update(update, []).payload
        total.add(check_payload(payload, TEMPLATE, OPEN).wire, w)
    base = {n: np.full(t.shape, 0.5, dtype=np.float32) for n, t in GLOBAL.items()}
    base["bn.num_batches_tracked"] = np.array(100, dtype=np.int64)
    base["big"].setflags(write=False)  # e.g. loaded from a checkpoint: read, never written
    new = total.consume_into_weights(base)
    for name, spec in GLOBAL.items():
        mean = sum(w * u[name].double() for u, w in zip(updates, weights, strict=True)) / 6.0
        if not spec.is_floating_point():
            mean = torch.round(mean)
        expected = (torch.tensor(np.asarray(base[name])).double() + mean).numpy()
        assert new[name].dtype == base[name].dtype and new[name].shape == base[name].shape
        np.testing.assert_allclose(new[name], expected.astype(base[name].dtype), rtol=1e-6)
    assert float(base["big"][0]) == 0.5  # the base is left as it was
    with pytest.raises(ValueError, match="no weight"):
        total.consume_into_weights(base)  # the sums are gone


def test_int8_updates_are_added_in_pairs_and_an_odd_one_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("fedsys.codec.wiretensor.CHUNK_ELEMENTS", 128)  # several chunks
    pipeline: list[Stage] = [Quantize(bits=8, block_size=64)]
    total = StreamingSum(GLOBAL)
    expected = {n: torch.zeros(t.shape, dtype=torch.float64) for n, t in GLOBAL.items()}
    weights = [2.0, 5.0, 1.0]
    for i, w in enumerate(weights):
        payload = encode_update(delta(i), pipeline).payload
        total.add(check_payload(payload, TEMPLATE, OPEN).wire, w)
        for name, t in decode_update(payload).items():
            expected[name] += w * t.double()
        if i == 0:  # held for a partner: nothing added yet, but counted
            assert total.count == 1 and total.total_weight == 2.0
            assert not any(buf.abs().sum() for buf in total._buffers.values())
    for name, got in total.sum().items():  # sum() adds the odd one out first
        assert torch.allclose(got.double(), expected[name], rtol=1e-6, atol=1e-6), name
