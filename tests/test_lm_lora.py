"""LoRA adapters as the update: what travels, exact FFA-LoRA aggregation, FedIT's gap, HetLoRA
ranks, the base's identity, and pretraining a base."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lm_task_support import lm_config, write_jsonl
from lm_task_support import one_torch_thread as one_torch_thread  # fixture for every test here

from fedsys.config import ExperimentConfig
from fedsys.errors import ConfigError
from fedsys.tasks import task_for
from fedsys.tasks.lm.aggregation import product_gap, weighted_mean
from fedsys.tasks.lm.task import BaseMismatch, LanguageModelTask
from fedsys.training import state_delta

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("text") / "t.jsonl")


def _round(
    cfg: ExperimentConfig,
) -> tuple[LanguageModelTask, list[dict[str, torch.Tensor]], list[float]]:
    """Every client trains from the initial global state; their final states and weights."""
    task = LanguageModelTask(cfg)
    model = task.model()
    start = {k: torch.from_numpy(v) for k, v in task.initial_state().items()}
    states, weights = [], []
    for pid in range(cfg.data.num_partitions):
        local = task.local_start(start, pid)
        task.load_state(model, local)
        data = task.client_data(pid)
        task.train(
            model,
            data,
            cfg.train,
            seed=pid,
            device=CPU,
            proximal_mu=0.0,
            work_fraction=1.0,
            partition_id=pid,
        )
        states.append({k: v.clone() for k, v in task.state_of(model).items()})
        weights.append(float(data.num_examples))
    return task, states, weights


def _frozen_a(task: LanguageModelTask) -> dict[str, torch.Tensor]:
    return {
        n.replace(".default.", "."): p.detach().clone()
        for n, p in task.model().named_parameters()
        if ".lora_A." in n
    }


def test_only_adapters_travel_and_ffa_sends_half(corpus: Path) -> None:
    fedit = LanguageModelTask(lm_config(corpus))
    ffa = LanguageModelTask(lm_config(corpus, lora={"aggregation": "ffa"}))
    full = LanguageModelTask(lm_config(corpus, lora={"aggregation": "full"}))
    fedit_state, ffa_state = fedit.initial_state(), ffa.initial_state()
    assert fedit_state and all(".lora_" in k for k in fedit_state)
    assert set(ffa_state) == {k for k in fedit_state if ".lora_B." in k}
    count = sum(v.size for v in fedit_state.values())
    assert sum(v.size for v in ffa_state.values()) * 2 == count
    assert count < 0.05 * fedit.model_parameters()
    assert sum(v.size for v in full.initial_state().values()) == full.model_parameters()
    # B starts at zero, A is seeded: the same on every node, different per seed
    again = LanguageModelTask(lm_config(corpus))
    assert all((again.initial_state()[k] == v).all() for k, v in fedit_state.items())
    assert all(not v.any() for k, v in fedit_state.items() if ".lora_B." in k)


def test_ffa_aggregate_is_exactly_the_mean_of_the_clients_products(corpus: Path) -> None:
    task, states, weights = _round(lm_config(corpus, lora={"aggregation": "ffa"}))
    assert all(any(s[k].abs().sum() > 0 for k in s) for s in states)  # every client learned
    frozen = _frozen_a(task)
    gap = product_gap(states, weights, weighted_mean(states, weights), frozen)
    assert gap.max_abs < 1e-6 and gap.relative < 1e-6


def test_fedit_aggregate_deviates_from_the_mean_of_the_products(corpus: Path) -> None:
    _, states, weights = _round(lm_config(corpus, lora={"aggregation": "fedit"}))
    gap = product_gap(states, weights, weighted_mean(states, weights))
    assert gap.relative > 1e-4  # mean(B)·mean(A) is not mean(B·A)


def test_gradient_checkpointing_trains_the_same_adapter(corpus: Path) -> None:
    plain = _round(lm_config(corpus, text={"max_client_chunks": 4}))[1]
    checkpointed = _round(
        lm_config(corpus, text={"max_client_chunks": 4}, gradient_checkpointing=True)
    )[1]
    for ours, theirs in zip(checkpointed, plain, strict=True):
        for key, value in theirs.items():
            torch.testing.assert_close(ours[key], value, rtol=1e-4, atol=1e-5)


def test_hetlora_clients_train_only_their_own_rank(corpus: Path) -> None:
    cfg = lm_config(corpus, lora={"aggregation": "hetlora", "rank": 4, "client_ranks": [2, 4]})
    task, states, _ = _round(cfg)
    low = states[0]  # partition 0 trains at rank 2
    for key, value in low.items():
        tail = value[2:, :] if ".lora_A." in key else value[:, 2:]
        assert not tail.any(), key
    assert any(states[1][k][:, 2:].any() for k in states[1] if ".lora_B." in k)
    start = task.local_start({k: torch.from_numpy(v) for k, v in task.initial_state().items()}, 0)
    delta = state_delta(low, start)
    assert all(not (d[2:] if ".lora_A." in k else d[:, 2:]).any() for k, d in delta.items())


def test_base_identity_is_shared_and_a_different_base_is_refused(corpus: Path) -> None:
    cfg = lm_config(corpus)
    task = task_for(cfg)
    stamped = cfg.model_copy(update={"lm": cfg.lm.model_copy(update={"base_sha256": "0" * 64})})
    assert task_for(stamped) is task  # one base per process, whatever the server stamps
    assert task.model() is task.model()
    task.check_base(task.base.sha256)
    with pytest.raises(BaseMismatch, match="base weights differ from the server's"):
        task.check_base("0" * 64)
    other = lm_config(corpus)
    other = other.model_copy(update={"runtime": other.runtime.model_copy(update={"seed": 4})})
    assert LanguageModelTask(other).base.sha256 != task.base.sha256


def test_pretrain_writes_a_checkpoint_a_run_can_name_as_its_base(
    corpus: Path, tmp_path: Path
) -> None:
    from fedsys.tasks.lm.pretrain import pretrain

    cfg = lm_config(corpus, pretrain={"steps": 3, "batch_size": 4, "warmup_steps": 1})
    report = pretrain(cfg, tmp_path / "base")
    assert (tmp_path / "base" / "config.json").is_file()
    assert report.public_units and report.steps == 3
    based = lm_config(corpus, base=str(tmp_path / "base"))
    task = LanguageModelTask(based)
    assert task.base.sha256 == report.base_sha256
    metrics = task.evaluate(task.model(), task.central_data(), device=CPU)
    assert metrics.extra["perplexity"] == pytest.approx(torch.tensor(metrics.loss).exp().item())
    assert 0 <= metrics.accuracy <= 1


def test_fedsys_pretrain_writes_the_base_and_says_where(corpus: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedsys.cli import app
    from fedsys.config import dump_config

    config = tmp_path / "lm.yaml"
    dump_config(lm_config(corpus, pretrain={"steps": 2, "batch_size": 2}), config)
    out = tmp_path / "base"
    result = CliRunner().invoke(app, ["pretrain", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "perplexity" in result.output and (out / "model.safetensors").is_file()
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: plain\n")
    refused = CliRunner().invoke(app, ["pretrain", "--config", str(plain), "--out", str(out)])
    assert refused.exit_code == 2 and "task: language_model" in refused.output


def test_orthogonal_a_is_the_same_on_every_node_with_orthogonal_rows(corpus: Path) -> None:
    cfg = lm_config(corpus, lora={"aggregation": "ffa"})  # ffa's default: orthogonal
    server, client = _frozen_a(LanguageModelTask(cfg)), _frozen_a(LanguageModelTask(cfg))
    kaiming_cfg = lm_config(corpus, lora={"aggregation": "ffa", "init_a": "kaiming"})
    kaiming = _frozen_a(LanguageModelTask(kaiming_cfg))
    assert server and set(server) == set(client) == set(kaiming)
    for key, a in server.items():
        assert torch.equal(a, client[key]), key  # computed from the seed, never sent
        rank = a.shape[0]
        # orthogonal rows at Kaiming-uniform's expected Frobenius norm, sqrt(rank / 3)
        torch.testing.assert_close(a @ a.T, torch.eye(rank) / 3, rtol=0, atol=1e-5)
        assert not torch.allclose(a, kaiming[key])
    assert lm_config(corpus).lm.lora.a_init() == "kaiming"  # fedit keeps peft's law
    with pytest.raises(ConfigError, match=r"lm\.lora\.init_a"):
        lm_config(corpus, lora={"init_a": "xavier"})
