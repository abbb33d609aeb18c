"""The language-model task through fedsys's own round loop and ClientApp (in one process):
adapters through the int8 codec and encryption, per-client evaluation, the base's identity."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lm_task_support import lm_config, write_jsonl
from lm_task_support import one_torch_thread as one_torch_thread  # fixture for every test here
from safetensors import safe_open

from fedsys.app import client_app
from fedsys.config import ExperimentConfig, build_config
from fedsys.inprocess import InProcessGrid
from fedsys.server.loop import run_federation
from fedsys.server.records import read_rounds


class _Quiet:
    def start(self, total_rounds: int, done_rounds: int) -> None:
        pass

    def update(self, record: Any) -> None:
        pass

    def stage(self, text: str) -> None:
        pass

    def stop(self) -> None:
        pass


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("text") / "t.jsonl")


def _with(cfg: ExperimentConfig, tmp: Path, **sections: dict[str, Any]) -> ExperimentConfig:
    raw = json.loads(cfg.to_json())
    raw["runtime"].update(progress=False, node_state_dir=str(tmp / "node-state"))
    raw["train"]["rounds"] = 2
    for name, values in sections.items():
        raw[name].update(values)
    return build_config(raw)


def _federate(cfg: ExperimentConfig, out: Path) -> dict[str, Any]:
    with contextlib.redirect_stderr(io.StringIO()):
        run_federation(
            InProcessGrid(client_app, cfg.data.num_partitions), cfg, out, _Quiet(), resume=False
        )
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


def test_ffa_adapters_travel_int8_and_sealed_and_every_client_is_scored(
    corpus: Path, tmp_path: Path
) -> None:
    cfg = _with(
        lm_config(corpus, lora={"aggregation": "ffa"}),
        tmp_path,
        codec={"quantize": "int8", "encrypt": True},
        # as in configs/lm_quickstart.yaml: clients write different code, and an honest
        # update can point away from the others' (cosine -0.03 here in round 2)
        defense={"direction_check": False},
    )
    summary = _federate(cfg, tmp_path / "run")
    assert len(summary["corpus_sha256"]) == 64 and len(summary["base_sha256"]) == 64
    scores = summary["client_eval"]
    assert [c["partition"] for c in scores["clients"]] == [0, 1, 2] and not scores["failed"]
    assert scores["worst_perplexity"] >= scores["mean_perplexity"] > 1
    rounds = read_rounds(tmp_path / "run" / "metrics.jsonl")
    assert all(r.clients == 3 and not r.rejected for r in rounds)
    adapter_fp32 = 4 * summary["update_parameters"]
    assert all(n < 0.5 * adapter_fp32 for r in rounds for n in r.client_bytes_up)  # int8
    assert rounds[-1].model_extra is not None and rounds[-1].model_extra["central_perplexity"] > 1
    with safe_open(str(tmp_path / "run" / "model.safetensors"), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert keys and all(".lora_B." in k for k in keys)  # FFA: A never travels nor is saved
    assert meta["base_sha256"] == summary["base_sha256"] and meta["content"] == "adapter"


def test_hetlora_ranks_through_the_round_loop(corpus: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    lora = {"aggregation": "hetlora", "rank": 4, "client_ranks": [2, 4, 2]}
    cfg = _with(lm_config(corpus, lora=lora), tmp_path, train={"rounds": 1})
    _federate(cfg, tmp_path / "run")
    rounds = read_rounds(tmp_path / "run" / "metrics.jsonl")
    assert rounds[0].clients == 3 and not rounds[0].rejected
    model = load_file(tmp_path / "run" / "model.safetensors")
    b = [v for k, v in model.items() if ".lora_B." in k]
    assert all(v.shape[1] == 4 for v in b)  # the global adapter has the largest rank
    assert any(np.abs(v[:, 2:]).max() > 0 for v in b)  # the rank-4 client's components


def test_a_node_with_another_base_is_refused_with_the_reason(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedsys.tasks.lm.task import LanguageModelTask

    def other_base(self: LanguageModelTask, cfg: ExperimentConfig) -> ExperimentConfig:
        return cfg.model_copy(update={"lm": cfg.lm.model_copy(update={"base_sha256": "0" * 64})})

    monkeypatch.setattr(LanguageModelTask, "stamp", other_base)
    cfg = _with(lm_config(corpus), tmp_path)
    summary = _federate(cfg, tmp_path / "run")
    rounds = read_rounds(tmp_path / "run" / "metrics.jsonl")
    assert all(r.clients == 0 for r in rounds)
    reasons = {rej.reason for r in rounds for rej in r.rejected}
    assert reasons and all("base weights differ from the server's" in x for x in reasons)
    assert len(summary["client_eval"]["failed"]) == 3


def test_the_server_refuses_a_configured_base_hash_it_does_not_hold(corpus: Path) -> None:
    from fedsys.tasks.lm.task import BaseMismatch, LanguageModelTask

    cfg = lm_config(corpus, base_sha256="f" * 64)
    with pytest.raises(BaseMismatch, match="sha256 "):
        LanguageModelTask(cfg).stamp(cfg)


@pytest.mark.parametrize("merge", [False, True])
def test_a_version_holds_the_adapter_and_its_base_or_the_merged_model(
    corpus: Path, tmp_path: Path, merge: bool
) -> None:
    from safetensors.numpy import load

    from fedsys.registry.store import Registry

    publish = {"mode": "at_end", "merge": merge, "int8_copy": merge}
    cfg = _with(lm_config(corpus), tmp_path, publish=publish, train={"rounds": 1})
    summary = _federate(cfg, tmp_path / "run")
    registry = Registry(tmp_path / "run" / "registry")
    manifest, weights = registry.read_weights(cfg.name, 1, registry_key(registry))
    spec = manifest.language_model
    assert manifest.model["task"] == "language_model" and spec is not None
    assert spec.base_sha256 == summary["base_sha256"]
    assert spec.base.startswith("bases/")  # stored once, inside the registry
    assert (registry.root / spec.base / "config.json").is_file()
    assert spec.kind == ("merged" if merge else "adapter")
    assert (manifest.int8_sha256 is not None) == merge
    names = set(load(weights))
    if not merge:  # A and B both: a complete adapter for its base
        assert {k.rsplit(".", 2)[-2] for k in names} == {"lora_A", "lora_B"}
        assert spec.adapter_config is not None and spec.adapter_config["r"] == 4
    else:
        assert not any("lora_" in k for k in names)


def registry_key(registry: Any) -> Any:
    from fedsys.crypto.keys import load_signing_public_key

    return load_signing_public_key(registry.publisher_key_path)


@pytest.mark.slow  # two federations; the protocol itself is tested in test_secagg_round
def test_secure_aggregation_over_adapter_deltas_matches_the_plain_run(
    corpus: Path, tmp_path: Path
) -> None:
    from safetensors.numpy import load_file

    # equal clients (the cap), so FedAvg's weighted mean is secure aggregation's plain mean;
    # a clip norm no update reaches: the only difference is fixed-point rounding
    base = lm_config(corpus, text={"max_client_chunks": 10})
    plain = _with(base, tmp_path / "p", codec={"clip_norm": 10.0})
    masked = _with(
        base,
        tmp_path / "s",
        codec={"clip_norm": 10.0},
        secagg={"enabled": True, "neighbours": 2, "quant_bits": 24},
    )
    _federate(plain, tmp_path / "plain")
    _federate(masked, tmp_path / "secagg")
    rounds = read_rounds(tmp_path / "secagg" / "metrics.jsonl")
    assert all(r.clients == 3 and not r.rejected and r.secagg_aborted is None for r in rounds)
    ours = load_file(tmp_path / "secagg" / "model.safetensors")
    theirs = load_file(tmp_path / "plain" / "model.safetensors")
    assert set(ours) == set(theirs) and all(".lora_" in k for k in ours)
    moved = max(float(abs(v).max()) for k, v in theirs.items() if ".lora_B." in k)
    assert moved > 1e-3  # the adapters did train
    for key, value in theirs.items():
        np.testing.assert_allclose(ours[key], value, rtol=0, atol=1e-4, err_msg=key)


RUN_SCRIPT = """
import contextlib, io, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from fedsys.app import client_app
from fedsys.config import ExperimentConfig
from fedsys.inprocess import InProcessGrid
from fedsys.server.loop import run_federation
sys.path.insert(0, sys.argv[3])
from test_lm_federation import _Quiet
cfg = ExperimentConfig.model_validate_json(Path(sys.argv[1]).read_text())
with contextlib.redirect_stderr(io.StringIO()):
    run_federation(InProcessGrid(client_app, cfg.data.num_partitions), cfg, Path(sys.argv[2]),
                   _Quiet(), resume=False)
