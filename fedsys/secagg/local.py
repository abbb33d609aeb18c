"""All four stages for many clients in one process: for tests and the protocol benchmark.

The same functions the Flower apps call, with the server relay replaced by dictionaries, so
dropouts can be placed exactly: ``drop_after_sharing`` vanish after key sharing (their masks
sit in their neighbours' inputs but their own input never arrives), ``drop_after_masking``
vanish after sending their masked input (it is summed; their self-mask is recovered from
their neighbours' shares).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from fedsys.errors import SecAggMessageInvalid
from fedsys.secagg import client
from fedsys.secagg.messages import ClientRoundState, RoundParams
from fedsys.secagg.server import SecAggServer

Tamper = Callable[[str, int, object], object]


@dataclass
class LocalRound:
    """The sum, the server's state, and seconds per stage spent by all clients / the server."""

    total: np.ndarray
    server: SecAggServer
    excluded: dict[int, str]
    client_seconds: dict[str, float] = field(default_factory=dict)
    server_seconds: dict[str, float] = field(default_factory=dict)


class _Clock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def run_local_round(
    params: RoundParams,
    inputs: Mapping[int, np.ndarray],
    *,
    drop_after_sharing: frozenset[int] = frozenset(),
    drop_after_masking: frozenset[int] = frozenset(),
    tamper: Tamper | None = None,
) -> LocalRound:
    """Run one round; ``tamper(stage, node, message)`` may replace what a client sends."""
    server = SecAggServer(params)
    on_client, on_server = _Clock(), _Clock()
    send: Tamper = tamper or (lambda _stage, _node, message: message)

    def offer(stage: str, node: int, receive: Callable[..., None], *message: object) -> None:
        with on_server(stage):
            try:
                receive(node, *message)
            except SecAggMessageInvalid as exc:
                server.excluded[node] = exc.detail

    states: dict[int, ClientRoundState] = {}
    for node in params.nodes:
        with on_client("advertise"):
            states[node], advert = client.advertise(params, node)
        offer("advertise", node, server.add_advert, send("advert", node, advert))
    for node, peers in server.share_requests().items():
        with on_client("share_keys"):
            states[node], sealed = client.share_keys(states[node], peers)
        offer("share_keys", node, server.add_shares, send("shares", node, sealed))
    for node, relayed in server.relay_requests().items():
        if node in drop_after_sharing:
            continue
        codes = np.array(inputs[node], copy=True)  # the client's own quantized update
        with on_client("mask"):
            states[node] = client.mask(states[node], codes, relayed)
            payload = codes.tobytes()
        offer("mask", node, server.add_masked, send("masked", node, payload))
    with on_server("reveal"):
        requests = server.unmask_requests()
    for node, (survivors, dropped) in requests.items():
        if node in drop_after_masking:
            continue
        with on_client("reveal"):
            states[node], out = client.reveal(states[node], survivors, dropped)
        out = send("reveal", node, out)  # type: ignore[assignment]
        offer("reveal", node, server.add_reveal, out.b_shares, out.sk_shares, out.problems)
    with on_server("unmask"):
        total = server.finish()
    return LocalRound(total, server, dict(server.excluded), on_client.seconds, on_server.seconds)
