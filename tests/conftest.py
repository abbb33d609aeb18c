"""Test environment: telemetry off, a private FLWR_HOME, one data cache per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
os.environ["FLWR_DISABLE_UPDATE_CHECK"] = "1"


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
