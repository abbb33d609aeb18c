"""The update codec: a visible list of stages, a versioned wire format, streaming decode.

Client::

    pipeline = [Clip(1.0), TopK(0.1), Quantize(bits=8)]   # or build_pipeline(PipelineParams(...))
    encoded = encode_update(delta, pipeline, residual=residual)
    envelope = seal(encoded.payload, client_keys, RoundBinding(run_id, round, node_id))

Server (the collector opens the envelope, see ``fedsys.server.unseal``)::

    total = StreamingSum(global_arrays)
    checked = check_payload(payload, template, policy)
    total.add(checked.wire, weight=num_examples)

The codec knows neither the experiment config nor the envelope: it is built from plain
parameters (:mod:`fedsys.codec.params`) and checks plaintext payloads. The names below load
on first use, so light callers (the config reads the quantization widths) import no torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedsys.codec.clip import Clip
    from fedsys.codec.params import QUANTIZE_BITS, PipelineParams
    from fedsys.codec.pipeline import EncodedUpdate, decode_update, encode_update
    from fedsys.codec.quantize import Quantize
    from fedsys.codec.residual import Residual
    from fedsys.codec.stages import Stage, build_pipeline, check_pipeline, pipeline_from_config
    from fedsys.codec.streaming import StreamingSum
    from fedsys.codec.template import TensorSpec, template_from
    from fedsys.codec.topk import TopK, kept_count
    from fedsys.codec.validate import CheckedUpdate, UpdatePolicy, check_payload
    from fedsys.codec.wire import WireUpdate, parse_update
    from fedsys.server.unseal import open_update as validate_update

_HOMES = {
    "CheckedUpdate": "fedsys.codec.validate",
    "Clip": "fedsys.codec.clip",
    "EncodedUpdate": "fedsys.codec.pipeline",
    "PipelineParams": "fedsys.codec.params",
    "QUANTIZE_BITS": "fedsys.codec.params",
    "Quantize": "fedsys.codec.quantize",
    "Residual": "fedsys.codec.residual",
    "Stage": "fedsys.codec.stages",
    "StreamingSum": "fedsys.codec.streaming",
    "TensorSpec": "fedsys.codec.template",
    "TopK": "fedsys.codec.topk",
    "UpdatePolicy": "fedsys.codec.validate",
    "WireUpdate": "fedsys.codec.wire",
    "build_pipeline": "fedsys.codec.stages",
    "check_payload": "fedsys.codec.validate",
    "check_pipeline": "fedsys.codec.stages",
    "decode_update": "fedsys.codec.pipeline",
    "encode_update": "fedsys.codec.pipeline",
    "kept_count": "fedsys.codec.topk",
    "parse_update": "fedsys.codec.wire",
    "pipeline_from_config": "fedsys.codec.stages",
    "template_from": "fedsys.codec.template",
}
# Opening an envelope is the server's job now; the old name still works for its callers.
_MOVED = {"validate_update": ("fedsys.server.unseal", "open_update")}

__all__ = [
    "QUANTIZE_BITS",
    "CheckedUpdate",
    "Clip",
    "EncodedUpdate",
    "PipelineParams",
    "Quantize",
    "Residual",
    "Stage",
    "StreamingSum",
    "TensorSpec",
    "TopK",
    "UpdatePolicy",
    "WireUpdate",
    "build_pipeline",
    "check_payload",
    "check_pipeline",
    "decode_update",
    "encode_update",
    "kept_count",
    "parse_update",
    "pipeline_from_config",
    "template_from",
    "validate_update",
]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        value = getattr(import_module(_HOMES[name]), name)
    elif name in _MOVED:
        module, attr = _MOVED[name]
        value = getattr(import_module(module), attr)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
