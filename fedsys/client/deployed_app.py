"""The deployed ClientApp: hand each message to the daemon's warm trainer, or do it here.

Every message runs in its own process (a fresh ``flwr-clientapp``, or a child forked by
:mod:`fedsys.client.task_runner`), so this module imports nothing heavy: when the node config
names a ``worker-socket`` that answers, the message and context go over it (Flower's protobuf
encoding) and the reply and the node state come back; otherwise the full fedsys ClientApp
(torch, data, model) is imported and run in this process. Every message type the fedsys
ClientApp answers is forwarded unchanged, so the two cannot drift apart.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedsys.client.node_config import NodeConfig
from fedsys.client.worker_protocol import Reply, Request, WorkerError, recv_frame, send_frame

# The secure-aggregation query actions of fedsys.secagg.messages, spelled out here because
# importing that package pulls in torch; tests/test_deploy_daemons.py checks they match.
SECAGG_ACTIONS = ("secagg_share", "secagg_mask", "secagg_unmask")
CONNECT_TIMEOUT = 2.0

log = logging.getLogger("fedsys")
app = ClientApp()


def _socket_path(context: Context) -> Path | None:
    value = NodeConfig.parse(context.node_config).worker_socket
    return Path(value) if value else None


def call_worker(path: Path, msg: Message, context: Context) -> Message:
    """Send ``msg`` to the worker at ``path``; its reply (and the node state) come back.

    Raises OSError when nobody listens there, WorkerError when the worker refuses or fails.
    """
    from flwr.common.serde import context_to_proto, message_to_proto, recorddict_from_proto
    from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

    kind = msg.metadata.message_type
    message_bytes = message_to_proto(msg).SerializeToString()
    context_bytes = context_to_proto(context).SerializeToString()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(str(path))
        sock.settimeout(None)  # training takes as long as it takes; Flower's heartbeat runs
        request = Request(
            kind=kind, message_bytes=len(message_bytes), context_bytes=len(context_bytes)
        )
        send_frame(sock, request, message_bytes + context_bytes)
        header, body = recv_frame(sock, Reply)
    assert isinstance(header, Reply)
    if not header.ok:
        raise WorkerError(f"warm trainer failed the {kind} message: {header.error}")
    if header.content_bytes + header.state_bytes != len(body):
        raise WorkerError("warm trainer reply: body length does not match the header")
    content = recorddict_from_proto(ProtoRecordDict.FromString(body[: header.content_bytes]))
    state = recorddict_from_proto(ProtoRecordDict.FromString(body[header.content_bytes :]))
    context.state = state
    return Message(content=content, reply_to=msg)


def forward(msg: Message, context: Context) -> Message:
    """Hand ``msg`` to the warm trainer; without one, run the fedsys ClientApp here."""
    path = _socket_path(context)
    if path is not None:
        try:
            return call_worker(path, msg, context)
        except OSError as exc:
            log.warning("warm trainer at %s unreachable (%s); running in process", path, exc)
    from fedsys.client.client_app import app as local

    return local(message=msg, context=context)


# Every message type the fedsys ClientApp answers, forwarded unchanged.
app.train()(forward)
app.evaluate()(forward)
app.query()(forward)
for _action in SECAGG_ACTIONS:
    app.query(_action)(forward)
