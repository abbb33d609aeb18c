"""Whole-pipeline and per-stage round trips, clipping, residual state, config mapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord

from fedsys.codec import (
    Clip,
    Quantize,
    Residual,
    Stage,
    TopK,
    check_pipeline,
    decode_update,
    encode_update,
    pipeline_from_config,
)
from fedsys.codec.coded import coded_from_tensors
from fedsys.config import CodecConfig
from fedsys.errors import CodecError


def sample_update(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(8, 3, 3, 3, generator=gen),
        "conv.bias": torch.randn(8, generator=gen),
        "bn.running_mean": torch.randn(8, generator=gen).half(),
        "bn.num_batches_tracked": torch.tensor(12345678901, dtype=torch.int64),
        "fc.weight": torch.randn(10, 70, generator=gen),
        "mask": torch.tensor([True, False, True]),
    }


PIPELINES: list[list[Stage]] = [
    [],
    [Clip(0.5)],
    [TopK(0.2)],
    [Quantize(bits=16)],
    [Quantize(bits=8, block_size=64)],
    [Quantize(bits=4, block_size=32, stochastic=True)],
    [TopK(0.1), Quantize(bits=8)],
    [Clip(1.0), TopK(0.1), Quantize(bits=4)],
]


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: "+".join(s.kind for s in p) or "none")
def test_wire_decode_equals_stage_decode(pipeline: list[Stage]) -> None:
    """What the server decodes from bytes is exactly what the client's stages reconstruct."""
    update = sample_update()
    stages = check_pipeline(pipeline)
    gen = torch.Generator().manual_seed(5)
    coded = coded_from_tensors(update)
    for stage in stages:
        coded = stage.encode(coded, gen)
    for stage in reversed(stages):
        coded = stage.decode(coded)
    decoded = decode_update(
        encode_update(update, pipeline, generator=torch.Generator().manual_seed(5)).payload
    )
    assert list(decoded) == list(update)
    for name, original in update.items():
        out = decoded[name]
        assert out.shape == original.shape and out.dtype == original.dtype
        expected = coded[name].values.reshape(original.shape).to(original.dtype)
        assert torch.equal(out, expected), name


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: "+".join(s.kind for s in p) or "none")
def test_integer_tensors_pass_through_losslessly(pipeline: list[Stage]) -> None:
    update = sample_update()
    decoded = decode_update(encode_update(update, pipeline).payload)
    assert torch.equal(decoded["bn.num_batches_tracked"], update["bn.num_batches_tracked"])
    assert torch.equal(decoded["mask"], update["mask"])


def test_lossless_and_lossy_errors() -> None:
    update = sample_update()
    plain = decode_update(encode_update(update, []).payload)
    for name in update:
        assert torch.equal(plain[name], update[name])
    w = update["fc.weight"]
    int8 = decode_update(encode_update(update, [Quantize(bits=8)]).payload)["fc.weight"]
    int4 = decode_update(encode_update(update, [Quantize(bits=4)]).payload)["fc.weight"]
    assert float((int8 - w).abs().max()) <= float(w.abs().max()) / 127
    assert float((int4 - w).abs().max()) <= float(w.abs().max()) / 7


def test_clip_scales_all_float_tensors_by_one_factor() -> None:
    update = sample_update()
    out = decode_update(encode_update(update, [Clip(1.0)]).payload)
    floats = [n for n, t in update.items() if t.is_floating_point()]
    norm = sum(float(out[n].double().norm()) ** 2 for n in floats) ** 0.5
    assert norm == pytest.approx(1.0, rel=1e-3)
    ratio = out["conv.weight"] / update["conv.weight"]
    assert torch.allclose(ratio, ratio.reshape(-1)[0].expand_as(ratio))
    small = {"w": torch.tensor([0.1, 0.2])}
    assert torch.equal(decode_update(encode_update(small, [Clip(1.0)]).payload)["w"], small["w"])


def test_pipeline_order_is_enforced() -> None:
    with pytest.raises(ValueError):
        check_pipeline([Quantize(bits=8), TopK(0.1)])
    with pytest.raises(ValueError):
        check_pipeline([TopK(0.1), TopK(0.2)])


