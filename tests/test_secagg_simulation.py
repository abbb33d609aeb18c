"""Secure aggregation end to end on Flower's simulation engine, against a plain run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from simulate_support import run_simulate, set_args

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
    result = run_simulate(["--out", str(out), *set_args(overrides)])
    assert result.returncode == 0, result.stderr


@pytest.mark.slow  # two simulations: the protocol itself is tested in test_secagg_round
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
