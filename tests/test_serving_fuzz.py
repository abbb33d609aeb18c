"""Schemathesis fuzz of the endpoint's OpenAPI schema: no generated request gets a 5xx.

Every operation is called with and without the publish token, so the fuzz reaches the
publish and rollback handlers, not just their authentication.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from lm_support import base_into_registry, publish_lm
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.python.asgi import shutdown_lifespans
from serving_support import NAME, TOKEN, make_registry, settings

from fedsys.registry import Registry
from fedsys.serving.endpoint import create_app
from fedsys.serving.generation.limits import GenerationLimits

LM = "lm"
MODEL_IN_BODY = ("/v1/completions", "/v1/chat/completions")


@pytest.fixture(scope="module")
def fuzz_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root: Path = tmp_path_factory.mktemp("fuzz") / "registry"
    key = make_registry(root, seeds=(1, 2, 3))
    _, sha = base_into_registry(root)
    publish_lm(Registry(root), key, LM, base="bases/tiny-0", base_sha256=sha, merged_seed=0)
    return root


# An app per test: schemathesis's pytest plugin shuts every ASGI lifespan down after each test.
@pytest.fixture
def api_schema(fuzz_registry: Path) -> Iterator[schemathesis.BaseSchema]:
    root = fuzz_registry
    # Small generation limits: a fuzzed max_tokens runs a few dozen steps at most.
    limits = GenerationLimits(max_prompt_tokens=32, max_total_tokens=48, max_sequences=8)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEDSYS_PUBLISH_TOKEN", TOKEN)
        app = create_app(settings(root, max_body_bytes=256 * 1024, generation=limits))
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    shutdown_lifespans()  # stops the app's inference thread and registry poll


def _operations(schema: schemathesis.BaseSchema) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


# Hand-driven hypothesis over schemathesis strategies: schemathesis's own pytest plugin does
# not run under pytest 9 (it reads a private attribute pytest removed).
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(api_schema: schemathesis.BaseSchema, mode: GenerationMode) -> None:
    seen: dict[str, set[int]] = {}
    for operation, fixed in [
        (op, fixed) for op in _operations(api_schema) for fixed in (False, True)
    ]:
        if fixed and "{name}" not in operation.path:
            continue
        # A path segment typed as a string has no invalid value: hypothesis would spend
        # seconds per GET route rejecting candidates and find nothing to send.
        if mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET":
            continue
        # Random names mostly reach the 404 path; the served model's name reaches the rest.
        # The generation routes name the model in the body: the served language model's.
        params = {"name": NAME} if fixed else None

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode, path_parameters=params))
        @hypothesis.settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case: schemathesis.Case) -> None:
            if case.operation.path in MODEL_IN_BODY and isinstance(case.body, dict):
                case.body["model"] = LM  # the served language model, not a random name
            for headers in (None, {"Authorization": f"Bearer {TOKEN}"}):
                resp = case.call_and_validate(headers=headers, checks=[not_a_server_error])
                seen.setdefault(case.operation.label, set()).add(resp.status_code)

        try:
            fuzz()
        except hypothesis.errors.Unsatisfiable:
            # No invalid request exists for an operation without inputs (e.g. /healthz).
            assert mode is GenerationMode.NEGATIVE
    # Every operation with inputs was exercised, and answers stayed below 500.
    assert {"POST /v1/models/{name}:predict", "POST /v1/models/{name}/versions"} <= set(seen)
    if mode is GenerationMode.POSITIVE:
        assert len(seen) == len(_operations(api_schema)) >= 8
        assert 200 in seen["POST /v1/completions"]  # generation itself was fuzzed
    assert all(code < 500 for codes in seen.values() for code in codes)
