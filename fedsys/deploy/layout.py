"""Where ``fedsys keys`` and ``fedsys certs`` put key material, under one keys directory.

::

    <keys>/aggregator/update.key      X25519, opens clients' sealed updates        (0600)
    <keys>/aggregator/update.pub      its public half (hex)
    <keys>/aggregator/publish.key     Ed25519, signs published models               (0600)
    <keys>/aggregator/publish.pub     its public half (hex), for the endpoint
    <keys>/aggregator/allow_list.json client id -> Ed25519 update-signing key (hex)
    <keys>/clients/<id>/signing.key   Ed25519, signs the client's updates           (0600)
    <keys>/clients/<id>/signing.pub
    <keys>/clients/<id>/node_auth     ECDSA P-384 (OpenSSH), SuperNode authentication (0600)
    <keys>/clients/<id>/node_auth.pub its public half, registered with the SuperLink
    <keys>/tls/ca.pem, ca.key         the CA every SuperNode and `flwr` trusts (ca.key 0600)
    <keys>/tls/server.pem, server.key the SuperLink's certificate               (server.key 0600)

A client machine needs only its own ``clients/<id>/`` directory and ``tls/ca.pem``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fedsys.errors import KeyFileError

CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_client_id(client_id: str) -> str:
    """Client ids name directories and appear in logs: a short, safe token."""
    if not CLIENT_ID.match(client_id):
        raise KeyFileError(
            f"client id {client_id!r} must be 1-64 characters of letters, digits, '_', '.', '-'"
        )
    return client_id


@dataclass(frozen=True)
class ClientKeyPaths:
    """One client's key files."""

    dir: Path

    @property
    def signing_key(self) -> Path:
        return self.dir / "signing.key"

    @property
    def signing_pub(self) -> Path:
        return self.dir / "signing.pub"

    @property
    def node_auth_key(self) -> Path:
        return self.dir / "node_auth"

    @property
    def node_auth_pub(self) -> Path:
        return self.dir / "node_auth.pub"


@dataclass(frozen=True)
class KeyLayout:
    """Paths under one keys directory."""

    root: Path

    @property
    def aggregator(self) -> Path:
        return self.root / "aggregator"

    @property
    def update_key(self) -> Path:
        return self.aggregator / "update.key"

    @property
    def update_pub(self) -> Path:
        return self.aggregator / "update.pub"

    @property
    def publish_key(self) -> Path:
        return self.aggregator / "publish.key"

    @property
    def publish_pub(self) -> Path:
        return self.aggregator / "publish.pub"

    @property
    def allow_list(self) -> Path:
        return self.aggregator / "allow_list.json"

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    @property
    def ca_cert(self) -> Path:
        return self.tls / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.tls / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.tls / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.tls / "server.key"

    def client(self, client_id: str) -> ClientKeyPaths:
        return ClientKeyPaths(self.root / "clients" / check_client_id(client_id))

    def client_ids(self) -> list[str]:
        base = self.root / "clients"
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
