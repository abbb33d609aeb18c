"""What the server checks before an update counts; each failure is a typed error with a reason.

Order: (envelope) known sender, signature, run/round/node, size, every frame present and
authentic; then the payload's format and checksums, names/shapes/dtypes equal to the global
model's, every value finite, and the L2 norm within ``max_norm``. Map failures to the round's
rejections with ``except CodecError as exc: ... exc.reason``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from fedsys.codec.template import Template, check_layout
from fedsys.codec.wire import WireUpdate, parse_update
from fedsys.crypto.envelope import Envelope, RoundBinding, open_envelope
from fedsys.crypto.keys import AggregatorKeys
from fedsys.errors import UpdateRejected


class UpdatePolicy(BaseModel):
    """The server's limits on one update."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_payload_bytes: Annotated[int, Field(gt=0)] = 1 << 30
    max_norm: Annotated[float, Field(gt=0)] | None = None
    require_envelope: bool = True


@dataclass(frozen=True)
class CheckedUpdate:
    """A validated update, ready for :class:`~fedsys.codec.streaming.StreamingSum` or decoding."""

    wire: WireUpdate
    norm: float | None  # L2 norm; None when the policy has no bound (not computed)
    payload_bytes: int
    client_id: str | None


def check_payload(
    payload: bytes | bytearray | memoryview, template: Template, policy: UpdatePolicy
) -> CheckedUpdate:
    """Format, layout, finiteness and norm of a plaintext payload."""
    size = memoryview(payload).nbytes
    if size > policy.max_payload_bytes:
        raise UpdateRejected(
            f"payload of {size} bytes exceeds the limit of {policy.max_payload_bytes}"
        )
    wire = parse_update(payload)
    check_layout(wire, template)
    total = 0.0
    for name, t in wire.tensors.items():
        if t.entry.positions is not None:
            _ = t.positions  # a corrupt position stream fails here, before anything is summed
        stats = t.stats(need_norm=policy.max_norm is not None)
        if not stats.finite:
            raise UpdateRejected(f"tensor {name!r} holds NaN or infinite values")
        total += stats.sum_of_squares
    norm = math.sqrt(total) if policy.max_norm is not None else None
    if policy.max_norm is not None and norm is not None and norm > policy.max_norm:
        raise UpdateRejected(f"update L2 norm {norm:.6g} exceeds the bound {policy.max_norm:.6g}")
    return CheckedUpdate(wire, norm, size, None)


def validate_update(
    received: Envelope | Mapping[str, object] | bytes | bytearray,
    template: Template,
    policy: UpdatePolicy,
    *,
    keys: AggregatorKeys | None = None,
    expect: RoundBinding | None = None,
    client_id: str | None = None,
) -> CheckedUpdate:
    """Everything an update must pass to count. ``received`` is an Envelope, its record
    values (``Envelope.to_record_values()``), or, if the policy allows, a bare payload."""
    if isinstance(received, bytes | bytearray):
        if policy.require_envelope:
            raise UpdateRejected("update is not sealed, and the policy requires an envelope")
        return check_payload(received, template, policy)
    envelope = received if isinstance(received, Envelope) else Envelope.from_record_values(received)
    if keys is None or expect is None:
        raise ValueError("opening an envelope needs the aggregator keys and the expected binding")
    payload = open_envelope(
        envelope, keys, expect, max_payload_bytes=policy.max_payload_bytes, client_id=client_id
    )
    checked = check_payload(payload, template, policy)
    return CheckedUpdate(
        checked.wire, checked.norm, checked.payload_bytes, envelope.header.client_id
    )