def test_non_finite_or_unsupported_input_is_refused() -> None:
    with pytest.raises(CodecError):
        encode_update({"w": torch.tensor([1.0, float("nan")])}, [])
    with pytest.raises(CodecError):
        encode_update({"w": torch.zeros(2, dtype=torch.complex64)}, [])


def test_residual_is_explicit_state_that_survives_safetensors() -> None:
    update = sample_update()
    enc = encode_update(update, [TopK(0.1), Quantize(bits=8)], residual=Residual())
    assert enc.residual is not None
    floats = {n for n, t in update.items() if t.is_floating_point()}
    assert set(enc.residual.arrays) == floats
    assert enc.residual.arrays["fc.weight"].shape == (10, 70)
    record = ConfigRecord({"residual": enc.residual.to_bytes()})  # how a Flower node keeps it
    stored = record["residual"]
    assert isinstance(stored, bytes)
    restored = Residual.from_bytes(stored)
    for name, arr in enc.residual.arrays.items():
        assert np.array_equal(restored.arrays[name], arr)
    again = encode_update(update, [TopK(0.1), Quantize(bits=8)], residual=restored)
    assert again.residual is not None


def test_residual_errors_are_typed() -> None:
    with pytest.raises(CodecError):
        Residual.from_bytes(b"not safetensors")
    with pytest.raises(CodecError):
        Residual.from_arrays({"w": np.zeros(3, dtype=np.float64)})
    bad = Residual({"w": np.zeros(5, dtype=np.float32)})
    with pytest.raises(CodecError):
        encode_update({"w": torch.zeros(4)}, [TopK(0.5)], residual=bad)
    with pytest.raises(CodecError):
        encode_update({"v": torch.zeros(5)}, [TopK(0.5)], residual=bad)


def test_pipeline_from_config() -> None:
    cfg = CodecConfig.model_construct(
        quantize="int4",
        topk=0.1,
        encrypt=True,
        clip_norm=2.0,
        block_size=128,
        stochastic_rounding=True,
    )
    assert pipeline_from_config(cfg) == [
        Clip(2.0),
        TopK(0.1),
        Quantize(bits=4, block_size=128, stochastic=True),
    ]
    assert pipeline_from_config(CodecConfig()) == []


@pytest.mark.parametrize("bits", [4, 8, 16])
@pytest.mark.parametrize("clip", [None, 0.5])
def test_quantizer_residual_equals_target_minus_what_was_sent(
    bits: int, clip: float | None
) -> None:
    """The quantizer's in-pass residual is exactly (compensated update) - (decoded payload)."""
    delta = sample_update()
    floats = {k for k, v in delta.items() if v.is_floating_point()}
    carried = Residual({k: np.full(tuple(delta[k].shape), 0.01, np.float32) for k in floats})
    stages: list[Stage] = [Clip(clip)] if clip else []
    quant = Quantize(bits=bits, block_size=64)  # type: ignore[arg-type]
    enc = encode_update(delta, [*stages, quant], residual=carried)
    assert enc.residual is not None and set(enc.residual.arrays) == floats
    sent = decode_update(enc.payload)
    coded = coded_from_tensors(delta)
    for stage in stages:
        coded = stage.encode(coded)
    for name, lost in enc.residual.arrays.items():
        target = coded[name].values + torch.from_numpy(carried.arrays[name]).reshape(-1)
        got = sent[name].to(torch.float32).reshape(-1)
        if bits == 16 or delta[name].dtype == torch.float16:
            # sent values are rounded to the tensor's own dtype on decode; compare the codes' view
            assert lost.shape == tuple(delta[name].shape)
            np.testing.assert_allclose(lost.reshape(-1), (target - got).numpy(), atol=1e-3)
            continue
        np.testing.assert_array_equal(lost.reshape(-1), (target - got).numpy())
        assert lost.shape == tuple(delta[name].shape)
    assert any(np.abs(a).max() > 0 for a in enc.residual.arrays.values())
