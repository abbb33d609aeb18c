"""End to end on Flower's simulation engine: outputs (of the session's shared run), and, in
the slow suite, kill -9 then --resume, evaluation overlap, compressed encrypted updates."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from simulate_support import TINY, Run, kill_after_round, run_simulate, set_args

from fedsys.server.checkpoint import load_checkpoint
from fedsys.server.records import read_rounds


def _simulate(args: list[str], env_extra: dict[str, str] | None = None) -> int:
    result = run_simulate(args, env_extra=env_extra)
    if result.returncode not in (0, -signal.SIGKILL):
        sys.stderr.write(result.stderr)
    return result.returncode


_set = set_args


@pytest.fixture(scope="module")
def full_run(tiny_run: Run) -> Path:
    """The session's shared TINY run (it also publishes and serves, which changes no result)."""
    return tiny_run.out


def test_outputs(full_run: Path) -> None:
    rounds = read_rounds(full_run / "metrics.jsonl")
    assert [r.round for r in rounds] == [1, 2, 3, 4]
    for r in rounds:
        assert r.clients == 2 and r.sampled == 2 and not r.rejected
        assert 0.0 <= r.central_accuracy <= 1.0 and r.central_loss > 0
        # two fp32 models each way: the wire format's header is small next to the tensors
        assert len(r.client_bytes_up) == 2 and sum(r.client_bytes_up) == r.bytes_up
        assert 0.9 * r.bytes_down < r.bytes_up < 1.1 * r.bytes_down
        assert r.compression_ratio is not None and 1.0 <= r.compression_ratio < 1.2
        assert r.seconds > 0 and r.train_loss is not None
    summary = json.loads((full_run / "summary.json").read_text())
    assert summary["rounds"] == 4
    assert summary["final_accuracy"] == rounds[-1].central_accuracy
    assert summary["bytes_up_total"] == sum(r.bytes_up for r in rounds)
    assert summary["wall_seconds"] > 0
    assert (full_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    weights = load_file(full_run / "model.safetensors")
    assert set(weights) == set(load_checkpoint(full_run / "checkpoint").model)
    assert rounds[-1].central_loss < rounds[0].central_loss * 1.5  # trains, does not diverge


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_model(full_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = _simulate(["--out", str(out), *_set(TINY)], env_extra=kill_after_round(2))
    assert code == -signal.SIGKILL
    assert load_checkpoint(out / "checkpoint").round == 2
    assert not (out / "summary.json").exists()

    assert _simulate(["--resume", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_round"] == 2 and summary["rounds"] == 4
    assert [r.round for r in read_rounds(out / "metrics.jsonl")] == [1, 2, 3, 4]

    resumed = load_file(out / "model.safetensors")
    uninterrupted = load_file(full_run / "model.safetensors")
    for key, value in uninterrupted.items():
        np.testing.assert_allclose(resumed[key], value, rtol=0, atol=1e-6, err_msg=key)


@pytest.mark.slow
def test_evaluating_while_the_next_round_trains_changes_no_result(
    full_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "serial"
    assert _simulate(["--out", str(out), *_set([*TINY, "train.eval_overlap=false"])]) == 0
    overlapped, serial = read_rounds(full_run / "metrics.jsonl"), read_rounds(out / "metrics.jsonl")
    assert [r.round for r in serial] == [1, 2, 3, 4]
    for a, b in zip(overlapped, serial, strict=True):
        assert (a.central_accuracy, a.central_loss) == (b.central_accuracy, b.central_loss)
        assert (a.bytes_up, a.clients) == (b.bytes_up, b.clients)
    for key, value in load_file(full_run / "model.safetensors").items():
        np.testing.assert_array_equal(load_file(out / "model.safetensors")[key], value, key)


def test_resume_refuses_a_directory_without_a_run(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fedsys.cli", "simulate", "--resume", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2
    assert "holds no fedsys run" in proc.stderr


@pytest.mark.slow
def test_compressed_encrypted_updates_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "run"
    overrides = [
        *TINY,
        "train.rounds=2",
        "strategy.name=fedavg",
        "codec.topk=0.1",
        "codec.quantize=int8",
        "codec.encrypt=true",
    ]
    assert _simulate(["--out", str(out), *_set(overrides)]) == 0
    rounds = read_rounds(out / "metrics.jsonl")
    assert [r.clients for r in rounds] == [2, 2] and not any(r.rejected for r in rounds)
    for r in rounds:
        assert r.compression_ratio is not None and r.compression_ratio < 0.25
        assert r.decode_seconds > 0 and r.encode_seconds is not None


def test_missing_data_fails_before_the_simulation_starts(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedsys.cli",
            "simulate",
            "--out",
            str(tmp_path / "run"),
            "--set",
            "data.name=mnist",
            "--set",
            f"data.path={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1
    assert "train-images-idx3-ubyte" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
