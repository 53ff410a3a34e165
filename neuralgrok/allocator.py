"""glibc malloc settings for a training process: keep freed memory instead of returning it to the
operating system after every step.

A step allocates and frees the same large buffers again and again. glibc's defaults serve blocks
over 128 KiB (adjusting upwards as they are freed) with fresh ``mmap`` s and give the top of the
heap back after each free, so every forward pass page-faults its buffers in anew. On the project's
machine that made a no-grad forward over the demo's 2,209 examples cost about 80 ms instead of 9,
and a logged row of the demo 70-230 ms instead of 15-34 (``bench/bench_runner_overhead.py``,
BENCHMARKS.md). :func:`keep_freed_memory` raises both thresholds (``mallopt``), so freed blocks are
reused; the process's peak resident memory is what it would have been, but it no longer shrinks
after the peak. ``neuralgrok run`` and ``neuralgrok demo`` call it; library users can too, or set
``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824`` in the environment.
"""
import ctypes

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2 ** 20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 2 ** 30


def keep_freed_memory() -> bool:
    """Apply the settings where the C library is glibc; returns whether they were applied."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):  # not glibc (macOS, musl, Windows)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
