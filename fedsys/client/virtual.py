"""Which client a node is: the server-assigned virtual client in simulation, else its own.

In simulation the server names the client (a stable key, the data partition) in every
message it sends (``fedsys.client-key``); the node's own ``partition-id`` from Flower is only
a fallback for messages without one. Deployed nodes name themselves in their node config.
"""

from __future__ import annotations

from collections.abc import Mapping

from flwr.app import Context

from fedsys.client.node_config import NodeConfig
from fedsys.protocol import CLIENT_KEY


def partition_id(context: Context, config: Mapping[str, object] | None = None) -> int:
    """The partition this node trains on for the message whose config is ``config``."""
    if config is not None:
        assigned = config.get(CLIENT_KEY)
        if isinstance(assigned, int) and not isinstance(assigned, bool) and assigned >= 0:
            return assigned
    return NodeConfig.parse(context.node_config).partition_id


def client_id(context: Context, config: Mapping[str, object] | None = None) -> str:
    """A stable name for this client's signing identity (``client-id`` in the node config,
    else ``sim-<partition>``)."""
    named = NodeConfig.parse(context.node_config).client_id
    return named if named is not None else f"sim-{partition_id(context, config)}"
