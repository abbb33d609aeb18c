"""Which client a node is: the server-assigned virtual client in simulation, else its own.

In simulation the server names the client (a stable key, the data partition) in every
message it sends (``fedsys.client-key``); the node's own ``partition-id`` from Flower is only
a fallback for messages without one. Deployed nodes name themselves in their node config.
"""

from __future__ import annotations

from collections.abc import Mapping

from flwr.app import Context

from fedsys.protocol import CLIENT_KEY


def partition_id(context: Context, config: Mapping[str, object] | None = None) -> int:
    """The partition this node trains on for the message whose config is ``config``."""
    if config is not None:
        assigned = config.get(CLIENT_KEY)
        if isinstance(assigned, int) and not isinstance(assigned, bool) and assigned >= 0:
            return assigned
    return int(context.node_config.get("partition-id", 0))


def client_id(context: Context, config: Mapping[str, object] | None = None) -> str:
    """A stable name for this client's signing identity (``client-id`` in the node config,
    else ``sim-<partition>``)."""
    named = context.node_config.get("client-id")
    return str(named) if named else f"sim-{partition_id(context, config)}"
