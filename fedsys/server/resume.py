"""Continue a run from its checkpoint: state, metrics lines and published versions agree."""

from __future__ import annotations

import logging

from fedsys.errors import CheckpointError
from fedsys.server.checkpoint import load_checkpoint
from fedsys.server.federation import Federation
from fedsys.server.publish_resume import reconcile_publishes
from fedsys.server.records import truncate_rounds

log = logging.getLogger("fedsys")


def resume_federation(fed: Federation) -> None:
    """Continue from ``out/checkpoint`` if it exists; rounds logged after it are dropped."""
    paths = fed.paths
    try:
        ckpt = load_checkpoint(paths.checkpoints)
    except CheckpointError:
        if (paths.checkpoints / "checkpoint.safetensors").exists():
            raise
        log.warning("no checkpoint in %s: starting from round 1", paths.out)
        return
    expected = {k: (v.shape, v.dtype) for k, v in fed.state.model.items()}
    found = {k: (v.shape, v.dtype) for k, v in ckpt.model.items()}
    if expected != found:
        raise CheckpointError(
            f"checkpoint in {paths.checkpoints} does not match model.name="
            f"{fed.cfg.model.name!r}: its tensors differ"
        )
    fed.state.restore(ckpt)
    kept = truncate_rounds(paths.metrics, ckpt.round)
    if fed.publisher is not None and kept:
        fed.publisher.resume(max(r.central_accuracy for r in kept))
        reconcile_publishes(fed.publisher, paths.metrics, kept, ckpt.round, ckpt.model, fed.run_id)
    log.warning("resuming after round %d from %s", ckpt.round, paths.checkpoints)
