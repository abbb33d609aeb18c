"""The ServerApp's publisher: after a round, sign the global model into the registry and,
when ``publish.endpoint`` is set, send that version to a remote endpoint.

The round loop only decides *whether* to publish and which version number the round gets
(the publisher is the registry's only writer for this model during the run); writing,
quantizing, evaluating the int8 copy and uploading happen on one background thread, in
order. Nothing here raises into the training loop: a failed write or upload is logged as
one warning line and retried at the next round's publish point, and the run's end flushes
what is left (one last attempt, with the configured retries).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import httpx
import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedsys.compress.background import background_compressor
from fedsys.config import ExperimentConfig
from fedsys.crypto.keys import (
    generate_signing_key,
    load_signing_public_key,
    public_to_raw,
    read_signing_key,
    write_private_key,
    write_signing_public_pem,
)
from fedsys.data.types import DatasetInfo
from fedsys.errors import ConfigError, VersionConflict
from fedsys.registry.audit import AuditLog
from fedsys.registry.int8_copy import compare_int8, int8_to_bytes, quantize_int8
from fedsys.registry.lm_base import store_base
from fedsys.registry.store import VERSIONS_DIR, Registry, build_module
from fedsys.registry.upload import SendOutcome, Upload, send_version
from fedsys.registry.version_manifest import LanguageModelVersion, Lineage, check_name

if TYPE_CHECKING:
    from fedsys.tasks.base import Publication

log = logging.getLogger("fedsys")

PUBLISHER_PRIVATE_KEY = "publisher.key"  # in the run's output dir when publish.signing_key is unset
AUDIT_FILE = "audit.jsonl"
GATE_TIMEOUT = 3600.0  # seconds a publish waits for its round's checkpoint


class CheckpointGate(Protocol):
    """What a publish waits on: the round loop's record of durable checkpoints (the server's
    ``RoundGate``; a protocol so the registry need not import the server)."""

    def wait(self, rnd: int, timeout: float) -> str | None:
        """None once round ``rnd`` is durable; else why it is not."""
        ...


@dataclass(frozen=True)
class _Job:
    """One version to write: the round's arrays (shared, never mutated) and its facts."""

    version: int
    round: int
    arrays: dict[str, np.ndarray]
    metrics: dict[str, float]
    lineage: Lineage


def _signing_key(cfg: ExperimentConfig, out_dir: Path) -> Ed25519PrivateKey:
    """``publish.signing_key``, else a key kept in the run's output dir (so --resume reuses it)."""
    if cfg.publish.signing_key is not None:
        return read_signing_key(cfg.publish.signing_key)
    path = out_dir / PUBLISHER_PRIVATE_KEY
    if path.exists():
        return read_signing_key(path)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = generate_signing_key()
    write_private_key(path, key)
    return key


def _trust(registry: Registry, key: Ed25519PrivateKey) -> None:
    """Write ``publisher.pub`` or check that it already names this key."""
    path = registry.publisher_key_path
    public = key.public_key()
    if path.exists():
        if public_to_raw(load_signing_public_key(path)) != public_to_raw(public):
            raise ConfigError(
                f"registry {registry.root} trusts another publisher key ({path}); set "
                "publish.signing_key to the key that signed it, or publish to a new registry"
            )
        return
    registry.root.mkdir(parents=True, exist_ok=True)
    write_signing_public_pem(path, public)


