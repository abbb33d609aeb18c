"""Names and schemas shared by the ServerApp and the ClientApp (what crosses the Message)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

CONFIG_KEY = "fedsys.config"  # ConfigRecord entry: the ExperimentConfig as JSON
SEED_KEY = "fedsys.seed"  # ConfigRecord entry: the run seed


class PartitionInfo(BaseModel):
    """A node's answer to the server's start-up query."""

    model_config = ConfigDict(extra="forbid")

    partition_id: int = Field(ge=0)


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