"""


def _run_killed(tmp: Path, cfg: ExperimentConfig, out: Path, env_extra: dict[str, str]) -> int:
    """The federation in a child process (the crash hook kills it, not the test)."""
    import os
    import subprocess
    import sys

    script, cfg_file = tmp / "run.py", tmp / f"{out.name}.json"
    script.write_text(RUN_SCRIPT)
    cfg_file.write_text(cfg.to_json())
    tests = str(Path(__file__).parent)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **env_extra}
    argv = [sys.executable, str(script), str(cfg_file), str(out), tests]
    return subprocess.run(argv, env=env, capture_output=True, timeout=600).returncode


@pytest.mark.slow  # a child process that imports transformers
def test_a_killed_language_model_run_resumes_to_the_same_adapter(
    corpus: Path, tmp_path: Path
) -> None:
    from safetensors.numpy import load_file
    from simulate_support import kill_after_round

    cfg = _with(lm_config(corpus), tmp_path, train={"rounds": 3})
    _federate(cfg, tmp_path / "whole")
    killed = _run_killed(tmp_path, cfg, tmp_path / "killed", kill_after_round(1))
    assert killed == -9  # SIGKILL once round 1's checkpoint is on disk
    with contextlib.redirect_stderr(io.StringIO()):
        grid = InProcessGrid(client_app, cfg.data.num_partitions)
        run_federation(grid, cfg, tmp_path / "killed", _Quiet(), resume=True)
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["resumed_from_round"] == 1 and summary["rounds"] == 3
    whole = load_file(tmp_path / "whole" / "model.safetensors")
    resumed = load_file(tmp_path / "killed" / "model.safetensors")
    assert set(whole) == set(resumed) and all(".lora_" in k for k in whole)
    for key, value in whole.items():  # codec.quantize=none: bit for bit
        np.testing.assert_array_equal(resumed[key], value, err_msg=key)
