"""A signed, versioned model registry on the local file system.

Layout under the root (several model names may share one registry)::

    <name>/versions/<n>/model.safetensors       fp32 weights
    <name>/versions/<n>/model-int8.safetensors  optional int8 serving copy
    <name>/versions/<n>/manifest.json           ModelManifest (canonical bytes)
    <name>/versions/<n>/manifest.sig            raw Ed25519 signature over manifest.json
    <name>/active                               the served version number
    publisher.pub                               the publisher key trusted by default

A version is written into a hidden temporary directory and renamed into place, so readers
never see half a version; ``rename`` also refuses an existing version, which makes version
numbers first-come-first-served across processes. ``active`` is replaced atomically. Every
read that leads to serving (load, activate, rollback) verifies the signature, the manifest's
schema, name and version, and the sha256 of the weight files before anything is used.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from safetensors.numpy import save as np_save
from torch import nn

from fedsys.errors import ArtifactRejected, UnknownArtifact, VersionConflict
from fedsys.fsio import atomic_write_bytes, fsync_dir, write_synced
from fedsys.registry.audit import AuditLog
from fedsys.registry.int8_copy import int8_from_bytes, int8_to_bytes, quantize_int8
from fedsys.registry.modules import build_module as build_module  # re-exported
from fedsys.registry.modules import manifest_module as manifest_module  # re-exported
from fedsys.registry.modules import with_weights
from fedsys.registry.signatures import sign_manifest, verify_manifest
from fedsys.registry.version_manifest import (
    LanguageModelVersion,
    Lineage,
    ModelManifest,
    check_name,
    parse_manifest,
)

log = logging.getLogger("fedsys")

VERSIONS_DIR = "versions"
ACTIVE_FILE = "active"
WEIGHTS_FILE = "model.safetensors"
INT8_FILE = "model-int8.safetensors"
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
PUBLISHER_KEY_FILE = "publisher.pub"

Variant = Literal["fp32", "int8"]


@dataclass(frozen=True)
class LoadedModel:
    """A verified version, rebuilt as a module in eval mode."""

    manifest: ModelManifest
    module: nn.Module
    variant: Variant = "fp32"


@dataclass(frozen=True)
class _Verified:
    manifest: ModelManifest
    weights: bytes
    int8: bytes | None
    module: nn.Module | None  # fp32, weights loaded; None for a language model


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Registry:
    """Versions of named models under ``root``; see the module docstring for the layout."""

    def __init__(self, root: Path, *, audit: AuditLog | None = None) -> None:
        self.root = Path(root)
        self.audit = audit

    # -- paths and listing -------------------------------------------------------------

    @property
    def publisher_key_path(self) -> Path:
        return self.root / PUBLISHER_KEY_FILE

    def _model_dir(self, name: str) -> Path:
        return self.root / check_name(name)

    def version_dir(self, name: str, version: int) -> Path:
        """Where ``name`` v``version`` lives (its compressed variants go under it)."""
        return self._version_dir(name, version)

    def _version_dir(self, name: str, version: int) -> Path:
        return self._model_dir(name) / VERSIONS_DIR / str(version)

    def models(self) -> list[str]:
        """Names with a ``versions`` directory, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if (p / VERSIONS_DIR).is_dir() and not p.name.startswith(".")
        )

    def version_numbers(self, name: str) -> list[int]:
        """Complete versions of ``name``, ascending (hidden temporary dirs are not versions)."""
        vdir = self._model_dir(name) / VERSIONS_DIR
        if not vdir.is_dir():
            return []
        return sorted(int(p.name) for p in vdir.iterdir() if p.name.isdigit() and p.is_dir())

    def versions(
        self, name: str, *, trusted: Ed25519PublicKey | None = None
    ) -> list[ModelManifest]:
        """Manifests of ``name``, ascending. Without ``trusted`` this is a listing (schema
        checked, signature not); with it, versions that fail verification are left out.
        UnknownArtifact when the model does not exist."""
        if not (self._model_dir(name) / VERSIONS_DIR).is_dir():
            raise UnknownArtifact(f"unknown model {name!r}")
        out = []
        for version in self.version_numbers(name):
            vdir = self._version_dir(name, version)
            try:
                data = (vdir / MANIFEST_FILE).read_bytes()
                if trusted is not None:
                    manifest = verify_manifest(data, (vdir / SIGNATURE_FILE).read_bytes(), trusted)
                else:
                    manifest = parse_manifest(data)
            except (OSError, ArtifactRejected) as exc:
                log.warning("registry %s: skipping %s v%d: %s", self.root, name, version, exc)
                continue
            if manifest.name == name and manifest.version == version:
                out.append(manifest)
        return out

    def active_version(self, name: str) -> int | None:
        return self.read_active_marker(name)[0]

    def read_active_marker(self, name: str) -> tuple[int | None, int]:
        """``(active version, mtime_ns of the pointer)``: a cheap poll for serving workers."""
        path = self._model_dir(name) / ACTIVE_FILE
        try:
            with open(path, "rb") as fh:
                stat = os.fstat(fh.fileno())
                text = fh.read(32).decode("ascii", "replace").strip()
        except FileNotFoundError:
            return None, 0
        return (int(text) if text.isdigit() else None), stat.st_mtime_ns

    # -- writing -----------------------------------------------------------------------

    def publish(
        self,
        name: str,
        weights: Mapping[str, np.ndarray],
        *,
        model: dict[str, Any],
        input_shape: tuple[int, ...] | list[int],
        num_classes: int,
        round: int,
        metrics: dict[str, float],
        lineage: Lineage,
        signing_key: Ed25519PrivateKey,
        int8_copy: bool = False,
        activate: bool = True,
        version: int | None = None,
        int8_weights: bytes | None = None,
        language_model: LanguageModelVersion | None = None,
    ) -> ModelManifest:
        """Sign and store a new version (default number: latest + 1), then activate it.

        ``int8_weights`` (from :func:`fedsys.registry.int8_copy.int8_to_bytes`) spares a second
        quantization when the caller already made the copy; ``int8_copy`` makes one otherwise.
        A language model (``language_model`` set) is checked against its base when loaded,
        not here: ``input_shape`` is then ``[context length]``, ``num_classes`` the vocabulary.
        """
        existing = self.version_numbers(name)
        latest = existing[-1] if existing else None
        if version is None:
            version = (latest or 0) + 1
        blob = bytes(np_save({k: np.ascontiguousarray(v) for k, v in weights.items()}))
        if language_model is None:
            # The weights must load into the described model, or the version could never serve.
            fp32 = with_weights(build_module(model, input_shape, num_classes), blob)
            if int8_copy and int8_weights is None:
                int8_weights = int8_to_bytes(quantize_int8(fp32))
        manifest = ModelManifest(
            name=name,
            version=version,
            model=model,
            input_shape=list(input_shape),
            num_classes=num_classes,
            round=round,
            metrics={k: float(v) for k, v in metrics.items() if np.isfinite(v)},
            weights_sha256=sha256_hex(blob),
            int8_sha256=sha256_hex(int8_weights) if int8_weights is not None else None,
            created_at=datetime.now(UTC),
            previous_version=latest,
            lineage=lineage,
            language_model=language_model,
        )
        data, signature = sign_manifest(manifest, signing_key)
        self._store(manifest, data, signature, blob, int8_weights)
        if self.audit is not None:
            self.audit.record(
                "publish",
                model=name,
                version=version,
                round=round,
                weights_sha256=manifest.weights_sha256,
                int8=int8_weights is not None,
            )
        if activate:
            self._set_active(name, version, previous=self.active_version(name))
        return manifest

    def add_signed(
        self,
        name: str,
        manifest_json: bytes,
        signature: bytes,
        weights: bytes,
        trusted: Ed25519PublicKey,
        int8_weights: bytes | None = None,
        activate: bool = True,
    ) -> ModelManifest:
        """Store a version signed elsewhere (the endpoint's publish), after checking the
        signature, schema, name, version order, hashes and that the weights fit the model."""
        try:
            checked = self._check(
                name, None, manifest_json, signature, weights, int8_weights, trusted
            )
            latest = self.version_numbers(name)
            if latest and checked.manifest.version <= latest[-1]:
                raise VersionConflict(
                    f"{name} v{checked.manifest.version} is not newer than the latest "
                    f"version v{latest[-1]}"
                )
            self._store(checked.manifest, manifest_json, signature, weights, int8_weights)
        except ArtifactRejected as exc:
            self._refused("publish", name, None, exc.reason)
            raise
        manifest = checked.manifest
        if self.audit is not None:
            self.audit.record(
                "publish",
                model=name,
                version=manifest.version,
                round=manifest.round,
                weights_sha256=manifest.weights_sha256,
                int8=int8_weights is not None,
            )
        if activate:
            self._set_active(name, manifest.version, previous=self.active_version(name))
        return manifest

    def _store(
        self,
        manifest: ModelManifest,
        manifest_json: bytes,
        signature: bytes,
        weights: bytes,
        int8_weights: bytes | None,
    ) -> None:
        """Write the version into a hidden temp dir, then rename it into place (or refuse)."""
        versions = self._model_dir(manifest.name) / VERSIONS_DIR
        versions.mkdir(parents=True, exist_ok=True)
        final = versions / str(manifest.version)
        if final.exists():
            raise VersionConflict(f"{manifest.name} v{manifest.version} already exists")
        tmp = versions / f".tmp-{manifest.version}-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            write_synced(tmp / WEIGHTS_FILE, weights)
            if int8_weights is not None:
                write_synced(tmp / INT8_FILE, int8_weights)
            write_synced(tmp / SIGNATURE_FILE, signature)
            write_synced(tmp / MANIFEST_FILE, manifest_json)
            fsync_dir(tmp)
            try:
                os.rename(tmp, final)
            except OSError:
                if final.exists():
                    raise VersionConflict(
                        f"{manifest.name} v{manifest.version} already exists"
                    ) from None
                raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(versions)

    # -- verification and serving ------------------------------------------------------

    def _check(
        self,
        name: str,
        version: int | None,
        manifest_json: bytes,
        signature: bytes,
        weights: bytes,
        int8_weights: bytes | None,
        trusted: Ed25519PublicKey,
    ) -> _Verified:
        manifest = verify_manifest(manifest_json, signature, trusted)
        if manifest.name != name:
            raise ArtifactRejected(f"manifest is for model {manifest.name!r}, not {name!r}")
        if version is not None and manifest.version != version:
            raise ArtifactRejected(
                f"manifest of {name} v{version} claims to be v{manifest.version}"
            )
        if sha256_hex(weights) != manifest.weights_sha256:
            raise ArtifactRejected(f"{name} v{manifest.version}: weights sha256 mismatch")
        if int8_weights is not None and manifest.int8_sha256 is None:
            raise ArtifactRejected(f"{name} v{manifest.version}: int8 weights not in the manifest")
        if manifest.int8_sha256 is not None:
            if int8_weights is None:
                raise ArtifactRejected(f"{name} v{manifest.version}: int8 weights missing")
            if sha256_hex(int8_weights) != manifest.int8_sha256:
                raise ArtifactRejected(f"{name} v{manifest.version}: int8 weights sha256 mismatch")
        if manifest.language_model is not None:  # checked against its base when loaded
            return _Verified(manifest, weights, int8_weights, None)
        # Structure: the weights must load into the described model (fails before serving).
        return _Verified(
            manifest, weights, int8_weights, with_weights(manifest_module(manifest), weights)
        )

    def _read_verified(self, name: str, version: int, trusted: Ed25519PublicKey) -> _Verified:
        vdir = self._version_dir(name, version)
        if not vdir.is_dir():
            if not (self._model_dir(name) / VERSIONS_DIR).is_dir():
                raise UnknownArtifact(f"unknown model {name!r}")
            raise UnknownArtifact(f"unknown version {name} v{version}")
        try:
            manifest_json = (vdir / MANIFEST_FILE).read_bytes()
            signature = (vdir / SIGNATURE_FILE).read_bytes()
            weights = (vdir / WEIGHTS_FILE).read_bytes()
        except FileNotFoundError as exc:
            raise ArtifactRejected(
                f"{name} v{version} is incomplete: {Path(exc.filename).name} is missing"
            ) from None
        int8_path = vdir / INT8_FILE
        int8 = int8_path.read_bytes() if int8_path.exists() else None
        return self._check(name, version, manifest_json, signature, weights, int8, trusted)

    def verify(self, name: str, version: int, trusted: Ed25519PublicKey) -> ModelManifest:
        """Check a stored version completely; ArtifactRejected (audited) if anything is off."""
        try:
            return self._read_verified(name, version, trusted).manifest
        except ArtifactRejected as exc:
            self._refused("verify", name, version, exc.reason)
            raise

    def load(
        self, name: str, version: int, trusted: Ed25519PublicKey, *, variant: Variant = "fp32"
    ) -> LoadedModel:
        """Verify, then rebuild ``name`` v``version`` as a module in eval mode."""
        try:
            checked = self._read_verified(name, version, trusted)
            if checked.module is None:
                raise ArtifactRejected(
                    f"{name} v{version} is a language model: serve it with read_weights"
                )
            if variant == "int8":
                if checked.int8 is None:
                    raise ArtifactRejected(f"{name} v{version} has no int8 copy")
                module = int8_from_bytes(checked.int8, manifest_module(checked.manifest))
            else:
                module = checked.module
        except ArtifactRejected as exc:
            self._refused("load", name, version, exc.reason)
            raise
        return LoadedModel(checked.manifest, module.eval(), variant)

    def read_weights(
        self, name: str, version: int, trusted: Ed25519PublicKey
    ) -> tuple[ModelManifest, bytes]:
        """The verified manifest and weight bytes of a version (signature and sha256 checked;
        what they hold is for the caller to load: a language model's adapter or weights)."""
        try:
            checked = self._read_verified(name, version, trusted)
        except ArtifactRejected as exc:
            self._refused("load", name, version, exc.reason)
            raise
        return checked.manifest, checked.weights

    def activate(self, name: str, version: int, trusted: Ed25519PublicKey) -> ModelManifest:
        """Verify ``version`` and point ``active`` at it; the pointer is untouched on failure."""
        previous = self.active_version(name)
        manifest = self.verify(name, version, trusted)
        self._set_active(name, version, previous=previous)
        return manifest

    def rollback(self, name: str, trusted: Ed25519PublicKey) -> ModelManifest:
        """Activate the newest version older than the active one (verified first)."""
        active = self.active_version(name)
        if active is None:
            if not (self._model_dir(name) / VERSIONS_DIR).is_dir():
                raise UnknownArtifact(f"unknown model {name!r}")
            self._refused("rollback", name, None, "no active version")
            raise ArtifactRejected(f"{name} has no active version to roll back from")
        older = [v for v in self.version_numbers(name) if v < active]
        if not older:
            self._refused("rollback", name, active, "no older version")
            raise ArtifactRejected(f"{name} v{active} has no older version to roll back to")
        manifest = self.verify(name, older[-1], trusted)
        self._set_active(name, older[-1], previous=active, event="rollback")
        return manifest

    def _set_active(
        self, name: str, version: int, *, previous: int | None, event: str = "activate"
    ) -> None:
        atomic_write_bytes(self._model_dir(name) / ACTIVE_FILE, f"{version}\n".encode())
        if self.audit is not None:
            self.audit.record(event, model=name, version=version, previous=previous)

    def _refused(self, what: str, name: str, version: int | None, reason: str) -> None:
        if self.audit is not None:
            self.audit.record("refused", what=what, model=name, version=version, reason=reason)
