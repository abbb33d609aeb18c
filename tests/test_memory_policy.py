"""The freed-memory policies (``runtime.freed_memory``): what each does to a process's RSS.

Each policy is process-wide, so every check runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from fedsys.config import build_config
from fedsys.errors import ConfigError

GLIBC = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"

# Allocates 96 differently sized blocks of 2-3 MiB (a transformer step's short-lived
# activations), frees them, and reports RssAnon (MiB) before, at the peak and after.
PROBE = """
import json, sys
from fedsys.memory import set_freed_memory

def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024

applied = set_freed_memory(sys.argv[1])
before = anon()
blocks = [bytearray(b"x" * ((2 << 20) + i * 4096)) for i in range(96)]
peak = anon()
del blocks
print(json.dumps({"applied": applied, "before": before, "peak": peak, "after": anon()}))
"""


def _probe(policy: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, policy], capture_output=True, text=True, check=True
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_release_hands_freed_blocks_back_and_keep_holds_them() -> None:
    kept, released = _probe("keep"), _probe("release")
    assert kept["applied"] and released["applied"]
    for run in (kept, released):
        assert run["peak"] - run["before"] > 200  # the blocks were really resident
    assert kept["after"] - kept["before"] > 200  # kept for reuse
    assert released["after"] - released["before"] < 20  # back to the OS at once


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_system_changes_nothing_and_reports_success() -> None:
    assert _probe("system")["applied"]


def test_the_policy_defaults_from_reuse_freed_memory() -> None:
    assert build_config({}).runtime.freed_memory_policy == "keep"
    off = build_config({}, ["runtime.reuse_freed_memory=false"])
    assert off.runtime.freed_memory_policy == "system"
    chosen = build_config({}, ["runtime.reuse_freed_memory=false", "runtime.freed_memory=release"])
    assert chosen.runtime.freed_memory_policy == "release"


def test_an_unknown_policy_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="freed_memory"):
        build_config({}, ["runtime.freed_memory=sometimes"])
