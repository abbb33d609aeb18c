"""The ``fedsys`` command itself: help, version, check-config's resolved output, exit codes."""

from __future__ import annotations

import importlib.util
import logging
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from simulate_support import set_args
from typer.testing import CliRunner

from fedsys.cli import _setup_logging, app
from fedsys.config import ExperimentConfig, build_config, load_config

runner = CliRunner()


def test_help_is_plain_text_and_names_exit_codes() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "``" not in result.output and "Exit codes" in result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith(f"fedsys {version('fedsys')} (flwr {version('flwr')}")


def test_simulate_help_gives_the_default_output_dir_and_exit_codes() -> None:
    result = runner.invoke(app, ["simulate", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # rich wraps to the terminal's width
    assert "runs/<name>-<YYYYmmdd-HHMMSS>" in text
    assert "Exit codes: 0 the run finished, 1 it failed" in text and "2 a config" in text


def test_check_config_prints_resolved_values_on_stdout(repo_root: Path) -> None:
    config = repo_root / "configs" / "quickstart.yaml"
    result = runner.invoke(app, ["check-config", "--config", str(config)])
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(result.stdout)
    assert data["data"]["cache_dir"]  # FEDSYS_CACHE_DIR (conftest) or ~/.cache/fedsys
    assert data["strategy"]["drop_stragglers"] is True
    assert data["secagg"]["quant_bits"] == 16
    # only the run can decide these two: null, with a comment saying how
    assert data["publish"]["registry"] is None and data["runtime"]["node_state_dir"] is None
    assert "registry: null  # <out>/registry" in result.stdout
    assert "node_state_dir: null  # <data cache>/node-state" in result.stdout
    # what it prints loads as a config for the same run
    original, printed = load_config(config), build_config(data)
    assert printed.strategy.keeps_stragglers == original.strategy.keeps_stragglers
    assert (
        printed.model_copy(
            update={"data": original.data, "strategy": original.strategy, "secagg": original.secagg}
        )
        == original
    )


def test_check_config_resolves_derived_values_from_other_fields() -> None:
    overrides = ["strategy.name=fedprox", "strategy.proximal_mu=1", "codec.quantize=int8"]
    result = runner.invoke(app, ["check-config", *set_args(overrides)])
    data = yaml.safe_load(result.stdout)
    assert data["strategy"]["drop_stragglers"] is False  # FedProx keeps partial work
    assert data["secagg"]["quant_bits"] == 8


def test_cross_field_errors_name_the_field_not_the_top_level() -> None:
    result = runner.invoke(app, ["check-config", "--set", "strategy.name=fedprox"])
    assert result.exit_code == 2
    assert "(top level)" not in result.output
    assert "  strategy.proximal_mu must be > 0 for fedprox" in result.output


def test_default_log_level_hides_info_but_shows_progress() -> None:
    _setup_logging("WARNING")
    assert not logging.getLogger("fedsys").isEnabledFor(logging.INFO)
    assert not logging.getLogger("fedsys.serving").isEnabledFor(logging.INFO)
    assert logging.getLogger("fedsys.progress").isEnabledFor(logging.INFO)
    _setup_logging("ERROR")
    assert not logging.getLogger("fedsys.progress").isEnabledFor(logging.INFO)
    _setup_logging("DEBUG")
    assert logging.getLogger("fedsys").isEnabledFor(logging.DEBUG)


def test_python_api_example_finds_its_config_from_any_directory(
    repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location(
        "python_api", repo_root / "examples" / "python_api.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ran: list[tuple[str, Path]] = []

    def fake_simulate(cfg: ExperimentConfig, out: Path) -> None:
        ran.append((cfg.name, out))
        out.mkdir(parents=True)
        (out / "summary.json").write_text('{"rounds": 5, "final_accuracy": 0.5}')

    monkeypatch.setattr(module, "simulate", fake_simulate)
    module.main()
    assert ran == [("quickstart", Path("runs/python-api"))]
    assert (tmp_path / "runs" / "python-api" / "summary.json").exists()
