"""Running the endpoint: in the foreground (``fedsys serve``, one or more worker processes)
or in a background thread of this process (``fedsys simulate`` with ``serve.enabled``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from fedsys.errors import FedsysError
from fedsys.serving.endpoint import app_from_env, create_app
from fedsys.serving.endpoint_settings import SETTINGS_ENV, ServeSettings
from fedsys.serving.metrics import MULTIPROC_ENV

GRACEFUL_SHUTDOWN_S = 10
# The uvicorn options of every way of running the endpoint.
UVICORN_OPTIONS: dict[str, Any] = {
    "log_level": "warning",
    "access_log": False,  # a log line per request costs more than a small model's inference
    # No WebSocket routes: "none" also keeps uvicorn from importing websockets.legacy, which
    # prints a DeprecationWarning on every start.
    "ws": "none",
    "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
}
# What uvicorn's worker processes import to build their app.
APP_FACTORY = f"{app_from_env.__module__}:{app_from_env.__name__}"
START_TIMEOUT_S = 180.0  # for worker processes to import torch and bind (busy machines)


def free_port(host: str) -> int:
    """A port free on ``host`` now (another process could take it before uvicorn binds)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve_process(
    args: Sequence[str],
    *,
    host: str,
    port: int,
    ready_path: str = "/healthz",
    env: Mapping[str, str] | None = None,
    start_timeout: float = START_TIMEOUT_S,
) -> Iterator[str]:
    """``fedsys serve ARGS --host HOST --port PORT`` in its own process group.

    Yields the URL once ``ready_path`` answers 200 (``/readyz``: a model is loaded); on exit
    the group gets SIGTERM, then SIGKILL if it has not ended within the graceful shutdown.
    """
    cmd = [sys.executable, "-m", "fedsys.cli", "serve", *args, "--host", host]
    cmd += ["--port", str(port)]
    proc = subprocess.Popen(
        cmd,
        env=dict(env) if env is not None else None,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise FedsysError(f"the inference endpoint exited with code {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}{ready_path}", timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise FedsysError(f"the inference endpoint did not start on {url}")
            time.sleep(0.1)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=GRACEFUL_SHUTDOWN_S + 5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def serve_forever(settings: ServeSettings) -> None:
    """Block serving ``settings`` until interrupted; several workers share the port."""
    if settings.workers == 1:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, **UVICORN_OPTIONS)
        return
    # Worker processes rebuild the app from the environment (uvicorn needs an import string)
    # and share their Prometheus values through files in a directory of their own.
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    metrics_dir = tempfile.mkdtemp(prefix="fedsys-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            **UVICORN_OPTIONS,
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


class BackgroundServer:
    """One uvicorn server in a daemon-free thread of this process, on a socket bound before
    the thread starts (port 0 picks a free port, without the bind-then-close race).

    Use as a context manager; leaving it stops the server and joins the thread.
    """

    def __init__(self, settings: ServeSettings, start_timeout: float = 60.0) -> None:
        self.settings = settings
        self.start_timeout = start_timeout
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((settings.host, settings.port))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(create_app(settings), **UVICORN_OPTIONS)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="fedsys-serve"
        )

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise FedsysError(f"the inference endpoint did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
