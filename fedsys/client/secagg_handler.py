"""The ClientApp's side of secure aggregation: one handler per protocol stage.

Stage 1 is the train message, with the round's parameters: the client trains, clips and
quantizes its delta with the round's global scale (plus the error-feedback residual of
its previous round, ``codec.error_feedback``), keeps the integer vector in a node-local
file (it is as large as the model) and its per-round secrets in ``context.state`` (a few KB),
and answers with its public keys. Stages 2-4 (``query.secagg_share``, ``query.secagg_mask``,
``query.secagg_unmask``) run the pure protocol in ``fedsys.secagg.client`` on that state.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from fedsys.client.node_state import load_residual, save_residual
from fedsys.codec import Residual
from fedsys.config import ExperimentConfig
from fedsys.errors import SecAggError
from fedsys.secagg import client as protocol
from fedsys.secagg.fixedpoint import FixedPoint
from fedsys.secagg.layout import FlatLayout
from fedsys.secagg.messages import (
    PARAMS_KEY,
    STAGE_KEY,
    STAGE_MASK,
    STAGE_SHARE,
    STAGE_UNMASK,
    ClientRoundState,
    PeerKeys,
    RoundParams,
    pack_map,
    unpack_ids,
    unpack_map,
)
from fedsys.training import derive_seed

STATE_KEY = "fedsys.secagg"  # ConfigRecord in context.state: the round's ClientRoundState
RECORD = "secagg"  # name of the ConfigRecord each stage's request and reply carry
RESIDUAL_KEY = "secagg"  # the flat error-feedback residual in the node's residual file


def _input_path(state_dir: Path, run_id: int, node_id: int) -> Path:
    return state_dir / str(run_id) / f"secagg-{node_id}.input"


def _save_state(context: Context, state: ClientRoundState, state_dir: Path) -> None:
    context.state[STATE_KEY] = ConfigRecord(
        {"state": state.model_dump_json(), "dir": str(state_dir)}
    )


def _load_state(context: Context, msg: Message, stage: str) -> tuple[ClientRoundState, Path]:
    record = context.state.config_records.get(STATE_KEY)
    if record is None:
        raise SecAggError(f"{stage} request without a secure-aggregation round in progress")
    state = ClientRoundState.model_validate_json(str(record["state"]))
    request = msg.content.config_records[RECORD]
    if request.get(STAGE_KEY) != stage or request.get("round") != state.params.round:
        raise SecAggError(
            f"{stage} request for round {request.get('round')!r}, "
            f"this node is in round {state.params.round}"
        )
    return state, Path(str(record["dir"]))


def clip_and_quantize(
    delta: Mapping[str, torch.Tensor],
    params: RoundParams,
    clip_norm: float,
    rng_seed: int | None,
    residual: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The update as the round's integers: L2-clip to ``clip_norm``, fixed-scale quantize.

    With a ``residual`` (error feedback), it is added after clipping and the new residual,
    what rounding took from that sum, comes back with the codes. What clamping to
    ``clip_range`` cuts is not carried: a coordinate that keeps exceeding the range would
    grow its residual without bound.
    """
    flat = FlatLayout.of(delta).flatten(delta)
    if flat.shape[0] != params.length:
        raise SecAggError(f"update has {flat.shape[0]} values, the round expects {params.length}")
    norm = float(np.linalg.norm(flat.astype(np.float64, copy=False)))
    if norm > clip_norm:
        flat *= np.float32(clip_norm / norm)
    if residual is not None and residual.shape == flat.shape:
        flat += residual
    fp = FixedPoint(params.bits, params.quant_bits, params.clip_range)
    np.clip(flat, -fp.clip_range, fp.clip_range, out=flat)
    rng = np.random.default_rng(rng_seed) if rng_seed is not None else None
    codes = fp.encode(flat, rng=rng)
    if residual is None:
        return codes, None
    flat -= fp.decode(codes)
    return codes, flat


