"""Keep freed model-sized memory in the process instead of handing it back to the OS.

glibc's malloc serves every block above its mmap threshold (32 MB at most, so every weight,
gradient and momentum tensor of a 10M-parameter layer) with a fresh ``mmap`` and unmaps it on
``free``. A round allocates such tensors again and again (decoded global model, gradients,
the optimizer's momentum, the server's sums), and each one page-faults all its pages back in:
about 10 ms per 40 MB here, a third of a 10M-parameter client call. With mmap off for malloc
and a high trim threshold, freed blocks stay in the heap and are reused.

glibc has no such setting in Python; it is two ``mallopt`` calls through ctypes. Elsewhere
(macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # from glibc's <malloc.h>
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 1 << 30  # free heap top beyond this still goes back to the OS

_applied = False


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to reuse freed large blocks; True when it took effect.

    Process-wide and one-way; call it in processes that train or aggregate models. Blocks
    too large for a thread's own arena still fall back to mmap, so no allocation can fail
    because of it; the cost is that the process keeps its peak heap instead of shrinking.
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl's mallopt is a no-op)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(M_MMAP_MAX, 0) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) != 1:
        log.debug("mallopt refused; large blocks keep coming from mmap")
        return False
    _applied = True
    return True
