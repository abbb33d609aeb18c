"""Running the endpoint: in the foreground (``fedsys serve``, one or more worker processes)
or in a background thread of this process (``fedsys simulate`` with ``serve.enabled``)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from types import TracebackType

import uvicorn

from fedsys.errors import FedsysError
from fedsys.serving.app import create_app
from fedsys.serving.metrics import MULTIPROC_ENV
from fedsys.serving.settings import SETTINGS_ENV, ServeSettings

LOG_LEVEL = "warning"
ACCESS_LOG = False  # a log line per request costs more than a small model's inference
GRACEFUL_SHUTDOWN_S = 10


def free_port(host: str) -> int:
    """A port free on ``host`` now (another process could take it before uvicorn binds)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def serve_forever(settings: ServeSettings) -> None:
    """Block serving ``settings`` until interrupted; several workers share the port."""
    if settings.workers == 1:
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level=LOG_LEVEL,
            access_log=ACCESS_LOG,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
        return
    # Worker processes rebuild the app from the environment (uvicorn needs an import string)
    # and share their Prometheus values through files in a directory of their own.
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    metrics_dir = tempfile.mkdtemp(prefix="fedsys-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        uvicorn.run(
            "fedsys.serving.app:app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=LOG_LEVEL,
            access_log=ACCESS_LOG,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
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
        config = uvicorn.Config(
            create_app(settings),
            log_level=LOG_LEVEL,
            access_log=ACCESS_LOG,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
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
