"""What a process does with freed tensor memory: keep it for reuse, or hand it back at once.

glibc's malloc serves every block above its mmap threshold with a fresh ``mmap`` and unmaps it
on ``free``; the threshold starts at 128 KiB and grows (up to 32 MiB) to the largest block
freed so far. Two trades are worth choosing between:

- ``keep`` (the default): mmap off for malloc and a high trim threshold, so freed blocks stay
  in the heap and are reused. A round allocates model-sized tensors again and again (decoded
  global model, gradients, the optimizer's momentum, the server's sums), and each fresh
  mapping page-faults all its pages back in: about 10 ms per 40 MB here, a third of a
  10M-parameter client call. The price is that the process keeps its peak heap, and that a
  heap grown by many differently sized short-lived blocks (a transformer's activations,
  recomputed under gradient checkpointing) keeps its fragments too.
- ``release``: a fixed mmap threshold of ``RELEASE_THRESHOLD_BYTES``, so every larger block
  is its own mapping and goes back to the OS when freed: the process holds what it uses,
  not its heap's high-water mark, and pays the page faults. For a worker whose memory is
  the limit (a language model's frozen base on a small node).
- ``system``: glibc as it is.

glibc has no such setting in Python; these are ``mallopt`` calls through ctypes. Elsewhere
(macOS, musl) they do nothing.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from collections.abc import Callable
from typing import Literal

log = logging.getLogger(__name__)

FreedMemory = Literal["keep", "release", "system"]

M_TRIM_THRESHOLD = -1  # from glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 1 << 30  # keep: free heap top beyond this still goes back to the OS
RELEASE_THRESHOLD_BYTES = 1 << 20  # release: blocks from 1 MiB up are mapped on their own
GLIBC_MMAP_MAX = 65536  # glibc's default number of mappings malloc may hold at once

_applied: FreedMemory | None = None


def _mallopt() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl's mallopt is a no-op)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def set_freed_memory(policy: FreedMemory) -> bool:
    """Apply ``policy`` to this process's malloc; True when it took effect.

    Process-wide; a later call with another policy replaces it (``system`` changes nothing:
    glibc's own adaptive threshold cannot be switched back on once a policy fixed it).
    Blocks too large for a thread's own arena still fall back to mmap under ``keep``, so no
    allocation can fail because of it.
    """
    global _applied
    if policy == "system" or _applied == policy:
        return True
    mallopt = _mallopt()
    if mallopt is None:
        return False
    settings: tuple[tuple[int, int], ...]
    if policy == "keep":
        settings = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    else:
        settings = (
            (M_MMAP_MAX, GLIBC_MMAP_MAX),
            (M_MMAP_THRESHOLD, RELEASE_THRESHOLD_BYTES),
            (M_TRIM_THRESHOLD, RELEASE_THRESHOLD_BYTES),
        )
    if not all(mallopt(option, value) == 1 for option, value in settings):
        log.debug("mallopt refused the %s policy; malloc keeps its settings", policy)
        return False
    _applied = policy
    return True


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to reuse freed large blocks (the ``keep`` policy)."""
    return set_freed_memory("keep")
