"""Keep freed memory in the process instead of handing it back to the OS (glibc only).

A paper-sized meta-step allocates and frees tensors of 64 MB thousands of times ([40 tasks, 4000
steps, 100 units] floats). glibc serves each such block by a fresh mmap and unmaps it on free, so
every allocation page-faults its 16k pages in again: measured here, that doubles the cost of an
elementwise op and of a whole Fisher-vector product (docs/performance.md). Telling malloc to never
use mmap and never trim its heap lets freed blocks be reused, already mapped. The price: the
process keeps its peak memory until it exits, which a training run reaches every iteration anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters, from glibc's malloc.h
OPT_OUT = "SAFEMAML_MALLOC"  # set to "system" to leave malloc as it is


def keep_freed_memory() -> bool:
    """Set glibc's malloc to reuse freed blocks (no mmap, no trim); True if it took effect.

    A no-op (False) on other C libraries and when the environment sets SAFEMAML_MALLOC=system.
    """
    if os.environ.get(OPT_OUT, "") == "system":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
