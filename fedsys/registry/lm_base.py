"""The base of a language-model version: where its Hugging Face directory is, and the
sha256 that proves a loaded base is the one the version was trained on.

The digest runs over every tensor of the state dict in name order (name, dtype, shape, raw
bytes), so it does not depend on how the safetensors file was written.

A run stores its base in the registry once, content-addressed (``bases/<address>/``, a
sha256 the task computes over the weights' sha256 and the tokenizer's files), and its
versions name it by that relative path: a registry copied elsewhere still serves, and a base
directory that is later overwritten (another ``fedsys pretrain``) cannot change what a
version means.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from fedsys.errors import ArtifactRejected

BASES_DIR = "bases"


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


def store_base(registry_root: Path, address: str, write: Callable[[Path], None]) -> str:
    """``bases/<address>`` under the registry (what a version's ``base`` names), written by
    ``write`` into a hidden directory and renamed into place the first time only."""
    if len(address) != 64 or any(c not in "0123456789abcdef" for c in address):
        raise ArtifactRejected(f"base address {address!r} is not 64 lowercase hex digits")
    relative = f"{BASES_DIR}/{address}"
    final = Path(registry_root) / relative
    if (final / "config.json").is_file():
        return relative
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{uuid.uuid4().hex}"
    try:
        write(tmp)
        if not (tmp / "config.json").is_file():
            raise ArtifactRejected(f"the base written for {address[:12]}... has no config.json")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "config.json").is_file():  # not another writer's same base
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return relative
