"""The update codec: a visible list of stages, a versioned wire format, streaming decode.

Client::

    pipeline = [Clip(1.0), TopK(0.1), Quantize(bits=8)]
    encoded = encode_update(delta, pipeline, residual=residual)
    envelope = seal(encoded.payload, client_keys, RoundBinding(run_id, round, node_id))

Server::

    total = StreamingSum(global_arrays)
    checked = validate_update(record_values, template, policy, keys=keys, expect=binding)
    total.add(checked.wire, weight=num_examples)
"""

from fedsys.codec.clip import Clip
from fedsys.codec.pipeline import EncodedUpdate, decode_update, encode_update
from fedsys.codec.quantize import Quantize
from fedsys.codec.residual import Residual
from fedsys.codec.stages import Stage, check_pipeline, pipeline_from_config
from fedsys.codec.streaming import StreamingSum
from fedsys.codec.template import TensorSpec, template_from
from fedsys.codec.topk import TopK, kept_count
from fedsys.codec.validate import CheckedUpdate, UpdatePolicy, check_payload, validate_update
from fedsys.codec.wire import WireUpdate, parse_update

__all__ = [
    "CheckedUpdate",
    "Clip",
    "EncodedUpdate",
    "Quantize",
    "Residual",
    "Stage",
    "StreamingSum",
    "TensorSpec",
    "TopK",
    "UpdatePolicy",
    "WireUpdate",
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
