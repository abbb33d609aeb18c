"""The clients people already use, unmodified, against a running ``fedsys serve``: the
official ``openai`` package on a language-model version, and ``tritonclient.http`` (the Open
Inference Protocol) on the tensor model, whose predictions equal ``:predict``'s."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from lm_support import base_into_registry, publish_lm
from serving_support import CLASSES, INPUT_SHAPE, NAME, make_registry, samples

from fedsys.registry import Registry
from fedsys.serving.runner import free_port, serve_process

pytestmark = pytest.mark.slow  # a server process: torch, transformers and two models to load
KEY = "client-key-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("clients") / "registry"
    key = make_registry(root, seeds=(1,))
    _, sha = base_into_registry(root)
    publish_lm(Registry(root), key, "lm", base="bases/tiny-0", base_sha256=sha, merged_seed=0)
    keys = root.parent / "keys.txt"
    keys.write_text(KEY + "\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = [
        "--registry", str(root), "--api-keys", str(keys), "--torch-threads", "1",
    ]  # fmt: skip
    with serve_process(
        args, host="127.0.0.1", port=free_port("127.0.0.1"), ready_path="/readyz", env=env
    ) as url:
        # /readyz answers once the first model is loaded: wait for the language model too.
        deadline = time.monotonic() + 600
        while "lm@1" not in {m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]}:
            assert time.monotonic() < deadline, "the language model was not served"
            time.sleep(0.1)
        yield url


def test_openai_client_lists_and_completes(server: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)
    ids = {m.id for m in client.models.list()}
    assert {"lm", "lm@1", NAME} <= ids
    done = client.completions.create(
        model="lm", prompt="def f(x):", max_tokens=8, temperature=0, seed=1
    )
    assert done.model == "lm@1" and done.choices[0].finish_reason == "length"
    assert done.usage is not None and done.usage.completion_tokens == 8
    chunks = list(
        client.completions.create(
            model="lm", prompt="def f(x):", max_tokens=8, temperature=0, stream=True
        )
    )
    tokens = [c for c in chunks if c.choices and c.choices[0].finish_reason is None]
    assert len(tokens) == 8
    assert "".join(c.choices[0].text for c in tokens) == done.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_openai_client_sees_errors_as_its_exceptions(server: str) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        client.completions.create(model="lm", prompt="x", max_tokens=1)
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError, match="not a served language model"):
        client.completions.create(model="nope", prompt="x", max_tokens=1)
    with pytest.raises(openai.BadRequestError, match="context"):
        client.completions.create(model="lm", prompt="x", max_tokens=10_000)


def test_tritonclient_round_trip_equals_predict(server: str) -> None:
    import tritonclient.http as triton

    headers = {"X-API-Key": KEY}  # tritonclient adds to the dict it is given: pass copies
    client = triton.InferenceServerClient(url=server.removeprefix("http://"))
    assert client.is_server_live(headers=dict(headers))
    assert client.is_server_ready(headers=dict(headers))
    assert client.is_model_ready(NAME, headers=dict(headers))
    meta = client.get_model_metadata(NAME, headers=dict(headers))
    assert meta["inputs"][0]["shape"] == [-1, *INPUT_SHAPE]
    x = samples(6)
    for binary in (True, False):
        tensor = triton.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        outputs = [
            triton.InferRequestedOutput(n, binary_data=binary) for n in ("predictions", "logits")
        ]
        result = client.infer(NAME, [tensor], outputs=outputs, headers=dict(headers))
        predict = httpx.post(
            f"{server}/v1/models/{NAME}:predict",
            json={"instances": x.tolist()},
            headers=dict(headers),
        ).json()
        np.testing.assert_array_equal(result.as_numpy("predictions"), predict["predictions"])
        assert result.as_numpy("logits").shape == (6, CLASSES)
    everything = client.infer(
        NAME, [tensor], headers=dict(headers)
    )  # no outputs named: all, binary
    assert everything.as_numpy("probabilities").shape == (6, CLASSES)
    with pytest.raises(triton.InferenceServerException, match="unknown model"):
        client.get_model_metadata("nope", headers=dict(headers))
    client.close()
