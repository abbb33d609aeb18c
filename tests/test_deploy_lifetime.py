"""Fault handling pieces without a federation: the state-directory lock, stale-process
clean-up, parent-death signals, the output-directory lock, connection events, publishing
that waits for checkpoints, and filling a lost publish on resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from fedsys.deploy.connection import ConnectionWatch
from fedsys.deploy.lifetime import (
    DaemonConflict,
    Lifetime,
    check_port_free,
    marked_processes,
)
from fedsys.deploy.supervise import Child
from fedsys.processes import parent_death_signal
from fedsys.server.durable import RoundGate
from fedsys.server.outlock import OutputDirBusy, exclusive_output_dir

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat[stat.rfind(")") + 2 :].startswith("Z"):
                return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.05)
    return False


def test_a_second_daemon_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    first = Lifetime(tmp_path, "server")
    first.acquire()
    with pytest.raises(DaemonConflict, match="another fedsys server is running"):
        Lifetime(tmp_path, "server").acquire()
    first.release()
    later = Lifetime(tmp_path, "server")
    assert later.acquire()["instance"] == first.instance  # it learns who held it before
    later.release()


def test_processes_left_by_an_earlier_instance_are_found_and_stopped(tmp_path: Path) -> None:
    old = Lifetime(tmp_path, "client")
    orphan = subprocess.Popen(SLEEPER, env=old.env(dict(os.environ), "supernode#1"))
    try:
        new = Lifetime(tmp_path, "client")
        new.acquire()
        stale = new.stale()
        assert [p.pid for p in stale] == [orphan.pid]
        assert stale[0].child == "supernode#1"
        assert new.descendants() == []  # not ours: another instance's
        from fedsys.deploy.lifetime import terminate

        terminate(stale, grace=5.0)
        assert orphan.wait(10) is not None
        assert marked_processes(tmp_path) == []
        new.release()
    finally:
        orphan.kill()
        orphan.wait()


def test_a_child_dies_with_its_daemon_even_when_the_daemon_is_sigkilled(tmp_path: Path) -> None:
    # A middle process (the "daemon") starts a sleeper with the parent-death signal armed,
    # prints its pid, and is then SIGKILLed: the sleeper must go too.
    code = (
        "import subprocess, sys, time\n"
        "from fedsys.processes import parent_death_signal\n"
        f"p = subprocess.Popen({SLEEPER!r}, preexec_fn=parent_death_signal(),"
        " start_new_session=True)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    daemon = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert daemon.stdout is not None
    child = int(daemon.stdout.readline())
    os.kill(child, 0)  # running
    daemon.kill()
    daemon.wait()
    assert _wait_gone(child), "the child outlived its SIGKILLed parent"
    assert callable(parent_death_signal())


def test_a_port_in_use_is_refused_with_its_holder(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(DaemonConflict, match=rf"port {port} .* pid {os.getpid()}"):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", port)  # free again


def test_one_writer_per_output_dir(tmp_path: Path) -> None:
    with exclusive_output_dir(tmp_path / "out", run_id=7):
        holder = json.loads((tmp_path / "out/.writer.lock").read_text())
        assert holder["pid"] == os.getpid() and holder["run_id"] == "7"
        # a second ServerApp (another process) is refused with a clear reason
        code = (
            "from pathlib import Path\n"
            "from fedsys.server.outlock import exclusive_output_dir, OutputDirBusy\n"
            f"try:\n    with exclusive_output_dir(Path({str(tmp_path / 'out')!r}), 8): pass\n"
            "except OutputDirBusy as e:\n    print(e)\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert "in use by another ServerApp" in done.stdout and '"run_id": "7"' in done.stdout
    with exclusive_output_dir(tmp_path / "out", run_id=9):  # released: the next one may write
        pass
    assert OutputDirBusy.__doc__


def test_connection_loss_and_return_are_logged_once_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "supernode.log"
    log.write_text("INFO :      SuperNode ID: 42\n")
    child = Child("supernode", ["true"], {}, log, generation=1)
    child.proc = subprocess.Popen(["true"])
    watch = ConnectionWatch("client", child)
    watch.tick()
    with log.open("a") as fh:
        fh.write("WARNING :   Connection attempt failed, retrying in 1.20 seconds\n")
        fh.write("WARNING :   Connection attempt failed, retrying in 2.70 seconds\n")
    watch.tick()
    with log.open("a") as fh:
        fh.write("INFO :      Connection successful after 4.10 seconds and 3 tries.\n")
    watch.tick()
    child.proc.wait()
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["event"] for x in lines] == ["superlink_lost", "superlink_regained"]
    assert lines[1]["flower_retry_s"] == 4.1 and lines[1]["down_s"] >= 0


def test_a_publish_waits_for_its_rounds_checkpoint() -> None:
    gate = RoundGate()
    assert gate.wait(1, timeout=0.05) is not None  # not durable yet
    fut: Future[None] = Future()
    gate.watch(1, fut)
    fut.set_result(None)
    assert gate.wait(1, timeout=1.0) is None
    bad: Future[None] = Future()
    gate.watch(2, bad)
    bad.set_exception(OSError("disk full"))
    assert "disk full" in (gate.wait(2, timeout=1.0) or "")


def test_resume_fills_a_lost_publish_and_records_an_unrecoverable_one(tmp_path: Path) -> None:
    from fedsys.config import ExperimentConfig
    from fedsys.data import load_dataset
    from fedsys.models import build_model
    from fedsys.registry.publisher import Publisher
    from fedsys.server.publish_resume import reconcile_publishes
    from fedsys.server.records import RoundRecord, read_rounds

    cfg = ExperimentConfig.model_validate(
        {"name": "rp", "model": {"channels": 4}, "publish": {"mode": "every_round"}}
    )
    _, _, info = load_dataset(cfg.data, 0)
    arrays = {k: v.numpy() for k, v in build_model(cfg.model, info).state_dict().items()}
    out = tmp_path / "out"
    pub = Publisher(cfg, out, info)
    metrics_of = {"accuracy": 0.5, "loss": 1.0}
    assert pub.republish(1, 1, arrays, metrics_of, 3, "run-1")  # round 1 made it to disk

    def rec(rnd: int, version: int) -> RoundRecord:
        return RoundRecord(
            round=rnd, central_accuracy=0.5, central_loss=1.0, train_loss=None, clients=3,
            sampled=3, rejected=[], stragglers_dropped=0, bytes_up=0, bytes_down=0,
            seconds=1.0, client_train_seconds=None, published_version=version,
        )  # fmt: skip

    # rounds 2 and 3 were queued as v2, v3 but the server died first; the checkpoint is round 3
    kept = [rec(1, 1), rec(2, 2), rec(3, 3)]
    metrics = out / "metrics.jsonl"
    metrics.write_text("".join(r.model_dump_json() + "\n" for r in kept))
    model3 = {k: np.asarray(v) + 1.0 for k, v in arrays.items()}
    reconcile_publishes(pub, metrics, kept, 3, model3, "run-2")
    lines = read_rounds(metrics)
    assert [r.published_version for r in lines] == [1, None, 3]
    assert "version 2 was lost" in (lines[1].publish_gap or "")
    assert pub.registry.version_numbers("rp") == [1, 3]
    assert [m.round for m in pub.registry.versions("rp")] == [1, 3]
    # the next round gets v4: the lost number 2 is never given to another round
    assert pub.after_round(4, arrays, metrics_of, 3, "run-2") == 4
    pub.close()
    assert pub.registry.version_numbers("rp") == [1, 3, 4]
