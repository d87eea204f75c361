"""Process-wide settings for driftline's long-running commands."""

from __future__ import annotations

import ctypes
import gc

MMAP_THRESHOLD = 32 * 1024 * 1024
"""Blocks from this size up get memory of their own from the kernel (glibc's largest allowed value)."""
TRIM_THRESHOLD = 128 * 1024 * 1024
"""Freed memory kept for the next batch before it goes back to the kernel (per glibc arena: the main
thread's, where batches are built; librdkafka's and chDB's threads have arenas of their own)."""
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def settle_process() -> None:
    """After start-up, for ``driftline run``, ``replay`` and ``demo`` (a library caller decides for its own
    process): settle the garbage collector and keep freed memory for the next batch."""
    settle_garbage_collector()
    keep_freed_memory()


def settle_garbage_collector() -> None:
    """What exists now (profiles, configuration, restored state) lives as long as the process, so it
    leaves the collector's generations; and collections start after 50k new objects rather than 700,
    since a batch allocates an object per event and frees them together. Measured: 4x the consume rate
    of a 200k-message backlog when many objects are alive (docs/decisions.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def keep_freed_memory() -> bool:
    """Have glibc's allocator reuse the memory a batch frees for the next one rather than give it back to
    the kernel and fault it in again page by page: a batch's columns (160 kB for 20k float64s) are above
    glibc's default limits for both. Measured: Avro batch decoding 1.6 → 1.0 µs per event
    (docs/decisions.md). Whether the allocator took the settings (False: not glibc; nothing changed)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no C library to ask (Windows), or not glibc's (macOS)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    took = [mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD), mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)]
    return all(took)
