"""Shared pieces of the serving tests: a small signed registry and signed artifacts."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedsys.config import ModelConfig
from fedsys.crypto import public_to_raw
from fedsys.data.types import DatasetInfo
from fedsys.models import build_model
from fedsys.registry.store import Registry
from fedsys.registry.version_manifest import Lineage, ModelManifest
from fedsys.serving.endpoint_settings import ServeSettings

NAME = "tiny"
INPUT_SHAPE = (40,)
CLASSES = 10
MODEL = ModelConfig(name="cnn1d", channels=4)
TOKEN = "s3cret-publish-token"


def weights(seed: int) -> dict[str, np.ndarray]:
    torch.manual_seed(seed)
    module = build_model(MODEL, DatasetInfo(INPUT_SHAPE, CLASSES))
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def reference_predictions(seed: int, x: np.ndarray) -> np.ndarray:
    """What version ``seed`` predicts for ``x``, computed without the endpoint."""
    torch.manual_seed(seed)
    module = build_model(MODEL, DatasetInfo(INPUT_SHAPE, CLASSES)).eval()
    with torch.inference_mode():
        out: np.ndarray = module(torch.from_numpy(x)).argmax(dim=1).numpy()
    return out


def publish(
    registry: Registry, key: Ed25519PrivateKey, seed: int, *, activate: bool = True
) -> ModelManifest:
    return registry.publish(
        NAME,
        weights(seed),
        model=MODEL.model_dump(mode="json"),
        input_shape=INPUT_SHAPE,
        num_classes=CLASSES,
        round=seed,
        metrics={"accuracy": 0.5, "loss": 1.0},
        lineage=Lineage(clients=2, strategy="fedavg"),
        signing_key=key,
        activate=activate,
    )


def make_registry(root: Path, seeds: tuple[int, ...] = (1,)) -> Ed25519PrivateKey:
    """A registry at ``root`` trusting a fresh key, with one version per seed (last active)."""
    key = Ed25519PrivateKey.generate()
    root.mkdir(parents=True, exist_ok=True)
    (root / "publisher.pub").write_bytes(public_to_raw(key.public_key()))
    registry = Registry(root)
    for seed in seeds:
        publish(registry, key, seed)
    return key


def artifact(key: Ed25519PrivateKey, seed: int, version: int, scratch: Path) -> dict[str, bytes]:
    """The multipart parts of a publish, signed by ``key`` (made in a scratch registry)."""
    reg = Registry(scratch)
    # Lower versions must exist first in the scratch registry; publish them unactivated.
    while not reg.version_numbers(NAME) or reg.version_numbers(NAME)[-1] < version:
        m = publish(reg, key, seed, activate=False)
    vdir = scratch / NAME / "versions" / str(m.version)
    return {
        "manifest": (vdir / "manifest.json").read_bytes(),
        "signature": (vdir / "manifest.sig").read_bytes(),
        "weights": (vdir / "model.safetensors").read_bytes(),
    }


def files(parts: dict[str, bytes]) -> dict[str, Any]:
    return {k: (k, v, "application/octet-stream") for k, v in parts.items()}


def npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def settings(root: Path, **kw: Any) -> ServeSettings:
    base: dict[str, Any] = {
        "registry": root,
        "torch_threads": None,
        "poll_interval_s": 0.05,
        "freeze_gc": False,  # process-wide: the test process keeps its own collector
    }
    base.update(kw)
    return ServeSettings(**base)


def samples(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *INPUT_SHAPE)).astype(np.float32)
