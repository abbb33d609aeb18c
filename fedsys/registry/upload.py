"""Sending one registry version to a remote endpoint: its files as one multipart POST, with
retries and exponential backoff (the publisher's upload path)."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from fedsys.publish_config import PublishConfig
from fedsys.registry.store import INT8_FILE, MANIFEST_FILE, SIGNATURE_FILE, WEIGHTS_FILE

log = logging.getLogger("fedsys")

RETRY_STATUS = frozenset({408, 425, 429})


@dataclass(frozen=True)
class Upload:
    """A version waiting to be sent, and the round that made it."""

    version: int
    round: int


class SendOutcome(enum.Enum):
    SENT = "sent"
    GIVEN_UP = "given up"  # unreadable files or a conflict: retrying would not help
    RETRY = "retry"  # keep it pending for the next publish point


def send_version(
    client: httpx.Client,
    pub: PublishConfig,
    token: str | None,
    vdir: Path,
    name: str,
    item: Upload,
    *,
    sleep: Callable[[float], None],
) -> SendOutcome:
    """POST the version in ``vdir`` to ``pub.endpoint`` (set), retrying as configured."""
    assert pub.endpoint is not None
    parts = [
        ("manifest", MANIFEST_FILE, "application/json"),
        ("signature", SIGNATURE_FILE, "application/octet-stream"),
        ("weights", WEIGHTS_FILE, "application/octet-stream"),
    ]
    if (vdir / INT8_FILE).exists():
        parts.append(("int8_weights", INT8_FILE, "application/octet-stream"))
    try:
        files = {part: (fn, (vdir / fn).read_bytes(), ctype) for part, fn, ctype in parts}
    except OSError as exc:
        log.warning(
            "round %d: cannot send %s v%d, its files are unreadable (%s); not retrying",
            item.round,
            name,
            item.version,
            exc,
        )
        return SendOutcome.GIVEN_UP
    url = f"{pub.endpoint.rstrip('/')}/v1/models/{name}/versions"
    headers = {"Authorization": f"Bearer {token}"}
    reason = ""
    for attempt in range(pub.retries + 1):
        if attempt:
            sleep(pub.backoff_seconds * 2 ** (attempt - 1))
        try:
            resp = client.post(url, headers=headers, files=files)
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            continue
        if resp.is_success:
            log.info("round %d: %s v%d sent to %s", item.round, name, item.version, url)
            return SendOutcome.SENT
        reason = f"HTTP {resp.status_code}: {resp.text[:200]}"
        if resp.status_code == 409:
            log.warning(
                "round %d: %s refused %s v%d as a conflict (%s); not retrying",
                item.round,
                pub.endpoint,
                name,
                item.version,
                reason,
            )
            return SendOutcome.GIVEN_UP
        if resp.status_code < 500 and resp.status_code not in RETRY_STATUS:
            break  # the same request would get the same answer now
    log.warning(
        "round %d: remote publish of %s v%d to %s failed (%s); retrying at the next round",
        item.round,
        name,
        item.version,
        pub.endpoint,
        reason,
    )
    return SendOutcome.RETRY
