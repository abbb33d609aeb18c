"""The model registry, shared by training and serving: signed, versioned model files on disk
(``store``), their manifest and signature, the audit log, the round loop's publisher and the
int8 serving copy.

No web stack and no round loop here: the ServerApp (``fedsys.server``) writes through the
publisher and the endpoint (``fedsys.serving``) reads through the store; this package
imports neither.
"""

from fedsys.errors import ArtifactRejected, UnknownArtifact, VersionConflict
from fedsys.registry.audit import AuditLog
from fedsys.registry.store import LoadedModel, Registry
from fedsys.registry.version_manifest import Lineage, ModelManifest, canonical_bytes

__all__ = [
    "ArtifactRejected",
    "AuditLog",
    "Lineage",
    "LoadedModel",
    "ModelManifest",
    "Registry",
    "UnknownArtifact",
    "VersionConflict",
    "canonical_bytes",
]
