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
