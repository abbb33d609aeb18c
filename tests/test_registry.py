"""The signed model registry: round trip, refusal of tampered or unsigned artifacts,
unknown names, rollback, atomic versions, and the int8 serving copy."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from torch import nn

from fedsys.config import ModelConfig
from fedsys.crypto.keys import (
    generate_signing_key,
    load_signing_public_key,
    public_to_raw,
    signing_public_to_pem,
)
from fedsys.data.types import DatasetInfo
from fedsys.errors import ArtifactRejected, UnknownArtifact, VersionConflict
from fedsys.models import build_model
from fedsys.registry import AuditLog, Lineage, ModelManifest, Registry, canonical_bytes
from fedsys.registry import store as registry_module
from fedsys.registry.int8_copy import compare_int8, int8_from_bytes, int8_to_bytes, quantize_int8

INFO = DatasetInfo((12,), 3)
MODEL = ModelConfig(name="mlp", hidden=[16])
LINEAGE = Lineage(clients=2, strategy="fedavg", codec={"quantize": "none"}, run_id="7")


def _weights(seed: int) -> dict[str, np.ndarray]:
    torch.manual_seed(seed)
    module = build_model(MODEL, INFO)
    return {k: v.numpy() for k, v in module.state_dict().items()}


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return generate_signing_key()


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "reg", audit=AuditLog(tmp_path / "reg" / "audit.jsonl"))


def _publish(reg: Registry, key: Ed25519PrivateKey, seed: int = 0, **kw: Any) -> ModelManifest:
    return reg.publish(
        "m",
        _weights(seed),
        model=MODEL.model_dump(mode="json"),
        input_shape=INFO.input_shape,
        num_classes=INFO.num_classes,
        round=seed + 1,
        metrics={"accuracy": 0.5 + seed / 100, "loss": 1.0},
        lineage=LINEAGE,
        signing_key=key,
        **kw,
    )


def _vdir(reg: Registry, version: int) -> Path:
    return reg.root / "m" / "versions" / str(version)


def _events(reg: Registry) -> list[str]:
    assert reg.audit is not None
    return [e["event"] for e in reg.audit.read()]


def test_publish_then_load_round_trip(reg: Registry, key: Ed25519PrivateKey) -> None:
    m1 = _publish(reg, key, seed=0)
    m2 = _publish(reg, key, seed=1)
    assert (m1.version, m2.version, m2.previous_version) == (1, 2, 1)
    assert reg.models() == ["m"] and reg.active_version("m") == 2
    assert [m.version for m in reg.versions("m", trusted=key.public_key())] == [1, 2]
    loaded = reg.load("m", 1, key.public_key())
    assert loaded.manifest == m1 and not loaded.module.training
    for k, v in _weights(0).items():
        np.testing.assert_array_equal(loaded.module.state_dict()[k].numpy(), v)
    # the signed bytes are the canonical ones, and the manifest says how it was made
    assert (_vdir(reg, 1) / "manifest.json").read_bytes() == canonical_bytes(m1)
    assert m1.lineage.clients == 2 and m1.metrics["accuracy"] == 0.5
    assert _events(reg) == ["publish", "activate", "publish", "activate"]


def test_active_marker_moves_with_the_pointer(reg: Registry, key: Ed25519PrivateKey) -> None:
    assert reg.read_active_marker("m") == (None, 0)
    _publish(reg, key, seed=0)
    first = reg.read_active_marker("m")
    _publish(reg, key, seed=1)
    second = reg.read_active_marker("m")
    assert first[0] == 1 and second[0] == 2 and second != first


def test_tampered_weights_are_refused_and_the_old_version_stays(
    reg: Registry, key: Ed25519PrivateKey
) -> None:
    _publish(reg, key, seed=0)
    _publish(reg, key, seed=1, activate=False)
    path = _vdir(reg, 2) / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one bit in the last weight
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactRejected, match="sha256 mismatch"):
        reg.activate("m", 2, key.public_key())
    with pytest.raises(ArtifactRejected, match="sha256 mismatch"):
        reg.load("m", 2, key.public_key())
    assert reg.active_version("m") == 1
    assert reg.load("m", 1, key.public_key()).manifest.version == 1
    assert _events(reg)[-1] == "refused"


def test_add_signed_refuses_tampered_weights_without_a_trace(
    reg: Registry, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    _publish(reg, key, seed=0)
    other = Registry(tmp_path / "other")
    m = _publish(other, key, seed=1)
    vdir = other.root / "m" / "versions" / "1"
    manifest, sig, weights = (
        (vdir / f).read_bytes() for f in ("manifest.json", "manifest.sig", "model.safetensors")
    )
    bad = bytearray(weights)
    bad[len(bad) // 2] ^= 0xFF
    with pytest.raises(ArtifactRejected, match="sha256"):
        reg.add_signed("m", manifest, sig, bytes(bad), key.public_key())
    assert reg.version_numbers("m") == [1] and reg.active_version("m") == 1
    # the genuine artifact is accepted (its version 1 is not newer than ours, so re-sign as 2)
    with pytest.raises(VersionConflict):
        reg.add_signed("m", manifest, sig, weights, key.public_key())
    m2 = m.model_copy(update={"version": 2})
    data = canonical_bytes(m2)
    added = reg.add_signed("m", data, key.sign(data), weights, key.public_key())
    assert added.version == 2 and reg.active_version("m") == 2


def test_wrong_signature_and_unsigned_are_refused(
    reg: Registry, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    _publish(reg, key, seed=0)
    vdir = _vdir(reg, 1)
    manifest = (vdir / "manifest.json").read_bytes()
    weights = (vdir / "model.safetensors").read_bytes()
    m2 = ModelManifest.model_validate_json(manifest).model_copy(update={"version": 2})
    data = canonical_bytes(m2)
    stranger = generate_signing_key()
    with pytest.raises(ArtifactRejected, match="does not verify"):
        reg.add_signed("m", data, stranger.sign(data), weights, key.public_key())
    with pytest.raises(ArtifactRejected, match="64 bytes"):
        reg.add_signed("m", data, b"", weights, key.public_key())
    # a signed manifest edited afterwards (better metrics) no longer verifies
    edited = data.replace(b'"accuracy": 0.5', b'"accuracy": 0.99')
    assert edited != data
    with pytest.raises(ArtifactRejected, match="does not verify"):
        reg.add_signed("m", edited, key.sign(data), weights, key.public_key())
    # a stored version is checked against the trusted key, and its signature must exist
    with pytest.raises(ArtifactRejected, match="does not verify"):
        reg.load("m", 1, stranger.public_key())
    (vdir / "manifest.sig").unlink()
    with pytest.raises(ArtifactRejected, match=r"manifest\.sig is missing"):
        reg.load("m", 1, key.public_key())
    assert reg.version_numbers("m") == [1]


def test_a_signed_manifest_cannot_be_replayed_as_another_version(
    reg: Registry, key: Ed25519PrivateKey
) -> None:
    _publish(reg, key, seed=0)
    shutil.copytree(_vdir(reg, 1), _vdir(reg, 5))
    with pytest.raises(ArtifactRejected, match="claims to be v1"):
        reg.activate("m", 5, key.public_key())
    assert reg.active_version("m") == 1


def test_malformed_manifest_and_names(reg: Registry, key: Ed25519PrivateKey) -> None:
    _publish(reg, key, seed=0)
    weights = (_vdir(reg, 1) / "model.safetensors").read_bytes()
    raw = json.loads((_vdir(reg, 1) / "manifest.json").read_bytes())
    raw.update(version=2, surprise=True)
    data = json.dumps(raw).encode()
    with pytest.raises(ArtifactRejected, match="malformed manifest: surprise"):
        reg.add_signed("m", data, key.sign(data), weights, key.public_key())
    raw.pop("surprise")
    raw["name"] = "other"
    data = json.dumps(raw).encode()
    with pytest.raises(ArtifactRejected, match="for model 'other'"):
        reg.add_signed("m", data, key.sign(data), weights, key.public_key())
    for bad in ("..", "a/b", ""):
        with pytest.raises(ArtifactRejected, match="invalid model name"):
            reg.load(bad, 1, key.public_key())


def test_weights_that_do_not_fit_the_model_are_refused(
    reg: Registry, key: Ed25519PrivateKey
) -> None:
    m1 = _publish(reg, key, seed=0)
    from safetensors.numpy import save

    wrong = save({"0.weight": np.zeros((3, 3), np.float32)})
    m2 = m1.model_copy(update={"version": 2, "weights_sha256": registry_module.sha256_hex(wrong)})
    data = canonical_bytes(m2)
    with pytest.raises(ArtifactRejected, match="do not fit"):
        reg.add_signed("m", data, key.sign(data), wrong, key.public_key())
    assert reg.version_numbers("m") == [1]


def test_unknown_model_and_version(reg: Registry, key: Ed25519PrivateKey) -> None:
    _publish(reg, key, seed=0)
    with pytest.raises(UnknownArtifact, match="unknown model 'nope'"):
        reg.load("nope", 1, key.public_key())
    with pytest.raises(UnknownArtifact, match="unknown version m v9"):
        reg.load("m", 9, key.public_key())
    with pytest.raises(UnknownArtifact):
        reg.versions("nope")
    with pytest.raises(UnknownArtifact):
        reg.rollback("nope", key.public_key())
    assert reg.active_version("nope") is None


def test_rollback_restores_the_previous_version(reg: Registry, key: Ed25519PrivateKey) -> None:
    for seed in range(3):
        _publish(reg, key, seed=seed)
    assert reg.active_version("m") == 3
    assert reg.rollback("m", key.public_key()).version == 2
    assert reg.active_version("m") == 2
    served = reg.load("m", reg.active_version("m") or 0, key.public_key())
    for k, v in _weights(1).items():
        np.testing.assert_array_equal(served.module.state_dict()[k].numpy(), v)
    assert reg.rollback("m", key.public_key()).version == 1
    with pytest.raises(ArtifactRejected, match="no older version"):
        reg.rollback("m", key.public_key())
    assert reg.active_version("m") == 1
    assert _events(reg).count("rollback") == 2


def test_rollback_refuses_a_tampered_previous_version(
    reg: Registry, key: Ed25519PrivateKey
) -> None:
    _publish(reg, key, seed=0)
    _publish(reg, key, seed=1)
    (_vdir(reg, 1) / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ArtifactRejected, match="sha256"):
        reg.rollback("m", key.public_key())
    assert reg.active_version("m") == 2


def test_a_failed_rename_leaves_no_partial_version(
    reg: Registry, key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    _publish(reg, key, seed=0)

    def crash(src: object, dst: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError, match="disk gone"):
        _publish(reg, key, seed=1)
    versions_dir = reg.root / "m" / "versions"
    assert sorted(p.name for p in versions_dir.iterdir()) == ["1"]  # temp dir cleaned up
    assert reg.version_numbers("m") == [1] and reg.active_version("m") == 1

    # a crash that also skips the clean-up (kill -9) leaves a hidden dir nobody lists
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: None)
    with pytest.raises(OSError):
        _publish(reg, key, seed=1)
    assert any(p.name.startswith(".tmp-") for p in versions_dir.iterdir())
    assert reg.version_numbers("m") == [1]
    assert [m.version for m in reg.versions("m")] == [1]

    monkeypatch.undo()
    assert _publish(reg, key, seed=1).version == 2
    assert reg.load("m", 2, key.public_key()).manifest.round == 2


def test_existing_version_is_never_overwritten(reg: Registry, key: Ed25519PrivateKey) -> None:
    _publish(reg, key, seed=0)
    before = (_vdir(reg, 1) / "model.safetensors").read_bytes()
    with pytest.raises(VersionConflict, match="already exists"):
        _publish(reg, key, seed=1, version=1)
    assert (_vdir(reg, 1) / "model.safetensors").read_bytes() == before


def test_publisher_key_file_forms(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    public = key.public_key()
    raw = public_to_raw(public)
    for i, data in enumerate([signing_public_to_pem(public), raw, raw.hex().encode() + b"\n"]):
        path = tmp_path / f"k{i}"
        path.write_bytes(data)
        assert public_to_raw(load_signing_public_key(path)) == raw


# -- the int8 serving copy --------------------------------------------------------------


QINFO = DatasetInfo((64,), 4)
Trained = tuple[nn.Module, torch.Tensor, torch.Tensor]
QMODEL = ModelConfig(name="mlp", hidden=[128])


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian clusters around fixed centers; ``seed`` draws the samples only."""
    centers = torch.randn(4, 64, generator=torch.Generator().manual_seed(0)) * 0.5
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=gen)
    x = centers[y] + torch.randn(n, 64, generator=gen)
    return x.float(), y


