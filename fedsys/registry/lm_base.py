"""The base of a language-model version: where its Hugging Face directory is, and the
sha256 that proves a loaded base is the one the version was trained on.

The digest runs over every tensor of the state dict in name order (name, dtype, shape, raw
bytes), so it does not depend on how the safetensors file was written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch

from fedsys.errors import ArtifactRejected


def tensors_sha256(state: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def base_directory(registry_root: Path, base: str) -> Path:
    """``base`` as a directory: absolute, or relative to the registry root."""
    path = Path(base)
    path = path if path.is_absolute() else Path(registry_root) / path
    if not (path / "config.json").is_file():
        raise ArtifactRejected(f"base {base!r} is not a Hugging Face model directory at {path}")
    return path
