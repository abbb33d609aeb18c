"""``fedsys simulate`` on an existing Ray cluster (``runtime.ray_address``): a two-node cluster
on loopback, started and stopped by this test, ends with the same model as a local run.

Part of the default test run; skipped, with the reason, where Ray cannot start two nodes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from simulate_support import TINY, Run, run_simulate, set_args

START_SECONDS = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray_cli() -> str | None:
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.exists() else shutil.which("ray")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """The node and every process it started (its own process group), by its group id."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def two_node_cluster() -> Iterator[str]:
    """A head and one worker node on 127.0.0.1 (one CPU each); yields the head's address."""
    ray = _ray_cli()
    if ray is None:
        pytest.skip("the ray command-line tool is not installed")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths are limited
    common = ["--block", "--num-cpus=1", "--disable-usage-stats", f"--temp-dir={temp}"]
    env = {**os.environ, "RAY_TMPDIR": temp}
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        head = [ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}"]
        head += ["--include-dashboard=false", *common]
        nodes.append(_start(head, env))
        if not _wait_ready(ray, address, env, nodes=1):
            pytest.skip(f"Ray could not start a head node on {address} here")
        worker = [ray, "start", f"--address={address}", "--node-ip-address=127.0.0.1", *common]
        nodes.append(_start(worker, env))
        if not _wait_ready(ray, address, env, nodes=2):
            pytest.skip("Ray could not start a second node on this machine")
        yield address
    finally:
        for node in reversed(nodes):
            _stop(node)
        shutil.rmtree(temp, ignore_errors=True)


def _start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _wait_ready(ray: str, address: str, env: dict[str, str], nodes: int) -> bool:
    """Poll ``ray status`` until the cluster lists ``nodes`` active nodes."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        status = subprocess.run(
            [ray, "status", f"--address={address}"], env=env, capture_output=True, text=True
        )
        if status.returncode == 0 and status.stdout.count("node_") >= nodes:
            return True
        time.sleep(2)
    return False


def test_two_node_ray_cluster_gives_the_local_model(tiny_run: Run, tmp_path: Path) -> None:
    with two_node_cluster() as address:
        out = tmp_path / "on-cluster"
        result = run_simulate(
            ["--out", str(out), *set_args([*TINY, f"runtime.ray_address={address}"])]
        )
    assert result.returncode == 0, result.stderr[-3000:]
    local, remote = (
        load_file(tiny_run.out / "model.safetensors"),
        load_file(out / "model.safetensors"),
    )
    assert local.keys() == remote.keys()
    for name in local:
        np.testing.assert_array_equal(local[name], remote[name])
