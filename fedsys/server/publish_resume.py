"""After a resume, make the registry and ``metrics.jsonl`` agree on every kept round.

A round's ``published_version`` is written to ``metrics.jsonl`` when its publish is queued;
the version itself is written later, by the publisher's thread, once the round's
checkpoint is on disk (:mod:`fedsys.server.durable`). A crash in between leaves a line that
names a version the registry lacks. On resume, for each kept line:

- its version is in the registry with the same round: nothing to do;
- it is the checkpoint's round: its model is the checkpoint's, so it is published now
  under the number the line names;
- otherwise the model is gone: the line's ``published_version`` is cleared and
  ``publish_gap`` says which version was lost.

New versions are numbered after every number seen, so a lost number is never reused.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fedsys.errors import UnknownArtifact
from fedsys.registry.publisher import Publisher
from fedsys.server.records import RoundRecord

log = logging.getLogger("fedsys")


def registry_rounds(publisher: Publisher) -> dict[int, int]:
    """version -> round of the versions of this run's model in its registry."""
    try:
        manifests = publisher.registry.versions(publisher.name)
    except UnknownArtifact:
        return {}
    return {m.version: m.round for m in manifests}


def reconcile_publishes(
    publisher: Publisher,
    metrics: Path,
    kept: list[RoundRecord],
    checkpoint_round: int,
    model: dict[str, np.ndarray],
    run_id: str | None,
) -> list[RoundRecord]:
    """Fill or record every lost publish of ``kept``; rewrites ``metrics`` if a line changed.

    Returns the (possibly updated) records.
    """
    versions = registry_rounds(publisher)
    known = [*versions, *(r.published_version or 0 for r in kept)]
    changed = False
    for rec in kept:
        version = rec.published_version
        if version is None or versions.get(version) == rec.round:
            continue
        if version not in versions and rec.round == checkpoint_round:
            metrics_of = {"accuracy": rec.central_accuracy, "loss": rec.central_loss}
            if publisher.republish(rec.round, version, model, metrics_of, rec.clients, run_id):
                log.warning("round %d: its lost publish was written now as v%d", rec.round, version)
                versions[version] = rec.round
                continue
        held_by = versions.get(version)
        rec.published_version = None
        rec.publish_gap = (
            f"version {version} was lost when the server stopped before writing it"
            if held_by is None
            else f"version {version} holds round {held_by}, not this round"
        )
        log.warning("round %d: %s", rec.round, rec.publish_gap)
        changed = True
    later = sorted(v for v, r in versions.items() if r > checkpoint_round)
    if later:
        log.warning("registry versions %s are of rounds after the checkpoint", later)
    if known:
        publisher.continue_after(max(known))
    if changed:
        metrics.write_text("".join(r.model_dump_json() + "\n" for r in kept))
    return kept