@pytest.fixture(scope="module")
def trained() -> Trained:
    """A small MLP trained on separable clusters, with a held-out test set."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: extra threads only add contention
    torch.manual_seed(0)
    model = build_model(QMODEL, QINFO)
    x, y = _blobs(2000, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(200):
        idx = torch.arange(step * 64, step * 64 + 64) % len(y)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()  # type: ignore[no-untyped-call]
        opt.step()
    torch.set_num_threads(threads)
    test_x, test_y = _blobs(1000, seed=2)
    return model.eval(), test_x, test_y


def test_int8_copy_is_smaller_and_as_accurate(trained: Trained) -> None:
    model, x, y = trained
    report, blob = compare_int8(model, x, y)
    assert 0.8 < report.fp32_accuracy < 1.0  # trained, and not trivially perfect
    assert abs(report.int8_accuracy - report.fp32_accuracy) <= 0.02
    assert report.int8_bytes < report.fp32_bytes / 3
    assert report.quantized_layers == ("1", "3")  # both Linear layers of the MLP
    assert report.quantized_parameters == report.total_parameters - 128 - 4  # all but biases
    assert math.isclose(report.metrics()["int8_accuracy"], report.int8_accuracy)
    # rebuilt from plain tensors (no pickle): the same outputs as the in-memory copy
    rebuilt = int8_from_bytes(blob, build_model(QMODEL, QINFO))
    with torch.inference_mode():
        assert torch.equal(rebuilt(x), quantize_int8(model)(x))


def test_int8_variant_through_the_registry(
    reg: Registry, key: Ed25519PrivateKey, trained: Trained
) -> None:
    model, x, y = trained
    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    m = reg.publish(
        "m",
        weights,
        model=QMODEL.model_dump(mode="json"),
        input_shape=QINFO.input_shape,
        num_classes=QINFO.num_classes,
        round=1,
        metrics={"accuracy": 0.9},
        lineage=LINEAGE,
        signing_key=key,
        int8_copy=True,
    )
    assert m.int8_sha256 is not None
    fp32 = reg.load("m", 1, key.public_key()).module
    int8 = reg.load("m", 1, key.public_key(), variant="int8").module
    with torch.inference_mode():
        agree = (fp32(x).argmax(1) == int8(x).argmax(1)).float().mean().item()
        acc = (int8(x).argmax(1) == y).float().mean().item()
    assert agree >= 0.97 and acc > 0.8
    # the int8 file is covered by the signature too
    path = _vdir(reg, 1) / "model-int8.safetensors"
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ArtifactRejected, match="int8 weights sha256 mismatch"):
        reg.load("m", 1, key.public_key(), variant="int8")


def test_int8_variant_missing_is_refused(reg: Registry, key: Ed25519PrivateKey) -> None:
    _publish(reg, key, seed=0)
    with pytest.raises(ArtifactRejected, match="no int8 copy"):
        reg.load("m", 1, key.public_key(), variant="int8")


def test_int8_file_for_another_model_is_refused(trained: Trained) -> None:
    model, _, _ = trained
    blob = int8_to_bytes(quantize_int8(model))
    with pytest.raises(ArtifactRejected, match="do not fit"):
        int8_from_bytes(blob, build_model(ModelConfig(name="mlp", hidden=[64]), QINFO))
