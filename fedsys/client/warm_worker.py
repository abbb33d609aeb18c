"""The warm trainer: a long-lived process that runs the ClientApp's work for the SuperNode.

A SuperNode starts a fresh ``flwr-clientapp`` process for every message, which would import
torch, rebuild the data and the model (and on a GPU create a CUDA context) every round. The
``fedsys client`` daemon keeps this process instead: it imports the ClientApp once, and its
per-process memos (parsed config, partition tensors, model object) survive across rounds.
The thin ClientApp (:mod:`fedsys.client.deployed_app`) hands each message over a Unix socket.

The socket lives in a directory only the daemon's user can enter (0700), is itself 0600, and
every connection's peer uid is checked (``SO_PEERCRED``) before a byte is read.
"""

from __future__ import annotations

import argparse
import os
import socket
import stat
import struct
import sys
import time
from pathlib import Path

from fedsys.client.worker_protocol import PING, Reply, Request, WorkerError, recv_frame, send_frame
from fedsys.errors import FedsysError
from fedsys.processes import StopRequest, log_line

ACCEPT_POLL = 0.5  # seconds between checks for a stop request while idle


def prepare_private_dir(path: Path) -> Path:
    """Create ``path`` (0700); refuse one that others can enter or that another user owns."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_uid != os.getuid():
        raise FedsysError(f"{path} belongs to uid {st.st_uid}, not to this user")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        os.chmod(path, 0o700)
    return path


def peer_uid(conn: socket.socket) -> int:
    """The connecting process's uid (Linux ``SO_PEERCRED``); -1 where unsupported."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return -1
    creds = conn.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _log(event: str, **fields: object) -> None:
    log_line(sys.stderr, "worker", event, **fields)


def handle(request: Request, body: bytes) -> tuple[bytes, bytes]:
    """Run one message through the fedsys ClientApp; returns (reply content, new state)."""
    from flwr.common.serde import (
        context_from_proto,
        message_from_proto,
        recorddict_to_proto,
    )
    from flwr.proto.message_pb2 import Context as ProtoContext
    from flwr.proto.message_pb2 import Message as ProtoMessage

    from fedsys.client.client_app import app as client_app

    msg_end = request.message_bytes
    message = message_from_proto(ProtoMessage.FromString(body[:msg_end]))
    context = context_from_proto(ProtoContext.FromString(body[msg_end:]))
    # The fedsys ClientApp dispatches on the message type itself (train, evaluate, query and
    # the secure-aggregation stages), exactly as it would inside flwr-clientapp.
    reply = client_app(message=message, context=context)
    return (
        recorddict_to_proto(reply.content).SerializeToString(),
        recorddict_to_proto(context.state).SerializeToString(),
    )


def _serve_one(conn: socket.socket) -> None:
    if (uid := peer_uid(conn)) not in (-1, os.getuid()):
        _log("refused", reason="peer uid differs", peer_uid=uid)
        return
    header, body = recv_frame(conn, Request)
    assert isinstance(header, Request)
    if header.kind == PING:
        send_frame(conn, Reply(ok=True), b"")
        return
    if header.message_bytes + header.context_bytes != len(body):
        send_frame(conn, Reply(ok=False, error="body length does not match the header"), b"")
        return
    start = time.perf_counter()
    try:
        content, state = handle(header, body)
    except Exception as exc:  # the ClientApp's failure goes back to the SuperNode as an error
        _log("message_failed", kind=header.kind, error=f"{type(exc).__name__}: {exc}")
        send_frame(conn, Reply(ok=False, error=f"{type(exc).__name__}: {exc}"), b"")
        return
    seconds = time.perf_counter() - start
    reply = Reply(ok=True, content_bytes=len(content), state_bytes=len(state), seconds=seconds)
    send_frame(conn, reply, content + state)
    _log("message_done", kind=header.kind, seconds=round(seconds, 4))


def serve(socket_path: Path, *, preload: bool = True) -> None:
    """Serve requests on ``socket_path`` one at a time until SIGTERM or SIGINT."""
    prepare_private_dir(socket_path.parent)
    socket_path.unlink(missing_ok=True)
    stop = StopRequest().install()
    if preload:
        import fedsys.client.client_app  # noqa: F401  (torch, data and model code, once)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket file is created 0600
    try:
        server.bind(str(socket_path))
    finally:
        os.umask(old_umask)
    os.chmod(socket_path, 0o600)
    server.listen(8)
    server.settimeout(ACCEPT_POLL)
    _log("ready", socket=str(socket_path), pid=os.getpid())
    try:
        while stop.signum is None:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except InterruptedError:
                continue
            with conn:
                conn.settimeout(None)
                try:
                    _serve_one(conn)
                except (WorkerError, OSError) as exc:
                    _log("connection_failed", error=str(exc))
    finally:
        server.close()
        socket_path.unlink(missing_ok=True)
        _log("stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="fedsys warm trainer (started by fedsys client)")
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--torch-threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.torch_threads > 0:
        os.environ.setdefault("OMP_NUM_THREADS", str(args.torch_threads))
    serve(args.socket)


if __name__ == "__main__":
    main()
