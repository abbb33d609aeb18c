"""Config validation for secure aggregation: what cannot work is refused, saying why."""

from __future__ import annotations

import pytest

from fedsys.config import build_config
from fedsys.errors import ConfigError

ON = ["secagg.enabled=true", "codec.clip_norm=5.0"]


def test_valid_secagg_config_resolves_quantization_from_the_codec() -> None:
    cfg = build_config({}, [*ON, "codec.quantize=int8", "secagg.neighbours=4"])
    assert cfg.secagg.enabled and cfg.secagg.neighbours == 4
    assert cfg.secagg.resolved_quant_bits(cfg.codec) == 8
    plain = build_config({}, ON)
    assert plain.secagg.resolved_quant_bits(plain.codec) == 16
    int4 = build_config({}, [*ON, "codec.quantize=int4", "secagg.quant_bits=12"])
    assert int4.secagg.resolved_quant_bits(int4.codec) == 12


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["strategy.name=krum"], "strategy 'krum' needs every client's update"),
        (["strategy.name=fedmedian"], "use fedavg, fedprox"),
        (["strategy.name=bulyan"], "clip on the clients instead (codec.clip_norm)"),
        (["strategy.dp.kind=fixed"], "strategy.dp (Flower's server-side DP)"),
        (["codec.max_norm=1.0"], "codec.max_norm checks each update's norm on the server"),
        (["codec.topk=0.1"], "codec.topk sends different positions per client"),
        (["codec.encrypt=true"], "set codec.encrypt=false"),
        (["secagg.quant_bits=40"], "less than or equal to 32"),
        (["secagg.bits=16", "secagg.quant_bits=17"], "cannot exceed secagg.bits (16)"),
    ],
)
def test_refused_combinations_say_why(extra: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=r"secagg|quant_bits") as info:
        build_config({}, [*ON, *extra])
    assert message in str(info.value)


def test_clip_norm_is_required() -> None:
    with pytest.raises(ConfigError, match=r"secagg\.enabled requires codec\.clip_norm"):
        build_config({}, ["secagg.enabled=true"])


def test_sum_that_could_wrap_names_the_numbers() -> None:
    args = [*ON, "data.num_partitions=300", "secagg.bits=16", "codec.quantize=int8"]
    with pytest.raises(ConfigError) as info:
        build_config({}, args)
    text = str(info.value)
    assert "300 clients x largest quantized value 127" in text
    assert "= 38100 exceeds 32767" in text
    assert "lower secagg.quant_bits to 7 or raise secagg.bits" in text
    build_config({}, [*args[:-1], "secagg.bits=32"])  # a wider modulus holds it


def test_disabled_secagg_ignores_its_checks() -> None:
    cfg = build_config({}, ["strategy.name=krum", "codec.topk=0.1"])
    assert not cfg.secagg.enabled
