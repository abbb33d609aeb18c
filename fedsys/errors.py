"""The project's exception families; each carries what failed and who it came from."""

from __future__ import annotations


class FedsysError(Exception):
    """Base of every error fedsys raises on purpose."""


class ConfigError(FedsysError):
    """The experiment configuration is invalid; the message names the field path."""


class DataError(FedsysError):
    """A dataset could not be read or partitioned; the message names the file or setting."""


class CheckpointError(FedsysError):
    """A checkpoint is missing, incomplete or does not match the configured model."""


class InvalidUpdate(FedsysError):
    """A client's update was rejected; carries the node id and the reason."""

    def __init__(self, node_id: int, reason: str) -> None:
        super().__init__(f"update from node {node_id} rejected: {reason}")
        self.node_id = node_id
        self.reason = reason


class CodecError(FedsysError):
    """An update could not be encoded, decoded, opened or accepted; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WireFormatError(CodecError):
    """A payload or envelope is malformed, truncated, corrupted or of an unknown format."""


class DecryptionFailed(CodecError):
    """An envelope's frames are missing, reordered, altered or fail authentication."""


class SignatureInvalid(CodecError):
    """An envelope's signature does not verify under the sender's allow-listed key."""


class UnknownSender(SignatureInvalid):
    """An envelope names a client that is not on the aggregator's allow-list."""


class UpdateRejected(CodecError):
    """An authentic, well-formed update breaks the round's rules (round, shapes, norm, size)."""


class KeyFileError(FedsysError):
    """A key file or key encoding is missing, malformed, of the wrong kind or too permissive."""
