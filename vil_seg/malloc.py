"""glibc's malloc settings for PyTorch on the CPU.

By default glibc returns freed memory to the system once more than twice its (adaptive) mmap threshold is
free at the top of the heap. A forward pass frees tens of megabytes of temporaries per block, so the next
block gets fresh pages and pays a page fault for every 4 KiB of them. Serving blocks of up to 32 MiB from
the heap and keeping up to 1 GiB of freed memory removes that (measured by ``benchmarks/trunk.py --malloc
tuned``, see benchmarks/README.md); it is the same as starting Python with
``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824``.

The ``vil-seg`` command applies this when it starts. A library import never changes the process's
allocator; call :func:`tune_glibc_malloc` yourself, or set the two variables, in your own programs.
"""

from __future__ import annotations

import ctypes
import platform
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_glibc_malloc"]

MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest mmap threshold (64-bit)
TRIM_THRESHOLD = 1024 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h


def tune_glibc_malloc() -> bool:
    """Set glibc's mmap and trim thresholds for large, short-lived tensors.

    Returns:
        True if applied; False where the C library is not glibc (macOS, Windows, musl), which is left as is.
    """
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; setting the trim threshold first would not stop the mmap one adapting
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
