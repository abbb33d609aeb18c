"""Variants in the registry: signed beside their version, bound to it, refused when altered."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from serving_support import NAME, make_registry

from fedsys.compress.job import compress_version
from fedsys.config import build_config
from fedsys.errors import ArtifactRejected
from fedsys.registry.store import Registry
from fedsys.registry.variants import (
    VARIANT_WEIGHTS,
    read_variant,
    variant_module,
    variant_names,
)

FAST = [
    "compress.enabled=true",
    "compress.variants=[int8,pruned]",
    "compress.finetune_epochs=1",
    "compress.latency_repeats=1",
    "compress.calibration_samples=64",
]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_accepted_variants_are_signed_into_the_version_and_verified(tmp_path: Path) -> None:
    key = make_registry(tmp_path / "reg", seeds=(1, 2))
    registry = Registry(tmp_path / "reg")
    cfg = build_config({}, [*FAST, "compress.accuracy_budget=1.0"])
    outcome = compress_version(registry, NAME, None, cfg, key)
    assert outcome.version == 2 and outcome.published == ("int8", "pruned")
    vdir = registry.version_dir(NAME, 2)
    assert variant_names(vdir) == ["int8", "pruned"]
    base = registry.versions(NAME)[1].weights_sha256
    manifest, weights = read_variant(
        vdir, "pruned", key.public_key(), name=NAME, version=2, base_weights_sha256=base
    )
    assert manifest.model["channels"] == 2 and manifest.metrics["bytes"] == len(weights)
    assert {"accuracy", "latency_p50_ms", "fp32_accuracy", "accuracy_loss"} <= set(manifest.metrics)
    module = variant_module(manifest, weights)
    assert module(torch.zeros(3, 40)).shape == (3, 10)

    # Bound to its version: the same files under v1 are refused, and so is an altered file.
    other = registry.versions(NAME)[0].weights_sha256
    with pytest.raises(ArtifactRejected, match="not tiny v1"):
        read_variant(
            vdir, "pruned", key.public_key(), name=NAME, version=1, base_weights_sha256=other
        )
    path = vdir / "variants" / "pruned" / VARIANT_WEIGHTS
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ArtifactRejected, match="sha256 mismatch"):
        read_variant(
            vdir, "pruned", key.public_key(), name=NAME, version=2, base_weights_sha256=base
        )


def test_a_variant_over_budget_is_not_published(tmp_path: Path) -> None:
    key = make_registry(tmp_path / "reg")
    registry = Registry(tmp_path / "reg")
    # Random weights score about 10%; a budget below zero refuses anything not strictly better.
    cfg = build_config(
        {}, [*FAST, "compress.variants=[pruned]", "compress.accuracy_budget=0.0",
             "compress.prune_fraction=0.75", "compress.finetune_epochs=0"]
    )  # fmt: skip
    outcome = compress_version(registry, NAME, 1, cfg, key)
    (pruned,) = outcome.report.variants
    if pruned.refused is None:  # the rare draw where pruning loses nothing
        pytest.skip("pruning random weights lost no accuracy")
    assert outcome.published == ()
    assert variant_names(registry.version_dir(NAME, 1)) == []
