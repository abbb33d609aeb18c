"""What the server checks in a plaintext payload before it counts; each failure is a typed
error with a reason.

Order: the payload's format and checksums, names/shapes/dtypes equal to the global model's,
every decoded value finite and representable in its tensor's dtype, and the L2 norm within
``max_norm``. Every size the payload claims is bounded by what the global model can need
(:mod:`fedsys.codec.limits`) before memory is spent on it. The envelope around a payload
(sender, signature, binding, frames) is opened before this, by the server
(``fedsys.server.unseal``). Map failures to the round's rejections with
``except CodecError as exc: ... exc.reason``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from fedsys.codec.limits import PayloadLimits, value_bound
from fedsys.codec.manifest import Manifest
from fedsys.codec.template import Template, check_layout, check_manifest_layout
from fedsys.codec.wire import WireUpdate, parse_update
from fedsys.errors import UpdateRejected


class UpdatePolicy(BaseModel):
    """The server's limits on one update."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_payload_bytes: Annotated[int, Field(gt=0)] = 1 << 30
    max_norm: Annotated[float, Field(gt=0)] | None = None
    require_envelope: bool = True
    measure_norm: bool = False  # compute the norm even without max_norm (adaptive bounds)


@dataclass(frozen=True)
class CheckedUpdate:
    """A validated update, ready for :class:`~fedsys.codec.streaming.StreamingSum` or decoding."""

    wire: WireUpdate
    norm: float | None  # L2 norm; None when the policy neither bounds nor measures it
    payload_bytes: int
    client_id: str | None
    digest: bytes = b""  # SHA-256 of the plaintext payload: what a replay repeats

    @property
    def num_examples(self) -> int | None:
        """The aggregation weight the payload states (covered by the envelope's signature)."""
        return self.wire.num_examples


def check_payload(
    payload: bytes | bytearray | memoryview,
    template: Template,
    policy: UpdatePolicy,
    limits: PayloadLimits | None = None,
) -> CheckedUpdate:
    """Format, layout, value bounds and norm of a plaintext payload.

    ``limits`` (computed from ``template`` when not given) bound every size the payload
    claims; the manifest is matched against the template before any tensor byte is read."""
    limits = limits or PayloadLimits.for_model(template)
    size = memoryview(payload).nbytes
    cap = min(policy.max_payload_bytes, limits.payload_bytes)
    if size > cap:
        raise UpdateRejected(f"payload of {size} bytes exceeds the limit of {cap}")

    def expect(manifest: Manifest) -> None:
        check_manifest_layout(manifest, template)

    wire = parse_update(payload, max_manifest_bytes=limits.manifest_bytes, expect=expect)
    check_layout(wire, template)
    need_norm = policy.max_norm is not None or policy.measure_norm
    total = 0.0
    for name, t in wire.tensors.items():
        if t.entry.positions is not None:
            _ = t.positions  # a corrupt position stream fails here, before anything is summed
        bound = value_bound(t.entry.dtype)
        stats = t.stats(need_norm=need_norm, bound=bound)
        if not stats.finite:
            raise UpdateRejected(f"tensor {name!r} holds NaN or infinite values")
        if stats.max_abs > bound:
            raise UpdateRejected(
                f"tensor {name!r} holds values up to {stats.max_abs:.3g}, beyond what its "
                f"dtype {t.entry.dtype} can hold beside the model (limit {bound:.3g})"
            )
        total += stats.sum_of_squares
    norm = math.sqrt(total) if need_norm else None
    if norm is not None and not math.isfinite(norm):
        raise UpdateRejected("update L2 norm is not finite")
    if policy.max_norm is not None and norm is not None and norm > policy.max_norm:
        raise UpdateRejected(f"update L2 norm {norm:.6g} exceeds the bound {policy.max_norm:.6g}")
    return CheckedUpdate(wire, norm, size, None, hashlib.sha256(payload).digest())
