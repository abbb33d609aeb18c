"""The codec stands alone: built from plain parameters, one table of quantization widths."""

from __future__ import annotations

import subprocess
import sys
from typing import get_args

import pytest
from pydantic import ValidationError

import fedsys.codec
from fedsys.codec import QUANTIZE_BITS, PipelineParams, Quantize, build_pipeline
from fedsys.codec.params import SCHEME_OF_BITS, DownlinkScheme, QuantizeScheme
from fedsys.config import CodecConfig, ExperimentConfig
from fedsys.errors import CodecArgumentError, FedsysError


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_the_codec_imports_neither_the_config_nor_the_crypto() -> None:
    # every codec module and every public name but the alias kept for the moved opener
    names = [n for n in fedsys.codec.__all__ if n != "validate_update"]
    loaded = _modules_after(
        "import pkgutil, importlib, fedsys.codec\n"
        "for m in pkgutil.iter_modules(fedsys.codec.__path__):\n"
        "    importlib.import_module('fedsys.codec.' + m.name)\n"
        f"for name in {names!r}:\n"
        "    getattr(fedsys.codec, name)"
    )
    assert "fedsys.codec.stages" in loaded and "fedsys.codec.validate" in loaded
    assert not {m for m in loaded if m.startswith(("fedsys.config", "fedsys.crypto"))}
    assert not {m for m in loaded if m.startswith(("fedsys.server", "cryptography"))}


def test_the_config_reads_the_widths_without_loading_the_codec() -> None:
    loaded = _modules_after("import fedsys.config")
    assert "fedsys.codec.params" in loaded
    assert "torch" not in loaded and "fedsys.codec.stages" not in loaded


def test_one_table_of_quantization_widths() -> None:
    assert set(get_args(QuantizeScheme)) == set(QUANTIZE_BITS)
    allowed = set(get_args(CodecConfig.model_fields["quantize"].annotation))
    assert allowed == {"none", *QUANTIZE_BITS}
    assert set(get_args(DownlinkScheme)) - {"none"} <= set(QUANTIZE_BITS)
    for scheme, bits in QUANTIZE_BITS.items():
        assert Quantize(bits=bits).scheme == scheme == SCHEME_OF_BITS[bits]
    with pytest.raises(ValidationError, match="'none', 'fp16', 'int8' or 'int4'"):
        ExperimentConfig.model_validate({"codec": {"quantize": "int2"}})


@pytest.mark.parametrize("scheme", ["none", *QUANTIZE_BITS])
def test_secagg_quant_bits_default_from_the_same_table(scheme: str) -> None:
    cfg = ExperimentConfig.model_validate(
        {"codec": {"quantize": scheme, "clip_norm": 1.0}, "secagg": {"enabled": True}}
    )
    expected = 16 if scheme == "none" else QUANTIZE_BITS[scheme]  # type: ignore[index]
    assert cfg.secagg.resolved_quant_bits(cfg.codec) == expected


def test_the_config_maps_onto_plain_pipeline_parameters() -> None:
    cfg = CodecConfig(quantize="int8", topk=0.25, clip_norm=1.5, block_size=64)
    params = cfg.pipeline_params()
    assert params == PipelineParams(clip_norm=1.5, topk=0.25, quantize="int8", block_size=64)
    assert build_pipeline(params) == fedsys.codec.pipeline_from_config(cfg)
    assert build_pipeline(CodecConfig().pipeline_params()) == []


def test_a_pipeline_out_of_order_is_a_typed_error_with_a_reason() -> None:
    stages = build_pipeline(PipelineParams(topk=0.1, quantize="int4"))
    with pytest.raises(CodecArgumentError) as caught:
        fedsys.codec.check_pipeline(stages[::-1])
    assert isinstance(caught.value, FedsysError) and "order" in caught.value.reason
