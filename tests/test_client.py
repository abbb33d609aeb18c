"""The ClientApp's handlers called directly: the reply is a delta with metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from fedsys.client.client_app import describe, train
from fedsys.client.node_state import load_residual
from fedsys.codec import decode_update
from fedsys.config import build_config
from fedsys.data import load_dataset
from fedsys.models import build_model
from fedsys.protocol import CONFIG_KEY, HELLO_KEY, PAYLOAD_KEY, SEED_KEY, NodeHello

pytestmark = pytest.mark.usefixtures("task_identity")

CFG = build_config({}, ["model.channels=4", "data.num_partitions=4", "train.batch_size=64"])


def _global() -> dict[str, np.ndarray]:
    _, _, info = load_dataset(CFG.data, 0)
    torch.manual_seed(0)
    return {k: v.numpy() for k, v in build_model(CFG.model, info).state_dict().items()}


def _context(partition: int) -> Context:
    return Context(
        run_id=1,
        node_id=5,
        node_config={"partition-id": partition, "num-partitions": 4},
        state=RecordDict(),
        run_config={},
    )


def test_train_replies_with_a_delta_and_metrics() -> None:
    weights = _global()
    config = ConfigRecord({CONFIG_KEY: CFG.to_json(), SEED_KEY: 0, "server-round": 1})
    content = RecordDict(
        {"arrays": ArrayRecord({k: Array(v) for k, v in weights.items()}), "config": config}
    )
    msg = Message(content=content, dst_node_id=5, message_type="train")
    reply = train(msg, _context(2))
    payload = reply.content.config_records["update"][PAYLOAD_KEY]
    assert isinstance(payload, bytes)
    delta = decode_update(payload)
    assert set(delta) == set(weights)
    norms = [float(delta[k].abs().sum()) for k in weights]
    assert all(n > 0 for n in norms)  # every tensor moved
    # a delta, not weights: small next to the weights themselves
    assert float(delta["classifier.weight"].abs().mean()) < 0.5 * float(
        np.abs(weights["classifier.weight"]).mean()
    )
    metrics = reply.content.metric_records["metrics"]
    assert metrics["num-examples"] == 1000  # 4000 training samples over 4 partitions
    assert float(metrics["train_loss"]) > 0 and metrics["straggler"] == 0
    assert float(metrics["encode_seconds"]) >= 0


def test_query_introduces_the_node() -> None:
    msg = Message(content=RecordDict(), dst_node_id=5, message_type="query")
    context = _context(3)
    reply = describe(msg, context)
    hello = NodeHello.model_validate_json(str(reply.content["hello"][HELLO_KEY]))
    assert hello.partition_id == 3 and hello.client_id == "sim-3"
    assert hello.signing_key is not None and len(hello.signing_key) == 64
    again = describe(msg, context)  # the key is kept in the node's state
    assert NodeHello.model_validate_json(str(again.content["hello"][HELLO_KEY])) == hello


def test_error_feedback_residual_lives_in_a_node_file(tmp_path: Path) -> None:
    cfg = build_config(
        {},
        [
            "model.channels=4",
            "data.num_partitions=4",
            "train.batch_size=64",
            "codec.quantize=int4",
            f"runtime.node_state_dir={tmp_path}",
        ],
    )
    weights = _global()
    config = ConfigRecord({CONFIG_KEY: cfg.to_json(), SEED_KEY: 0, "server-round": 1})
    content = RecordDict(
        {"arrays": ArrayRecord({k: Array(v) for k, v in weights.items()}), "config": config}
    )
    context = _context(1)
    train(Message(content=content, dst_node_id=5, message_type="train"), context)
    files = list(tmp_path.rglob("*.residual"))
    assert [f.name for f in files] == ["sim-1.a.residual"]
    residual = load_residual(tmp_path, context.run_id, "sim-1")
    assert residual.arrays and residual.norm() > 0  # int4 rounding left something behind
    assert "fedsys.client" not in context.state.config_records or all(
        not isinstance(v, bytes) or len(v) < 1000
        for v in context.state.config_records["fedsys.client"].values()
    )
    # a damaged residual file counts as zeros (error feedback restarts), never as an error
    files[0].write_bytes(b"\x00" * 64)
    assert load_residual(tmp_path, context.run_id, "sim-1").arrays == {}
