"""Quantize: per-block error bounds, int4 packing, fp16, and unbiased stochastic rounding."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedsys.codec.coded import coded_from_tensors
from fedsys.codec.quantize import (
    Quantize,
    dequantize_blocks,
    pack_int4,
    quantize_blocks,
    unpack_int4,
)

finite_f32 = st.floats(-1e4, 1e4, width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    values=arrays(np.float32, st.integers(0, 700), elements=finite_f32),
    scheme=st.sampled_from(["int8", "int4"]),
    block_size=st.sampled_from([8, 64, 256]),
)
def test_error_is_at_most_half_a_scale_per_block(
    values: np.ndarray, scheme: str, block_size: int
) -> None:
    x = torch.from_numpy(values)
    codes, scales = quantize_blocks(x, scheme, block_size)  # type: ignore[arg-type]
    back = dequantize_blocks(codes, scales, x.numel(), scheme, block_size)  # type: ignore[arg-type]
    assert back.shape == x.shape
    per_value_scale = scales.repeat_interleave(block_size)[: x.numel()]
    err = (back - x).abs()
    assert bool((err <= per_value_scale / 2 * (1 + 1e-5) + 1e-30).all())


def test_scales_are_absmax_over_qmax_and_zero_blocks_stay_zero() -> None:
    x = torch.zeros(512)
    x[3] = -2.54
    codes, scales = quantize_blocks(x, "int8", 256)
    assert scales.tolist() == pytest.approx([2.54 / 127, 0.0])
    back = dequantize_blocks(codes, scales, 512, "int8", 256)
    assert back[3] == pytest.approx(-2.54)
    assert bool((back[256:] == 0).all())


@pytest.mark.parametrize("count", [0, 1, 2, 15, 16, 17])
def test_int4_packs_two_codes_per_byte(count: int) -> None:
    codes = torch.arange(count, dtype=torch.int64).remainder(16).sub(8).to(torch.int8)
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8
    assert packed.numel() == (count + 1) // 2
    assert torch.equal(unpack_int4(packed, count), codes)


def test_int4_nibble_order_is_low_first() -> None:
    packed = pack_int4(torch.tensor([-8, 7], dtype=torch.int8))
    assert packed.tolist() == [0x0 | (0xF << 4)]


def test_fp16_stage_keeps_half_precision_and_clamps_to_finite() -> None:
    coded = coded_from_tensors({"w": torch.tensor([1e-3, 1e5, -1e6, 3.0])})
    out = Quantize(bits=16).encode(coded)["w"]
    assert out.encoding == "fp16" and out.values.dtype == torch.float16
    assert bool(torch.isfinite(out.values).all())
    back = Quantize(bits=16).decode({"w": out})["w"].values
    assert back[0] == pytest.approx(1e-3, rel=1e-3)
    assert back[3] == 3.0


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_stochastic_rounding_is_unbiased(scheme: str) -> None:
    """E[dequant(quant(x))] = x: average many independent roundings of the same block."""
    gen = torch.Generator().manual_seed(1)
    block = torch.linspace(-1.0, 1.0, 256) + 0.0137  # values between quantization levels
    block[0] = 1.5  # fixes the block's scale
    trials = 4000
    x = block.repeat(trials)
    codes, scales = quantize_blocks(x, scheme, 256, stochastic=True, generator=gen)  # type: ignore[arg-type]
    back = dequantize_blocks(codes, scales, x.numel(), scheme, 256).view(trials, 256)  # type: ignore[arg-type]
    scale = float(scales[0])
    mean_err = (back.mean(dim=0) - block).abs()
    # std of one rounding is at most scale/2, so 5 standard errors of the mean bound every value
    assert float(mean_err.max()) < 5 * (scale / 2) / trials**0.5
    det_codes, det_scales = quantize_blocks(block, scheme, 256)  # type: ignore[arg-type]
    det_err = (dequantize_blocks(det_codes, det_scales, 256, scheme, 256) - block).abs()  # type: ignore[arg-type]
    assert float(mean_err.mean()) < float(det_err.mean()) / 4  # deterministic rounding is biased


def test_quantize_runs_on_cuda_when_present() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = torch.randn(1000, device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    schemes: list[Literal["int8", "int4"]] = ["int8", "int4"]
    for scheme in schemes:
        codes, scales = quantize_blocks(x, scheme, 256, stochastic=True, generator=gen)
        assert codes.device.type == "cuda"
        back = dequantize_blocks(codes, scales, 1000, scheme, 256)
        assert float((back - x).abs().max()) <= float(scales.max()) * 1.001


def test_quantize_stage_validates_its_parameters() -> None:
    with pytest.raises(ValueError):
        Quantize(bits=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Quantize(bits=8, block_size=7)
