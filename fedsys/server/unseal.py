"""Open a client's update: first the envelope, then the codec's checks on the plaintext.

The codec checks plaintext payloads only and ``fedsys.crypto`` only seals and opens; the
server joins the two here. Order: (envelope) known sender, signature, run/round/node, size,
every frame present and authentic; then the payload (:func:`fedsys.codec.check_payload`).
Every failure is a typed :class:`~fedsys.errors.CodecError` with a reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from fedsys.codec.limits import PayloadLimits
from fedsys.codec.template import Template
from fedsys.codec.validate import CheckedUpdate, UpdatePolicy, check_payload
from fedsys.crypto.envelope import Envelope, RoundBinding, open_envelope
from fedsys.crypto.keys import AggregatorKeys
from fedsys.errors import CodecArgumentError, UpdateRejected


def open_update(
    received: Envelope | Mapping[str, object] | bytes | bytearray,
    template: Template,
    policy: UpdatePolicy,
    *,
    keys: AggregatorKeys | None = None,
    expect: RoundBinding | None = None,
    client_id: str | None = None,
    limits: PayloadLimits | None = None,
) -> CheckedUpdate:
    """Everything an update must pass to count. ``received`` is an Envelope, its record
    values (``Envelope.to_record_values()``), or, if the policy allows, a bare payload.
    Without ``keys`` (a run that does not encrypt) a sealed update is rejected."""
    limits = limits or PayloadLimits.for_model(template)
    if isinstance(received, bytes | bytearray):
        if policy.require_envelope:
            raise UpdateRejected(
                "update is not sealed, and the policy requires an envelope: this run requires "
                "encrypted updates (codec.encrypt); seal the payload to the aggregator key "
                "sent in the train config (fedsys's ClientApp does)"
            )
        return check_payload(received, template, policy, limits)
    envelope = received if isinstance(received, Envelope) else Envelope.from_record_values(received)
    if expect is None:
        raise CodecArgumentError("opening an envelope needs the expected round binding")
    if keys is None:
        raise UpdateRejected(
            "update is sealed, but this run does not encrypt updates (codec.encrypt is off): "
            "send the bare payload"
        )
    cap = min(policy.max_payload_bytes, limits.payload_bytes)
    payload = open_envelope(envelope, keys, expect, max_payload_bytes=cap, client_id=client_id)
    checked = check_payload(payload, template, policy, limits)
    return replace(checked, client_id=envelope.header.client_id)
