"""Deterministic ids: a hash of the parts that make a row what it is, so a replay or a restart writes the
same ids and the store keeps one copy.

>>> digest("credit", "3", 0, 60_000)
'dabd3c91597526cbab50a4df017ccee4'
"""

from __future__ import annotations

import hashlib


def digest(*parts: object) -> str:
    """The parts, ``\\x1f``-joined, hashed (SHA-256, the first 32 hex digits)."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:32]
