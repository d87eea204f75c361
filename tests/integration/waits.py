"""Waiting on a condition instead of sleeping for a time that is meant to be long enough.

    wait_until(lambda: committed(group) >= total, 60, f"{total} messages committed by {group}")

The predicate is polled (a short sleep between two polls) until it is true; if it is not true within
``timeout`` seconds the wait fails with an AssertionError naming ``what`` and the timeout. A predicate may
itself raise (an AssertionError for "this will never happen", such as a process that exited): that ends
the wait at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str | Callable[[], str],
               interval: float = 0.05) -> T:
    """Poll ``predicate`` every ``interval`` seconds until it returns something true, and return that;
    fail after ``timeout`` seconds. ``what`` says what was awaited (a callable: evaluated on failure, for
    the progress made by then)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout} s waiting for {described}")
        time.sleep(interval)
