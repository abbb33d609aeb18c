"""Secure aggregation end to end on Flower's simulation engine, against a plain run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from fedsys.server.records import read_rounds

# Four equal IID partitions, so FedAvg's weighted mean equals secure aggregation's plain mean;
# a clip norm no update reaches, so the only difference is the 16-bit fixed-point rounding.
TINY = [
    "name=tiny",
    "data.num_partitions=4",
    "model.channels=8",
    "train.rounds=2",
    "train.batch_size=64",
    "train.max_steps=5",
    "strategy.name=fedavg",
    "codec.clip_norm=100",
    "runtime.progress=false",
    "runtime.seed=3",
]
SECAGG = ["secagg.enabled=true", "secagg.neighbours=2", "secagg.quant_bits=20"]


def _simulate(out: Path, overrides: list[str]) -> None:
    args = [arg for item in overrides for arg in ("--set", item)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedsys.cli", "simulate", "--out", str(out), *args],
        env=dict(os.environ),
        start_new_session=True,  # its own process group, so Ray's helpers die with it
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = proc.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr


def test_secagg_run_matches_the_plain_run(tmp_path: Path) -> None:
    plain, masked = tmp_path / "plain", tmp_path / "secagg"
    _simulate(plain, TINY)
    _simulate(masked, [*TINY, *SECAGG])
    rounds = read_rounds(masked / "metrics.jsonl")
    assert [r.round for r in rounds] == [1, 2]
    for r in rounds:
        assert r.clients == 4 and r.sampled == 4 and not r.rejected
        assert r.secagg_aborted is None and r.dropped_after_masking == 0
        assert r.secagg_seconds is not None
        assert set(r.secagg_seconds) == {
            "train_and_advertise",
            "share_keys",
            "masked_input",
            "unmask_requests",
            "unmask",
        }
        # every client sent a 32-bit masked vector as large as the fp32 model, plus keys
        model_bytes = r.bytes_down / r.sampled
        assert all(0.9 * model_bytes < n < 1.1 * model_bytes for n in r.client_bytes_up)
    ours, theirs = load_file(masked / "model.safetensors"), load_file(plain / "model.safetensors")
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        np.testing.assert_allclose(ours[key], value, rtol=0, atol=1e-3, err_msg=key)
    plain_acc = read_rounds(plain / "metrics.jsonl")[-1].central_accuracy
    assert abs(rounds[-1].central_accuracy - plain_acc) <= 0.01
