"""A client played by whichever node of a pool is free (``fedsys.server.node_pool``).

In a pooled simulation one client may run on a different Flower node every time it is
sampled, so what must stay the client's own cannot live in a node's ``context.state``: its
update-signing key must be the same on every node (the server trusts the first key it sees
for a client, so a fresh key on another node would get its updates refused), and its updates
are bound to the stable virtual node id the server names in the message, not to the Flower
node that happens to run it.

The signing keys are derived, not stored one per client: one random secret per run in the
node-state directory (``<dir>/<run id>/pooled-clients.secret``, 0600, made once by whichever
node needs it first) and HKDF-SHA256 over it with the client's name gives that client's
Ed25519 key. A client sampled for the first time then costs a read and a derivation (tens of
microseconds) instead of a key file written and synced to disk (milliseconds, on every one of
a large population's clients); the secret sits where the per-client key files did, readable
by the same owner only, so who can sign as a client is unchanged.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flwr.app import Context

from fedsys.crypto.keys import private_to_pem, read_secret_file
from fedsys.errors import KeyFileError
from fedsys.protocol import BINDING_NODE_KEY

SECRET_FILE = "pooled-clients.secret"
SECRET_BYTES = 32
_KEY_INFO = b"fedsys pooled client signing key v1\x00"


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
    """The client's Ed25519 key (PEM) for this run: the same on every node of the pool."""
    return _derived_key(run_secret(Path(state_dir) / str(run_id)), client_id)


@lru_cache(maxsize=4096)
def _derived_key(secret: bytes, client_id: str) -> bytes:
    """HKDF-SHA256(secret, label + client id) as an Ed25519 key, PEM; memoised, since a
    client's every message signs with it and asks for it twice (update and introduction)."""
    seed = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=_KEY_INFO + client_id.encode(),
    ).derive(secret)
    return private_to_pem(Ed25519PrivateKey.from_private_bytes(seed))


def run_secret(run_dir: Path) -> bytes:
    """The run's key-derivation secret, made on first use (file mode 0600).

    Several pool nodes (Ray workers) may ask at once: the secret is written whole to a
    temporary file and then linked into place, which fails if another node linked first, so
    every node ends up with the one secret on disk."""
    path = run_dir / SECRET_FILE
    try:
        return _checked(path, read_secret_file(path))
    except KeyFileError:
        if path.exists():
            raise
    run_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=f".{SECRET_FILE}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(os.urandom(SECRET_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another node made it first: use theirs
            os.link(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return _checked(path, read_secret_file(path))


def _checked(path: Path, secret: bytes) -> bytes:
    if len(secret) != SECRET_BYTES:
        raise KeyFileError(f"{path} holds {len(secret)} bytes, not a {SECRET_BYTES}-byte secret")
    return secret
