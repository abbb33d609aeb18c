"""Test environment: telemetry off, a private FLWR_HOME, one data cache per session; and the
split of the suite: ``slow`` tests (long end-to-end scenarios, every ``deployment`` test
included) run only with ``-m slow`` (see pyproject's addopts and .ci/run)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from simulate_support import TINY_SERVED, Run, run_simulate, set_args

os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
os.environ["FLWR_DISABLE_UPDATE_CHECK"] = "1"


@pytest.hookimpl(tryfirst=True)  # before pytest deselects by -m
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A real deployment is always a long scenario: it belongs to the second command."""
    for item in items:
        if item.get_closest_marker("deployment") is not None:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def _private_homes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    flwr_home = tmp_path_factory.mktemp("flwr-home")
    cache = tmp_path_factory.mktemp("fedsys-cache")
    old = {k: os.environ.get(k) for k in ("FLWR_HOME", "FEDSYS_CACHE_DIR")}
    os.environ["FLWR_HOME"] = str(flwr_home)
    os.environ["FEDSYS_CACHE_DIR"] = str(cache)
    yield
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture
def task_identity() -> None:
    """Flower Messages made outside a running app need a run, task and node identity."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id = 1
    TaskIdentity.task_id = 1
    TaskIdentity.node_id = 0


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One ``fedsys simulate`` for the whole session (see simulate_support.TINY_SERVED):
    each simulation pays Ray's start-up, so the fast suite runs one and shares it."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    result = run_simulate(["--out", str(out), *set_args(TINY_SERVED)])
    assert result.returncode == 0, result.stderr[-3000:]
    return Run(out, result)
