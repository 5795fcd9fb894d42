"""Keep freed memory in the process for the next allocation of the same size.

Each epoch's evaluation allocates activations of tens of MB (digits: 35 members x 1,438
examples x 64 units, 13 MB a layer) and frees them. glibc's malloc hands blocks that large
to the kernel (mmap) and back (munmap) each time, so every epoch touched fresh pages: page
faults cost about a quarter of an evaluation (measured). Raising the mmap threshold to its
largest value and never trimming the heap keeps those blocks for reuse. Where it changes
anything it is only speed: the arithmetic and the numbers are the same.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 32 * 2**20  # glibc's upper limit on 64-bit systems
TRIM_THRESHOLD = 2**31 - 1


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as above; False where there is no glibc (nothing changes)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
