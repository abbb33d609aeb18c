"""What crosses the wire in each secure-aggregation stage, as pydantic schemas.

Small structured values (round parameters, public keys, per-node state) are pydantic models
serialized as JSON with base64 bytes; large or many values travel as raw bytes in the stage's
ConfigRecord (node-id lists packed as 8-byte big-endian integers, shares as lists of bytes).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from fedsys.errors import SecAggError
from fedsys.secagg.graph import effective_degree
from fedsys.secagg.keys import KEY_BYTES, Binding

Key = Annotated[bytes, Field(min_length=KEY_BYTES, max_length=KEY_BYTES)]

# Stage 1 is the ordinary train message carrying PARAMS_KEY in its config. Stages 2-4 are
# query messages whose action names the stage ("query.secagg_share", ...); STAGE_KEY in the
# request's ConfigRecord repeats it, so a request can never be taken for another stage.
STAGE_SHARE = "secagg_share"
STAGE_MASK = "secagg_mask"
STAGE_UNMASK = "secagg_unmask"
STAGE_KEY = "secagg.stage"
PARAMS_KEY = "secagg.params"


class Schema(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, ser_json_bytes="base64", val_json_bytes="base64"
    )


class RoundParams(Schema):
    """The public parameters of one round, sent to every sampled client with the model."""

    run_id: int = Field(ge=0)
    round: int = Field(ge=0)
    seed: bytes = Field(min_length=16, max_length=64, description="Public graph seed.")
    nodes: tuple[int, ...] = Field(min_length=1, description="The round's nodes, sorted.")
    degree: int | None = Field(default=None, ge=1)
    threshold: float = Field(gt=0, le=1, description="Share of neighbours needed to unmask.")
    bits: int
    quant_bits: int
    clip_range: float = Field(gt=0)
    length: int = Field(ge=0)

    @property
    def binding(self) -> Binding:
        return Binding(self.run_id, self.round)

    @property
    def k(self) -> int:
        return effective_degree(len(self.nodes), self.degree)

    @property
    def t(self) -> int:
        """Shares needed to reconstruct a secret: ``ceil(threshold * k)``, at least 1."""
        return max(1, math.ceil(self.threshold * self.k - 1e-9))

    def x_of(self, node: int) -> int:
        """A node's public share point: its 1-based position in ``nodes``."""
        try:
            return self.nodes.index(node) + 1
        except ValueError:
            raise SecAggError(f"node {node} is not part of round {self.round}") from None


class Advert(Schema):
    """Stage 1 reply: a client's public keys for this round and its self-mask commitment."""

    c_pk: Key
    s_pk: Key
    b_commit: Key


class PeerKeys(Schema):
    """Stage 2 request: the public keys of a client's neighbours that advertised theirs."""

    peers: dict[int, Advert]


class ClientRoundState(Schema):
    """A client's private state between stages (in the node's ``context.state``)."""

    params: RoundParams
    node_id: int
    c_sk: Key
    s_sk: Key
    b: Key
    stage: str
    peers: dict[int, Advert] = Field(default_factory=dict)
    received: dict[int, bytes] = Field(default_factory=dict)


def pack_ids(ids: Iterable[int]) -> bytes:
    return b"".join(struct.pack(">Q", i) for i in ids)


def unpack_ids(raw: bytes) -> list[int]:
    if not isinstance(raw, bytes) or len(raw) % 8:
        raise SecAggError("a node-id list must be bytes of a multiple of 8")
    return [v for (v,) in struct.iter_unpack(">Q", raw)]


def pack_map(values: Mapping[int, bytes]) -> tuple[bytes, list[bytes]]:
    """{node: bytes} -> (packed ids, values) in a stable order."""
    ids = sorted(values)
    return pack_ids(ids), [values[i] for i in ids]


def unpack_map(ids: object, values: object) -> dict[int, bytes]:
    """Inverse of :func:`pack_map`; SecAggError on a shape mismatch or duplicate ids."""
    if not isinstance(ids, bytes) or not isinstance(values, Sequence):
        raise SecAggError("a share map needs packed ids (bytes) and a list of bytes")
    nodes = unpack_ids(ids)
    if len(nodes) != len(values) or len(set(nodes)) != len(nodes):
        raise SecAggError("share map: ids and values differ in number or repeat")
    if not all(isinstance(v, bytes) for v in values):
        raise SecAggError("share map: every value must be bytes")
    return dict(zip(nodes, values, strict=True))  # type: ignore[arg-type]
