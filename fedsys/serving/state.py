"""One worker's serving state: registry, live models, batcher, and the active-pointer poll.

Every worker polls each model's ``active`` marker (a stat and a tiny read) every
``poll_interval_s`` and hot-swaps when it moves, so a publish or rollback received by any
worker, or written by the ServerApp's publisher, reaches all workers within about one poll
interval plus the time to verify and load the new weights.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sys
from dataclasses import replace
from typing import Annotated

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import Depends, Request

from fedsys.crypto.keys import load_signing_public_key
from fedsys.errors import FedsysError
from fedsys.registry import AuditLog, Registry
from fedsys.registry.variants import load_verified_variants, variants_stamp
from fedsys.serving.batcher import Batcher
from fedsys.serving.endpoint_settings import ServeSettings
from fedsys.serving.generation.served import LanguageModels, ServedLM
from fedsys.serving.live import LiveModels, ServedModel
from fedsys.serving.metrics import ServeMetrics

log = logging.getLogger("fedsys.serving")

Marker = tuple[int | None, int, int]  # active version, pointer mtime, variants stamp


class ServingState:
    """What the routes share; created by ``create_app``, started by its lifespan."""

    def __init__(self, settings: ServeSettings, metrics: ServeMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        settings.registry.mkdir(parents=True, exist_ok=True)
        self.audit = AuditLog(settings.audit_path)
        self.registry = Registry(settings.registry, audit=self.audit)
        self.live = LiveModels()
        self.language_models = LanguageModels(settings.generation)
        self.batcher = Batcher(
            settings.max_batch_size,
            settings.max_wait_ms,
            on_batch=lambda name, rows: metrics.batch_size.labels(name).observe(rows),
        )
        self.api_keys = settings.api_keys()
        self.publish_token = settings.publish_token()
        self.worker = os.getpid()
        self._trusted: Ed25519PublicKey | None = None
        self._seen: dict[str, Marker] = {}
        self._lock = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None

    # lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.settings.torch_threads is not None:
            torch.set_num_threads(self.settings.torch_threads)
        if self.settings.switch_interval_s is not None:
            sys.setswitchinterval(self.settings.switch_interval_s)
        self.batcher.start()
        await self.sync_all()
        if self.settings.freeze_gc:
            # Objects alive now live as long as the worker; a full collection need not walk
            # them again (they are still freed by reference counting).
            gc.collect()
            gc.freeze()
        self._poller = asyncio.create_task(self._poll_forever(), name="fedsys-registry-poll")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        await asyncio.to_thread(self.batcher.stop)
        await asyncio.to_thread(self.language_models.stop)

    # trust and loading ----------------------------------------------------------------------

    def trusted(self) -> Ed25519PublicKey:
        """The publisher key; read on first use (the registry may not have it at start-up)."""
        if self._trusted is None:
            self._trusted = load_signing_public_key(self.settings.publisher_key_path)
        return self._trusted

    def _load(self, name: str, version: int) -> ServedModel:
        """Verify and build one version (blocking: run it in a thread)."""
        trusted = self.trusted()
        manifest = next((m for m in self.registry.versions(name) if m.version == version), None)
        variant = self.settings.variant
        if variant == "int8" and (manifest is None or manifest.int8_sha256 is None):
            log.warning("%s v%d has no int8 copy; serving fp32", name, version)
            variant = "fp32"
        loaded = self.registry.load(name, version, trusted, variant=variant)
        served = ServedModel(name, version, loaded.manifest, loaded.module.eval(), loaded.variant)
        found = load_verified_variants(
            self.registry.version_dir(name, version),
            trusted,
            name=name,
            version=version,
            base_weights_sha256=loaded.manifest.weights_sha256,
        )
        forms = {
            label: ServedModel(name, version, loaded.manifest, module, label)
            for label, (_, module) in found.items()
        }
        default = self.settings.default_variant
        if default is not None and default != served.variant and default in forms:
            chosen = forms.pop(default)
            forms[served.variant] = served
            return replace(chosen, variants=forms)
        return replace(served, variants=forms)

    def _marker(self, name: str) -> Marker:
        version, mtime = self.registry.read_active_marker(name)
        if version is None:
            return version, mtime, 0
        return version, mtime, variants_stamp(self.registry.version_dir(name, version))

    def current(self, name: str) -> ServedModel | ServedLM | None:
        """What answers for ``name`` now: a tensor model or a language model's active version."""
        return self.live.get(name) or self.language_models.active(name)

    async def refresh(self, name: str) -> ServedModel | ServedLM | None:
        """Serve ``name``'s active version if this worker does not already; keep the old
        model when the new one fails verification."""
        async with self._lock:
            marker = await asyncio.to_thread(self._marker, name)
            seen = self._seen.get(name)
            if marker == seen:
                return self.current(name)
            self._seen[name] = marker
            version = marker[0]
            current = self.current(name)
            same_variants = seen is not None and seen[2] == marker[2]
            if version is None or (
                current is not None and current.version == version and same_variants
            ):
                return current
            try:
                served = await self._serve(name, version)
            except FedsysError as exc:  # the registry audits refused artifacts itself
                log.error("cannot serve %s v%d: %s (keeping the current model)", name, version, exc)
                return current
            self.metrics.active_version.labels(name, str(self.worker)).set(version)
            self.metrics.swaps.labels(name).inc()
            log.info("worker %d now serves %s v%d", self.worker, name, version)
            return served

    async def _serve(self, name: str, version: int) -> ServedModel | ServedLM:
        """Load ``version`` and make it the one that answers (the old one stays for requests
        already admitted on it)."""
        manifests = await asyncio.to_thread(self.registry.versions, name)
        manifest = next((m for m in manifests if m.version == version), None)
        if manifest is not None and manifest.language_model is not None:
            # Imported here: transformers and peft take seconds to import, and an endpoint
            # serving only tensor models never needs them.
            from fedsys.serving.generation.from_registry import serve_version

            return await serve_version(
                self.language_models, self.registry, self.trusted(), name, version
            )
        served = await asyncio.to_thread(self._load, name, version)
        self.live.swap(served)
        return served

    async def sync_all(self) -> None:
        names = await asyncio.to_thread(self.registry.models)
        for name in names:
            await self.refresh(name)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            try:
                await self.sync_all()
            except (OSError, FedsysError) as exc:  # a registry mid-write must not end the poll
                log.warning("registry poll failed: %s", exc)


def serving_state(request: Request) -> ServingState:
    """The worker's state, set on the app by ``create_app``; routes take it as ``Serving``."""
    state: ServingState = request.app.state.serving
    return state


Serving = Annotated[ServingState, Depends(serving_state)]
