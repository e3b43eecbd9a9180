"""glibc's malloc, told to keep and reuse the memory of the large buffers a load frees.

Each Scan page is a buffer of up to 1 MB, read, encoded into COPY rows (another large buffer) and
freed; the next page needs the same again. By default glibc gives such memory back to the kernel
(an allocation of 128 kB or more is its own mapping, unmapped when freed; the free top of a heap
past 128 kB is trimmed), so every page's buffers start as fresh pages that the kernel must fault
in and zero: about a tenth of a worker's CPU. With these settings the freed buffers stay in the
process and are reused. What a process holds stays bounded by what it has in flight at its peak.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

# mallopt's parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# glibc caps the mmap threshold at 32 MB on 64-bit systems (HEAP_MAX_SIZE / 2).
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed buffers for reuse; False where the C library is not glibc
    (musl, macOS): there nothing is changed."""
    try:
        # The symbols this process has loaded, the C library's among them.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on a refused value.
    done: bool = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not done:
        log.debug("malloc: mallopt refused the thresholds; freed buffers go back to the kernel")
    return done
