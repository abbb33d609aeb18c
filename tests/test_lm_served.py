"""A language-model run's published version, served: the endpoint beside the federation
serves the adapter it publishes, the official ``openai`` client gets text from it (streaming
and not), and the held-out text scored through ``/v1/completions`` gives the central
perplexity back (``served_perplexity`` in ``summary.json``)."""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lm_task_support import lm_config, write_jsonl
from lm_task_support import one_torch_thread as one_torch_thread  # fixture for every test here

from fedsys.config import ExperimentConfig, build_config
from fedsys.simulation_served_lm import AGREEMENT


def served_config(corpus: Path, tmp: Path, **publish: Any) -> ExperimentConfig:
    raw = json.loads(lm_config(corpus).to_json())
    raw["runtime"].update(progress=False, node_state_dir=str(tmp / "node-state"))
    raw["train"]["rounds"] = 1
    raw["serve"]["enabled"] = True
    raw["publish"].update({"mode": "at_end", **publish})
    return build_config(raw)


@contextlib.contextmanager
def served_run(cfg: ExperimentConfig, out: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """The federation (in one process) with its endpoint, as ``fedsys simulate`` runs them:
    (the endpoint's URL, summary.json after the held-out text went through it)."""
    from fedsys.inprocess import run_in_process
    from fedsys.simulation_endpoint import close_loop, endpoint_for

    with endpoint_for(cfg, out) as url:
        assert url is not None
        with contextlib.redirect_stderr(io.StringIO()):
            run_in_process(cfg, out)
            close_loop(cfg, out, url)
        yield url, json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("text") / "t.jsonl")


@pytest.fixture(scope="module")
def adapter_run(
    corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ExperimentConfig, str, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("served")
    cfg = served_config(corpus, tmp)
    with served_run(cfg, tmp / "run") as (url, summary):
        yield cfg, url, summary


def _agree(summary: dict[str, Any]) -> None:
    served, central = summary["served_perplexity"], summary["final_perplexity"]
    assert math.isfinite(served) and served > 1
    assert served == pytest.approx(central, rel=AGREEMENT)
    assert summary["served_loss"] == pytest.approx(summary["final_loss"], rel=AGREEMENT)
    assert summary["served_version"] == summary["published_version"] == 1


def test_the_published_adapter_is_served_and_scores_the_central_perplexity(
    adapter_run: tuple[ExperimentConfig, str, dict[str, Any]],
) -> None:
    _, _, summary = adapter_run
    _agree(summary)


def test_the_official_openai_client_completes_from_the_run(
    adapter_run: tuple[ExperimentConfig, str, dict[str, Any]],
) -> None:
    from openai import OpenAI

    cfg, url, _ = adapter_run
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    ask: dict[str, Any] = {"model": cfg.name, "prompt": "def alpha_", "max_tokens": 6}
    ask.update(temperature=0, extra_body={"ignore_eos": True})
    done = client.completions.create(**ask)
    assert done.model == f"{cfg.name}@1" and done.choices[0].text
    assert done.usage is not None and done.usage.completion_tokens == 6
    chunks = list(client.completions.create(**ask, stream=True))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == done.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"
    scored = client.completions.create(
        model=cfg.name, prompt="def alpha_1(x):", max_tokens=0, echo=True, logprobs=2
    )
    logprobs = scored.choices[0].logprobs
    assert scored.choices[0].text == "def alpha_1(x):" and logprobs is not None
    assert logprobs.token_logprobs is not None and logprobs.token_logprobs[0] is None
    assert all(lp is not None and lp < 0 for lp in logprobs.token_logprobs[1:])
    assert logprobs.top_logprobs is not None and len(logprobs.top_logprobs[1] or {}) == 2


def test_a_merged_version_is_served_and_agrees_too(corpus: Path, tmp_path: Path) -> None:
    cfg = served_config(corpus, tmp_path, merge=True, int8_copy=True)
    with served_run(cfg, tmp_path / "run") as (_, summary):
        _agree(summary)


def test_a_base_is_addressed_by_its_weights_and_its_tokenizer(corpus: Path) -> None:
    from fedsys.tasks.lm.publish import base_address
    from fedsys.tasks.lm.tokenizer import ByteTokenizer, train_bpe

    lm = lm_config(corpus).lm
    byte = base_address(ByteTokenizer(), lm, "a" * 64)
    assert byte == base_address(ByteTokenizer(), lm, "a" * 64)
    assert byte != base_address(ByteTokenizer(), lm, "b" * 64)
    bpe = train_bpe(["def alpha(x):\n    return x\n"] * 5, vocab_size=300)
    assert byte != base_address(bpe, lm, "a" * 64)  # same weights, another tokenizer
