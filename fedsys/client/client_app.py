"""The fedsys ClientApp: receive the global model, train locally, reply with the encoded delta.

The experiment config travels with every train message (a few KB of JSON), so a node needs no
configuration of its own beyond which partition (or, deployed, which data) it holds. Data and
the model object are memoised per process: a simulation worker serves many clients and rounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from fedsys.client import secagg_handler
from fedsys.client.attack import attack_for
from fedsys.client.node_config import NodeConfig
from fedsys.client.node_state import state_root
from fedsys.client.outbound import encode_delta, signing_key
from fedsys.client.pooled import binding_node, pooled
from fedsys.client.state_budget import budget_bytes, sampled_per_round
from fedsys.client.virtual import client_id, partition_id
from fedsys.codec.downlink import decode_global
from fedsys.config import ExperimentConfig
from fedsys.crypto import RoundBinding
from fedsys.crypto.keys import public_to_raw, signing_key_from_pem
from fedsys.errors import FedsysError
from fedsys.memory import set_freed_memory
from fedsys.protocol import (
    AGGREGATOR_KEY,
    CONFIG_KEY,
    GLOBAL_KEY,
    HELLO_KEY,
    INTRO_RECORD,
    SEED_KEY,
    NodeHello,
    record_number,
    record_text,
)
from fedsys.secagg.messages import PARAMS_KEY as SECAGG_PARAMS_KEY
from fedsys.secagg.messages import STAGE_MASK, STAGE_SHARE, STAGE_UNMASK
from fedsys.tasks import ClientData, Task, task_for
from fedsys.training import derive_seed, select_device, state_delta

app = ClientApp()


@lru_cache(maxsize=4)
def _parse_config(config_json: str) -> ExperimentConfig:
    return ExperimentConfig.model_validate_json(config_json)


@lru_cache(maxsize=4)
def _task(config_json: str) -> Task:
    """This process's task for a message's config, looked up once per config text (finding
    it from a config object serialises the data-and-model settings, ~0.4 ms a call)."""
    return task_for(_parse_config(config_json))


@lru_cache(maxsize=64)
def _partition_data(config_json: str, partition_id: int) -> ClientData:
    return _task(config_json).client_data(partition_id)


def _model(config_json: str) -> tuple[Task, nn.Module]:
    """The task and its model object, one per process (the frozen base of a language model
    included); states are loaded into it every message."""
    cfg = _parse_config(config_json)
    torch.set_num_threads(cfg.runtime.torch_threads)
    set_freed_memory(cfg.runtime.freed_memory_policy)
    task = _task(config_json)
    return task, task.model()


@lru_cache(maxsize=4)
def _file_data(config_json: str, path: str) -> ClientData:
    """A deployed node's own data (classification: an ``.npz`` with ``x`` and ``y``)."""
    return _task(config_json).node_data(path)


def _local_data(config_json: str, context: Context, pid: int) -> ClientData:
    """``data-path`` from the node config (deployed), else partition ``pid``."""
    data_path = NodeConfig.parse(context.node_config).data_path
    if data_path is not None:
        return _file_data(config_json, data_path)
    return _partition_data(config_json, pid)


def _straggler_work(cfg: ExperimentConfig, seed: int, rnd: int, partition_id: int) -> float:
    """Share of the local work this client completes this round (1.0 unless a straggler).

    As in FedProx's experiments, a straggler completes a uniformly random number of epochs
    in [1, E); with a single local epoch it completes a uniform share of that epoch.
    """
    rng = np.random.default_rng(derive_seed(seed, rnd, partition_id, 7))
    if rng.random() >= cfg.train.stragglers:
        return 1.0
    epochs = cfg.train.local_epochs
    if epochs > 1:
        return float(rng.integers(1, epochs)) / epochs
    return float(rng.uniform(0.05, 0.95))


def _received(msg: Message) -> tuple[str, int, ArrayRecord, ConfigRecord]:
    config = msg.content.config_records["config"]
    arrays = msg.content.array_records["arrays"]
    return record_text(config, CONFIG_KEY), int(record_number(config, SEED_KEY)), arrays, config


def _global_state(
    template: Mapping[str, torch.Tensor], arrays: ArrayRecord, config: ConfigRecord
) -> dict[str, torch.Tensor]:
    """The model to start from: the coded copy when the server sent one, else the arrays.

    The delta is taken against exactly this state, so the server's exact model plus the
    delta is what this client trained to, whatever the downlink rounded away.
    """
    coded = config.get(GLOBAL_KEY)
    if isinstance(coded, bytes):
        return decode_global(coded, template)
    return arrays.to_torch_state_dict()


