"""The coded global model: what a client decodes is close to, and shaped like, the server's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from fedsys.client.client_app import train
from fedsys.codec import decode_update
from fedsys.codec.downlink import decode_global, encode_global
from fedsys.config import build_config
from fedsys.data import load_dataset
from fedsys.errors import UpdateRejected, WireFormatError
from fedsys.models import build_model
from fedsys.protocol import CONFIG_KEY, GLOBAL_KEY, PAYLOAD_KEY, SEED_KEY

pytestmark = pytest.mark.usefixtures("task_identity")


def _model_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "w": rng.normal(size=(64, 300)).astype(np.float32),
        "b": rng.normal(size=7).astype(np.float32),
        "count": np.array(12, dtype=np.int64),
    }


@pytest.mark.parametrize(("scheme", "ratio"), [("int8", 0.27), ("fp16", 0.52)])
def test_coded_global_is_smaller_and_within_half_a_step(scheme: str, ratio: float) -> None:
    arrays = _model_arrays()
    payload = encode_global(arrays, scheme, 256)  # type: ignore[arg-type]
    fp32 = sum(v.nbytes for v in arrays.values())
    assert len(payload) < ratio * fp32 + 512
    decoded = decode_global(payload, arrays)
    assert decoded["count"].dtype == torch.int64 and int(decoded["count"]) == 12
    w = arrays["w"].reshape(-1)
    err = np.abs(decoded["w"].numpy().reshape(-1) - w)
    if scheme == "int8":
        # each value within half a step of its block's scale (absmax / 127)
        scales = np.abs(w[: w.size // 256 * 256].reshape(-1, 256)).max(axis=1) / 127
        assert np.all(err[: scales.size * 256].reshape(-1, 256) <= scales[:, None] / 2 + 1e-7)
    else:
        assert float(err.max()) < 1e-2


def test_a_different_layout_is_refused() -> None:
    arrays = _model_arrays()
    payload = encode_global(arrays, "int8", 256)
    other = dict(arrays, w=np.zeros((64, 301), dtype=np.float32))
    with pytest.raises(UpdateRejected, match="'w'"):
        decode_global(payload, other)
    with pytest.raises(UpdateRejected, match="names differ"):
        decode_global(payload, {k: v for k, v in arrays.items() if k != "b"})


def test_a_damaged_payload_is_a_wire_format_error() -> None:
    payload = bytearray(encode_global(_model_arrays(), "int8", 256))
    payload[len(payload) // 2] ^= 0xFF
    with pytest.raises(WireFormatError):
        decode_global(bytes(payload), _model_arrays())


def test_client_trains_from_the_coded_model_and_sends_its_delta() -> None:
    cfg = build_config({}, ["model.channels=4", "data.num_partitions=4", "codec.downlink=int8"])
    _, _, info = load_dataset(cfg.data, 0)
    torch.manual_seed(0)
    weights = {k: v.numpy() for k, v in build_model(cfg.model, info).state_dict().items()}
    payload = encode_global(weights, "int8", 256)
    config = ConfigRecord(
        {CONFIG_KEY: cfg.to_json(), SEED_KEY: 0, "server-round": 1, GLOBAL_KEY: payload}
    )
    content = RecordDict({"arrays": ArrayRecord(), "config": config})
    context = Context(
        run_id=1,
        node_id=5,
        node_config={"partition-id": 1, "num-partitions": 4},
        state=RecordDict(),
        run_config={},
    )
    reply = train(Message(content=content, dst_node_id=5, message_type="train"), context)
    update = reply.content.config_records["update"][PAYLOAD_KEY]
    assert isinstance(update, bytes)
    delta = decode_update(update)
    assert set(delta) == set(weights)
    assert all(float(delta[k].abs().sum()) > 0 for k in weights if "weight" in k)
