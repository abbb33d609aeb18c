"""The ServerApp's publisher: policy, signing keys, background writes, remote publishing
with retries (against httpx.MockTransport), and one end-to-end simulation."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from safetensors.numpy import load_file
from simulate_support import Run

from fedsys.config import ExperimentConfig, build_config
from fedsys.crypto.keys import (
    generate_signing_key,
    load_signing_public_key,
    public_to_raw,
    write_private_key,
)
from fedsys.data.types import DatasetInfo
from fedsys.errors import ArtifactRejected, ConfigError, VersionConflict
from fedsys.models import build_model
from fedsys.registry import ModelManifest, Registry
from fedsys.registry.publisher import Publisher
from fedsys.server.records import read_rounds

INFO = DatasetInfo((12,), 3)
TOKEN = "s3cret-token"


def _cfg(*overrides: str) -> ExperimentConfig:
    return build_config(
        {},
        [
            "name=m",
            "model.name=mlp",
            "model.hidden=[16]",
            "train.rounds=5",
            "publish.mode=every_round",
            *overrides,
        ],
    )


def _weights(seed: int) -> dict[str, np.ndarray]:
    torch.manual_seed(seed)
    module = build_model(_cfg().model, INFO)
    return {k: v.numpy() for k, v in module.state_dict().items()}


def _trusted(publisher: Publisher) -> Ed25519PublicKey:
    return load_signing_public_key(publisher.registry.publisher_key_path)


def _run(publisher: Publisher, accuracies: list[float]) -> list[int | None]:
    out = []
    for rnd, acc in enumerate(accuracies, start=1):
        out.append(publisher.after_round(rnd, _weights(rnd), {"accuracy": acc}, 2, "run-1"))
    return out


def test_every_round_publishes_signed_versions(tmp_path: Path) -> None:
    pub = Publisher(_cfg(), tmp_path, INFO)
    assert _run(pub, [0.5, 0.4, 0.6]) == [1, 2, 3]
    assert pub.finish() == 3
    reg = Registry(tmp_path / "registry")  # the default place
    assert reg.active_version("m") == 3
    loaded = reg.load("m", 2, _trusted(pub))
    assert loaded.manifest.round == 2 and loaded.manifest.metrics == {"accuracy": 0.4}
    lineage = loaded.manifest.lineage
    assert (lineage.clients, lineage.strategy, lineage.run_id) == (2, "fedavg", "run-1")
    assert lineage.codec["quantize"] == "none" and "enabled" in lineage.secagg
    for k, v in _weights(2).items():
        np.testing.assert_array_equal(loaded.module.state_dict()[k].numpy(), v)


def test_on_improvement_publishes_only_improving_rounds(tmp_path: Path) -> None:
    pub = Publisher(_cfg("publish.mode=on_improvement"), tmp_path, INFO)
    assert _run(pub, [0.5, 0.4, 0.6, 0.6, 0.7]) == [1, None, 2, None, 3]
    pub.finish()
    reg = Registry(tmp_path / "registry")
    assert [m.round for m in reg.versions("m", trusted=_trusted(pub))] == [1, 3, 5]


def test_on_improvement_continues_after_resume(tmp_path: Path) -> None:
    pub = Publisher(_cfg("publish.mode=on_improvement"), tmp_path, INFO)
    pub.resume(0.8)
    assert _run(pub, [0.7, 0.9]) == [None, 1]
    pub.close()


def test_at_end_publishes_the_last_round_only(tmp_path: Path) -> None:
    pub = Publisher(_cfg("publish.mode=at_end", "train.rounds=3"), tmp_path, INFO)
    assert _run(pub, [0.5, 0.6, 0.4]) == [None, None, 1]
    pub.finish()
    assert Registry(tmp_path / "registry").versions("m")[0].round == 3


def test_signing_key_is_kept_and_a_foreign_registry_is_refused(tmp_path: Path) -> None:
    first = Publisher(_cfg(), tmp_path / "out", INFO)
    _run(first, [0.5])
    first.finish()
    again = Publisher(_cfg(), tmp_path / "out", INFO)  # e.g. --resume: same key, next number
    assert _run(again, [0.6]) == [2]
    again.finish()
    shared = f"publish.registry={tmp_path / 'out' / 'registry'}"
    with pytest.raises(ConfigError, match="trusts another publisher key"):
        Publisher(_cfg(shared), tmp_path / "elsewhere", INFO)


def test_configured_signing_key_signs(tmp_path: Path) -> None:
    key = generate_signing_key()
    write_private_key(tmp_path / "pub.pem", key)
    pub = Publisher(_cfg(f"publish.signing_key={tmp_path / 'pub.pem'}"), tmp_path, INFO)
    _run(pub, [0.5])
    pub.finish()
    assert public_to_raw(_trusted(pub)) == public_to_raw(key.public_key())
    Registry(tmp_path / "registry").verify("m", 1, key.public_key())


def test_a_failed_local_write_is_retried_at_the_next_round(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    pub = Publisher(_cfg(), tmp_path, INFO)
    real = pub.registry.publish
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> ModelManifest:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(pub.registry, "publish", flaky)
    with caplog.at_level(logging.WARNING, logger="fedsys"):
        assert _run(pub, [0.5]) == [1]
        pub.wait_idle()
    assert pub.registry.version_numbers("m") == []
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "round 1" in line and "No space left" in line and "next round" in line
    assert pub.after_round(2, _weights(2), {"accuracy": 0.6}, 2, None) == 2
    assert pub.finish() == 2
    assert [m.round for m in pub.registry.versions("m")] == [1, 2]


# -- remote publishing ---------------------------------------------------------------------


def _multipart(request: httpx.Request) -> dict[str, bytes]:
    """The parts of a multipart/form-data body by name (enough for these tests)."""
    boundary = request.headers["content-type"].split("boundary=")[1].encode()
    parts = {}
    for chunk in request.content.split(b"--" + boundary)[1:-1]:
        head, _, body = chunk.partition(b"\r\n\r\n")
        match = re.search(rb'name="([^"]+)"', head)
        assert match is not None
        parts[match.group(1).decode()] = body[: -len(b"\r\n")]
    return parts


class FakeEndpoint:
    """POST /v1/models/{name}/versions backed by a real Registry; scripted failures first."""

    def __init__(self, root: Path, failures: list[int | type[httpx.TransportError]]) -> None:
        self.registry = Registry(root)
        self.failures = failures
        self.requests: list[httpx.Request] = []
        self.trusted: Ed25519PublicKey | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, int):
                return httpx.Response(failure, json={"detail": "scripted"})
            raise failure("connection refused", request=request)
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert self.trusted is not None
        match = re.fullmatch(r"/v1/models/([^/]+)/versions", request.url.path)
        assert match is not None
        parts = _multipart(request)
        try:
            added = self.registry.add_signed(
                match.group(1),
                parts["manifest"],
                parts["signature"],
                parts["weights"],
                self.trusted,
                int8_weights=parts.get("int8_weights"),
            )
        except VersionConflict as exc:
            return httpx.Response(409, json={"detail": exc.reason})
        except ArtifactRejected as exc:
            return httpx.Response(422, json={"detail": exc.reason})
        return httpx.Response(201, json={"version": added.version})


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDSYS_TEST_TOKEN", TOKEN)


def _remote(
    tmp_path: Path, failures: list[int | type[httpx.TransportError]], *overrides: str
) -> tuple[Publisher, FakeEndpoint, list[float]]:
    endpoint = FakeEndpoint(tmp_path / "remote", failures)
    sleeps: list[float] = []
    cfg = _cfg(
        "publish.endpoint=http://serving.test:8080/",
        "publish.token_env=FEDSYS_TEST_TOKEN",
        *overrides,
    )
    pub = Publisher(
        cfg, tmp_path / "out", INFO, transport=httpx.MockTransport(endpoint), sleep=sleeps.append
    )
    endpoint.trusted = _trusted(pub)
    return pub, endpoint, sleeps


def test_remote_publish_retries_with_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pub, endpoint, sleeps = _remote(tmp_path, [503, httpx.ConnectError])
    with caplog.at_level(logging.DEBUG, logger="fedsys"):
        assert _run(pub, [0.5]) == [1]
        pub.finish()
    assert sleeps == [0.5, 1.0]  # publish.backoff_seconds, doubling
    assert len(endpoint.requests) == 3
    assert endpoint.registry.active_version("m") == 1 and pub.last_uploaded == 1
    assert str(endpoint.requests[-1].url) == "http://serving.test:8080/v1/models/m/versions"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


def test_remote_outage_is_logged_and_retried_next_round(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    down: list[int | type[httpx.TransportError]] = [
        httpx.ConnectError
    ] * 2  # retries=1: two attempts
    pub, endpoint, sleeps = _remote(tmp_path, down, "publish.retries=1")
    with caplog.at_level(logging.WARNING, logger="fedsys"):
        assert _run(pub, [0.5]) == [1]  # never raises
        pub.wait_idle()
    [line] = [r.getMessage() for r in caplog.records]
    assert "round 1" in line and "ConnectError" in line and "next round" in line
    assert endpoint.registry.version_numbers("m") == []
    assert pub.registry.version_numbers("m") == [1]  # the local registry has it already
    assert pub.after_round(2, _weights(2), {"accuracy": 0.6}, 2, None) == 2
    pub.finish()
    assert [m.round for m in endpoint.registry.versions("m")] == [1, 2]  # in order
    assert endpoint.registry.active_version("m") == 2 and pub.last_uploaded == 2
    assert sleeps == [0.5]


def test_remote_refusals_are_not_hammered(tmp_path: Path) -> None:
    pub, endpoint, sleeps = _remote(tmp_path, [403, 409])
    _run(pub, [0.5])
    pub.wait_idle()
    assert len(endpoint.requests) == 1 and sleeps == []  # 403: no point retrying now
    pub.after_round(2, _weights(2), {"accuracy": 0.4}, 2, None)
    pub.finish()
    # round 2's publish point retried v1 (409: the endpoint has it -> done), then sent v2
    assert len(endpoint.requests) == 3
    assert endpoint.registry.version_numbers("m") == [2]


def test_remote_publish_needs_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDSYS_PUBLISH_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="FEDSYS_PUBLISH_TOKEN"):
        Publisher(_cfg("publish.endpoint=http://localhost:8080"), tmp_path, INFO)
    with pytest.raises(ConfigError, match="http:// or https://"):
        _cfg("publish.endpoint=localhost:8080")


def test_int8_copy_carries_its_metrics(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 12, generator=gen), torch.randint(0, 3, (200,), generator=gen)
    pub = Publisher(_cfg("publish.int8_copy=true"), tmp_path, INFO, eval_data=(x, y))
    _run(pub, [0.4])
    pub.finish()
    manifest = pub.registry.versions("m")[0]
    assert manifest.int8_sha256 is not None
    assert {"int8_accuracy", "int8_bytes", "fp32_bytes"} <= set(manifest.metrics)
    assert manifest.metrics["int8_bytes"] < manifest.metrics["fp32_bytes"]
    module = pub.registry.load("m", 1, _trusted(pub), variant="int8").module
    with torch.inference_mode():
        acc = float((module(x).argmax(1) == y).float().mean())
    assert acc == pytest.approx(manifest.metrics["int8_accuracy"])


def test_a_version_that_cannot_be_written_is_dropped_not_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pub = Publisher(_cfg(), tmp_path, INFO)
    with caplog.at_level(logging.WARNING, logger="fedsys"):
        assert pub.after_round(1, {"bogus": np.zeros(3, np.float32)}, {}, 2, None) == 1
        pub.wait_idle()
    assert "round 1" in caplog.text and "not retrying" in caplog.text
    assert _run(pub, [0.5, 0.6])[1] == 3  # later rounds are not blocked behind it
    pub.finish()
    assert pub.registry.version_numbers("m") == [2, 3]


def test_after_close_nothing_is_published(tmp_path: Path) -> None:
    pub = Publisher(_cfg(), tmp_path, INFO)
    pub.close()
    pub.close()
    assert _run(pub, [0.5]) == [None]


# -- end to end ----------------------------------------------------------------------------


def test_simulation_publishes_every_round(tiny_run: Run) -> None:
    out = tiny_run.out
    reg = Registry(out / "registry")
    trusted = load_signing_public_key(out / "registry" / "publisher.pub")
    assert [m.version for m in reg.versions("tiny", trusted=trusted)] == [1, 2, 3, 4]
    assert reg.active_version("tiny") == 4
    assert [r.published_version for r in read_rounds(out / "metrics.jsonl")] == [1, 2, 3, 4]
    assert json.loads((out / "summary.json").read_text())["published_version"] == 4
    served = reg.load("tiny", 4, trusted).module.state_dict()
    for k, v in load_file(out / "model.safetensors").items():
        np.testing.assert_array_equal(served[k].numpy(), v)
