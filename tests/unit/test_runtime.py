"""Process-wide settings of the long-running commands."""

from __future__ import annotations

import gc
import sys

import numpy as np

from driftline.app.runtime import settle_process


def test_settle_process_freezes_start_up_objects_and_keeps_memory_for_the_next_batch() -> None:
    before = gc.get_threshold()
    try:
        settle_process()
        assert gc.get_threshold()[0] == 50_000 and gc.get_freeze_count() > 0
        columns = [np.ones(20_000) for _ in range(30)]  # a batch's columns, freed and made again
        del columns
        assert float(np.ones(20_000).sum()) == 20_000.0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_keep_freed_memory_says_whether_glibc_took_it() -> None:
    from driftline.app.runtime import keep_freed_memory

    took = keep_freed_memory()
    assert isinstance(took, bool)
    if sys.platform == "linux":  # (glibc here; musl's mallopt does nothing and says so)
        import platform

        assert took == (platform.libc_ver()[0] == "glibc")
