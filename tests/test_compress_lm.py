"""Compressed variants of language-model versions: int8 weight-only and low-rank of the merged
model, judged by held-out perplexity, signed into the version, served by /v1/completions."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from lm_support import VOCAB, base_into_registry, publish_lm, tiny_llama
from lm_task_support import write_jsonl
from serving_support import make_registry, settings
from typer.testing import CliRunner

from fedsys.cli import app
from fedsys.compress.job import compress_version
from fedsys.compress.lm.int8 import int8_weight_count
from fedsys.compress.lm.job import LMCompressOutcome, LMText, compress_lm_version
from fedsys.config import build_config
from fedsys.crypto.keys import write_private_key
from fedsys.errors import ConfigError
from fedsys.registry import Registry
from fedsys.registry.variants import read_variant, variant_module, variant_names
from fedsys.serving.endpoint import create_app
from fedsys.serving.generation.limits import GenerationLimits

BASE = "bases/tiny-0"
FAST = [
    "compress.lm.repeats=1",
    "compress.lm.new_tokens=2",
    "compress.lm.prompt_tokens=4",
    "compress.lm.throughput_batch=2",
]


def config(*overrides: str) -> object:
    return build_config({}, [*FAST, *overrides])


def text(seed: int = 0) -> LMText:
    rng = np.random.default_rng(seed)
    chunks = rng.integers(0, 256, size=(6, 16), dtype=np.int64)
    return LMText(heldout=chunks, public=chunks[:2])


def own_text() -> LMText:
    """Greedy continuations of the merged "lm" model (the tiny Llama of seed 0): text it
    predicts well, so a ruined variant's perplexity on it must rise."""
    prompts = torch.from_numpy(text().heldout[:, :4])
    with torch.inference_mode():
        ids = tiny_llama(0).generate(prompts, max_new_tokens=12, min_new_tokens=12,
                                     do_sample=False, pad_token_id=256)  # fmt: skip
    return LMText(heldout=ids.numpy(), public=ids.numpy()[:2])


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Ed25519PrivateKey]:
    """A registry with a merged LM ("lm" v1) and an adapter LM ("lora" v1) on one base."""
    root = tmp_path_factory.mktemp("lmcompress") / "registry"
    key = make_registry(root, seeds=(1,))
    _, sha = base_into_registry(root)
    reg = Registry(root)
    publish_lm(reg, key, "lm", base=BASE, base_sha256=sha, merged_seed=0)
    publish_lm(reg, key, "lora", base=BASE, base_sha256=sha, adapter_seed=1)
    return root, key


def _compress(
    root: Path, key: Ed25519PrivateKey, name: str, *overrides: str, on: LMText | None = None
) -> LMCompressOutcome:
    cfg = config(*overrides)
    return compress_lm_version(
        Registry(root),
        name,
        1,
        cfg,
        key,
        replace=True,
        text=on or text(),  # type: ignore[arg-type]
    )


def _stored(root: Path, key: Ed25519PrivateKey, name: str, variant: str) -> torch.nn.Module:
    reg = Registry(root)
    base_sha = reg.versions(name)[0].weights_sha256
    manifest, weights = read_variant(
        reg.version_dir(name, 1),
        variant,
        key.public_key(),
        name=name,
        version=1,
        base_weights_sha256=base_sha,
    )
    assert manifest.metrics["perplexity"] > 0 and manifest.metrics["fp32_perplexity"] > 0
    assert manifest.metrics["bytes"] == len(weights)
    return variant_module(manifest, weights)


def test_int8_variant_of_an_adapter_version_is_int8_and_generates(
    registry: tuple[Path, Ed25519PrivateKey],
) -> None:
    root, key = registry
    outcome = _compress(
        root, key, "lora", "compress.variants=[int8]", "compress.perplexity_budget=1"
    )
    assert outcome.published == ("int8",)
    int8 = outcome.report.variants[0]
    assert int8.metrics.bytes < 0.5 * outcome.report.fp32.bytes
    model = _stored(root, key, "lora", "int8")
    quantized, linears = int8_weight_count(model)
    assert quantized == linears == 2 * 7 + 1  # q, k, v, o, gate, up, down per layer; lm_head
    weight = model.model.layers[0].self_attn.q_proj.weight  # the adapter's layer, merged in
    assert weight.qdata.dtype == torch.int8 and weight.scale.shape[0] == weight.shape[0]
    with torch.inference_mode():
        out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, min_new_tokens=4,
                             do_sample=False, pad_token_id=256)  # fmt: skip
    assert out.shape == (1, 7) and int(out.max()) < VOCAB


def test_a_variant_over_the_perplexity_budget_is_not_published(
    registry: tuple[Path, Ed25519PrivateKey],
) -> None:
    root, key = registry
    outcome = _compress(
        root,
        key,
        "lm",
        "compress.variants=[lowrank,pruned]",
        "compress.lowrank_rank=1",
        "compress.perplexity_budget=0.05",
        on=own_text(),
    )
    lowrank = outcome.report.variants[0]
    assert lowrank.name == "lowrank" and lowrank.refused is not None
    assert "compress.perplexity_budget=0.05" in lowrank.refused
    assert lowrank.metrics.perplexity > 1.05 * outcome.report.fp32.perplexity
    assert outcome.published == ()
    assert [name for name, _ in outcome.report.skipped] == ["pruned"]
    assert "lowrank" not in variant_names(Registry(root).version_dir("lm", 1))


