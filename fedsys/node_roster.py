"""Which Flower node id each registered client holds, known before any message is sent.

With SuperNode authentication a node's id is fixed when its public key is registered
(``flwr supernode register`` answers with it, and the SuperLink maps the key to that id
whenever the node connects). ``fedsys server`` registers the keys, so it writes the answer
down here; the ServerApp then knows every registered node's client id without asking any
node, samples them in the stable order of their client ids, and holds each to the client id
it was registered for. Shared by ``fedsys.deploy`` (writer) and ``fedsys.server`` (reader).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedsys.deploy.layout import CLIENT_ID
from fedsys.errors import FedsysError
from fedsys.fsio import atomic_write_bytes

ROSTER_FILE = "roster.json"
KEY_COMMENT_PREFIX = "fedsys-"  # `fedsys keys client` comments node keys "fedsys-<client id>"


class RosterError(FedsysError):
    """The roster file cannot be read."""


class NodeRoster(BaseModel):
    """Client id -> the node id its SuperNode key was registered under."""

    model_config = ConfigDict(extra="forbid")

    nodes: dict[str, int] = Field(default_factory=dict)

    def by_node(self) -> dict[int, str]:
        """Node id -> client id (a node id claimed twice keeps neither: it is ambiguous)."""
        seen: dict[int, str] = {}
        twice: set[int] = set()
        for client, node in self.nodes.items():
            if node in seen:
                twice.add(node)
            seen[node] = client
        return {node: client for node, client in seen.items() if node not in twice}


def client_id_of_node_key(path: Path) -> str | None:
    """The client a SuperNode public key belongs to: its OpenSSH comment ``fedsys-<id>``
    (what ``fedsys keys client`` writes), else the key layout's ``clients/<id>/`` folder."""
    try:
        fields = path.read_text(encoding="ascii", errors="replace").split()
    except OSError:
        return None
    comment = fields[2] if len(fields) >= 3 else ""
    if comment.startswith(KEY_COMMENT_PREFIX):
        named = comment[len(KEY_COMMENT_PREFIX) :]
        if CLIENT_ID.match(named):
            return named
    if path.parent.parent.name == "clients" and CLIENT_ID.match(path.parent.name):
        return path.parent.name
    return None


def load_roster(path: Path) -> NodeRoster:
    """The roster at ``path``; an absent file is an empty roster."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return NodeRoster()
    except OSError as exc:
        raise RosterError(f"cannot read the node roster {path}: {exc}") from exc
    try:
        return NodeRoster.model_validate_json(text)
    except ValidationError as exc:
        raise RosterError(f"node roster {path} is not valid: {exc}") from exc


def record_node(path: Path, client_id: str, node_id: int) -> None:
    """Add or replace ``client_id``'s node id, written atomically (temp file + rename)."""
    roster = load_roster(path)
    roster.nodes[client_id] = node_id
    text = json.dumps(roster.model_dump(), indent=2, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode())
