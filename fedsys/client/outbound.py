"""Turn a client's delta into what travels: codec pipeline, error feedback, envelope.

The residual of the lossy stages (what top-k dropped and what quantization rounded away) is
kept in a node-local file between rounds (``fedsys.client.node_state``): it is as large as the
model, too large to ride in ``context.state``, which Flower ships with every message.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Context, RecordDict

from fedsys.client.node_config import NodeConfig
from fedsys.client.node_state import load_residual, save_residual
from fedsys.client.pooled import client_signing_key
from fedsys.codec import build_pipeline, encode_update
from fedsys.config import CodecConfig
from fedsys.crypto import ClientKeys, RoundBinding, exchange_public_from_raw, seal
from fedsys.crypto.keys import (
    generate_signing_key,
    private_to_pem,
    read_signing_key,
    signing_key_from_pem,
)
from fedsys.errors import CodecArgumentError
from fedsys.protocol import PAYLOAD_KEY
from fedsys.training import derive_seed

STATE_KEY = "fedsys.client"  # ConfigRecord in context.state
_SIGNING_KEY = "signing-key-pem"


@dataclass(frozen=True)
class Outbound:
    """The reply's update record and what it cost to make."""

    record: ConfigRecord
    nbytes: int
    encode_seconds: float


def _state(context: Context) -> ConfigRecord:
    state: RecordDict = context.state
    if STATE_KEY not in state.config_records:
        state[STATE_KEY] = ConfigRecord()
    return state.config_records[STATE_KEY]


def signing_key(context: Context, pooled_client: tuple[Path, str] | None = None) -> bytes:
    """This node's Ed25519 key (PEM), made on first use and kept in the node's state.

    In simulation every run makes fresh keys; a deployed node names its key file in the node
    config (``signing-key``, made by ``fedsys keys client``; refused unless 0600). A client of
    a pooled simulation (``pooled_client`` = node-state directory, client id) derives its own
    key from the run's secret there, since its next message may run on another node
    (``fedsys.client.pooled``).
    """
    key_file = NodeConfig.parse(context.node_config).signing_key
    if key_file is not None:
        return private_to_pem(read_signing_key(Path(key_file)))
    if pooled_client is not None:
        state_dir, cid = pooled_client
        return client_signing_key(state_dir, context.run_id, cid)
    state = _state(context)
    pem = state.get(_SIGNING_KEY)
    if not isinstance(pem, bytes):
        pem = private_to_pem(generate_signing_key())
        state[_SIGNING_KEY] = pem
    return pem


def uses_error_feedback(cfg: CodecConfig) -> bool:
    return cfg.error_feedback and (cfg.quantize != "none" or cfg.topk is not None)


def encode_delta(
    delta: Mapping[str, torch.Tensor],
    cfg: CodecConfig,
    context: Context,
    *,
    client_id: str,
    aggregator_key: bytes | None,
    binding: RoundBinding,
    seed: int,
    state_dir: Path,
    num_examples: int | None = None,
    rewrite: Callable[[bytes], bytes] | None = None,
    state_budget: int | None = None,
    pooled: bool = False,
) -> Outbound:
    """Encode (and, when configured, seal) ``delta``; updates the stored residual.

    ``num_examples`` (the aggregation weight) is written into the payload, so the envelope
    authenticates it with the values; the server reads it from there. ``pooled``: sign with
    the client's own key, not the node's (pooled simulation). ``rewrite`` replaces
    the payload before sealing (simulated attacks only). ``state_budget``: bytes all clients'
    residuals together may take on this node's disk (``fedsys.client.state_budget``)."""
    start = time.perf_counter()
    residual = (
        load_residual(state_dir, binding.run_id, client_id) if uses_error_feedback(cfg) else None
    )
    generator = None
    if cfg.stochastic_rounding:
        # Seeded by the client's stable name, not Flower's random node id: the same seed
        # rounds the same way in every run.
        generator = torch.Generator().manual_seed(
            derive_seed(seed, binding.round, zlib.crc32(client_id.encode()), 11)
        )
    encoded = encode_update(
        delta,
        build_pipeline(cfg.pipeline_params()),
        residual=residual,
        generator=generator,
        num_examples=num_examples,
    )
    if encoded.residual is not None:
        save_residual(
            state_dir, binding.run_id, client_id, encoded.residual, max_bytes=state_budget
        )
    payload = rewrite(encoded.payload) if rewrite is not None else encoded.payload
    if not cfg.encrypt:
        record = ConfigRecord({PAYLOAD_KEY: payload})
        return Outbound(record, len(payload), time.perf_counter() - start)
    if aggregator_key is None:
        raise CodecArgumentError("codec.encrypt is on but the server sent no aggregator key")
    keys = ClientKeys(
        client_id=client_id,
        signing_key=signing_key_from_pem(
            signing_key(context, (state_dir, client_id) if pooled else None)
        ),
        aggregator_key=exchange_public_from_raw(aggregator_key),
    )
    envelope = seal(payload, keys, binding, cipher=cfg.cipher)
    record = ConfigRecord(dict(envelope.to_record_values()))  # type: ignore[arg-type]
    return Outbound(record, envelope.nbytes, time.perf_counter() - start)
