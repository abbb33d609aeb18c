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


class CodecArgumentError(FedsysError, ValueError):
    """The codec (or the envelope) was called with arguments it cannot work with: a pipeline
    out of order, a sum with nothing added, sealing without a key. A caller's mistake, never a
    client's, so a round does not count it as a rejection; ``reason`` says which. Also a
    ValueError, as these errors were before they had a type."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyFileError(FedsysError):
    """A key file or key encoding is missing, malformed, of the wrong kind or too permissive."""


class SecAggError(FedsysError):
    """Secure aggregation could not go on as planned; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SecAggMessageInvalid(SecAggError):
    """A peer's secure-aggregation message is malformed (wrong length, type or binding).

    ``node_id`` names the peer whose message failed, so the caller can exclude it.
    """

    def __init__(self, node_id: int, reason: str) -> None:
        super().__init__(f"node {node_id}: {reason}")
        self.node_id = node_id
        self.detail = reason


class SecAggAborted(SecAggError):
    """The round cannot be unmasked (too few survivors or shares); the model stays as it was.

    ``culprit`` names a node whose shares its neighbours could not open, when that is why.
    """

    def __init__(self, reason: str, culprit: int | None = None) -> None:
        super().__init__(reason)
        self.culprit = culprit


class ArtifactRejected(FedsysError):
    """A registry artifact was refused: bad signature, hash mismatch, malformed manifest or
    weights, unknown model or version. ``reason`` says which, for logs and HTTP answers."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownArtifact(ArtifactRejected):
    """The model name or version does not exist in the registry (an endpoint's 404)."""


class VersionConflict(ArtifactRejected):
    """The version already exists or is not newer than the latest one (an endpoint's 409)."""


# --- The inference endpoint: requests it refuses -----------------------------------------
# One class per kind of refusal; fedsys/serving/error_handlers.py answers each with one HTTP
# status and the body {"detail": reason}.


class RequestRefused(FedsysError):
    """The inference endpoint refused a request; ``reason`` is the answer's detail."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedRequest(RequestRefused):
    """The body or a header cannot be read (JSON, .npy, multipart, Content-Length)."""


class CredentialsMissing(RequestRefused):
    """The request carries no API key or bearer token where one is needed."""


class CredentialsRefused(RequestRefused):
    """The API key or bearer token is wrong, or publishing over HTTP is disabled."""


class UnknownModel(RequestRefused):
    """No model of that name is served (or the name cannot be one)."""


class MethodNotAllowed(RequestRefused):
    """A POST-only action was asked with another method; ``allow`` names the one to use."""

    def __init__(self, reason: str, *, allow: str) -> None:
        super().__init__(reason)
        self.allow = allow


class RequestConflict(RequestRefused):
    """The request clashes with the registry's state (version exists, nothing to roll back)."""


class BodyTooLarge(RequestRefused):
    """The body, or the number of instances in it, exceeds the endpoint's limit."""


class UnsupportedMediaType(RequestRefused):
    """The body's Content-Type is not one the route reads."""


class InvalidRequest(RequestRefused):
    """The body reads, but what it says is not acceptable (schema, shape, values, artifact)."""


class BatcherStopped(RequestRefused):
    """The inference thread stopped before the request ran (the endpoint is shutting down)."""


class InvalidParameter(RequestRefused):
    """A generation request's parameter is out of range or of the wrong type (an OpenAI 400:
    prompt longer than the limit, ``max_tokens`` beyond the context). ``param`` names it."""

    def __init__(self, reason: str, *, param: str | None = None) -> None:
        super().__init__(reason)
        self.param = param


class CapacityExceeded(RequestRefused):
    """The endpoint holds as many sequences or reserved tokens as its limits allow (a 429:
    retry later); refused up front rather than running out of memory."""


class GenerationFailed(FedsysError):
    """The model failed while generating (a server error, 500); ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
