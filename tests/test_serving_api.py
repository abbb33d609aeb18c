"""The inference endpoint's routes: predict (JSON and .npy), bad inputs, publish, rollback,
readiness, API keys, metrics and the audit log."""

from __future__ import annotations

import gc
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from serving_support import (
    NAME,
    TOKEN,
    artifact,
    files,
    make_registry,
    npy,
    publish,
    reference_predictions,
    samples,
    settings,
)

from fedsys.registry.audit import AuditLog
from fedsys.registry.store import Registry
from fedsys.serving.endpoint import create_app

PREDICT = f"/v1/models/{NAME}:predict"
NPY = {"Content-Type": "application/x-npy"}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture
def key(root: Path) -> Ed25519PrivateKey:
    return make_registry(root, seeds=(1,))


@pytest.fixture
def client(
    root: Path, key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.setenv("FEDSYS_PUBLISH_TOKEN", TOKEN)
    with TestClient(create_app(settings(root, max_body_bytes=64 * 1024))) as c:
        yield c


def _version(client: TestClient) -> int:
    resp = client.post(PREDICT, json={"instances": samples(1).tolist()})
    assert resp.status_code == 200, resp.text
    return int(resp.json()["version"])


# --- predict ---------------------------------------------------------------------------------


def test_predict_json_matches_the_model(client: TestClient) -> None:
    x = samples(5)
    resp = client.post(PREDICT, json={"instances": x.tolist()})
    assert resp.status_code == 200
    body = resp.json()
    assert body["version"] == 1 and body["model"] == NAME
    assert body["predictions"] == reference_predictions(1, x).tolist()
    assert "probabilities" not in body


@pytest.mark.parametrize("content_type", ["application/x-npy", "application/octet-stream"])
def test_predict_npy_matches_json(client: TestClient, content_type: str) -> None:
    x = samples(7, seed=3)
    resp = client.post(PREDICT, content=npy(x), headers={"Content-Type": content_type})
    assert resp.status_code == 200
    assert resp.json()["predictions"] == reference_predictions(1, x).tolist()


def test_predict_accepts_other_real_dtypes(client: TestClient) -> None:
    x = samples(2)
    resp = client.post(PREDICT, content=npy(x.astype(np.float64)), headers=NPY)
    assert resp.status_code == 200
    assert resp.json()["predictions"] == reference_predictions(1, x).tolist()


def test_probabilities_when_asked(client: TestClient) -> None:
    x = samples(4)
    for resp in (
        client.post(PREDICT, json={"instances": x.tolist(), "probabilities": True}),
        client.post(f"{PREDICT}?probabilities=true", content=npy(x), headers=NPY),
    ):
        assert resp.status_code == 200
        probs = np.asarray(resp.json()["probabilities"])
        assert probs.shape == (4, 10)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
        assert probs.argmax(axis=1).tolist() == resp.json()["predictions"]


def _npy_raw(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


BAD_BODIES: list[tuple[str, str, bytes, int, str]] = [
    (
        "wrong shape json",
        "application/json",
        json.dumps({"instances": [[0.0] * 39]}).encode(),
        422,
        "shape",
    ),
    ("wrong shape npy", "application/x-npy", npy(np.zeros((2, 4, 10), np.float32)), 422, "shape"),
    ("scalar npy", "application/x-npy", npy(np.float32(1.0)), 422, "no instances"),
    ("complex dtype", "application/x-npy", npy(np.zeros((1, 40), np.complex64)), 422, "dtype"),
    ("string dtype", "application/x-npy", npy(np.array([["a"] * 40])), 422, "dtype"),
    (
        "object dtype (pickle)",
        "application/x-npy",
        _npy_raw(np.array([[{}] * 40], dtype=object)),
        400,
        "npy",
    ),
    ("empty instances", "application/json", b'{"instances": []}', 422, "no instances"),
    ("empty npy", "application/x-npy", npy(np.zeros((0, 40), np.float32)), 422, "no instances"),
    ("empty body json", "application/json", b"", 400, "JSON"),
    ("empty body npy", "application/x-npy", b"", 400, "empty"),
    ("not json", "application/json", b"{instances: nope", 400, "JSON"),
    ("json not an object", "application/json", b"[1, 2, 3]", 422, "invalid predict request"),
    ("missing instances", "application/json", b'{"inputs": [[1]]}', 422, "instances"),
    (
        "ragged",
        "application/json",
        json.dumps({"instances": [[0.0] * 40, [0.0] * 39]}).encode(),
        422,
        "ragged",
    ),
    (
        "strings",
        "application/json",
        json.dumps({"instances": [["x"] * 40]}).encode(),
        422,
        "non-numeric",
    ),
    ("nan json", "application/json", b'{"instances": [[NaN' + b", 0" * 39 + b"]]}", 422, "NaN"),
    ("inf npy", "application/x-npy", npy(np.full((1, 40), np.inf, np.float32)), 422, "NaN"),
    ("overflow float32", "application/x-npy", npy(np.full((1, 40), 1e300)), 422, "overflow"),
    ("garbage npy", "application/x-npy", b"\x93NUMPY garbage", 400, "npy"),
    ("not npy at all", "application/x-npy", b"hello, world", 400, "not a .npy array"),
    (
        "numeric strings",
        "application/json",
        json.dumps({"instances": [[0.0] * 39 + ["0.5"]]}).encode(),
        422,
        "instances[0][39] is a string",
    ),
    (
        "booleans",
        "application/json",
        json.dumps({"instances": [[True] * 40]}).encode(),
        422,
        "instances[0][0] is a boolean",
    ),
    (
        "null",
        "application/json",
        json.dumps({"instances": [[0.0] * 20 + [None] * 20]}).encode(),
        422,
        "instances[0][20] is null",
    ),
    (
        "bad probabilities",
        "application/json",
        json.dumps({"instances": [[0.0] * 40], "probabilities": "maybe"}).encode(),
        422,
        "probabilities",
    ),
    ("unsupported media type", "text/plain", b"1,2,3", 415, "Content-Type"),
    (
        "too many instances",
        "application/x-npy",
        npy(np.zeros((1025, 40), np.float32)),
        413,
        "limit",
    ),
    ("body too large", "application/x-npy", b"\0" * (65 * 1024), 413, "limit"),
]


@pytest.mark.parametrize(
    ("content_type", "body", "status", "words"),
    [b[1:] for b in BAD_BODIES],
    ids=[b[0] for b in BAD_BODIES],
)
def test_bad_predict_bodies_are_4xx_with_a_reason(
    client: TestClient, content_type: str, body: bytes, status: int, words: str
) -> None:
    resp = client.post(PREDICT, content=body, headers={"Content-Type": content_type})
    assert resp.status_code == status, resp.text
    detail = resp.json()["detail"]
    assert isinstance(detail, str) and words.lower() in detail.lower()
    assert "allow_pickle" not in detail and "unsafe" not in detail  # never advise that
    assert _version(client) == 1  # and the endpoint keeps serving


def test_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(80):
            yield b"\0" * 1024

    resp = client.post(PREDICT, content=chunks(), headers=NPY)
    assert resp.status_code == 413


def test_unknown_model_is_404(client: TestClient) -> None:
    resp = client.post("/v1/models/nope:predict", json={"instances": [[0.0] * 40]})
    assert resp.status_code == 404 and "nope" in resp.json()["detail"]
    assert client.get("/v1/models/nope").status_code == 404
    assert client.get("/v1/models/..").status_code == 404


@pytest.mark.parametrize("action", ["predict", "rollback"])
def test_get_on_a_post_route_is_405_naming_the_method(client: TestClient, action: str) -> None:
    resp = client.get(f"/v1/models/{NAME}:{action}")
    assert resp.status_code == 405 and resp.headers["allow"] == "POST"
    assert f"POST /v1/models/{NAME}:{action}" in resp.json()["detail"]


def test_predict_while_shutting_down_is_503(client: TestClient) -> None:
    client.app.state.serving.batcher.stop()  # type: ignore[attr-defined]
    resp = client.post(PREDICT, json={"instances": samples(1).tolist()})
    assert resp.status_code == 503
    assert resp.json() == {"detail": "the endpoint is shutting down; retry"}


# --- listing -------------------------------------------------------------------------------


def test_list_and_describe(client: TestClient) -> None:
    models = client.get("/v1/models").json()["models"]
    assert models == [{"name": NAME, "active_version": 1, "served_version": 1, "versions": [1]}]
    info = client.get(f"/v1/models/{NAME}").json()
    assert info["active_version"] == 1 and info["served_version"] == 1
    assert info["metrics"] == {"accuracy": 0.5, "loss": 1.0}
    assert [v["version"] for v in info["versions"]] == [1]
    assert info["versions"][0]["lineage"]["strategy"] == "fedavg"


# --- publish and rollback ------------------------------------------------------------------


def test_publish_needs_the_token(
    client: TestClient, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    parts = files(artifact(key, seed=2, version=2, scratch=tmp_path / "scratch"))
    url = f"/v1/models/{NAME}/versions"
    missing = client.post(url, files=parts)
    assert missing.status_code == 401 and "Authorization" in missing.json()["detail"]
    wrong = client.post(url, files=parts, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and "token" in wrong.json()["detail"]
    assert client.post(f"/v1/models/{NAME}:rollback").status_code == 401
    assert _version(client) == 1


def test_publish_is_refused_when_no_token_is_configured(
    root: Path, key: Ed25519PrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEDSYS_PUBLISH_TOKEN", raising=False)
    parts = files(artifact(key, seed=2, version=2, scratch=tmp_path / "scratch"))
    with TestClient(create_app(settings(root))) as c:
        resp = c.post(f"/v1/models/{NAME}/versions", files=parts, headers=AUTH)
        assert resp.status_code == 403 and "disabled" in resp.json()["detail"]


def test_publish_activates_and_serves_the_new_version(
    client: TestClient, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    parts = files(artifact(key, seed=2, version=2, scratch=tmp_path / "scratch"))
    resp = client.post(f"/v1/models/{NAME}/versions", files=parts, headers=AUTH)
    assert resp.status_code == 201, resp.text
    assert resp.json() == {"name": NAME, "version": 2, "served_version": 2}
    x = samples(6)
    body = client.post(PREDICT, json={"instances": x.tolist()}).json()
    assert body["version"] == 2
    assert body["predictions"] == reference_predictions(2, x).tolist()
    again = client.post(f"/v1/models/{NAME}/versions", files=parts, headers=AUTH)
    assert again.status_code == 409  # v2 exists


@pytest.mark.parametrize("tamper", ["weights", "manifest", "foreign key", "no signature"])
def test_tampered_publish_is_refused_and_the_old_version_keeps_serving(
    client: TestClient, key: Ed25519PrivateKey, tmp_path: Path, tamper: str
) -> None:
    signer = Ed25519PrivateKey.generate() if tamper == "foreign key" else key
    parts = artifact(signer, seed=2, version=2, scratch=tmp_path / "scratch")
    if tamper == "weights":
        w = bytearray(parts["weights"])
        w[-1] ^= 0x01
        parts["weights"] = bytes(w)
    elif tamper == "manifest":
        parts["manifest"] = parts["manifest"].replace(b'"round": 2', b'"round": 3')
    elif tamper == "no signature":
        del parts["signature"]
    resp = client.post(f"/v1/models/{NAME}/versions", files=files(parts), headers=AUTH)
    assert 400 <= resp.status_code < 500, resp.text
    assert resp.json()["detail"]
    assert _version(client) == 1
    assert client.get(f"/v1/models/{NAME}").json()["versions"][-1]["version"] == 1


def test_publish_rejects_a_non_multipart_body(client: TestClient) -> None:
    resp = client.post(f"/v1/models/{NAME}/versions", json={"x": 1}, headers=AUTH)
    assert resp.status_code == 415


def test_publish_with_a_broken_multipart_body_is_400(client: TestClient) -> None:
    # found by the schema fuzz: a part with no headers at all used to escape as a 500
    boundary = "a222103b9b30b1f9e8be6882ecedb1d2"
    resp = client.post(
        f"/v1/models/{NAME}/versions",
        content=f"--{boundary}\r\n[]--{boundary}--\r\n".encode(),
        headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert resp.status_code == 400 and "multipart" in resp.json()["detail"]
    assert _version(client) == 1


def test_rollback_restores_the_previous_version(
    client: TestClient, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    parts = files(artifact(key, seed=2, version=2, scratch=tmp_path / "scratch"))
    assert client.post(f"/v1/models/{NAME}/versions", files=parts, headers=AUTH).status_code == 201
    assert _version(client) == 2
    resp = client.post(f"/v1/models/{NAME}:rollback", headers=AUTH)
    assert resp.status_code == 200 and resp.json()["active_version"] == 1
    x = samples(5)
    body = client.post(PREDICT, json={"instances": x.tolist()}).json()
    assert body["version"] == 1 and body["predictions"] == reference_predictions(1, x).tolist()
    none_older = client.post(f"/v1/models/{NAME}:rollback", headers=AUTH)
    assert none_older.status_code == 409 and "older" in none_older.json()["detail"]
    assert client.post("/v1/models/nope:rollback", headers=AUTH).status_code == 404


def test_audit_log_records_publish_rollback_and_refusals(
    client: TestClient, root: Path, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    parts = files(artifact(key, seed=2, version=2, scratch=tmp_path / "scratch"))
    client.post(f"/v1/models/{NAME}/versions", files=parts, headers={"Authorization": "Bearer x"})
    client.post(f"/v1/models/{NAME}/versions", files=parts, headers=AUTH)
    client.post(f"/v1/models/{NAME}:rollback", headers=AUTH)
    events = [e["event"] for e in AuditLog(root / "audit.jsonl").read()]
    assert events == ["refused", "publish", "activate", "rollback"]
    assert TOKEN not in (root / "audit.jsonl").read_text()


# --- hot swap from the registry, readiness, keys, metrics -----------------------------------


def _wait_for(predicate: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_worker_follows_the_registry_and_refuses_tampered_files(
    client: TestClient, root: Path, key: Ed25519PrivateKey
) -> None:
    registry = Registry(root)
    publish(registry, key, seed=2)  # as another worker or the ServerApp would
    _wait_for(lambda: _version(client) == 2, "the poll to pick up v2")
    m3 = publish(registry, key, seed=3, activate=False)
    weights = root / NAME / "versions" / str(m3.version) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    (root / NAME / "active").write_text("3\n")  # the pointer moved, the artifact is bad
    _wait_for(
        lambda: any(
            e.get("event") == "refused" and e.get("version") == 3
            for e in AuditLog(root / "audit.jsonl").read()
        ),
        "the worker to refuse v3",
    )
    assert _version(client) == 2


def test_readyz_waits_for_a_model(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    key = make_registry(root, seeds=())
    with TestClient(create_app(settings(root))) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 503
        assert c.get("/v1/models").json() == {"object": "list", "data": [], "models": []}
        publish(Registry(root), key, seed=1)
        _wait_for(lambda: c.get("/readyz").status_code == 200, "readiness")
        assert c.get("/readyz").json()["models"] == [NAME]


def test_startup_moves_loaded_objects_out_of_the_collectors_reach(
    root: Path, key: Ed25519PrivateKey
) -> None:
    gc.unfreeze()
    try:
        with TestClient(create_app(settings(root))) as c:
            assert gc.get_freeze_count() == 0  # the helper's settings leave gc alone
            assert c.get("/readyz").status_code == 200
        with TestClient(create_app(settings(root, freeze_gc=True))) as c:
            assert c.get("/readyz").status_code == 200
            # torch, the app and the loaded model are all in the permanent generation
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()


def test_api_keys_guard_predict(
    root: Path, key: Ed25519PrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("# clients\nalpha\nbeta\n")
    monkeypatch.setenv("FEDSYS_API_KEYS", "gamma")
    body = {"instances": samples(1).tolist()}
    with TestClient(create_app(settings(root, api_keys_file=keys))) as c:
        assert c.post(PREDICT, json=body).status_code == 401
        assert c.post(PREDICT, json=body, headers={"X-API-Key": "nope"}).status_code == 403
        for k in ("alpha", "beta", "gamma"):
            assert c.post(PREDICT, json=body, headers={"X-API-Key": k}).status_code == 200
        assert c.get("/healthz").status_code == 200  # only predict needs a key
    refused = [e for e in AuditLog(root / "audit.jsonl").read() if e["event"] == "refused"]
    assert [e["reason"] for e in refused] == ["missing API key", "wrong API key"]


def test_metrics_expose_requests_latency_batches_and_version(client: TestClient) -> None:
    x = samples(3)
    client.post(PREDICT, json={"instances": x.tolist()})
    client.post(PREDICT, content=b"", headers=NPY)
    client.post("/v1/models/nope:predict", json={"instances": x.tolist()})
    text = client.get("/metrics").text
    route = 'route="/v1/models/{name}:predict"'
    assert f'fedsys_requests_total{{method="POST",{route},status="200"}} 1.0' in text
    assert f'fedsys_requests_total{{method="POST",{route},status="400"}} 1.0' in text
    assert f'fedsys_requests_total{{method="POST",{route},status="404"}} 1.0' in text
    assert f"fedsys_request_latency_seconds_count{{{route}}} 3.0" in text
    assert f'fedsys_batch_size_sum{{model="{NAME}"}} 3.0' in text
    assert f'fedsys_active_version{{model="{NAME}",worker=' in text
    assert "nope" not in text  # raw paths never become labels
