"""The node config a fedsys ClientApp reads: its keys, defined once, and their parser.

Flower hands every ClientApp ``context.node_config``: ``partition-id`` and ``num-partitions``
in a simulation, whatever ``flower-supernode --node-config`` says when deployed (``fedsys
client`` writes it from its settings). Every reader goes through :class:`NodeConfig`, so a
bad value fails with a ConfigError naming the key instead of a bare ``int()`` error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fedsys.errors import ConfigError

PARTITION_ID: Final = "partition-id"  # which partition of a built-in dataset this node holds
NUM_PARTITIONS: Final = "num-partitions"  # how many partitions there are (simulation)
CLIENT_ID: Final = "client-id"  # a deployed node's name (its update-signing identity)
DATA_PATH: Final = "data-path"  # a deployed node's own data file (.npz with x, y)
SIGNING_KEY: Final = "signing-key"  # a deployed node's Ed25519 update-signing key file
WORKER_SOCKET: Final = "worker-socket"  # the client daemon's warm trainer socket


class NodeConfig(BaseModel):
    """What fedsys reads from a node config; other keys are left to whoever set them.

    Unset and empty values are the same: a node without ``client-id`` or ``data-path`` is a
    simulated one.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)

    partition_id: int = Field(default=0, alias=PARTITION_ID)
    num_partitions: int | None = Field(default=None, alias=NUM_PARTITIONS)
    client_id: str | None = Field(default=None, alias=CLIENT_ID)
    data_path: str | None = Field(default=None, alias=DATA_PATH)
    signing_key: str | None = Field(default=None, alias=SIGNING_KEY)
    worker_socket: str | None = Field(default=None, alias=WORKER_SOCKET)

    @field_validator("client_id", "data_path", "signing_key", "worker_socket", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return value if value else None

    @property
    def deployed(self) -> bool:
        """A node ``fedsys client`` runs (it names itself or its data), not a simulated one."""
        return self.client_id is not None or self.data_path is not None

    @classmethod
    def parse(cls, node_config: Mapping[str, object]) -> NodeConfig:
        """``node_config`` as read by fedsys; a ConfigError names every bad key."""
        try:
            return cls.model_validate(dict(node_config))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"invalid node config: {problems}") from None


__all__ = [
    "CLIENT_ID",
    "DATA_PATH",
    "NUM_PARTITIONS",
    "PARTITION_ID",
    "SIGNING_KEY",
    "WORKER_SOCKET",
    "NodeConfig",
]
