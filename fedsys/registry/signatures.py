"""The publisher's Ed25519 signature over a manifest's canonical bytes.

The publisher signs the exact bytes written to ``manifest.json``; readers verify those
bytes before they parse or use anything else.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedsys.errors import ArtifactRejected
from fedsys.registry.version_manifest import ModelManifest, canonical_bytes, parse_manifest

SIGNATURE_BYTES = 64


def sign_manifest(m: ModelManifest, key: Ed25519PrivateKey) -> tuple[bytes, bytes]:
    """``(manifest.json bytes, 64-byte signature over them)``."""
    data = canonical_bytes(m)
    return data, key.sign(data)


def verify_manifest(data: bytes, signature: bytes, trusted: Ed25519PublicKey) -> ModelManifest:
    """Check the signature over ``data`` first, then the schema; ArtifactRejected otherwise."""
    if len(signature) != SIGNATURE_BYTES:
        raise ArtifactRejected(
            f"manifest signature must be {SIGNATURE_BYTES} bytes, got {len(signature)}"
        )
    try:
        trusted.verify(signature, data)
    except InvalidSignature:
        raise ArtifactRejected(
            "manifest signature does not verify under the trusted publisher key"
        ) from None
    return parse_manifest(data)
