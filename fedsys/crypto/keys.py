"""Key material: generate, encode, and store Ed25519 (signing) and X25519 (encryption) keys.

Private keys are PKCS#8 PEM files written atomically with mode 0600 and refused on load when
group or others can read them (as ssh does). Public keys travel as 32 raw bytes; the
aggregator's allow-list is a JSON object mapping client id to the hex of its Ed25519 key.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fedsys.errors import KeyFileError

PrivateKey = Ed25519PrivateKey | X25519PrivateKey
PublicKey = Ed25519PublicKey | X25519PublicKey
K = TypeVar("K", Ed25519PrivateKey, X25519PrivateKey)


@dataclass(frozen=True)
class ClientKeys:
    """What a client needs to seal updates: its identity, its signing key, the server's key."""

    client_id: str
    signing_key: Ed25519PrivateKey
    aggregator_key: X25519PublicKey


@dataclass(frozen=True)
class AggregatorKeys:
    """What the aggregator needs to open updates: its X25519 key and the clients it trusts."""

    exchange_key: X25519PrivateKey
    allow_list: Mapping[str, Ed25519PublicKey]


def generate_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def generate_exchange_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def private_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _from_pem(data: bytes, kind: type[K]) -> K:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, kind):
        raise KeyFileError(f"expected an {kind.__name__}, found a {type(key).__name__}")
    return key


def signing_key_from_pem(data: bytes) -> Ed25519PrivateKey:
    """Parse an unencrypted PKCS#8 PEM Ed25519 key."""
    return _from_pem(data, Ed25519PrivateKey)  # type: ignore[type-abstract]


def exchange_key_from_pem(data: bytes) -> X25519PrivateKey:
    """Parse an unencrypted PKCS#8 PEM X25519 key."""
    return _from_pem(data, X25519PrivateKey)  # type: ignore[type-abstract]


def public_to_raw(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def signing_public_from_raw(raw: bytes) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise KeyFileError(f"an Ed25519 public key is 32 bytes, got {len(raw)}") from None


def exchange_public_from_raw(raw: bytes) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise KeyFileError(f"an X25519 public key is 32 bytes, got {len(raw)}") from None


def _write_atomic(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    path = Path(path)
    if path.exists() and not overwrite:
        raise KeyFileError(f"{path} exists; refusing to overwrite a key file")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_private_key(path: Path, key: PrivateKey, *, overwrite: bool = False) -> None:
    """PEM file readable by the owner only (0600), replaced atomically."""
    _write_atomic(Path(path), private_to_pem(key), 0o600, overwrite)


def _read_private(path: Path) -> bytes:
    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path} is accessible by group or others; run chmod 600 {path}")
    return data


def read_signing_key(path: Path) -> Ed25519PrivateKey:
    """Load a client's Ed25519 key; refuse files that group or others can access."""
    return signing_key_from_pem(_read_private(path))


def read_exchange_key(path: Path) -> X25519PrivateKey:
    """Load the aggregator's X25519 key; refuse files that group or others can access."""
    return exchange_key_from_pem(_read_private(path))


def write_secret_file(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Any other secret (a TLS or SSH private key): owner-only (0600), replaced atomically."""
    _write_atomic(Path(path), data, 0o600, overwrite)


def read_secret_file(path: Path) -> bytes:
    """A secret's bytes; refused when group or others can access the file."""
    return _read_private(Path(path))


def write_public_key(path: Path, key: PublicKey, *, overwrite: bool = False) -> None:
    """The raw public key as hex plus a newline (readable by everyone)."""
    _write_atomic(Path(path), public_to_raw(key).hex().encode() + b"\n", 0o644, overwrite)


def read_exchange_public_key(path: Path) -> X25519PublicKey:
    """The aggregator's X25519 public key written by :func:`write_public_key`."""
    try:
        raw = bytes.fromhex(Path(path).read_text().strip())
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc}") from None
    return exchange_public_from_raw(raw)


def save_allow_list(path: Path, allow_list: Mapping[str, Ed25519PublicKey]) -> None:
    data = {cid: public_to_raw(key).hex() for cid, key in sorted(allow_list.items())}
    _write_atomic(Path(path), json.dumps(data, indent=2).encode() + b"\n", 0o644, True)


def load_allow_list(path: Path) -> dict[str, Ed25519PublicKey]:
    """``{"client id": "<64 hex chars>"}`` → client id → Ed25519 public key."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read allow-list {path}: {exc}") from None
    if not isinstance(data, dict):
        raise KeyFileError(f"allow-list {path} must be a JSON object")
    out: dict[str, Ed25519PublicKey] = {}
    for cid, value in data.items():
        try:
            raw = bytes.fromhex(value)
        except (TypeError, ValueError):
            raise KeyFileError(f"allow-list {path}: key of {cid!r} is not hex") from None
        out[cid] = signing_public_from_raw(raw)
    return out


def signing_public_to_pem(key: Ed25519PublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM (what ``publisher.pub`` in a model registry holds)."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def signing_public_from_bytes(data: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key given as PEM, as 32 raw bytes, or as 64 hex characters."""
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise KeyFileError(f"not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"expected an Ed25519 public key, found a {type(key).__name__}")
        return key
    if len(data) == 32:
        return signing_public_from_raw(data)
    try:
        raw = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise KeyFileError("an Ed25519 public key must be PEM, 32 raw bytes or hex") from None
    return signing_public_from_raw(raw)


def load_signing_public_key(path: Path) -> Ed25519PublicKey:
    """Read an Ed25519 public key file in any form :func:`signing_public_from_bytes` takes."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc.strerror}") from None
    try:
        return signing_public_from_bytes(data)
    except KeyFileError as exc:
        raise KeyFileError(f"{path}: {exc}") from None


def write_signing_public_pem(path: Path, key: Ed25519PublicKey, *, overwrite: bool = False) -> None:
    """The public half as PEM, readable by everyone, written atomically."""
    _write_atomic(Path(path), signing_public_to_pem(key), 0o644, overwrite)
