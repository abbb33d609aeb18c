"""What a new user sees from ``fedsys simulate`` (the session's shared run): each start-up
stage named before it starts, results on stdout, and no warning, traceback, colour code or
routine INFO diagnostics at the default log level."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from serving_support import CLASSES, INPUT_SHAPE, MODEL
from simulate_support import Run

from fedsys.data.types import DatasetInfo
from fedsys.models import build_model
from fedsys.registry.int8_copy import int8_from_bytes, int8_to_bytes, quantize_int8
from fedsys.serving.inputs import PredictRequest

# In the order a run goes through them (serve.enabled: the endpoint is up before training).
STAGES = [
    "loading Flower, Ray and torch; preparing data (mnist1d, 4 partitions)",
    "serving ",
    "starting Flower's simulation engine: Ray and 4 virtual nodes",
    "4 simulated clients; nodes are given them as they are sampled",
    "round 1 of 4: clients training",
    "round    1  acc",
    "round    4  acc",
    "writing outputs",
    "sending the test set (1000 samples) through the endpoint",
]


def test_start_up_stages_are_announced_in_order(tiny_run: Run) -> None:
    stderr = tiny_run.result.stderr
    positions = [stderr.find(stage) for stage in STAGES]
    missing = [s for s, p in zip(STAGES, positions, strict=True) if p < 0]
    assert not missing, missing
    assert positions == sorted(positions), stderr


def test_no_warnings_tracebacks_or_colour_codes(tiny_run: Run) -> None:
    output = tiny_run.result.stderr + tiny_run.result.stdout
    for noise in ("Warning", "WARNING", "Traceback", "deprecated", "\x1b["):
        assert noise not in output, output
    # Ray's forwarded worker lines, e.g. "(ClientAppActor pid=123) ..."
    assert not re.search(r"\(\w+ pid=\d+", output), output


NATIVE_RAY_WORKER_LINE = re.compile(r"^\((\w+ )?pid=\d+(, ip=[\d.]+)?\) \[[\w.]+ : \d+\] RAW: ")
# Ray's own daemons report about the machine (e.g. the raylet's "disk over 95% full"): shown
# to the user as Ray prints them, and not fedsys's log lines
RAY_DAEMON_LINE = re.compile(r"^\((raylet|gcs_server|log_monitor|monitor)(, ip=[\d.]+)?\) ")


def test_default_log_level_shows_progress_only(tiny_run: Run) -> None:
    """Per-round diagnostics (publishes, worker swaps) stay at INFO, below the default
    runtime.log_level=WARNING: every line on stderr is a progress line."""
    stderr = tiny_run.result.stderr
    assert "published" not in stderr and "now serves" not in stderr
    expected = (*STAGES, "round ")
    for line in stderr.splitlines():
        if NATIVE_RAY_WORKER_LINE.match(line) or RAY_DAEMON_LINE.match(line):
            continue  # a C++ library inside a Ray worker, or Ray's own daemon: not ours
        message = line.split(" INFO ", 1)[-1]
        assert message.startswith(expected), line


def test_the_result_goes_to_stdout(tiny_run: Run) -> None:
    summary = json.loads((tiny_run.out / "summary.json").read_text())
    stdout = tiny_run.result.stdout
    assert stdout.startswith(f"done: final accuracy {summary['final_accuracy']:.4f}")
    assert f"(served: {summary['served_accuracy']:.4f})" in stdout
    assert str(tiny_run.out) in stdout and "done:" not in tiny_run.result.stderr


def test_run_leaves_an_example_request(tiny_run: Run) -> None:
    body = json.loads((tiny_run.out / "example.json").read_text())
    request = PredictRequest.model_validate(body)
    assert len(request.instances) == 2 and all(len(row) == 40 for row in request.instances)


@pytest.mark.filterwarnings("error")
def test_the_int8_serving_copy_raises_no_deprecation_notice() -> None:
    """torch.ao's notices (quantize_per_tensor "will be removed") are silenced per call."""
    module = build_model(MODEL, DatasetInfo(INPUT_SHAPE, CLASSES))
    data = int8_to_bytes(quantize_int8(module))
    rebuilt = int8_from_bytes(data, build_model(MODEL, DatasetInfo(INPUT_SHAPE, CLASSES)))
    assert isinstance(rebuilt, torch.nn.Module)


def test_starlettes_test_client_finds_httpx2() -> None:
    """With plain httpx, importing Starlette's TestClient warns that it is deprecated."""
    proc = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", "import starlette.testclient"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
