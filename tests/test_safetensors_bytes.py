"""Reproducible safetensors bytes: the header's metadata in one order whatever the process."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from safetensors.numpy import load, save

from fedsys.safetensors_bytes import canonical

_SAVE_IN_A_FRESH_PROCESS = """
import sys
import numpy as np
from safetensors.numpy import save
from fedsys.safetensors_bytes import canonical
blob = save({"w": np.arange(6, dtype=np.float32)}, metadata={"round": "3", "model": "cnn"})
sys.stdout.write(canonical(blob).hex())
"""


def _header(blob: bytes) -> dict[str, object]:
    size = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + size])  # type: ignore[no-any-return]


def test_metadata_keys_come_out_sorted_and_tensors_still_load() -> None:
    tensors = {"b": np.ones(3, np.float32), "a": np.arange(4, dtype=np.int64)}
    blob = canonical(save(tensors, metadata={"zeta": "1", "alpha": "2", "mid": "x"}))
    metadata = _header(blob)["__metadata__"]
    assert isinstance(metadata, dict)
    assert list(metadata) == ["alpha", "mid", "zeta"]
    loaded = load(blob)
    np.testing.assert_array_equal(loaded["a"], tensors["a"])
    np.testing.assert_array_equal(loaded["b"], tensors["b"])


def test_the_same_content_gives_the_same_bytes_in_separate_processes() -> None:
    outputs = {
        subprocess.run(
            [sys.executable, "-c", _SAVE_IN_A_FRESH_PROCESS],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for _ in range(6)
    }
    assert len(outputs) == 1


def test_a_blob_without_metadata_is_left_alone() -> None:
    blob = save({"w": np.zeros(2, np.float32)})
    assert canonical(blob) == blob
