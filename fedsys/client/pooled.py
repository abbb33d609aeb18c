"""A client played by whichever node of a pool is free (``fedsys.server.node_pool``).

In a pooled simulation one client may run on a different Flower node every time it is
sampled, so what must stay the client's own cannot live in a node's ``context.state``: its
update-signing key is kept in the node-state directory under the client's name (the server
trusts the first key it sees for a client, so a fresh key on another node would get its
updates refused), and its updates are bound to the stable virtual node id the server names
in the message, not to the Flower node that happens to run it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from flwr.app import Context

from fedsys.client.node_state import client_file
from fedsys.crypto.keys import (
    generate_signing_key,
    private_to_pem,
    read_signing_key,
    write_private_key,
)
from fedsys.errors import KeyFileError
from fedsys.protocol import BINDING_NODE_KEY


def binding_node(context: Context, config: Mapping[str, object] | None) -> int:
    """The node id this client's update is bound to: the server's virtual id when it names
    one (pooled simulation), else this node's."""
    named = config.get(BINDING_NODE_KEY) if config is not None else None
    if isinstance(named, int) and not isinstance(named, bool):
        return named
    return context.node_id


def pooled(config: Mapping[str, object] | None) -> bool:
    return config is not None and BINDING_NODE_KEY in config


def client_signing_key(state_dir: Path, run_id: int, client_id: str) -> bytes:
    """The client's Ed25519 key (PEM) for this run, made on first use (file mode 0600)."""
    path = client_file(state_dir, run_id, client_id, "signing-key.pem")
    try:
        return private_to_pem(read_signing_key(path))
    except KeyFileError:
        if path.exists():
            raise
    path.parent.mkdir(parents=True, exist_ok=True)
    key = generate_signing_key()
    write_private_key(path, key)
    return private_to_pem(key)
