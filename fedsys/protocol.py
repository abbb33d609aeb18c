"""Names and schemas shared by the ServerApp and the ClientApp (what crosses the Message)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

CONFIG_KEY = "fedsys.config"  # ConfigRecord entry: the ExperimentConfig as JSON
SEED_KEY = "fedsys.seed"  # ConfigRecord entry: the run seed


class PartitionInfo(BaseModel):
    """A node's answer to the server's start-up query."""

    model_config = ConfigDict(extra="forbid")

    partition_id: int = Field(ge=0)
