"""The server side of asynchronous buffered aggregation (``fedbuff`` section).

Up to ``fedbuff.concurrency`` clients train at once. The server takes their replies in the
order a virtual clock says they finish (``fedsys.fedbuff.clock``: each client's task lasts its
simulated slowdown times ``population.speed.task_seconds``), validates each one through the
same collector as a synchronous round, adds it to the buffer with its staleness weight, and
every ``buffer_size`` accepted updates applies the buffer: a new server version, evaluated,
recorded as one line of metrics.jsonl (``round`` = version) and checkpointed. A finished
client's slot goes to a newly sampled idle client at once.

Ordering replies by the virtual clock rather than by when Ray delivers them makes a run the
same for a seed whatever the machine's timing, and its ``virtual_seconds`` is the wall clock
the run would take on clients as slow as simulated. A checkpoint is written right after a
version is applied, when the buffer is empty; the clients in flight at a crash are sampled
anew after a resume (their work is lost, as a real server's would be).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

from fedsys.crypto import RoundBinding
from fedsys.errors import FedsysError
from fedsys.fedbuff import FedBuffBuffer, InFlight, VirtualClock
from fedsys.population import Availability, dropped_out, sample_keys
from fedsys.population.speed import task_seconds
from fedsys.scale_config import FedBuffConfig
from fedsys.server.collect import RoundCollector
from fedsys.server.downlink import DownlinkModel, downlink_model, train_config
from fedsys.server.federated_rounds import federated_evaluation
from fedsys.server.federation import Federation
from fedsys.server.peers import Peers
from fedsys.server.records import RejectedUpdate, RoundRecord, append_round

log = logging.getLogger("fedsys")

POLL_SECONDS = 0.01
_SAMPLING_SALT = 0xFB
MAX_IDLE_PERIODS = 10_000  # simulated task lengths with nobody online or in flight: give up


class NobodyOnline(FedsysError):
    """No client came online for a long simulated time; the run cannot go on."""


@dataclass
class _Window:
    """What happened between two applied versions (one metrics line)."""

    started: float = field(default_factory=time.perf_counter)
    dispatched: int = 0
    bytes_down: int = 0
    bytes_up: list[int] = field(default_factory=list)
    rejected: list[RejectedUpdate] = field(default_factory=list)
    stragglers_dropped: int = 0
    norms: list[float] = field(default_factory=list)
    train_loss: list[tuple[float, float]] = field(default_factory=list)  # (weight, loss)
    train_seconds: list[float] = field(default_factory=list)
    decode_seconds: float = 0.0


class FedBuffServer:
    """One asynchronous run over ``peers`` (their stable keys decide sampling and ties)."""

    def __init__(self, fed: Federation, peers: Peers, settings: FedBuffConfig) -> None:
        self.fed, self.peers, self.settings = fed, peers, settings
        cfg = fed.cfg
        self.seed = cfg.runtime.seed
        self.buffer = FedBuffBuffer(settings.buffer_size, settings.staleness, settings.exponent)
        self.clock = VirtualClock(now=fed.state.virtual_seconds)
        self.keys = np.array(peers.all_keys(), dtype=np.int64)
        self.availability = Availability(cfg.population.availability, self.seed)
        self.waiting: dict[str, InFlight] = {}  # message id -> task
        self.deadline: dict[int, float] = {}  # client key -> monotonic deadline
        self.arrived: dict[int, Message] = {}  # client key -> reply, not yet taken
        self.silent: set[int] = set()  # simulated dropouts: their slot frees at finish time
        self.window = _Window()
        self._down: tuple[int, DownlinkModel, ConfigRecord] | None = None

    # ---------------------------------------------------------------- the loop

    def run(self) -> None:
        state, rounds = self.fed.state, self.fed.cfg.train.rounds
        idle = 0
        while state.round < rounds:
            self._fill()
            task = self.clock.peek()
            if task is None:  # nobody online: simulated time moves on by one task length
                idle += 1
                if idle > MAX_IDLE_PERIODS:
                    raise NobodyOnline(
                        f"no client was online for {MAX_IDLE_PERIODS} simulated task lengths "
                        "(population.availability)"
                    )
                self.clock.advance_to(self.clock.now + self.fed.cfg.population.speed.task_seconds)
                continue
            idle = 0
            reply = self._await(task.client)
            self.clock.pop()
            self._take(task, reply)
            if self.buffer.full:
                self._apply()

    def _fill(self) -> None:
        """Hand every free slot to a newly sampled idle, online client."""
        free = self.settings.concurrency - len(self.clock)
        if free <= 0:
            return
        version = self.fed.state.round
        busy = self.clock.busy()
        idle = self.keys[[k not in busy for k in self.keys.tolist()]]
        online = idle[self.availability.online(self._period(), idle)]
        if len(online) == 0:
            return
        rng = self._rng()
        chosen = sample_keys(rng, online, min(free, len(online)))
        for key in chosen.tolist():
            self._dispatch(int(key), version)

    def _period(self) -> int:
        """Availability changes once per simulated task length (the fastest client's)."""
        return int(self.clock.now // self.fed.cfg.population.speed.task_seconds) + 1

    def _rng(self) -> np.random.Generator:
        """One stream per (version, tasks dispatched so far): resumable from the version."""
        state = self.fed.state
        return np.random.default_rng(
            [self.seed, state.round, self.window.dispatched, _SAMPLING_SALT]
        )

    def _dispatch(self, key: int, version: int) -> None:
        cfg = self.fed.cfg
        duration = task_seconds(cfg.population.speed, self.seed, key)
        task = self.clock.start(key, version, duration)
        self.window.dispatched += 1
        if dropped_out(cfg.population.availability, self.seed, self._period(), key):
            self.silent.add(key)  # never replies: its slot frees when it would have finished
            return
        down, config = self._downlink(version)
        config = ConfigRecord(dict(config))
        self.peers.name_client(config, key)
        content = RecordDict({"arrays": down.for_strategy, "config": config})
        msg = Message(
            content=content,
            dst_node_id=self.peers.node_for(key),
            message_type=MessageType.TRAIN,
            group_id=str(version + 1),
        )
        (message_id,) = list(self.peers.grid.push_messages([msg]))
        self.waiting[message_id] = task
        self.deadline[key] = time.monotonic() + cfg.train.timeout
        self.window.bytes_down += down.nbytes

    def _downlink(self, version: int) -> tuple[DownlinkModel, ConfigRecord]:
        """The model of ``version`` as it travels, built once per version."""
        if self._down is None or self._down[0] != version:
            fed = self.fed
            down = downlink_model(
                fed.state.model,
                fed.cfg.codec.downlink,
                fed.cfg.codec.block_size,
                keeps_reference=False,
            )
            config = train_config(fed.cfg, fed.exchange_key, down)
            config["server-round"] = version + 1
            if fed.cfg.strategy.name == "fedprox":
                config["proximal-mu"] = fed.cfg.strategy.proximal_mu
            if down.coded is not None:
                down = DownlinkModel(ArrayRecord(), down.coded)
            self._down = (version, down, config)
        return self._down[1], self._down[2]

    def _await(self, key: int) -> Message | None:
        """Client ``key``'s reply (pulling every reply in flight meanwhile); None if silent."""
        if key in self.silent:
            self.silent.discard(key)
            return None
        grid = self.peers.grid
        while key not in self.arrived:
            if time.monotonic() > self.deadline[key]:
                for mid, task in list(self.waiting.items()):
                    if task.client == key:
                        del self.waiting[mid]
                return None
            replies = list(grid.pull_messages(list(self.waiting)))
            for reply in replies:
                mid = reply.metadata.reply_to_message_id
                if mid in self.waiting:
                    self.arrived[self.waiting.pop(mid).client] = reply
            if key not in self.arrived and not replies:
                time.sleep(POLL_SECONDS)
        self.deadline.pop(key, None)
        return self.arrived.pop(key)

    # ---------------------------------------------------------------- one arrival

    def _take(self, task: InFlight, reply: Message | None) -> None:
        """Validate one reply and add it to the buffer with its staleness weight."""
        node = self.peers.node_for(task.client)
        if reply is None:
            self.window.rejected.append(
                RejectedUpdate(node=node, reason="no reply (dropped out or train.timeout)")
            )
            return
        staleness = self.fed.state.round - task.version
        limit = self.settings.max_staleness
        if limit is not None and staleness > limit:
            self.window.rejected.append(
                RejectedUpdate(
                    node=node,
                    reason=f"update is {staleness} versions stale (fedbuff.max_staleness={limit})",
                )
            )
            return
        self.peers.learn(reply)
        fed, state = self.fed, self.fed.state
        zeros = {k: np.zeros_like(v) for k, v in state.model.items()}
        run_id = self.peers.grid.run.run_id
        collector = RoundCollector(
            zeros,
            fed.policy,
            binding=lambda n: RoundBinding(run_id=run_id, round=task.version + 1, node_id=n),
            keys=self.peers.keys,
            client_ids=self.peers.client_ids,
            keep_stragglers=fed.cfg.strategy.keeps_stragglers,
            streaming=True,
            defense=fed.cfg.defense,
            norm_bound=state.norm_bound,
            declared_examples=self.peers.declared_examples,
            expected_replies=1,
            seen_payloads=state.seen_payloads,
        )
        collector.offer(reply)
        result = collector.finish(self.peers.grid.order_key, build_record=True)
        w = self.window
        w.decode_seconds += result.decode_seconds
        w.bytes_up += [r.nbytes for r in result.received]
        w.stragglers_dropped += result.stragglers_dropped
        w.rejected += [RejectedUpdate(node=r.node_id, reason=r.reason) for r in result.rejected]
        if not result.accepted or result.mean_weights is None or not result.for_strategy:
            return
        weight = float(result.for_strategy[0].content["metrics"]["num-examples"])  # type: ignore[arg-type]
        self.buffer.add(task.client, result.mean_weights, weight, staleness)
        w.norms += result.accepted_norms
        if "train_loss" in result.metrics:
            w.train_loss.append((weight, result.metrics["train_loss"]))
        if "train_seconds" in result.metrics:
            w.train_seconds.append(result.metrics["train_seconds"])

    # ---------------------------------------------------------------- one version

    def _apply(self) -> None:
        """Apply the buffer: the next server version, evaluated, recorded, checkpointed."""
        fed, state = self.fed, self.fed.state
        entries = list(self.buffer.entries)
        state.model = self.buffer.apply(state.model, self.settings.server_lr)
        state.round += 1
        state.virtual_seconds = self.clock.now
        state.norm_bound.end_round(self.window.norms)
        evaluation = fed.evaluator(state.model)
        w, now = self.window, time.perf_counter()
        loss_weight = sum(a for a, _ in w.train_loss)
        record = RoundRecord(
            round=state.round,
            central_accuracy=evaluation.accuracy,
            central_loss=evaluation.loss,
            train_loss=(sum(a * b for a, b in w.train_loss) / loss_weight) if loss_weight else None,
            clients=len(entries),
            sampled=w.dispatched,
            rejected=w.rejected,
            stragglers_dropped=w.stragglers_dropped,
            bytes_up=sum(w.bytes_up),
            client_bytes_up=w.bytes_up,
            compression_ratio=(sum(w.bytes_up) / len(w.bytes_up) / fed.fp32_bytes)
            if w.bytes_up
            else None,
            bytes_down=w.bytes_down,
            seconds=now - w.started,
            client_train_seconds=float(np.mean(w.train_seconds)) if w.train_seconds else None,
            decode_seconds=w.decode_seconds,
            virtual_seconds=self.clock.now,
            staleness_mean=float(np.mean([e.staleness for e in entries])),
            staleness_max=max(e.staleness for e in entries),
        )
        federated_evaluation(fed, self.peers, state.round, record)
        append_round(fed.paths.metrics, record)
        fed.checkpointer.write(state.snapshot(state.wall_seconds()))
        fed.reporter.update(record)
        self.window = _Window()


def train_fedbuff(fed: Federation, peers: Peers) -> None:
    """Run ``train.rounds`` server versions of asynchronous buffered aggregation."""
    FedBuffServer(fed, peers, fed.cfg.fedbuff).run()
