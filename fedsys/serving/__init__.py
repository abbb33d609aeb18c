"""Serving the federation's model: a signed, versioned registry, its publisher, and the
inference endpoint.

Kept light on purpose: the ServerApp imports the registry and publisher, and must not pull
in the web stack; import the endpoint modules directly where they are needed.
"""

from fedsys.errors import ArtifactRejected, UnknownArtifact, VersionConflict
from fedsys.serving.audit import AuditLog
from fedsys.serving.manifest import Lineage, ModelManifest, canonical_bytes
from fedsys.serving.registry import LoadedModel, Registry

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
