"""Federated evaluation's summary and a client's held-out split."""

from __future__ import annotations

import numpy as np
import pytest

from fedsys.client.holdout import holdout_mask
from fedsys.server.federated_eval import ClientEval, summarize


def test_summary_weights_the_mean_and_reports_the_tail() -> None:
    results = [
        ClientEval(k, n, loss=1.0 - a, accuracy=a)
        for k, (n, a) in enumerate([(100, 0.9), (100, 0.8), (10, 0.1), (50, 0.5)])
    ]
    s = summarize(results)
    assert s is not None
    assert s.clients == 4 and s.examples == 260
    assert s.accuracy == pytest.approx((90 + 80 + 1 + 25) / 260)
    assert s.worst_accuracy == 0.1
    assert s.p10_accuracy == pytest.approx(np.percentile([0.9, 0.8, 0.1, 0.5], 10))
    assert s.median_accuracy == pytest.approx(0.65)


def test_summary_ignores_unusable_reports() -> None:
    assert summarize([]) is None
    bad = [
        ClientEval(0, 0, 1.0, 0.5),
        ClientEval(1, 5, float("nan"), 0.5),
        ClientEval(2, 5, 1.0, 2.0),
    ]
    assert summarize(bad) is None


def test_holdout_is_seeded_per_client_and_never_empty() -> None:
    m = holdout_mask(50, 0.2, seed=0, client=3)
    assert m.sum() == 10
    np.testing.assert_array_equal(m, holdout_mask(50, 0.2, seed=0, client=3))
    assert not np.array_equal(m, holdout_mask(50, 0.2, seed=0, client=4))
    assert holdout_mask(3, 0.01, 0, 0).sum() == 1
    assert holdout_mask(1, 0.5, 0, 0).sum() == 0


def test_a_clients_evaluation_reads_only_its_own_held_out_data(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The evaluate handler loads the assigned client's partition and nothing else, and
    evaluates on exactly the samples that client never trains on."""
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

    from fedsys.client import client_app as client_module
    from fedsys.config import build_config
    from fedsys.data import client_partition, dataset_info
    from fedsys.inprocess import InProcessGrid
    from fedsys.models import build_model
    from fedsys.protocol import CLIENT_KEY, CONFIG_KEY, SEED_KEY

    InProcessGrid(client_module.app, 1)  # sets the task identity messages need
    cfg = build_config({}, ["federated_eval.evaluate_every=1", "model.channels=4"])
    asked: list[int] = []

    def spy(data_cfg: object, seed: int, pid: int) -> object:
        asked.append(pid)
        return client_partition(data_cfg, seed, pid)  # type: ignore[arg-type]

    monkeypatch.setattr(client_module, "client_partition", spy)
    client_module._partition_tensors.cache_clear()
    model = build_model(cfg.model, dataset_info(cfg.data, 0))
    config = ConfigRecord({CONFIG_KEY: cfg.to_json(), SEED_KEY: 0, CLIENT_KEY: 7})
    msg = Message(
        RecordDict({"arrays": ArrayRecord(model.state_dict()), "config": config}),
        dst_node_id=3,
        message_type=MessageType.EVALUATE,
    )
    context = Context(
        run_id=1,
        node_id=3,
        node_config={"partition-id": 2, "num-partitions": 10},
        state=RecordDict(),
        run_config={},
    )
    reply = client_module.evaluate_local(msg, context)
    assert asked == [7]  # the assigned client's partition only, never the node's own label
    n = len(client_partition(cfg.data, 0, 7))
    held_out = holdout_mask(n, cfg.federated_eval.holdout_fraction, 0, 7).sum()
    assert reply.content["metrics"]["num-examples"] == held_out
