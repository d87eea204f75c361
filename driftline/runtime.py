"""Process-wide settings for driftline's long-running commands."""

from __future__ import annotations

import gc


def settle_garbage_collector() -> None:
    """After start-up: what exists now (profiles, configuration, restored state) lives as long as the
    process, so it leaves the collector's generations; and collections start after 50k new objects rather
    than 700, since a batch allocates an object per event and frees them together. Measured: 4x the
    consume rate of a 200k-message backlog when many objects are alive (docs/decisions.md).
    For ``driftline run``, ``replay`` and ``demo``; a library caller decides for its own process."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
