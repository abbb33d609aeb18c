"""Closing the loop: the endpoint beside a simulation, served accuracy in summary.json, and
``fedsys serve`` on the run's registry afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from serving_support import NAME, make_registry, npy, reference_predictions, samples, settings
from simulate_support import Run

from fedsys.config import build_config
from fedsys.errors import ConfigError
from fedsys.serving.runner import BackgroundServer
from fedsys.simulation_endpoint import endpoint_for, registry_dir, served_accuracy


def test_serve_enabled_publishes_at_the_end_by_default() -> None:
    cfg = build_config({}, ["serve.enabled=true"])
    assert cfg.publish.mode == "at_end" and cfg.serve.port == 0
    assert registry_dir(cfg, Path("/out")) == Path("/out/registry")
    with pytest.raises(ConfigError, match=r"publish\.mode"):
        build_config({}, ["serve.enabled=true", "publish.mode=never"])
    assert build_config({}, []).publish.mode == "never"  # serving off: nothing changes


def test_background_server_answers_and_leaves_no_thread(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    make_registry(root, seeds=(1,))
    x = samples(50)
    y = reference_predictions(1, x)
    y[:10] = (y[:10] + 1) % 10  # 40 of 50 labels agree with the model
    before = {t.ident for t in threading.enumerate()}
    with BackgroundServer(settings(root, host="127.0.0.1", port=0)) as server:
        assert server.port > 0
        accuracy, version = served_accuracy(server.url, NAME, x, y, chunk=16)
    assert (accuracy, version) == (0.8, 1)
    time.sleep(0.1)
    assert {t.ident for t in threading.enumerate()} <= before


def test_endpoint_with_several_workers_is_a_process_group(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    make_registry(root, seeds=(1,))
    cfg = build_config(
        {}, ["name=tiny", "serve.enabled=true", "serve.workers=2", f"publish.registry={root}"]
    )
    x = samples(20)
    with endpoint_for(cfg, tmp_path / "out") as url:
        assert url is not None
        accuracy, version = served_accuracy(url, NAME, x, reference_predictions(1, x), chunk=8)
        workers = {
            httpx.post(
                f"{url}/v1/models/{NAME}:predict",
                content=npy(x[:1]),
                headers={"Content-Type": "application/x-npy"},
            ).headers["x-fedsys-worker"]
            for _ in range(20)
        }
        # any worker's /metrics sums all workers: 3 chunks + 20 single requests
        text = httpx.get(f"{url}/metrics").text
        route = 'route="/v1/models/{name}:predict"'
        assert f'fedsys_requests_total{{method="POST",{route},status="200"}} 23.0' in text
    assert (accuracy, version) == (1.0, 1)
    assert workers and all(w.isdigit() for w in workers)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/healthz", timeout=2)  # the process group is gone


@pytest.fixture(scope="module")
def served_run(tiny_run: Run) -> Path:
    """The session's shared run: TINY with serve.enabled (and publish.mode=every_round)."""
    return tiny_run.out


def test_simulate_with_serving_writes_served_accuracy(served_run: Path) -> None:
    summary = json.loads((served_run / "summary.json").read_text())
    assert summary["served_version"] >= 1
    assert summary["served_accuracy"] == summary["final_accuracy"]
    assert (served_run / "registry" / "tiny" / "active").exists()


def test_fedsys_serve_serves_the_runs_registry(served_run: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedsys.cli",
            "serve",
            "--registry",
            str(served_run / "registry"),
            "--port",
            str(port),
        ],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # deprecations shown (Python hides them outside __main__)
        env={**os.environ, "PYTHONWARNINGS": "default::DeprecationWarning"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "fedsys serve not ready"
            time.sleep(0.2)
        summary = json.loads((served_run / "summary.json").read_text())
        models = httpx.get(f"{url}/v1/models").json()["models"]
        assert [m["name"] for m in models] == ["tiny"]
        assert models[0]["served_version"] == summary["served_version"]
        x = np.zeros((2, 40), np.float32)
        resp = httpx.post(
            f"{url}/v1/models/tiny:predict",
            content=npy(x),
            headers={"Content-Type": "application/x-npy"},
        )
        assert resp.status_code == 200 and len(resp.json()["predictions"]) == 2
        # the README's first request: the example the run wrote, as is
        resp = httpx.post(
            f"{url}/v1/models/tiny:predict",
            content=(served_run / "example.json").read_bytes(),
            headers={"Content-Type": "application/json"},
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["version"] == summary["served_version"]
        assert len(resp.json()["predictions"]) == 2
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode()
    # uvicorn's default WebSocket support imported websockets.legacy, deprecated (typer's own
    # notices about click, shown here too, are not ours to fix)
    assert "serving " in stderr and "websockets" not in stderr, stderr


def test_fedsys_serve_refuses_bad_options(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedsys.cli import app

    runner = CliRunner()
    missing = runner.invoke(app, ["serve", "--registry", str(tmp_path), "--api-keys", "/nope"])
    assert missing.exit_code == 2 and "API keys" in missing.output
    zero = runner.invoke(app, ["serve", "--registry", str(tmp_path), "--max-batch-size", "0"])
    assert zero.exit_code == 2 and "max_batch_size" in zero.output