def _state_budget(cfg: ExperimentConfig, delta: dict[str, torch.Tensor]) -> int:
    """Bytes all clients' error-feedback residuals may take together on this node's disk."""
    residual = 2 * 4 * sum(t.numel() for t in delta.values())  # two float32 slots
    return budget_bytes(cfg.population.state_budget_mb, sampled_per_round(cfg), residual)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train on the local partition and reply with ``local - global`` plus metrics."""
    config_json, seed, arrays, config = _received(msg)
    cfg = _parse_config(config_json)
    rnd = int(record_number(config, "server-round"))
    pid = partition_id(context, config)
    task, model = _model(config_json)
    task.check_server(cfg)
    data = _local_data(config_json, context, pid)
    global_state = task.local_start(_global_state(task.state_of(model), arrays, config), pid)
    task.load_state(model, global_state)
    device = select_device(cfg.train.device)
    work = _straggler_work(cfg, seed, rnd, pid)
    result = task.train(
        model,
        data,
        cfg.train,
        seed=derive_seed(seed, rnd, pid),
        device=device,
        proximal_mu=record_number(config, "proximal-mu", 0.0),
        work_fraction=work,
        partition_id=pid,
    )
    # global_state is this call's own decoded copy, no longer needed once training is done
    delta = state_delta(task.state_of(model), global_state, overwrite_base=True)
    attack = attack_for(cfg, context, pid, rnd)  # None unless a simulated Byzantine client
    if attack is not None:
        delta = attack.tamper_delta(delta)
    claimed = attack.claimed_weight(result.num_examples) if attack else result.num_examples
    if SECAGG_PARAMS_KEY in config:  # secure aggregation: quantize, keep, advertise keys
        done: dict[str, float | int] = {
            "num-examples": claimed,
            "train_loss": result.train_loss,
            "train_seconds": result.seconds,
            "steps": result.steps,
            "straggler": int(work < 1.0),
        }
        state_dir = state_root(cfg.runtime.node_state_dir)
        return secagg_handler.setup(msg, context, cfg, delta, done, state_dir=state_dir, seed=seed)
    aggregator_key = config.get(AGGREGATOR_KEY)
    stated = attack.stated_weight(result.num_examples) if attack else result.num_examples
    outbound = encode_delta(
        delta,
        cfg.codec,
        context,
        client_id=client_id(context, config),
        aggregator_key=aggregator_key if isinstance(aggregator_key, bytes) else None,
        binding=RoundBinding(
            run_id=context.run_id, round=rnd, node_id=binding_node(context, config)
        ),
        seed=seed,
        state_dir=state_root(cfg.runtime.node_state_dir),
        num_examples=stated,
        rewrite=(lambda p: attack.rewrite_payload(p, delta, stated)) if attack else None,
        state_budget=_state_budget(cfg, delta),
        pooled=pooled(config),
    )
    record = attack.replace_record(outbound.record) if attack else outbound.record
    metrics = MetricRecord(
        {
            "num-examples": claimed,
            "train_loss": result.train_loss,
            "train_seconds": result.seconds,
            "encode_seconds": outbound.encode_seconds,
            "steps": result.steps,
            "straggler": int(work < 1.0),
        }
    )
    content = RecordDict({"update": record, "metrics": metrics})
    # the server learns who a node is from its replies, never by asking every node
    content[INTRO_RECORD] = _introduction(msg, context, config)
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate_local(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on this client's own held-out data."""
    config_json, _, arrays, config = _received(msg)
    cfg = _parse_config(config_json)
    pid = partition_id(context, config)
    task, model = _model(config_json)
    task.check_server(cfg)
    data = _local_data(config_json, context, pid)
    task.load_state(model, _global_state(task.state_of(model), arrays, config))
    res = task.evaluate(model, data.held_out, device=select_device(cfg.train.device))
    metrics = MetricRecord(
        {
            "num-examples": res.num_examples,
            "eval_loss": res.loss,
            "eval_accuracy": res.accuracy,
            "partition-id": pid,
            **{f"eval_{k}": v for k, v in res.extra.items()},
        }
    )
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)


@app.query(STAGE_SHARE)
def secagg_share(msg: Message, context: Context) -> Message:
    return secagg_handler.share(msg, context)


@app.query(STAGE_MASK)
def secagg_mask(msg: Message, context: Context) -> Message:
    return secagg_handler.mask(msg, context)


@app.query(STAGE_UNMASK)
def secagg_unmask(msg: Message, context: Context) -> Message:
    return secagg_handler.unmask(msg, context)


def _declared_examples(msg: Message, context: Context) -> int | None:
    """The training-set size this node will weigh its updates by, when the query says how
    to find its data (the experiment config); the server caps every update's weight by it."""
    config = msg.content.config_records.get("config")
    if config is None or CONFIG_KEY not in config:
        return None
    config_json = record_text(config, CONFIG_KEY)
    try:
        pid = partition_id(context, config)
        return _local_data(config_json, context, pid).num_examples
    except (FedsysError, OSError, ValueError):
        return None  # the train handler reports the data problem; the introduction still goes


def _introduction(msg: Message, context: Context, config: ConfigRecord | None) -> ConfigRecord:
    """This node's NodeHello: its partition (a stable label) and its update-signing key."""
    own = None  # pooled simulation: the client's own key, not the node's
    if config is not None and pooled(config):
        cfg = _parse_config(record_text(config, CONFIG_KEY))
        own = (state_root(cfg.runtime.node_state_dir), client_id(context, config))
    public = signing_key_from_pem(signing_key(context, own)).public_key()
    hello = NodeHello(
        partition_id=partition_id(context, config),
        client_id=client_id(context, config),
        signing_key=public_to_raw(public).hex(),
        num_examples=_declared_examples(msg, context),
    )
    return ConfigRecord({HELLO_KEY: hello.model_dump_json()})


@app.query()
def describe(msg: Message, context: Context) -> Message:
    """Introduce this node (answers a start-up query; the server now learns the same from
    every train reply)."""
    record = _introduction(msg, context, msg.content.config_records.get("config"))
    return Message(content=RecordDict({INTRO_RECORD: record}), reply_to=msg)