def setup(
    msg: Message,
    context: Context,
    cfg: ExperimentConfig,
    delta: Mapping[str, torch.Tensor],
    metrics: dict[str, float | int],
    *,
    state_dir: Path,
    seed: int,
) -> Message:
    """Stage 1, after local training: keep the quantized delta and secrets, advertise keys."""
    start = time.perf_counter()
    raw = msg.content.config_records["config"].get(PARAMS_KEY)
    params = RoundParams.model_validate_json(str(raw))
    if params.run_id != context.run_id:
        raise SecAggError(f"round parameters name run {params.run_id}, not {context.run_id}")
    assert cfg.codec.clip_norm is not None  # the config requires it with secagg
    rng_seed = (
        derive_seed(seed, params.round, context.node_id, 13)
        if cfg.codec.stochastic_rounding
        else None
    )
    feedback = cfg.codec.error_feedback
    owner = f"secagg-{context.node_id}"
    residual = None
    if feedback:
        stored = load_residual(state_dir, context.run_id, owner).arrays.get(RESIDUAL_KEY)
        residual = np.zeros(params.length, np.float32) if stored is None else np.asarray(stored)
    codes, residual = clip_and_quantize(delta, params, cfg.codec.clip_norm, rng_seed, residual)
    if residual is not None:
        save_residual(state_dir, context.run_id, owner, Residual({RESIDUAL_KEY: residual}))
    path = _input_path(state_dir, context.run_id, context.node_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    codes.tofile(tmp)
    os.replace(tmp, path)
    state, advert = protocol.advertise(params, context.node_id)
    _save_state(context, state, state_dir)
    reply = ConfigRecord({"c_pk": advert.c_pk, "s_pk": advert.s_pk, "b_commit": advert.b_commit})
    values: dict[str, int | float | list[int] | list[float]] = dict(metrics)
    values["encode_seconds"] = time.perf_counter() - start
    content = RecordDict({RECORD: reply, "metrics": MetricRecord(values)})
    return Message(content=content, reply_to=msg)


def share(msg: Message, context: Context) -> Message:
    """Stage 2: Shamir-share the secrets among the neighbours, sealed to each."""
    state, state_dir = _load_state(context, msg, STAGE_SHARE)
    request = msg.content.config_records[RECORD]
    peers = PeerKeys.model_validate_json(str(request["peers"])).peers
    state, sealed = protocol.share_keys(state, peers)
    _save_state(context, state, state_dir)
    ids, blobs = pack_map(sealed)
    return Message(
        content=RecordDict({RECORD: ConfigRecord({"dst": ids, "sealed": blobs})}), reply_to=msg
    )


def mask(msg: Message, context: Context) -> Message:
    """Stage 3: mask the stored integer update; the node's input file is removed."""
    start = time.perf_counter()
    state, state_dir = _load_state(context, msg, STAGE_MASK)
    request = msg.content.config_records[RECORD]
    relayed = unpack_map(request.get("src"), request.get("sealed"))
    path = _input_path(state_dir, context.run_id, context.node_id)
    dtype = FixedPoint(state.params.bits, state.params.quant_bits, state.params.clip_range).dtype
    codes = np.fromfile(path, dtype=dtype)
    state = protocol.mask(state, codes, relayed)
    path.unlink(missing_ok=True)
    _save_state(context, state, state_dir)
    payload = codes.astype(dtype.newbyteorder("<"), copy=False).tobytes()
    metrics = MetricRecord({"mask_seconds": time.perf_counter() - start})
    content = RecordDict({RECORD: ConfigRecord({"masked": payload}), "metrics": metrics})
    return Message(content=content, reply_to=msg)


def unmask(msg: Message, context: Context) -> Message:
    """Stage 4: reveal one share per named neighbour (b of survivors, s key of dropped)."""
    state, state_dir = _load_state(context, msg, STAGE_UNMASK)
    request = msg.content.config_records[RECORD]
    survivors = unpack_ids(request["survivors"])  # type: ignore[arg-type]
    dropped = unpack_ids(request["dropped"])  # type: ignore[arg-type]
    state, out = protocol.reveal(state, survivors, dropped)
    _save_state(context, state, state_dir)
    b_ids, b_shares = pack_map(out.b_shares)
    sk_ids, sk_shares = pack_map(out.sk_shares)
    reply = ConfigRecord(
        {
            "b_ids": b_ids,
            "b_shares": b_shares,
            "sk_ids": sk_ids,
            "sk_shares": sk_shares,
            "problems": json.dumps({str(k): v for k, v in out.problems.items()}),
        }
    )
    return Message(content=RecordDict({RECORD: reply}), reply_to=msg)
