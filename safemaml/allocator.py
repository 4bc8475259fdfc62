"""Keep freed memory in the process instead of handing it back to the OS (glibc only).

A paper-sized meta-step allocates and frees tensors of 64 MB thousands of times ([40 tasks, 4000
steps, 100 units] floats). glibc serves each such block by a fresh mmap and unmaps it on free, so
every allocation page-faults its 16k pages in again: measured here, that doubles the cost of a
Fisher-vector product (docs/performance.md, benchmarks/allocator.py). Telling malloc not to use
mmap, and to trim its heap only when more than 2 GiB lie free at its top, lets freed blocks be
reused already mapped. The price: the process keeps (up to 2 GiB above) its peak memory.

`import safemaml` calls it, for the whole process (like OMP_WAIT_POLICY); SAFEMAML_MALLOC=system
opts out. Elsewhere than glibc (macOS, musl, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters, from glibc's malloc.h
TRIM_THRESHOLD = 2**31 - 1  # the largest an int takes: trim only above 2 GiB free
OPT_OUT = "SAFEMAML_MALLOC"  # set to "system" to leave malloc as it is


def is_glibc() -> bool:
    """Whether this process runs on GNU libc (whose mallopt this module sets)."""
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, ValueError, OSError):  # no confstr (Windows) or no such name (macOS, musl)
        return False


def keep_freed_memory() -> bool:
    """Set glibc's malloc to reuse freed blocks (no mmap, trim above 2 GiB); True if it took effect.

    False, and nothing changed, on other C libraries or with SAFEMAML_MALLOC=system. (Under a
    preloaded allocator such as jemalloc glibc's settings are accepted but have no effect.)
    """
    if os.environ.get(OPT_OUT, "") == "system" or not is_glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    if not mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD):  # the harmless one first: on failure nothing changed
        return False
    return bool(mallopt(M_MMAP_MAX, 0))
