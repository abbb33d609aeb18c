"""A pre-imported stand-in for Flower's SuperExec on a client node: fork, don't exec.

With ``flower-supernode --isolation process`` the SuperNode runs no task launcher of its own;
some other process asks its local runtime API for ClientApp tasks and runs each one. Flower's
SuperExec starts a fresh ``flwr-clientapp`` interpreter per task, which spends seconds
importing Flower before it does anything. This loop imports Flower's ClientApp runtime and the
thin fedsys ClientApp once, then forks a child per task that calls the very function
``flwr-clientapp`` calls (``run_clientapp``); the child exits when the task is done, so every
task still runs in its own process, with Flower's own code, signal and exit handling.

It relies on two Flower names outside the public app API (``run_clientapp`` and the runtime
API's ``AcquireTask``), both used by Flower's own ``flower-superexec``; the client daemon falls
back to the SuperNode's own launcher when ``fast_tasks`` is off.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from fedsys.processes import StopRequest, die_with_parent, log_line

POLL_SECONDS = 0.05  # between AcquireTask calls on the local runtime API
# A task is handed out while the SuperNode may still be fetching the message's objects from
# the SuperLink; a ClientApp that asks for them too early waits out Flower's first pull
# backoff (1 s). A short head start avoids that in the common case; later is still correct.
LAUNCH_DELAY_SECONDS = 0.25


def _log(event: str, **fields: object) -> None:
    log_line(sys.stderr, "task-runner", event, **fields)


def _run_task(runtime_address: str, token: str, parent: int) -> None:
    """In the forked child: run one ClientApp task as ``flwr-clientapp`` would, then exit."""
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    die_with_parent(parent)  # a task never outlives the runner that forked it
    code = 1
    try:
        run_clientapp(
            runtime_api_address=runtime_address,
            token=token,
            insecure=True,  # the runtime API is the SuperNode's, on loopback
            certificates=None,
            parent_pid=os.getppid(),
            runtime_dependency_install=False,
        )
        code = 0
    except SystemExit as exc:  # run_clientapp ends with flwr_exit()
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(runtime_address: str, launch_delay: float = LAUNCH_DELAY_SECONDS) -> None:
    """Acquire ClientApp tasks from the SuperNode at ``runtime_address`` until SIGTERM."""
    # Imported up front: every forked child inherits them instead of importing again.
    from flwr.common import serde  # noqa: F401  (used by the thin ClientApp)
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime import run_clientapp  # noqa: F401

    import fedsys.client.deployed_app  # noqa: F401

    stop = StopRequest().install()
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_address,
        insecure=True,
        root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    children: set[int] = set()
    available = True
    _log("ready", runtime_api=runtime_address, pid=os.getpid())
    try:
        while stop.signum is None:
            for pid in list(children):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    children.discard(pid)
                    _log("task_exited", pid=pid, code=os.waitstatus_to_exitcode(status))
            try:
                res = client.AcquireTask(
                    AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
                )
            except Exception as exc:  # the SuperNode (re)starts: keep asking
                if available:
                    _log("runtime_api_unavailable", error=type(exc).__name__)
                available = False
                time.sleep(1.0)
                continue
            if not available:
                _log("runtime_api_available")
                available = True
            if res.HasField("task") and res.token:
                time.sleep(launch_delay)
                me = os.getpid()
                pid = os.fork()
                if pid == 0:
                    _run_task(runtime_address, res.token, me)
                children.add(pid)
                _log("task_started", pid=pid, task_id=res.task.task_id)
                continue
            time.sleep(POLL_SECONDS)
    finally:
        client.close()
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            except ProcessLookupError:
                pass
        _log("stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="fedsys ClientApp task runner (fedsys client)")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--launch-delay", type=float, default=LAUNCH_DELAY_SECONDS)
    args = parser.parse_args(argv)
    serve(args.runtime_api_address, args.launch_delay)


if __name__ == "__main__":
    main()
