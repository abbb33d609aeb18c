"""The one rule for completing round r while round r+1's clients train."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fedsys.server.overlap import Overlap

Log = list[tuple[str, object]]


def _overlap(log: Log, *, enabled: bool = True, last_round: int = 3) -> Overlap[int]:
    return Overlap(
        lambda rnd, next_start: log.append(("complete", (rnd, next_start))),
        enabled=enabled,
        last_round=last_round,
    )


def _step(log: Log, *, busy: bool) -> Callable[[Callable[[], None]], str]:
    def step(clients_busy: Callable[[], None]) -> str:
        log.append(("push", None))
        if busy:
            clients_busy()
        log.append(("pull", None))
        return "result"

    return step


def test_held_round_completes_once_the_clients_are_busy() -> None:
    log: Log = []
    overlap = _overlap(log)
    overlap.finish(1, 1)
    assert log == []  # held: a later round follows
    started = overlap.begin()
    assert overlap.during(_step(log, busy=True)) == "result"
    assert log == [("push", None), ("complete", (1, started)), ("pull", None)]


def test_held_round_completes_before_aggregation_when_nothing_overlaps() -> None:
    log: Log = []
    overlap = _overlap(log)
    overlap.finish(1, 1)
    started = overlap.begin()
    overlap.during(_step(log, busy=False))  # no message went out
    assert log == [("push", None), ("pull", None), ("complete", (1, started))]


def test_each_round_completes_exactly_once() -> None:
    log: Log = []
    overlap = _overlap(log)
    overlap.finish(1, 1)

    def twice(clients_busy: Callable[[], None]) -> None:
        clients_busy()
        clients_busy()

    started = overlap.begin()
    overlap.during(twice)
    overlap.close()
    assert log == [("complete", (1, started))]


def test_last_round_and_disabled_overlap_complete_at_once() -> None:
    log: Log = []
    _overlap(log, last_round=2).finish(2, 2)
    _overlap(log, enabled=False).finish(1, 1)
    assert log == [("complete", (2, None)), ("complete", (1, None))]


def test_close_keeps_the_round_aggregated_before_a_failure() -> None:
    log: Log = []
    overlap = _overlap(log)
    overlap.finish(1, 1)
    started = overlap.begin()

    def fails(clients_busy: Callable[[], None]) -> None:
        raise RuntimeError("round 2 broke before its messages went out")

    with pytest.raises(RuntimeError):
        overlap.during(fails)
    assert log == []
    overlap.close()
    overlap.close()
    assert log == [("complete", (1, started))]
