"""Progress reporting: stages before the first round, the live bar saying what it waits for,
and plain lines off a terminal."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from fedsys.server.progress import STOPPING, LogReporter, RichReporter
from fedsys.server.records import RoundRecord


def _record(rnd: int) -> RoundRecord:
    return RoundRecord(
        round=rnd,
        central_accuracy=0.5,
        central_loss=1.0,
        train_loss=1.2,
        clients=2,
        sampled=2,
        rejected=[],
        stragglers_dropped=0,
        bytes_up=1000,
        client_bytes_up=[500, 500],
        compression_ratio=1.0,
        bytes_down=1000,
        seconds=0.5,
        client_train_seconds=0.1,
        encode_seconds=0.01,
        decode_seconds=0.01,
    )


def test_the_live_bar_names_what_it_waits_for(caplog: pytest.LogCaptureFixture) -> None:
    screen = io.StringIO()
    reporter = RichReporter(Console(file=screen, force_terminal=True, width=160))
    with caplog.at_level(logging.INFO, logger="fedsys.progress"):
        reporter.stage("waiting for the nodes")  # before the bar: a progress line
        reporter.start(3, 0)
        reporter.stage("round 1: aggregating")  # on the bar
        description = reporter._progress.tasks[0].description
        reporter.update(_record(1))
        after_round = reporter._progress.tasks[0].description
        reporter.stop()
    assert "waiting for the nodes" in caplog.messages
    assert description == "round 1: aggregating"
    assert after_round == "acc 0.5000 · round 2: clients training"
    assert STOPPING in caplog.messages
    assert "round    1  acc 0.5000" in screen.getvalue()


def test_plain_lines_off_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    reporter = LogReporter()
    with caplog.at_level(logging.INFO, logger="fedsys.progress"):
        reporter.stage("waiting for the nodes")
        reporter.start(3, 1)
        reporter.update(_record(2))
        reporter.stop()
    assert caplog.messages[:2] == ["waiting for the nodes", "round 2 of 3: clients training"]
    assert caplog.messages[2].startswith("round    2  acc 0.5000")
    assert caplog.messages[3] == STOPPING
