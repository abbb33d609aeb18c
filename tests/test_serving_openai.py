"""The OpenAI API routes, in-process, on language-model versions of a signed registry: the
list shape of /v1/models, completions (one or several prompts, streamed or not), chat, API
keys as Bearer tokens, errors in OpenAI's shape, and publishing a new adapter version."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from lm_support import base_into_registry, publish_lm
from serving_support import NAME, make_registry, settings

from fedsys.registry import Registry
from fedsys.serving.endpoint import create_app
from fedsys.serving.generation.limits import GenerationLimits

KEY = "client-key-1"
BASE = "bases/tiny-0"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Ed25519PrivateKey, str]:
    root = tmp_path_factory.mktemp("openai") / "registry"
    key = make_registry(root, seeds=(1,))
    _, sha = base_into_registry(root)
    reg = Registry(root)
    publish_lm(reg, key, "lm", base=BASE, base_sha256=sha, merged_seed=0)
    publish_lm(reg, key, "lora", base=BASE, base_sha256=sha, adapter_seed=1)
    return root, key, sha


@pytest.fixture
def client(
    registry: tuple[Path, Ed25519PrivateKey, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.setenv("FEDSYS_API_KEYS", KEY)
    limits = GenerationLimits(max_prompt_tokens=64, max_sequences=8)
    app = create_app(settings(registry[0], generation=limits))
    with TestClient(app, headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


def complete(client: TestClient, **body: Any) -> Any:
    resp = client.post("/v1/completions", json={"temperature": 0, **body})
    assert resp.status_code == 200, resp.text
    return resp.json()


def sse_events(text: str) -> list[Any]:
    lines = [ln for ln in text.split("\n\n") if ln]
    assert all(ln.startswith("data: ") for ln in lines)
    assert lines[-1] == "data: [DONE]"
    return [json.loads(ln[6:]) for ln in lines[:-1]]


def test_models_list_has_the_openai_shape_and_fedsys_fields(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    ids = {m["id"]: m for m in body["data"]}
    assert {"lm", "lm@1", "lora", "lora@1", NAME} <= set(ids)
    assert all(m["object"] == "model" and m["owned_by"] == "fedsys" for m in body["data"])
    assert ids["lora"]["served_version"] == 1 and ids["lora"]["kind"] == "language"
    assert ids["lora@1"]["adapter"] is True and ids["lm@1"]["adapter"] is False
    assert ids[NAME]["kind"] == "tensor"
    assert {m["name"] for m in body["models"]} == {"lm", "lora", NAME}  # fedsys's own keys
    one = client.get("/v1/models/lora").json()
    assert (one["id"], one["object"], one["active_version"]) == ("lora", "model", 1)


def test_completion_counts_and_reproducibility(client: TestClient) -> None:
    first = complete(client, model="lm", prompt="def f(x):", max_tokens=7)
    assert first["object"] == "text_completion" and first["model"] == "lm@1"
    assert first["choices"][0]["finish_reason"] == "length"
    assert first["usage"] == {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}
    again = complete(client, model="lm@1", prompt=list(b"def f(x):"), max_tokens=7)
    assert again["choices"][0]["text"] == first["choices"][0]["text"]
    several = complete(client, model="lora", prompt=["a", "bcd"], max_tokens=3, n=2, seed=5)
    assert [c["index"] for c in several["choices"]] == [0, 1, 2, 3]
    assert several["usage"]["prompt_tokens"] == 1 + 1 + 3 + 3
    assert several["model"] == "lora@1"


def test_streaming_sends_a_chunk_per_token_then_done(client: TestClient) -> None:
    whole = complete(client, model="lm", prompt="import os", max_tokens=6)
    resp = client.post(
        "/v1/completions",
        json={
            "model": "lm",
            "prompt": "import os",
            "max_tokens": 6,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.text)
    tokens = [e for e in events if e["choices"] and e["choices"][0]["finish_reason"] is None]
    assert len(tokens) == 6
    assert "".join(e["choices"][0]["text"] for e in tokens) == whole["choices"][0]["text"]
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert events[-1]["usage"]["completion_tokens"] == 6
    assert {e["model"] for e in events} == {"lm@1"}


def test_chat_uses_the_template(client: TestClient) -> None:
    messages = [{"role": "user", "content": "hi"}]
    resp = client.post(
        "/v1/chat/completions",
        # greedy: a sampled end-of-text token would end the reply before max_tokens
        json={"model": "lora", "messages": messages, "max_tokens": 4, "temperature": 0},
    ).json()
    assert resp["object"] == "chat.completion"
    assert resp["choices"][0]["message"]["role"] == "assistant"
    # "<user>hi\n<assistant>" rendered by the template: 20 byte tokens
    assert resp["usage"] == {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24}
    stream = client.post(
        "/v1/chat/completions",
        json={
            "model": "lora",
            "messages": messages,
            "max_tokens": 3,
            "temperature": 0,
            "stream": True,
        },
    )
    events = sse_events(stream.text)
    assert events[0]["object"] == "chat.completion.chunk"
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("body", "status", "param", "words"),
    [
        ({"model": "nope", "prompt": "x"}, 404, None, "not a served language model"),
        ({"model": NAME, "prompt": "x"}, 404, None, "not a served language model"),
        ({"model": "lm", "prompt": "x" * 65}, 400, "prompt", "at most 64"),
        ({"model": "lm", "prompt": "x", "max_tokens": 300}, 400, "max_tokens", "context"),
        ({"model": "lm", "prompt": "x", "max_tokens": 0}, 400, "max_tokens", "set echo"),
        ({"model": "lm", "prompt": "x", "temperature": 3}, 400, "temperature", "less than"),
        ({"model": "lm", "prompt": "x", "stop": ["a"] * 5}, 400, None, "at most 4"),
        ({"model": "lm", "prompt": "x", "logprobs": 2}, 400, "logprobs", "prompt only"),
        ({"model": "lm", "prompt": "x", "max_tokens": -1}, 400, "max_tokens", "greater than"),
        (
            {"model": "lm", "prompt": "x", "echo": True, "max_tokens": 0, "logprobs": 6},
            400,
            "logprobs",
            "less than",
        ),
        ({"model": "lm"}, 400, "prompt", "Field required"),
        ({"model": "lm", "prompt": "x", "frobnicate": 1}, 400, "frobnicate", "Extra inputs"),
    ],
)
def test_errors_have_the_openai_shape(
    client: TestClient, body: dict[str, Any], status: int, param: str | None, words: str
) -> None:
    resp = client.post("/v1/completions", json=body)
    assert resp.status_code == status
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert words in error["message"]
    if param is not None:
        assert error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_chat_without_a_template_is_400(client: TestClient, tmp_path: Path) -> None:
    resp = client.post("/v1/chat/completions", json={"model": "lm", "messages": []})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "messages"


def test_api_keys_as_bearer_tokens(client: TestClient) -> None:
    body = {"model": "lm", "prompt": "x", "max_tokens": 1}
    del client.headers["Authorization"]
    missing = client.post("/v1/completions", json=body)
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "authentication_error"
    wrong = client.post("/v1/completions", json=body, headers={"Authorization": "Bearer no"})
    assert wrong.status_code == 403
    assert client.post("/v1/completions", json=body, headers={"X-API-Key": KEY}).status_code == 200


def test_a_published_adapter_is_served_next_to_the_previous_one(
    client: TestClient, registry: tuple[Path, Ed25519PrivateKey, str]
) -> None:
    root, key, sha = registry
    before = complete(client, model="lora", prompt="def", max_tokens=8)
    publish_lm(Registry(root), key, "lora", base=BASE, base_sha256=sha, adapter_seed=2)
    deadline = time.monotonic() + 300
    while client.get("/v1/models/lora").json()["served_version"] != 2:
        assert time.monotonic() < deadline, "the new version was not served"
        time.sleep(0.05)
    after = complete(client, model="lora", prompt="def", max_tokens=8)
    old = complete(client, model="lora@1", prompt="def", max_tokens=8)
    assert after["model"] == "lora@2" and old["model"] == "lora@1"
    assert old["choices"] == before["choices"] != after["choices"]


def test_the_openai_sdk_unmodified(client: TestClient) -> None:
    """The official client, its HTTP calls carried in-process (TestClient is an httpx.Client);
    tests/test_protocol_clients.py runs it against ``fedsys serve`` (slow suite)."""
    import openai

    del client.headers["Authorization"]  # the SDK sends its own
    sdk = openai.OpenAI(
        base_url="http://testserver/v1", api_key=KEY, http_client=client, max_retries=0
    )
    assert {"lm", "lora", "lm@1"} <= {m.id for m in sdk.models.list()}
    done = sdk.completions.create(model="lm", prompt="import", max_tokens=5, temperature=0)
    assert done.usage is not None and done.usage.total_tokens == 6 + 5
    streamed = sdk.completions.create(
        model="lm", prompt="import", max_tokens=5, temperature=0, stream=True
    )
    text = "".join(c.choices[0].text for c in streamed if c.choices)
    assert text == done.choices[0].text
    chat = sdk.chat.completions.create(
        model="lora", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert chat.choices[0].message.role == "assistant"
    with pytest.raises(openai.NotFoundError):
        sdk.completions.create(model="nope", prompt="x")
    bad_key = openai.OpenAI(
        base_url="http://testserver/v1", api_key="no", http_client=client, max_retries=0
    )
    with pytest.raises(openai.PermissionDeniedError):
        bad_key.completions.create(model="lm", prompt="x")
