"""The experiment config: defaults, YAML, overrides and errors that name the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fedsys.config import ExperimentConfig, apply_overrides, build_config, load_config
from fedsys.errors import ConfigError


def test_defaults_are_the_quickstart(repo_root: Path) -> None:
    from_file = load_config(repo_root / "configs" / "quickstart.yaml")
    # the file adds publishing and serving to the built-in training defaults
    assert from_file.publish.mode == "every_round" and from_file.serve.enabled
    assert from_file.model_copy(
        update={"publish": None, "serve": None}
    ) == ExperimentConfig().model_copy(update={"publish": None, "serve": None})
    assert from_file.data.name == "mnist1d" and from_file.data.num_partitions == 10
    assert from_file.model.name == "cnn1d" and from_file.strategy.name == "fedavg"


def test_dotted_overrides_are_typed() -> None:
    cfg = build_config({}, ["train.lr=0.5", "strategy.name=fedprox", "strategy.proximal_mu=1"])
    assert cfg.train.lr == 0.5
    assert cfg.strategy.name == "fedprox"
    assert cfg.strategy.proximal_mu == 1.0
    assert cfg.strategy.keeps_stragglers


def test_override_creates_nested_sections() -> None:
    raw = apply_overrides({}, ["strategy.dp.noise_multiplier=0.5"])
    assert raw == {"strategy": {"dp": {"noise_multiplier": 0.5}}}
    cfg = build_config(raw)
    assert cfg.strategy.dp is not None and cfg.strategy.dp.noise_multiplier == 0.5


@pytest.mark.parametrize(
    ("override", "path"),
    [
        ("train.lrr=0.1", "train.lrr: unknown key"),
        ("train.lr=fast", "train.lr:"),
        ("train.lr=-1", "train.lr: Input should be greater than 0"),
        ("data.partitioner=random", "data.partitioner:"),
        ("strategy.min_available_nodes=50", "exceeds data.num_partitions"),
        ("codec.quantize=int2", "codec.quantize:"),
        ("codec.block_size=33", "codec.block_size:"),
    ],
)
def test_invalid_values_name_the_field(override: str, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({}, [override])
    assert path in str(info.value)


def test_fedprox_requires_mu() -> None:
    with pytest.raises(ConfigError, match="proximal_mu"):
        build_config({}, ["strategy.name=fedprox"])


def test_real_datasets_need_a_path() -> None:
    with pytest.raises(ConfigError, match=r"data\.path is required"):
        build_config({}, ["data.name=mnist"])


def test_malformed_override_and_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        build_config({}, ["train.lr"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_cli_reports_config_errors_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedsys.cli",
            "simulate",
            "--set",
            "train.rounds=0",
            "--set",
            "model.nam=x",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2
    assert "train.rounds" in proc.stderr and "model.nam: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "run").exists()
