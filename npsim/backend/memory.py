"""Keep freed array memory in the process, so training steps do not page-fault it back in.

A training step allocates and frees tens of megabytes of arrays (activities,
noise, update directions). By default glibc's malloc serves big arrays with
fresh ``mmap`` pages or trims its heap when they are freed, so every step
touches its arrays' pages for the first time again: on the benchmark MLP at
batch 1024 that was 21,600 page faults (88 MB) and about 30 ms of a 158 ms
step. :func:`keep_freed_memory` raises malloc's mmap and trim thresholds, so
freed arrays go back to the heap and the next step reuses them.

The cost: the process keeps (up to ``limit`` bytes of) its peak heap instead
of returning it to the operating system between steps. Set
``NPSIM_KEEP_MEMORY=0`` to leave malloc alone. Off glibc (macOS, musl,
Windows) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper bound on 64-bit systems
_applied: bool | None = None


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """Ask glibc's malloc to serve arrays up to 32 MiB from its heap and keep up to ``limit`` bytes freed.

    Idempotent (only the first call acts). Returns whether the setting is in
    effect: False off glibc or when ``NPSIM_KEEP_MEMORY=0``.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("NPSIM_KEEP_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, int(min(limit, 2**31 - 1))) == 1 and ok
    _applied = ok
    return ok
