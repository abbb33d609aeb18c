"""The Open Inference Protocol (KServe V2) routes, in-process: metadata, readiness, JSON and
binary-tensor inference equal to ``:predict``, API keys, metrics, audit, and errors as
``{"error": ...}``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serving_support import CLASSES, INPUT_SHAPE, NAME, make_registry, samples, settings

from fedsys.registry import AuditLog
from fedsys.serving.endpoint import create_app

KEY = "client-key-1"


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    root = tmp_path / "registry"
    make_registry(root, seeds=(1, 2))
    monkeypatch.setenv("FEDSYS_API_KEYS", KEY)
    with TestClient(create_app(settings(root)), headers={"X-API-Key": KEY}) as c:
        yield c


def infer_body(x: np.ndarray, **extra: object) -> dict[str, object]:
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32"}
    return {"inputs": [{**tensor, "data": x.reshape(-1).tolist()}], **extra}


def test_server_metadata_and_health(client: TestClient) -> None:
    meta = client.get("/v2").json()
    assert meta["name"] == "fedsys" and "binary_tensor_data" in meta["extensions"]
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}


def test_model_metadata_names_inputs_and_outputs(client: TestClient) -> None:
    meta = client.get(f"/v2/models/{NAME}").json()
    assert meta["versions"] == ["2"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, *INPUT_SHAPE]}]
    outputs = {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]}
    assert outputs == {
        "predictions": ("INT64", [-1]),
        "logits": ("FP32", [-1, CLASSES]),
        "probabilities": ("FP32", [-1, CLASSES]),
    }
    assert client.get(f"/v2/models/{NAME}/versions/2").json() == meta
    assert client.get(f"/v2/models/{NAME}/ready").json() == {"name": NAME, "ready": True}
    assert client.get(f"/v2/models/{NAME}/versions/2/ready").status_code == 200


def test_infer_equals_predict(client: TestClient) -> None:
    x = samples(5)
    predict = client.post(f"/v1/models/{NAME}:predict", json={"instances": x.tolist()}).json()
    body = infer_body(x, id="req-7")
    out = client.post(f"/v2/models/{NAME}/infer", json=body).json()
    assert out["model_name"] == NAME and out["model_version"] == "2" and out["id"] == "req-7"
    tensors = {t["name"]: t for t in out["outputs"]}
    assert tensors["predictions"]["data"] == predict["predictions"]
    assert tensors["logits"]["shape"] == [5, CLASSES]
    probs = np.array(tensors["probabilities"]["data"]).reshape(5, CLASSES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    only = client.post(
        f"/v2/models/{NAME}/versions/2/infer", json={**body, "outputs": [{"name": "predictions"}]}
    ).json()
    assert [t["name"] for t in only["outputs"]] == ["predictions"]


def test_binary_tensor_extension_both_ways(client: TestClient) -> None:
    x = samples(3)
    head = {
        "inputs": [
            {
                "name": "input",
                "shape": list(x.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": x.nbytes},
            }
        ],
        "outputs": [
            {"name": "logits", "parameters": {"binary_data": True}},
            {"name": "predictions"},
        ],
    }
    header = json.dumps(head).encode()
    resp = client.post(
        f"/v2/models/{NAME}/infer",
        content=header + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert resp.status_code == 200
    size = int(resp.headers["Inference-Header-Content-Length"])
    meta = json.loads(resp.content[:size])
    logits = np.frombuffer(resp.content[size:], dtype="<f4").reshape(3, CLASSES)
    as_json = client.post(f"/v2/models/{NAME}/infer", json=infer_body(x)).json()
    expected = {t["name"]: t["data"] for t in as_json["outputs"]}
    np.testing.assert_allclose(logits.reshape(-1), expected["logits"], rtol=1e-6)
    assert meta["outputs"][0]["parameters"] == {"binary_data_size": logits.nbytes}
    assert meta["outputs"][1]["data"] == expected["predictions"]


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/v2/models/nope/infer", None, 404, "unknown model 'nope'"),
        (f"/v2/models/{NAME}/versions/1/infer", None, 404, "version '1'"),
        (f"/v2/models/{NAME}/infer", {"inputs": []}, 422, "inputs"),
        (
            f"/v2/models/{NAME}/infer",
            {"inputs": [{"name": "x", "shape": [1, 40], "datatype": "FP32", "data": [0] * 40}]},
            422,
            "named 'input'",
        ),
        (
            f"/v2/models/{NAME}/infer",
            {"inputs": [{"name": "input", "shape": [1, 40], "datatype": "FP32", "data": [0] * 39}]},
            422,
            "39 values",
        ),
        (
            f"/v2/models/{NAME}/infer",
            {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [0] * 3}]},
            422,
            "per-sample shape [3]",
        ),
        (
            f"/v2/models/{NAME}/infer",
            {
                "inputs": [
                    {"name": "input", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}
                ]
            },
            422,
            "BYTES",
        ),
        (
            f"/v2/models/{NAME}/infer",
            {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": ["1", 2]}]},
            422,
            "needs numbers",
        ),
        (
            f"/v2/models/{NAME}/infer",
            {**infer_body(samples(1)), "outputs": [{"name": "embedding"}]},
            422,
            "unknown outputs",
        ),
    ],
)
def test_errors_are_an_error_string(
    client: TestClient, path: str, body: object, status: int, words: str
) -> None:
    resp = client.post(path, json=body if body is not None else infer_body(samples(1)))
    assert resp.status_code == status
    assert list(resp.json()) == ["error"]
    assert words in resp.json()["error"]


def test_malformed_binary_header_is_400(client: TestClient) -> None:
    resp = client.post(
        f"/v2/models/{NAME}/infer",
        content=b'{"inputs": []}',
        headers={"Inference-Header-Content-Length": "999"},
    )
    assert resp.status_code == 400 and "outside the body" in resp.json()["error"]


def test_api_keys_from_either_header_with_audit_and_metrics(
    client: TestClient, tmp_path: Path
) -> None:
    path = f"/v2/models/{NAME}/infer"
    body = infer_body(samples(1))
    del client.headers["X-API-Key"]
    assert client.post(path, json=body, headers={"X-API-Key": "wrong"}).status_code == 403
    missing = client.post(path, json=body)
    assert missing.status_code == 401 and "Bearer" in missing.json()["error"]
    bearer = client.post(path, json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert bearer.status_code == 200
    refused = [
        e for e in AuditLog(tmp_path / "registry" / "audit.jsonl").read() if e["event"] == "refused"
    ]
    assert {e["what"] for e in refused} == {"infer"} and len(refused) == 2
    metrics = client.get("/metrics").text
    assert 'route="/v2/models/{name}/infer"' in metrics
    assert 'fedsys_batch_size_count{model="tiny"}' in metrics
