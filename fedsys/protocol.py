"""Names and schemas shared by the ServerApp and the ClientApp (what crosses the Message)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

CONFIG_KEY = "fedsys.config"  # train config: the ExperimentConfig as JSON
SEED_KEY = "fedsys.seed"  # train config: the run seed
AGGREGATOR_KEY = "fedsys.aggregator-key"  # train config: the server's X25519 public key (raw)
GLOBAL_KEY = "fedsys.global"  # train config: the coded global model (codec.downlink != none)
PAYLOAD_KEY = "payload"  # reply "update" record: an unencrypted wire-format payload
HELLO_KEY = "hello"  # query reply record entry: a NodeHello as JSON
# Simulation: the virtual client (data partition) a node plays, assigned by the server so a
# run's clients never depend on Flower's random node ids or the order nodes registered in.
CLIENT_KEY = "fedsys.client-key"
# Pooled simulation: the node id the client's update is bound to (its stable virtual node,
# since the Flower node that runs it changes from message to message).
BINDING_NODE_KEY = "fedsys.binding-node"
INTRO_RECORD = "hello"  # reply record carrying the node's NodeHello with its first reply(s)


class NodeHello(BaseModel):
    """A node's answer to the server's start-up query: who it is and which data it holds."""

    model_config = ConfigDict(extra="forbid")

    partition_id: int = Field(ge=0)
    client_id: str = Field(min_length=1, max_length=128)
    signing_key: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="Ed25519 public key, raw hex."
    )
    num_examples: int | None = Field(
        default=None,
        ge=0,
        description="Training examples the node holds: the most any of its updates may weigh.",
    )


def record_nbytes(record: Mapping[str, object]) -> int:
    """Bytes of the bytes-valued entries of a record: what an update costs on the wire."""
    total = 0
    for value in record.values():
        if isinstance(value, bytes):
            total += len(value)
        elif isinstance(value, list):
            total += sum(len(v) for v in value if isinstance(v, bytes))
    return total


def record_number(record: Mapping[str, object], key: str, default: float | None = None) -> float:
    """A scalar number from a Config/MetricRecord; a clear error names the key otherwise."""
    value = record.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"record entry {key!r} must be a number, got {type(value).__name__}")
    return float(value)


def record_text(record: Mapping[str, object], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise ValueError(f"record entry {key!r} must be a string, got {type(value).__name__}")
    return value
