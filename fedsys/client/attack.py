"""Byzantine clients for simulation (the ``attack`` config section): what a malicious but
genuine client (one holding a valid, allow-listed key) sends instead of its honest update.

Used by the robustness tests and ``simulations/bench_byzantine.py``. Only virtual clients of
a simulation ever attack: a node with its own identity or data (``client-id`` or ``data-path``
in its node config, i.e. a deployed daemon) ignores the section, so an honest node never
misbehaves because a server's config asked it to. A config without an attack changes nothing.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from flwr.app import ConfigRecord, Context

from fedsys.client.node_config import NodeConfig
from fedsys.codec.coded import CodedTensor
from fedsys.codec.dtypes import dtype_name
from fedsys.codec.quantize import Quantize
from fedsys.codec.wire import FLAG_DEFLATED_MANIFEST, HEADER, MAGIC, VERSION, pack_update
from fedsys.config import ExperimentConfig
from fedsys.defense_config import AttackConfig, AttackName
from fedsys.training import derive_seed

BOMB_INFLATED_BYTES = 64 << 20  # what the bomb's manifest claims to expand to
HUGE_WEIGHT = 10**12
OVERFLOW_VALUE = 3.0e38  # a finite float32 scale; times a code of 127 it overflows float32
OVERFLOW_BLOCK = 256

# Replies a malicious process sent, by partition: what a replay attack resends.
_SENT: dict[int, ConfigRecord] = {}


@lru_cache(maxsize=8)
def malicious_partitions(seed: int, num_partitions: int, fraction: float) -> frozenset[int]:
    """The partitions whose clients attack: ``round(fraction * n)`` drawn once from the seed."""
    count = round(fraction * num_partitions)
    rng = np.random.default_rng(derive_seed(seed, 0, 0, 97))
    return frozenset(int(p) for p in rng.permutation(num_partitions)[:count])


@dataclass(frozen=True)
class Attack:
    """One malicious client's behaviour in one round."""

    cfg: AttackConfig
    partition_id: int
    seed: int
    round: int

    @property
    def behaviour(self) -> AttackName:
        assert self.cfg.behaviour is not None
        return self.cfg.behaviour

    def tamper_delta(self, delta: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The delta the client encodes instead of its honest one."""
        out = dict(delta)
        floats = [k for k, v in delta.items() if v.is_floating_point()]
        gen = torch.Generator().manual_seed(
            derive_seed(self.seed, self.round, self.partition_id, 98)
        )
        for name in floats:
            value = delta[name]
            match self.behaviour:
                case "sign_flip":
                    out[name] = -value
                case "scale":
                    out[name] = value * self.cfg.factor
                case "gaussian":
                    noise = torch.randn(value.shape, generator=gen, dtype=torch.float32)
                    out[name] = (noise * self.cfg.noise_std).to(value.dtype)
        if self.behaviour == "wrong_shape" and floats:
            first = floats[0]
            out[first] = torch.zeros(delta[first].numel() + 1, dtype=delta[first].dtype)
        return out

    def stated_weight(self, honest: int) -> int | None:
        """num-examples inside the payload (None: not stated)."""
        if self.behaviour == "huge_weight":
            return HUGE_WEIGHT
        if self.behaviour == "nan_weight":
            return None  # an integer field cannot hold NaN: the client leaves it out
        return honest

    def claimed_weight(self, honest: int) -> float:
        """num-examples in the reply's MetricRecord (outside the payload)."""
        if self.behaviour == "huge_weight":
            return float(HUGE_WEIGHT)
        if self.behaviour == "nan_weight":
            return float("nan")
        return float(honest)

    def rewrite_payload(
        self, payload: bytes, delta: Mapping[str, torch.Tensor], num_examples: int | None
    ) -> bytes:
        """The payload the client seals instead, made by hand where fedsys's own encoder
        would refuse (non-finite values) or could not produce it; else unchanged."""
        if self.behaviour == "bomb":
            return decompression_bomb()
        if self.behaviour in ("nan", "inf", "overflow"):
            return forged_payload(delta, self.behaviour, num_examples)
        return payload

    def replace_record(self, record: ConfigRecord) -> ConfigRecord:
        """Replay: resend the record sent in an earlier round (its first round is honest)."""
        if self.behaviour != "replay":
            return record
        earlier = _SENT.get(self.partition_id)
        if earlier is None:
            _SENT[self.partition_id] = record
            return record
        return earlier


def forged_payload(
    delta: Mapping[str, torch.Tensor], behaviour: str, num_examples: int | None
) -> bytes:
    """A well-formed payload whose float values are NaN or inf (every fourth value), or whose
    int8 block scales are finite but overflow float32 once multiplied by the codes."""
    coded: dict[str, CodedTensor] = {}
    for name, value in delta.items():
        flat = value.detach().reshape(-1)
        shape = tuple(int(d) for d in value.shape)
        if not value.is_floating_point():
            coded[name] = CodedTensor(shape, dtype_name(value.dtype), "raw", flat, flat.numel())
        elif behaviour == "overflow":
            blocks = -(-flat.numel() // OVERFLOW_BLOCK)
            coded[name] = CodedTensor(
                shape,
                dtype_name(value.dtype),
                "int8",
                torch.full((flat.numel(),), 127, dtype=torch.int8),
                flat.numel(),
                scales=torch.full((blocks,), OVERFLOW_VALUE, dtype=torch.float32),
                block_size=OVERFLOW_BLOCK,
            )
        else:
            values = flat.to(torch.float32).clone()
            values[::4] = float(behaviour)
            coded[name] = CodedTensor(shape, dtype_name(value.dtype), "f32", values, values.numel())
    stages = [Quantize(bits=8, block_size=OVERFLOW_BLOCK)] if behaviour == "overflow" else []
    return pack_update(stages, coded, num_examples=num_examples)


def decompression_bomb(inflated: int = BOMB_INFLATED_BYTES) -> bytes:
    """A well-formed header whose deflated manifest expands to ``inflated`` bytes of JSON."""
    manifest = zlib.compress(b'{"stages": [], "tensors": [' + b" " * inflated + b"]}", 9)
    header = HEADER.pack(
        MAGIC, VERSION, FLAG_DEFLATED_MANIFEST, len(manifest), zlib.crc32(manifest)
    )
    return header + manifest


def attack_for(
    cfg: ExperimentConfig, context: Context, partition_id: int, rnd: int
) -> Attack | None:
    """This client's attack this round, or None (honest, or not a simulated client)."""
    if not cfg.attack.active:
        return None
    if NodeConfig.parse(context.node_config).deployed:
        return None  # a deployed node: never attacks on a server's say-so
    chosen = malicious_partitions(cfg.runtime.seed, cfg.data.num_partitions, cfg.attack.fraction)
    if partition_id not in chosen:
        return None
    return Attack(cfg.attack, partition_id, cfg.runtime.seed, rnd)


__all__ = ["Attack", "attack_for", "decompression_bomb", "malicious_partitions"]
