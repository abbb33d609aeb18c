"""The ServerApp's round loop: sample, train, validate, aggregate, evaluate, checkpoint.

It follows ``flwr.serverapp.strategy.Strategy.start`` step for step and calls the same strategy
methods (``configure_train`` / ``aggregate_train``), adding what that loop lacks: deltas turned
back into weights, per-update validation, central evaluation, atomic checkpoints, resume, and
the run's outputs.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedProx, Strategy
from safetensors.torch import save_file

from fedsys.codec import UpdatePolicy
from fedsys.codec.downlink import encode_global
from fedsys.config import ExperimentConfig, dump_config
from fedsys.crypto import AggregatorKeys, RoundBinding, generate_exchange_key, public_to_raw
from fedsys.data import load_dataset
from fedsys.errors import CheckpointError
from fedsys.models import build_model, count_parameters
from fedsys.protocol import (
    AGGREGATOR_KEY,
    CONFIG_KEY,
    GLOBAL_KEY,
    SEED_KEY,
)
from fedsys.registry.publisher import Publisher
from fedsys.server.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fedsys.server.collect import Rejection, RoundCollector, RoundResult
from fedsys.server.durable import RoundGate
from fedsys.server.exchange import exchange
from fedsys.server.finite import non_finite
from fedsys.server.grid_view import StableOrderGrid
from fedsys.server.hello import allow_list, hello
from fedsys.server.norm_bound import NormBound
from fedsys.server.plots import plot_curves
from fedsys.server.progress import Reporter
from fedsys.server.publish_resume import reconcile_publishes
from fedsys.server.records import (
    RejectedUpdate,
    RoundRecord,
    RunSummary,
    append_round,
    read_rounds,
    truncate_rounds,
    write_json,
)
from fedsys.server.replay import digests_array, digests_set
from fedsys.server.secagg_round import SecAggOutcome, SecAggRound
from fedsys.server.strategies import build_strategy
from fedsys.server.strategy_state import export_state, import_state
from fedsys.training import evaluate, select_device

log = logging.getLogger("fedsys")


@dataclass(frozen=True)
class RunPaths:
    """Where a run writes; ``out`` is the directory given by ``--out``."""

    out: Path

    @property
    def metrics(self) -> Path:
        return self.out / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.out / "summary.json"

    @property
    def curves(self) -> Path:
        return self.out / "curves.png"

    @property
    def model(self) -> Path:
        return self.out / "model.safetensors"

    @property
    def config(self) -> Path:
        return self.out / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoint"


STREAMING_STRATEGIES = frozenset(
    {"fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad"}
)


FAULT_ENV = "FEDSYS_FAULT_KILL_AFTER_ROUND"


@dataclass(frozen=True)
class Aggregated:
    """A round whose new model is ready but not yet evaluated, recorded or checkpointed."""

    round: int
    started: float  # perf_counter at the round's start
    model: dict[str, np.ndarray]
    result: RoundResult
    sampled: int
    bytes_down_each: int
    secagg: SecAggOutcome | None
    checkpoint: Checkpoint
    refused: str | None = None  # why the round's aggregate did not become the global model


def _fault_injection(rnd: int) -> None:
    """Die like ``kill -9`` after round ``FEDSYS_FAULT_KILL_AFTER_ROUND`` (crash-resume tests)."""
    target = os.environ.get(FAULT_ENV)
    if target and int(target) == rnd:
        os.kill(os.getpid(), signal.SIGKILL)


def _state_dict(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in arrays.items()}


class Federation:
    """One run of the round loop over a Grid."""

    def __init__(
        self,
        grid: Grid,
        cfg: ExperimentConfig,
        out_dir: Path,
        reporter: Reporter,
        deployed_keys: AggregatorKeys | None = None,
    ) -> None:
        self.cfg = cfg
        self.paths = RunPaths(out_dir)
        self.reporter = reporter
        self.grid = grid
        seed = cfg.runtime.seed
        _, test, info = load_dataset(cfg.data, seed)
        self.test_x, self.test_y = torch.from_numpy(test.x), torch.from_numpy(test.y)
        torch.manual_seed(seed)
        self.model = build_model(cfg.model, info)
        self.device = select_device(cfg.train.device)
        self.global_arrays = {
            k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()
        }
        self.strategy: Strategy = build_strategy(cfg.strategy, cfg.train, cfg.data.num_partitions)
        # Server RNG: draws one seed per round for Flower's node sampling (see _sample_seed).
        self.rng = np.random.default_rng(seed)
        self.round = 0
        self.elapsed_before = 0.0
        self.resumed_from: int | None = None
        # Update encryption: a fresh aggregator key per run, or (deployed) the key and the
        # allow-list from files, so hellos never decide whom the server trusts.
        self.deployed_keys = deployed_keys
        self.exchange_key = (
            (deployed_keys.exchange_key if deployed_keys else generate_exchange_key())
            if cfg.codec.encrypt
            else None
        )
        self.streaming = cfg.strategy.name in STREAMING_STRATEGIES and cfg.strategy.dp is None
        # FedAvg and FedProx return the weighted mean unchanged: a streaming round's mean is
        # the new model, without a serialize/deserialize trip through the strategy.
        self.mean_is_final = self.streaming and type(self.strategy) in (FedAvg, FedProx)
        self.policy = UpdatePolicy(
            max_payload_bytes=cfg.codec.max_update_bytes,
            max_norm=cfg.codec.max_norm,
            require_envelope=cfg.codec.encrypt,
        )
        self.fp32_bytes = sum(
            v.size * 4 if v.dtype.kind == "f" else v.nbytes for v in self.global_arrays.values()
        )
        # Checkpoints are written by one background thread, at most one in flight, so a large
        # model's write and fsync overlap the next round instead of delaying it.
        self._checkpoint_writer = ThreadPoolExecutor(1, thread_name_prefix="fedsys-checkpoint")
        self._checkpoint_pending: Future[Path] | None = None
        # A round aggregated but not yet evaluated (train.eval_overlap), and round timing.
        self._pending: Aggregated | None = None
        self._run_start = self._round_started = time.perf_counter()
        # Filled by the start-up hello in run(): node -> client id, and the aggregator's keys.
        self.client_ids: dict[int, str] = {}
        self.declared_examples: dict[int, int] = {}  # node -> training examples it declared
        # The adaptive norm bound's reference (median accepted norm), carried across rounds.
        self.norm_bound = NormBound(cfg.defense)
        self.seen_payloads: set[bytes] = set()  # SHA-256 of every payload: replays are refused
        self.keys: AggregatorKeys | None = None
        # Publishing to the model registry: decided here, written by a background thread.
        self.publisher = (
            Publisher(cfg, out_dir, info, eval_data=(self.test_x, self.test_y))
            if cfg.publish.mode != "never"
            else None
        )
        self._durable = RoundGate()  # rounds whose checkpoint is on disk: publishes wait for it
        if self.publisher is not None:
            self.publisher.gate = self._durable

    def restore(self) -> None:
        """Continue from ``out/checkpoint`` if it exists."""
        try:
            ckpt = load_checkpoint(self.paths.checkpoints)
        except CheckpointError:
            if (self.paths.checkpoints / "checkpoint.safetensors").exists():
                raise
            log.warning("no checkpoint in %s: starting from round 1", self.paths.out)
            return
        expected = {k: (v.shape, v.dtype) for k, v in self.global_arrays.items()}
        found = {k: (v.shape, v.dtype) for k, v in ckpt.model.items()}
        if expected != found:
            raise CheckpointError(
                f"checkpoint in {self.paths.checkpoints} does not match model.name="
                f"{self.cfg.model.name!r}: its tensors differ"
            )
        self.global_arrays = ckpt.model
        import_state(self.strategy, ckpt.strategy_arrays, ckpt.strategy_state)
        self.rng.bit_generator.state = ckpt.rng_state
        self.round = ckpt.round
        self.elapsed_before = float(ckpt.extra.get("wall_seconds", 0.0))
        self.seen_payloads = digests_set(ckpt.defense_arrays.get("payload_digests"))
        reference = ckpt.extra.get("norm_reference")
        self.norm_bound.reference = float(reference) if reference is not None else None
        self.resumed_from = ckpt.round
        kept = truncate_rounds(self.paths.metrics, ckpt.round)
        if self.publisher is not None and kept:
            self.publisher.resume(max(r.central_accuracy for r in kept))
            run_id = str(self.grid.run.run_id)
            reconcile_publishes(
                self.publisher, self.paths.metrics, kept, ckpt.round, ckpt.model, run_id
            )
        log.warning("resuming after round %d from %s", ckpt.round, self.paths.checkpoints)

    def run(self) -> RunSummary:
        start = self._run_start = time.perf_counter()
        self.paths.out.mkdir(parents=True, exist_ok=True)
        dump_config(self.cfg, self.paths.config)
        if self.resumed_from is None and self.round == 0:
            self.paths.metrics.write_text("")
        self.reporter.stage(
            f"waiting for the nodes to start and introduce themselves "
            f"({self.cfg.data.num_partitions} expected)"
        )
        hellos = hello(self.grid, self.cfg)
        self.reporter.stage(f"{len(hellos)} nodes ready")
        grid = StableOrderGrid(self.grid, {n: h.partition_id for n, h in hellos.items()})
        self.client_ids = {n: h.client_id for n, h in hellos.items()}
        self.declared_examples = {
            n: h.num_examples for n, h in hellos.items() if h.num_examples is not None
        }
        self.keys = (
            AggregatorKeys(
                self.exchange_key,
                self.deployed_keys.allow_list if self.deployed_keys else allow_list(hellos),
            )
            if self.exchange_key is not None
            else None
        )
        self.reporter.start(self.cfg.train.rounds, self.round)
        try:
            while self.round < self.cfg.train.rounds:
                self.round += 1
                aggregated = self._one_round(grid, self.round)
                if self.cfg.train.eval_overlap and self.round < self.cfg.train.rounds:
                    self._pending = aggregated  # completed while the next round's clients work
                else:
                    self._complete(aggregated, next_start=None)
        finally:
            try:
                # A round that failed after the previous one aggregated: keep that one.
                self._complete_pending()
            finally:
                self.reporter.stop()
                self._wait_for_checkpoint()
                self._checkpoint_writer.shutdown()
                if self.publisher is not None:
                    self.publisher.close()  # flushes queued versions and uploads
        return self._finish(self.elapsed_before + time.perf_counter() - start)

    def _sample_seed(self) -> None:
        # Flower's sample_nodes draws with the module-level `random`; seeding it from the
        # server RNG each round makes client selection reproducible and resumable.
        random.seed(int(self.rng.integers(2**63)))

    def _one_round(self, grid: StableOrderGrid, rnd: int) -> Aggregated:
        """Sample, train, collect and aggregate round ``rnd``; evaluation comes later.

        While this round's clients work, the previous round (if pending) is evaluated,
        recorded and checkpointed (``train.eval_overlap``).
        """
        t0 = self._round_started = time.perf_counter()
        self._sample_seed()
        arrays = self._strategy_arrays()
        train_config = ConfigRecord(
            {CONFIG_KEY: self.cfg.to_json(), SEED_KEY: self.cfg.runtime.seed}
        )
        if self.exchange_key is not None:
            train_config[AGGREGATOR_KEY] = public_to_raw(self.exchange_key.public_key())
        messages = list(self.strategy.configure_train(rnd, arrays, train_config, grid))
        bytes_down_each = self._code_downlink(messages, arrays)
        run_id = self.grid.run.run_id
        secagg: SecAggOutcome | None = None
        if self.cfg.secagg.enabled:
            self._complete_pending()  # its stages exchange several times: nothing to overlap
            secagg = SecAggRound(
                grid,
                self.cfg,
                self.global_arrays,
                run_id=run_id,
                rnd=rnd,
                keep_stragglers=self.cfg.strategy.keeps_stragglers,
            ).run(messages, build_record=not self.mean_is_final)
            result = secagg.result
        else:
            collector = RoundCollector(
                self.global_arrays,
                self.policy,
                binding=lambda node: RoundBinding(run_id=run_id, round=rnd, node_id=node),
                keys=self.keys,
                client_ids=self.client_ids,
                keep_stragglers=self.cfg.strategy.keeps_stragglers,
                streaming=self.streaming,
                defense=self.cfg.defense,
                norm_bound=self.norm_bound,
                declared_examples=self.declared_examples,
                expected_replies=len(messages),
                seen_payloads=self.seen_payloads,
            )
            silent = exchange(
                grid,
                messages,
                collector.offer,
                self.cfg.train.timeout,
                after_push=self._complete_pending,
            )
            result = collector.finish(grid.order_key, build_record=not self.mean_is_final)
            self.norm_bound.end_round(result.accepted_norms)
            for node in silent:
                result.rejected.append(Rejection(node, "no reply within train.timeout"))
        self._complete_pending()  # when no message went out
        for rej in result.rejected:
            log.warning("round %d: update from node %d rejected: %s", rnd, rej.node_id, rej.reason)
        refused = self._aggregate(rnd, result)
        elapsed = self.elapsed_before + time.perf_counter() - self._run_start
        return Aggregated(
            round=rnd,
            started=t0,
            model=self.global_arrays,
            result=result,
            sampled=len(messages),
            bytes_down_each=bytes_down_each,
            secagg=secagg,
            checkpoint=self._snapshot(elapsed),
            refused=refused,
        )

    def _complete_pending(self) -> None:
        """Evaluate, record and checkpoint the round left pending, if any (once)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self._complete(pending, next_start=self._round_started)

    def _complete(self, agg: Aggregated, *, next_start: float | None) -> None:
        """Central evaluation of ``agg``'s model, its metrics line, publish and checkpoint.

        The round's ``seconds`` run from its start to the next round's start (``next_start``),
        or, when nothing overlaps it, to the end of its evaluation.
        """
        self.model.load_state_dict(_state_dict(agg.model))
        res = evaluate(
            self.model,
            self.test_x,
            self.test_y,
            batch_size=self.cfg.train.eval_batch_size,
            device=self.device,
        )
        if next_start is None:
            next_start = time.perf_counter()
        result, secagg = agg.result, agg.secagg
        sizes = [r.nbytes for r in result.received]
        record = RoundRecord(
            round=agg.round,
            central_accuracy=res.accuracy,
            central_loss=res.loss,
            train_loss=result.metrics.get("train_loss"),
            clients=result.accepted,
            sampled=agg.sampled,
            rejected=[RejectedUpdate(node=r.node_id, reason=r.reason) for r in result.rejected],
            stragglers_dropped=result.stragglers_dropped,
            bytes_up=sum(sizes),
            client_bytes_up=sizes,
            compression_ratio=(sum(sizes) / len(sizes) / self.fp32_bytes) if sizes else None,
            bytes_down=agg.bytes_down_each * agg.sampled,
            seconds=next_start - agg.started,
            client_train_seconds=result.metrics.get("train_seconds"),
            encode_seconds=result.metrics.get("encode_seconds"),
            decode_seconds=result.decode_seconds,
            secagg_seconds=secagg.seconds if secagg else None,
            dropped_after_masking=secagg.dropped_after_masking if secagg else None,
            secagg_aborted=secagg.aborted if secagg else None,
            clipped=result.clipped,
            aggregation_refused=agg.refused,
        )
        self._publish(record, agg.model)
        append_round(self.paths.metrics, record)
        self._write_checkpoint(agg.checkpoint)
        self.reporter.update(record)
        if os.environ.get(FAULT_ENV):
            self._wait_for_checkpoint()
            _fault_injection(agg.round)

    def _strategy_arrays(self) -> ArrayRecord:
        """The global model as the strategy's ``configure_train`` gets it.

        With a coded downlink the fp32 record never travels, so it is only built (40 MB of
        serialization at 10M parameters) for strategies that keep it as their reference
        (FedOpt family, FedAvgM, QFedAvg, the DP wrappers all hold ``current_arrays``).
        """
        if self.cfg.codec.downlink != "none" and not hasattr(self.strategy, "current_arrays"):
            return ArrayRecord()
        return ArrayRecord({k: Array(v) for k, v in self.global_arrays.items()})

    def _code_downlink(self, messages: list[Message], arrays: ArrayRecord) -> int:
        """With ``codec.downlink`` set, swap each message's fp32 model for the coded one.

        Strategies must still see the exact model in ``configure_train`` (FedOpt and FedAvgM
        keep it as their reference), so the swap happens on the messages they built.
        Returns the bytes of model each message carries.
        """
        scheme = self.cfg.codec.downlink
        if scheme == "none" or not messages:
            return arrays.count_bytes()
        payload = encode_global(self.global_arrays, scheme, self.cfg.codec.block_size)
        for msg in messages:
            content = msg.content
            for key, array_record in list(content.array_records.items()):
                if array_record is arrays:
                    content[key] = ArrayRecord()
            for config_record in content.config_records.values():
                if CONFIG_KEY in config_record:
                    config_record[GLOBAL_KEY] = payload
        return len(payload)

    def _aggregate(self, rnd: int, result: RoundResult) -> str | None:
        """Hand the accepted updates to the strategy; keep the model if too few or it fails.

        Returns why the round's model was refused, if it was: whatever the replies held, a
        non-finite model never replaces the global one (the strategy's state is put back too).
        """
        if result.accepted < self.cfg.strategy.min_accepted:
            log.warning(
                "round %d: %d update(s) accepted, strategy.min_accepted is %d; "
                "the global model stays as it was",
                rnd,
                result.accepted,
                self.cfg.strategy.min_accepted,
            )
            return None
        before = export_state(self.strategy)  # references: strategies replace, not mutate
        if self.mean_is_final and result.mean_weights is not None:
            candidate = result.mean_weights  # what FedAvg/FedProx would return
        else:
            try:
                agg_arrays, _ = self.strategy.aggregate_train(rnd, result.for_strategy)
            except Exception as exc:  # the round fails, the run goes on
                log.warning("round %d: aggregation failed (%s); global model unchanged", rnd, exc)
                import_state(self.strategy, *before)
                return f"aggregation failed: {type(exc).__name__}: {exc}"
            if agg_arrays is None:
                return None
            candidate = {
                k: np.asarray(v.numpy(), dtype=self.global_arrays[k].dtype)
                for k, v in agg_arrays.items()
            }
        problem = non_finite(candidate)
        if problem is not None:
            import_state(self.strategy, *before)
            log.warning("round %d: %s; the global model stays as it was", rnd, problem)
            return problem
        self.global_arrays = candidate
        return None

    def _snapshot(self, wall_seconds: float) -> Checkpoint:
        """This round's state, to be written once the round is recorded.

        The snapshot holds references, not copies: the round loop replaces the global arrays
        and Flower's strategies replace their state arrays each round, never mutate them.
        """
        strategy_arrays, strategy_state = export_state(self.strategy)
        return Checkpoint(
            round=self.round,
            model=self.global_arrays,
            strategy_arrays=strategy_arrays,
            strategy_state=strategy_state,
            rng_state=dict(self.rng.bit_generator.state),
            extra={"wall_seconds": wall_seconds, "norm_reference": self.norm_bound.reference},
            defense_arrays={"payload_digests": digests_array(self.seen_payloads)},
        )

    def _write_checkpoint(self, ckpt: Checkpoint) -> None:
        """Hand ``ckpt`` to the writer thread (at most one write in flight)."""
        self._wait_for_checkpoint()
        self._checkpoint_pending = self._checkpoint_writer.submit(
            save_checkpoint, self.paths.checkpoints, ckpt
        )
        self._durable.watch(ckpt.round, self._checkpoint_pending)

    def _wait_for_checkpoint(self) -> None:
        """Block until the checkpoint in flight is on disk; its errors surface here."""
        if self._checkpoint_pending is not None:
            pending, self._checkpoint_pending = self._checkpoint_pending, None
            pending.result()

    def _publish(self, record: RoundRecord, model: dict[str, np.ndarray]) -> None:
        """Queue the round's model for the registry per ``publish.mode``; never raises."""
        if self.publisher is not None:
            record.published_version = self.publisher.after_round(
                record.round,
                model,
                {"accuracy": record.central_accuracy, "loss": record.central_loss},
                record.clients,
                str(self.grid.run.run_id),
            )

    def _finish(self, wall_seconds: float) -> RunSummary:
        records = read_rounds(self.paths.metrics)
        save_file(
            {k: v.contiguous() for k, v in _state_dict(self.global_arrays).items()},
            str(self.paths.model),
            metadata={"model": self.cfg.model.model_dump_json(), "round": str(self.round)},
        )
        plot_curves(records, self.paths.curves, f"{self.cfg.name} ({self.cfg.strategy.name})")
        last = records[-1]
        summary = RunSummary(
            name=self.cfg.name,
            strategy=self.cfg.strategy.name,
            final_accuracy=last.central_accuracy,
            final_loss=last.central_loss,
            best_accuracy=max(r.central_accuracy for r in records),
            rounds=len(records),
            updates_total=sum(r.clients for r in records),
            bytes_up_total=sum(r.bytes_up for r in records),
            bytes_down_total=sum(r.bytes_down for r in records),
            wall_seconds=wall_seconds,
            seconds_per_round=sum(r.seconds for r in records) / len(records),
            model_parameters=count_parameters(self.model),
            resumed_from_round=self.resumed_from,
            published_version=self.publisher.last_published if self.publisher else None,
        )
        write_json(self.paths.summary, summary)
        return summary


def run_federation(
    grid: Grid,
    cfg: ExperimentConfig,
    out_dir: Path,
    reporter: Reporter,
    *,
    resume: bool,
    deployed_keys: AggregatorKeys | None = None,
) -> RunSummary:
    """Run (or, with ``resume``, continue) the experiment over ``grid``.

    ``deployed_keys``: the aggregator's key and allow-list loaded from files (deployment).
    """
    federation = Federation(grid, cfg, out_dir, reporter, deployed_keys)
    if resume:
        federation.restore()
    return federation.run()
