"""The key of a model version: :class:`ModelKey`, a (model, version) pair that equals and hashes as the
plain tuple, and its one text form in checkpoints (``model`` and ``version`` joined by ``\\x1f``, a byte
no model or version name contains).

>>> key = ModelKey("credit", "3")
>>> key.encode() == "credit\\x1f3" and ModelKey.decode(key.encode()) == key == ("credit", "3")
True
"""

from __future__ import annotations

from typing import NamedTuple

SEPARATOR = "\x1f"


class ModelKey(NamedTuple):
    model: str
    version: str

    def encode(self) -> str:
        """The key as checkpoints name it."""
        return f"{self.model}{SEPARATOR}{self.version}"

    @classmethod
    def decode(cls, name: str) -> ModelKey:
        model, version = name.split(SEPARATOR, 1)
        return cls(model, version)