class Publisher:
    """Publishing policy plus a background writer/uploader; see the module docstring."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        out_dir: Path,
        info: DatasetInfo | None,
        *,
        eval_data: tuple[torch.Tensor, torch.Tensor] | None = None,
        publication: Callable[[dict[str, np.ndarray]], Publication | None] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cfg = cfg
        self.pub = cfg.publish
        self.name = check_name(cfg.name)
        self.info = info
        self.eval_data = eval_data
        # The task's own version content (a language model's adapter or merged weights);
        # None, or a None from it: the state is the classifier the config describes.
        self.publication = publication
        root = self.pub.registry if self.pub.registry is not None else out_dir / "registry"
        self.registry = Registry(root, audit=AuditLog(root / AUDIT_FILE))
        self.key = _signing_key(cfg, out_dir)
        _trust(self.registry, self.key)
        self.compressor = background_compressor(cfg, out_dir, root, self.name)
        existing = self.registry.version_numbers(self.name)
        self._next_version = (existing[-1] if existing else 0) + 1
        self._best: float | None = None
        self._sleep = sleep
        self._token: str | None = None
        self._client: httpx.Client | None = None
        if self.pub.endpoint is not None:
            self._token = os.environ.get(self.pub.token_env, "").strip() or None
            if self._token is None:
                raise ConfigError(
                    f"publish.endpoint is set but the environment variable "
                    f"{self.pub.token_env} (publish.token_env) holds no bearer token"
                )
            self._client = httpx.Client(transport=transport, timeout=self.pub.timeout_seconds)
        # Worker-thread state: versions whose local write failed, versions not yet uploaded.
        self._local_retry: list[_Job] = []
        self._uploads: list[Upload] = []
        self.last_published: int | None = existing[-1] if existing else None
        self.last_uploaded: int | None = None
        self._lock = threading.Lock()
        self._queued = 0  # jobs submitted but not started
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="fedsys-publish")
        self._closed = False
        # Set by the round loop: a round's version is written once its checkpoint is.
        self.gate: CheckpointGate | None = None

    # -- round loop side -------------------------------------------------------------

    def resume(self, best_accuracy: float | None) -> None:
        """Continue the on_improvement comparison from the best round a resumed run kept."""
        self._best = best_accuracy

    def wants(self, rnd: int, metrics: dict[str, float]) -> bool:
        """The publishing policy (updates the best accuracy seen for on_improvement)."""
        mode = self.pub.mode
        if mode == "every_round":
            return True
        if mode == "at_end":
            return rnd >= self.cfg.train.rounds
        if mode == "on_improvement":
            acc = metrics.get("accuracy")
            if acc is None or not np.isfinite(acc):
                return False
            improved = self._best is None or acc > self._best
            self._best = acc if improved else self._best
            return improved
        return False

    def after_round(
        self,
        rnd: int,
        arrays: dict[str, np.ndarray],
        metrics: dict[str, float],
        clients: int,
        run_id: str | None,
    ) -> int | None:
        """Queue this round's model when the policy says so; returns its version (or None).

        Also the retry point for earlier failed writes and uploads. Never raises.
        """
        try:
            if self._closed:
                return None
            version: int | None = None
            job: _Job | None = None
            if self.wants(rnd, metrics):
                version = self._next_version
                self._next_version += 1
                lineage = self._lineage(clients, run_id)
                job = _Job(version, rnd, arrays, dict(metrics), lineage)
            with self._lock:
                idle = self._queued == 0
                if job is None and not idle:
                    return None  # the worker is busy; it retries what is pending anyway
                self._queued += 1
            self._executor.submit(self._work, job, False)
            return version
        except Exception as exc:  # the training loop must go on whatever happens here
            log.warning("round %d: publishing skipped: %s", rnd, exc)
            return None

    def _lineage(self, clients: int, run_id: str | None) -> Lineage:
        """Where a version came from: the run, its strategy and codec, how many clients."""
        return Lineage(
            clients=clients,
            strategy=self.cfg.strategy.name,
            codec=self.cfg.codec.model_dump(mode="json"),
            secagg=self.cfg.secagg.model_dump(mode="json"),
            run_id=run_id,
        )

    def continue_after(self, version: int) -> None:
        """Number new versions after ``version`` (a resumed run's last known one), so a
        version lost in a crash is never reused for another round."""
        self._next_version = max(self._next_version, version + 1)

    def republish(
        self,
        rnd: int,
        version: int,
        arrays: dict[str, np.ndarray],
        metrics: dict[str, float],
        clients: int,
        run_id: str | None,
    ) -> bool:
        """Write ``version`` for round ``rnd`` now (a resume filling a lost publish); False
        when it could not be written. Uploads, if configured, follow with the next round."""
        lineage = self._lineage(clients, run_id)
        try:
            self._write(_Job(version, rnd, arrays, dict(metrics), lineage))
        except Exception as exc:
            log.warning("round %d: republishing %s v%d failed: %s", rnd, self.name, version, exc)
            return False
        self.last_published = max(self.last_published or 0, version)
        self.continue_after(version)
        if self._client is not None:
            self._uploads.append(Upload(version, rnd))
        return True

    def wait_idle(self) -> None:
        """Block until every queued write and upload attempt has run (tests, tooling)."""
        if not self._closed:
            self._executor.submit(lambda: None).result()

    def finish(self) -> int | None:
        """Flush: write what is queued, try pending uploads once more; the last version."""
        if not self._closed:
            self._closed = True
            with self._lock:
                self._queued += 1
            self._executor.submit(self._work, None, True)
            self._executor.shutdown(wait=True)
            if self._client is not None:
                self._client.close()
            if self.compressor is not None:
                wait = self.cfg.compress.wait_at_end_seconds
                if not self.compressor.close(wait):
                    log.warning("compress: still running after %.0f s; left to finish", wait)
        return self.last_published

    def close(self) -> None:
        """Same as :meth:`finish` (idempotent), for ``finally`` blocks."""
        self.finish()

    # -- worker side -------------------------------------------------------------------

    def _work(self, job: _Job | None, final: bool) -> None:
        with self._lock:
            self._queued -= 1
        try:
            if job is not None:
                self._local_retry.append(job)
            self._write_pending()
            self._upload_pending(final)
        except Exception as exc:  # logged; the worker must survive
            log.warning("publishing: unexpected error: %s", exc)

    def _write_pending(self) -> None:
        while self._local_retry:
            job = self._local_retry[0]
            held = self.gate.wait(job.round, GATE_TIMEOUT) if self.gate is not None else None
            if held is not None:
                log.warning(
                    "round %d: %s v%d not published: %s", job.round, self.name, job.version, held
                )
                self._local_retry.pop(0)
                continue
            try:
                self._write(job)
            except VersionConflict as exc:
                log.warning(
                    "round %d: not published: %s (another publisher?)", job.round, exc.reason
                )
            except OSError as exc:  # disk full, permissions, ...: may pass by the next round
                log.warning(
                    "round %d: publish of %s v%d failed (%s); retrying at the next round",
                    job.round,
                    self.name,
                    job.version,
                    exc,
                )
                return
            except Exception as exc:  # would fail the same way again: drop this version
                log.warning(
                    "round %d: publish of %s v%d failed (%s); not retrying",
                    job.round,
                    self.name,
                    job.version,
                    exc,
                )
            else:
                self.last_published = job.version
                if self.compressor is not None:
                    self.compressor.submit(job.version)
                if self._client is not None:
                    self._uploads.append(Upload(job.version, job.round))
            self._local_retry.pop(0)

    def _write(self, job: _Job) -> None:
        made = self.publication(job.arrays) if self.publication is not None else None
        if made is not None:
            self._write_publication(job, made)
            return
        info = self._info()
        metrics = dict(job.metrics)
        int8_blob: bytes | None = None
        model = self.cfg.model.model_dump(mode="json")
        if self.pub.int8_copy:
            module = self._module(job.arrays)
            if self.eval_data is not None:
                x, y = self.eval_data
                report, int8_blob = compare_int8(
                    module,
                    x,
                    y,
                    batch_size=self.cfg.train.eval_batch_size,
                    fp32_accuracy=metrics.get("accuracy"),
                )
                metrics.update(report.metrics())
            else:
                int8_blob = int8_to_bytes(quantize_int8(module))
        self.registry.publish(
            self.name,
            job.arrays,
            model=model,
            input_shape=info.input_shape,
            num_classes=info.num_classes,
            round=job.round,
            metrics=metrics,
            lineage=job.lineage,
            signing_key=self.key,
            int8_copy=self.pub.int8_copy,
            version=job.version,
            int8_weights=int8_blob,
        )
        log.info("round %d: published %s v%d", job.round, self.name, job.version)

    def _write_publication(self, job: _Job, made: Publication) -> None:
        """A version whose content and description the task made (see ``Task.publication``)."""
        int8_blob = None
        if self.pub.int8_copy and made.module is not None:
            int8_blob = int8_to_bytes(quantize_int8(made.module))
        language_model = None
        if made.language_model is not None:
            content = made.language_model
            base = store_base(self.registry.root, content.base_address, content.write_base)
            language_model = LanguageModelVersion(
                kind=content.kind,
                base=base,
                base_sha256=content.base_sha256,
                adapter_config=content.adapter_config,
            )
        self.registry.publish(
            self.name,
            made.weights,
            model=made.model,
            input_shape=made.input_shape,
            num_classes=made.num_classes,
            round=job.round,
            metrics=dict(job.metrics),
            lineage=job.lineage,
            signing_key=self.key,
            int8_copy=int8_blob is not None,
            version=job.version,
            int8_weights=int8_blob,
            language_model=language_model,
        )
        log.info("round %d: published %s v%d", job.round, self.name, job.version)

    def _info(self) -> DatasetInfo:
        if self.info is None:
            raise ConfigError("publishing a classifier needs its dataset's shape and classes")
        return self.info

    def _module(self, arrays: dict[str, np.ndarray]) -> torch.nn.Module:
        module = build_module(
            self.cfg.model.model_dump(mode="json"),
            self._info().input_shape,
            self._info().num_classes,
        )
        module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
        return module.eval()

    def _upload_pending(self, final: bool) -> None:
        """Send pending versions oldest first; stop at the first failure (order matters)."""
        while self._uploads:
            with self._lock:
                if self._queued and not final:
                    return  # newer rounds wait: write them first, upload after
            item = self._uploads[0]
            if not self._upload(item):
                return
            self._uploads.pop(0)

    def _upload(self, item: Upload) -> bool:
        """One version with retries and exponential backoff. False: keep it pending."""
        assert self._client is not None and self.pub.endpoint is not None
        vdir = self.registry.root / self.name / VERSIONS_DIR / str(item.version)
        sent = send_version(
            self._client, self.pub, self._token, vdir, self.name, item, sleep=self._sleep
        )
        if sent is SendOutcome.SENT:
            self.last_uploaded = item.version
        return sent is not SendOutcome.RETRY
