"""The ClientApp's handlers called directly: the reply is a delta with metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedsys.client.app import describe, train
from fedsys.config import build_config
from fedsys.data import load_dataset
from fedsys.models import build_model
from fedsys.protocol import CONFIG_KEY, SEED_KEY, PartitionInfo

CFG = build_config({}, ["model.channels=4", "data.num_partitions=4", "train.batch_size=64"])


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    TaskIdentity.run_id = 1
    TaskIdentity.task_id = 1
    TaskIdentity.node_id = 0


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
    delta = reply.content.array_records["arrays"]
    assert set(delta.keys()) == set(weights)
    norms = [float(np.abs(delta[k].numpy()).sum()) for k in weights]
    assert all(n > 0 for n in norms)  # every tensor moved: the delta is not the weights
    assert not np.allclose(delta["classifier.weight"].numpy(), weights["classifier.weight"])
    metrics = reply.content.metric_records["metrics"]
    assert metrics["num-examples"] == 1000  # 4000 training samples over 4 partitions
    assert float(metrics["train_loss"]) > 0 and metrics["straggler"] == 0


def test_query_reports_the_partition() -> None:
    msg = Message(content=RecordDict(), dst_node_id=5, message_type="query")
    reply = describe(msg, _context(3))
    info = PartitionInfo.model_validate_json(str(reply.content["info"]["partition-info"]))
    assert info.partition_id == 3
