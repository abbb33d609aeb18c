"""Per-round key agreement (X25519 + HKDF-SHA256) and the share channel (ChaCha20-Poly1305).

Every client makes two fresh X25519 key pairs per round, as in Bell et al.: ``c`` keys encrypt
the shares sent to a neighbour through the server, ``s`` keys derive the pairwise masks. They
must differ: the server may learn a dropped client's ``s`` key (to remove its masks), which must
not open the shares that client exchanged. Every derivation binds run, round and both node ids.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedsys.errors import SecAggError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16


@dataclass(frozen=True)
class Binding:
    """What every secure-aggregation secret of one round is bound to."""

    run_id: int
    round: int

    def label(self, purpose: bytes, *nodes: int) -> bytes:
        ids = b"".join(struct.pack(">Q", n) for n in nodes)
        return b"fedsys-secagg/" + purpose + struct.pack(">QQ", self.run_id, self.round) + ids


def new_private() -> bytes:
    """A fresh X25519 private key, raw 32 bytes (what is Shamir-shared for ``s`` keys)."""
    return os.urandom(KEY_BYTES)


def public_of(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def _agree(private: bytes, peer_public: bytes, info: bytes) -> bytes:
    if len(peer_public) != KEY_BYTES:
        raise SecAggError(f"public key must be {KEY_BYTES} bytes, got {len(peer_public)}")
    try:
        shared = X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(peer_public)
        )
    except ValueError as exc:  # e.g. a low-order point gives an all-zero secret
        raise SecAggError(f"key agreement failed: {exc}") from None
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(shared)


def pair_mask_key(
    binding: Binding, private: bytes, me: int, peer: int, peer_public: bytes
) -> bytes:
    """The ChaCha20 key of the mask shared by ``me`` and ``peer`` (the same from both ends)."""
    lo, hi = sorted((me, peer))
    return _agree(private, peer_public, binding.label(b"mask", lo, hi))


def self_mask_key(binding: Binding, seed: bytes, node: int) -> bytes:
    """The ChaCha20 key of a node's self-mask, from its shared seed ``b``."""
    return HKDF(
        algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=binding.label(b"self", node)
    ).derive(seed)


def seal_share(
    binding: Binding, private: bytes, src: int, dst: int, dst_public: bytes, plaintext: bytes
) -> bytes:
    """Encrypt ``plaintext`` from ``src`` to ``dst``; the server relays it but cannot read it."""
    lo, hi = sorted((src, dst))
    key = _agree(private, dst_public, binding.label(b"channel", lo, hi))
    nonce = os.urandom(NONCE_BYTES)
    aad = binding.label(b"share", src, dst)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)


def open_share(
    binding: Binding, private: bytes, src: int, dst: int, src_public: bytes, sealed: bytes
) -> bytes:
    """Decrypt a share sealed by ``src`` for ``dst``; SecAggError if it is not authentic."""
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise SecAggError(f"share from node {src} is truncated ({len(sealed)} bytes)")
    lo, hi = sorted((src, dst))
    key = _agree(private, src_public, binding.label(b"channel", lo, hi))
    try:
        return ChaCha20Poly1305(key).decrypt(
            sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], binding.label(b"share", src, dst)
        )
    except InvalidTag:
        raise SecAggError(f"share from node {src} failed authentication") from None
