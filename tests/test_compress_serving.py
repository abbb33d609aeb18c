"""Compressed variants on the endpoint: picked per request or by default, listed, and
hot-swapped with their version like any other artifact."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from serving_support import NAME, make_registry, publish, reference_predictions, samples, settings

from fedsys.compress.job import compress_version
from fedsys.config import build_config
from fedsys.registry.store import Registry
from fedsys.registry.variants import read_variant, variant_module
from fedsys.serving.endpoint import create_app

PREDICT = f"/v1/models/{NAME}:predict"
CFG = build_config(
    {},
    [
        "compress.enabled=true",
        "compress.variants=[int8,pruned]",
        "compress.accuracy_budget=1.0",  # random weights: every variant is accepted
        "compress.finetune_epochs=1",
        "compress.latency_repeats=1",
        "compress.calibration_samples=64",
    ],
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _predict(client: TestClient, x: np.ndarray, variant: str | None = None) -> dict[str, Any]:
    params = {} if variant is None else {"variant": variant}
    resp = client.post(PREDICT, json={"instances": x.tolist()}, params=params)
    assert resp.status_code == 200, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


def test_variants_are_served_listed_and_hot_swapped(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    key = make_registry(root, seeds=(1,))
    registry = Registry(root)
    compress_version(registry, NAME, 1, CFG, key)
    x = samples(6)
    with TestClient(create_app(settings(root, default_variant="pruned"))) as client:
        answer = _predict(client, x)
        assert (answer["version"], answer["variant"]) == (1, "pruned")
        assert _predict(client, x, "fp32")["predictions"] == reference_predictions(1, x).tolist()
        manifest, weights = read_variant(
            registry.version_dir(NAME, 1),
            "int8",
            key.public_key(),
            name=NAME,
            version=1,
            base_weights_sha256=registry.versions(NAME)[0].weights_sha256,
        )
        with torch.inference_mode():
            expected = variant_module(manifest, weights)(torch.from_numpy(x)).argmax(1)
        assert _predict(client, x, "int8")["predictions"] == expected.tolist()
        missing = client.post(
            PREDICT, json={"instances": x.tolist()}, params={"variant": "lowrank"}
        )
        assert missing.status_code == 404 and "pruned" in missing.text

        listing = client.get(f"/v1/models/{NAME}").json()
        assert listing["served_variants"] == ["fp32", "int8", "pruned"]
        listed = {v["variant"]: v for v in listing["variants"]["1"]}
        assert listed["pruned"]["model"]["channels"] == 2
        assert listed["int8"]["metrics"]["bytes"] == len(weights)

        # A new version swaps in at once (fp32: its variants do not exist yet) ...
        publish(registry, key, seed=2)
        _wait_for(lambda: _predict(client, x)["version"] == 2, "v2 to be served")
        assert _predict(client, x)["variant"] == "fp32"
        # ... and its variants join it as soon as they are signed into the version.
        compress_version(registry, NAME, 2, CFG, key)
        _wait_for(lambda: _predict(client, x)["variant"] == "pruned", "v2's variants")
        assert _predict(client, x, "int8")["version"] == 2
