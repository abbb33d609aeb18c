"""Background compression: versions handed over while one runs are coalesced to the newest,
and closing waits for the last one."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from fedsys.compress.background import BackgroundCompressor

# Stands in for ``fedsys compress``: notes the version it was given, then waits for a gate.
FAKE = """
import pathlib, sys, time
out = pathlib.Path(sys.argv[1])
version = sys.argv[sys.argv.index("--version") + 1]
(out / f"started-{version}").touch()
while not (out / "gate").exists():
    time.sleep(0.01)
"""


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"timed out waiting for {path.name}"
        time.sleep(0.01)


def test_versions_are_coalesced_to_the_newest_and_close_waits(tmp_path: Path) -> None:
    compressor = BackgroundCompressor(
        tmp_path / "registry",
        "model",
        tmp_path / "key.pem",
        tmp_path / "config.yaml",
        tmp_path / "compress.log",
        command=[sys.executable, "-c", FAKE, str(tmp_path)],
    )
    compressor.submit(1)
    _wait_for(tmp_path / "started-1")
    for version in (2, 3):  # both arrive while v1 is compressed: only v3 follows
        compressor.submit(version)
    (tmp_path / "gate").touch()
    assert compressor.close(timeout=600)
    assert compressor.done == [1, 3] and compressor.failed == []
    assert not (tmp_path / "started-2").exists()
