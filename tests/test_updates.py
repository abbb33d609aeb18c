"""Reply validation: bad updates are rejected with a reason, good ones become weights."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedsys.server.updates import sort_replies


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    """Messages made outside a running app need a run and task identity."""
    TaskIdentity.run_id = 1
    TaskIdentity.task_id = 1
    TaskIdentity.node_id = 0


GLOBAL = {"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)}


def _reply(arrays: dict[str, np.ndarray], metrics: dict[str, int | float], node: int) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord(metrics),
        }
    )
    instruction = Message(content=RecordDict(), dst_node_id=node, message_type="train")
    return Message(content=content, reply_to=instruction)


def _good_delta(value: float) -> dict[str, np.ndarray]:
    return {"w": np.full((2, 3), value, np.float32), "b": np.full(3, value, np.float32)}


def test_valid_delta_becomes_global_plus_delta() -> None:
    out = sort_replies(
        [_reply(_good_delta(0.5), {"num-examples": 10}, 1)], GLOBAL, keep_stragglers=True
    )
    assert len(out.accepted) == 1 and not out.rejected
    weights = out.accepted[0].content["arrays"]
    np.testing.assert_allclose(weights["w"].numpy(), 1.5)
    np.testing.assert_allclose(weights["b"].numpy(), 0.5)
    assert out.bytes_up > 4 * 9


def test_each_defect_is_rejected_with_its_reason() -> None:
    nan = _good_delta(0.0)
    nan["w"][0, 0] = np.nan
    wrong_shape = {"w": np.zeros((3, 2), np.float32), "b": np.zeros(3, np.float32)}
    wrong_dtype = {"w": np.zeros((2, 3), np.float64), "b": np.zeros(3, np.float32)}
    missing = {"w": np.zeros((2, 3), np.float32)}
    error_reply = Message(content=RecordDict(), dst_node_id=9, message_type="train")
    error_reply = Message(Error(code=0, reason="out of memory"), reply_to=error_reply)
    replies = [
        _reply(nan, {"num-examples": 5}, 1),
        _reply(wrong_shape, {"num-examples": 5}, 2),
        _reply(wrong_dtype, {"num-examples": 5}, 3),
        _reply(missing, {"num-examples": 5}, 4),
        _reply(_good_delta(0.1), {"num-examples": 0}, 5),
        error_reply,
        _reply(_good_delta(0.1), {"num-examples": 5}, 6),
    ]
    out = sort_replies(replies, GLOBAL, keep_stragglers=True)
    assert len(out.accepted) == 1
    reasons = [r.reason for r in out.rejected]
    assert len(reasons) == 6
    assert "NaN" in reasons[0]
    assert "float32[3, 2]" in reasons[1]
    assert "float64" in reasons[2]
    assert "missing ['b']" in reasons[3]
    assert "num-examples" in reasons[4]
    assert "out of memory" in reasons[5]


def test_stragglers_dropped_unless_kept() -> None:
    replies = [
        _reply(_good_delta(0.1), {"num-examples": 5, "straggler": 1}, 1),
        _reply(_good_delta(0.1), {"num-examples": 5, "straggler": 0}, 2),
    ]
    dropped = sort_replies(replies, GLOBAL, keep_stragglers=False)
    assert len(dropped.accepted) == 1 and dropped.stragglers_dropped == 1
    replies = [
        _reply(_good_delta(0.1), {"num-examples": 5, "straggler": 1}, 1),
        _reply(_good_delta(0.1), {"num-examples": 5, "straggler": 0}, 2),
    ]
    kept = sort_replies(replies, GLOBAL, keep_stragglers=True)
    assert len(kept.accepted) == 2 and kept.stragglers_dropped == 0
