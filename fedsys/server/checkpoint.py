"""Atomic per-round checkpoints: global model, strategy state, round and RNG state, one file.

Everything sits in a single safetensors file (arrays) whose metadata holds the JSON state, so
a checkpoint is replaced with one ``os.replace``: a run killed at any instant leaves either the
previous round's checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save

from fedsys.errors import CheckpointError
from fedsys.fsio import atomic_write_bytes
from fedsys.safetensors_bytes import canonical

CHECKPOINT_FILE = "checkpoint.safetensors"
FORMAT_VERSION = 1
_MODEL = "model/"
_STRATEGY = "strategy/"
_DEFENSE = "defense/"


@dataclass
class Checkpoint:
    """The state needed to continue a run exactly where it stopped."""

    round: int
    model: dict[str, np.ndarray]
    strategy_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    strategy_state: dict[str, Any] = field(default_factory=dict)
    rng_state: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    defense_arrays: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. payload digests


def save_checkpoint(directory: Path, ckpt: Checkpoint) -> Path:
    """Atomically replace ``directory/checkpoint.safetensors``."""
    tensors = {f"{_MODEL}{k}": np.require(v, requirements="C") for k, v in ckpt.model.items()}
    tensors.update(
        {
            f"{_STRATEGY}{k}": np.require(v, requirements="C")
            for k, v in ckpt.strategy_arrays.items()
        }
    )
    tensors.update(
        {f"{_DEFENSE}{k}": np.require(v, requirements="C") for k, v in ckpt.defense_arrays.items()}
    )
    metadata = {
        "format": str(FORMAT_VERSION),
        "round": str(ckpt.round),
        "strategy_state": json.dumps(ckpt.strategy_state),
        "rng_state": json.dumps(ckpt.rng_state),
        "extra": json.dumps(ckpt.extra),
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_FILE
    atomic_write_bytes(path, canonical(save(tensors, metadata=metadata)))
    return path


def load_checkpoint(directory: Path) -> Checkpoint:
    """Read the checkpoint in ``directory``; CheckpointError if missing or unreadable."""
    path = directory / CHECKPOINT_FILE
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"no checkpoint at {path}: {exc.strerror}") from None
    try:
        tensors = load(data)
        metadata = _read_metadata(data)
        if metadata.get("format") != str(FORMAT_VERSION):
            raise CheckpointError(f"{path}: unsupported checkpoint format {metadata.get('format')}")
        return Checkpoint(
            round=int(metadata["round"]),
            model={k[len(_MODEL) :]: v for k, v in tensors.items() if k.startswith(_MODEL)},
            strategy_arrays={
                k[len(_STRATEGY) :]: v for k, v in tensors.items() if k.startswith(_STRATEGY)
            },
            defense_arrays={
                k[len(_DEFENSE) :]: v for k, v in tensors.items() if k.startswith(_DEFENSE)
            },
            strategy_state=json.loads(metadata["strategy_state"]),
            rng_state=json.loads(metadata["rng_state"]),
            extra=json.loads(metadata["extra"]),
        )
    except (SafetensorError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupt: {exc}") from None


def _read_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob (its header is 8-byte length + JSON)."""
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict):
        raise ValueError("metadata is not a mapping")
    return {str(k): str(v) for k, v in meta.items()}
