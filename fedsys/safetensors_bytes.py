"""safetensors files whose bytes depend only on their content.

safetensors writes a file's ``__metadata__`` map in a per-process random order (a Rust
hash map), so the same tensors and metadata give different file hashes from run to run.
Reproducible artifacts (the final model, the registry's copies, checkpoints) go through
``canonical`` below, which rewrites the header's JSON with the metadata keys sorted. This is
the only hand-written part of the format here: the header is re-serialized to the very same
length (same keys and values, compact separators), so every tensor offset stays valid; when
that cannot be guaranteed the blob is returned unchanged.
"""

from __future__ import annotations

import json

_LENGTH_BYTES = 8


def canonical(blob: bytes) -> bytes:
    """``blob`` with its ``__metadata__`` keys in sorted order (tensors untouched)."""
    size = int.from_bytes(blob[:_LENGTH_BYTES], "little")
    raw = blob[_LENGTH_BYTES : _LENGTH_BYTES + size]
    header = json.loads(raw)
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or len(metadata) < 2:
        return blob
    header["__metadata__"] = dict(sorted(metadata.items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) != len(raw.rstrip(b" ")):
        return blob
    return blob[:_LENGTH_BYTES] + text.ljust(size, b" ") + blob[_LENGTH_BYTES + size :]