def test_the_classifier_config_cannot_judge_a_language_model(
    registry: tuple[Path, Ed25519PrivateKey],
) -> None:
    root, key = registry
    with pytest.raises(ConfigError, match="task: language_model"):
        compress_version(Registry(root), "lm", 1, config(), key)  # type: ignore[arg-type]


def test_variants_are_served_through_completions_listed_and_picked_up(
    registry: tuple[Path, Ed25519PrivateKey],
) -> None:
    """int8 is served from the start; lowrank, compressed while the endpoint runs, is picked
    up by the registry poll; both answer /v1/completions?variant= and the body field."""
    root, key = registry
    _compress(root, key, "lora", "compress.variants=[int8]", "compress.perplexity_budget=10")
    limits = GenerationLimits(max_prompt_tokens=64, max_sequences=8)
    expected = _stored(root, key, "lora", "int8")
    with torch.inference_mode():
        ids = expected.generate(
            torch.tensor([list(b"def f")]),
            max_new_tokens=5,
            min_new_tokens=5,
            do_sample=False,
            pad_token_id=256,
        )
    greedy = bytes(ids[0, 5:].tolist()).decode("utf-8", errors="replace")
    with TestClient(create_app(settings(root, generation=limits))) as client:
        assert client.get("/v1/models/lora").json()["served_variants"] == ["fp32", "int8"]
        _compress(
            root,
            key,
            "lora",
            "compress.variants=[lowrank]",
            "compress.lowrank_rank=8",
            "compress.perplexity_budget=10",
        )
        deadline = time.monotonic() + 60
        while "lowrank" not in client.get("/v1/models/lora").json()["served_variants"]:
            assert time.monotonic() < deadline, "the new variant was never served"
            time.sleep(0.05)
        body = {"model": "lora", "prompt": "def f", "max_tokens": 5, "temperature": 0}
        answers = {}
        for variant in ("fp32", "int8", "lowrank"):
            resp = client.post("/v1/completions", json=body, params={"variant": variant})
            assert resp.status_code == 200, resp.text
            answers[variant] = resp.json()
            assert answers[variant]["variant"] == variant
            assert answers[variant]["model"] == "lora@1"
        assert answers["int8"]["choices"][0]["text"] == greedy
        in_body = client.post("/v1/completions", json={**body, "variant": "int8"}).json()
        assert in_body["choices"][0]["text"] == greedy
        plain = client.post("/v1/completions", json=body).json()
        assert plain["variant"] == "fp32"
        missing = client.post("/v1/completions", json={**body, "variant": "pruned"})
        assert missing.status_code == 404 and "int8" in missing.json()["error"]["message"]
        both = client.post("/v1/completions", json={**body, "variant": "int8"},
                           params={"variant": "lowrank"})  # fmt: skip
        assert both.status_code == 400
        described = client.get("/v1/models/lora").json()
        assert described["served_variants"] == ["fp32", "int8", "lowrank"]
        listed = {v["variant"]: v for v in described["variants"]["1"]}
        assert set(listed) == {"int8", "lowrank"}
        assert listed["int8"]["metrics"]["throughput_per_s"] > 0


def test_fedsys_compress_builds_the_variants_of_a_language_model_version(
    registry: tuple[Path, Ed25519PrivateKey], tmp_path: Path
) -> None:
    """The command on an LM version: held-out text from the config's lm section, a table
    with perplexities, and the variant signed into the version."""
    root, key = registry
    key_path = tmp_path / "publisher.key"
    write_private_key(key_path, key)
    corpus = write_jsonl(tmp_path / "corpus.jsonl", repeats=10)
    cfg = {
        "task": "language_model",
        "data": {"num_partitions": 3},
        "lm": {"text": {"source": "jsonl", "path": str(corpus), "seq_len": 32}},
    }
    config_path = tmp_path / "lm.yaml"
    config_path.write_text(yaml.safe_dump(cfg))
    args = ["compress", "--registry", str(root), "--name", "lm", "--version", "1"]
    args += ["--signing-key", str(key_path), "--config", str(config_path), "--replace"]
    sets = [*FAST, "compress.variants=[int8]", "compress.perplexity_budget=1"]
    for item in sets:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "perplexity" in result.output and "published" in result.output
    assert "int8" in variant_names(Registry(root).version_dir("lm", 1))


def test_a_language_model_run_compresses_without_a_classifier_public_split() -> None:
    """A language model's public text is lm.text's; compress.enabled leaves data's alone."""
    cfg = build_config(
        {"task": "language_model", "data": {"public_fraction": 0}, "compress": {"enabled": True}}
    )
    assert cfg.compress.enabled and cfg.data.public_fraction == 0
    with pytest.raises(ConfigError, match="public split"):
        build_config({"data": {"public_fraction": 0}, "compress": {"enabled": True}})
