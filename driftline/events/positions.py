"""Where each event came from, structured: :data:`POSITION` (source, partition, offset, row) over a table of
:class:`Source` names; a :class:`Position` names one for people (``scoring[3]@42``, ``events.jsonl line 12``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

POSITION = np.dtype([("source", np.int32), ("partition", np.int32), ("offset", np.int64), ("row", np.int32)])
"""Where each event came from, structured: its source (an index into :attr:`Events.sources`), its Kafka
partition (-1: a file), the message's offset (a file: its line, record or row number), and its row in
a message that held several records (-1: the message was one record)."""


@dataclass(frozen=True)
class Source:
    """What a position's ``source`` names: a consumed topic, or an input file and what it counts in."""

    name: str
    unit: str = ""
    """A file's: ``line``, ``record`` or ``row``; ``""`` for a Kafka topic."""


@dataclass(frozen=True)
class Position:
    """One event's or message's position (see :data:`POSITION`), its source named."""

    source: Source
    partition: int
    offset: int
    row: int = -1

    def __str__(self) -> str:
        """``scoring[3]@42`` (``#1``: the second record of the message), ``events.jsonl line 12``."""
        if self.source.unit:
            return f"{self.source.name} {self.source.unit} {self.offset}"
        return f"{self.source.name}[{self.partition}]@{self.offset}" + (f"#{self.row}" if self.row >= 0 else "")

    @property
    def message(self) -> tuple[str, int, int] | None:
        """(topic, partition, offset) of the Kafka message; None for a file."""
        return None if self.source.unit else (self.source.name, self.partition, self.offset)


def no_positions(n: int = 0) -> NDArray[np.void]:
    return np.zeros(n, dtype=POSITION)


def positions(source: int | NDArray[Any], partition: int | NDArray[Any], offset: int | NDArray[Any],
              row: int | NDArray[Any] = -1, n: int | None = None) -> NDArray[np.void]:
    """A :data:`POSITION` array from its columns (scalars are repeated)."""
    size = n if n is not None else max(np.size(c) for c in (source, partition, offset, row))
    out = np.empty(size, dtype=POSITION)
    out["source"], out["partition"], out["offset"], out["row"] = source, partition, offset, row
    return out


Spot = tuple[int, int, int, int]
"""One :data:`POSITION` as a tuple: (source, partition, offset, row)."""


_KAFKA_ORIGIN = re.compile(r"^(?P<topic>.+)\[(?P<partition>\d+)\]@(?P<offset>\d+)(?:#(?P<row>\d+))?$")


def stored_positions(data: Mapping[str, Any]) -> dict[str, Any]:
    """The positions of a checkpoint's events. A checkpoint of a release before structured positions
    holds their text (``topic[p]@offset#row``): read once, here."""
    if "sources" in data:
        sources = tuple(Source(name, unit) for name, unit in data["sources"])
        position = np.array([tuple(p) for p in data["position"]], dtype=POSITION) if data["position"] \
            else no_positions()
        return {"position": position, "sources": sources}
    names: dict[Source, int] = {}
    rows = []
    for text in data["position"]:
        found = _KAFKA_ORIGIN.match(text)
        source = Source(found["topic"]) if found else Source(text, "at")
        index = names.setdefault(source, len(names))
        rows.append((index, int(found["partition"]), int(found["offset"]), int(found["row"] or -1)) if found
                    else (index, -1, 0, -1))
    return {"position": np.array(rows, dtype=POSITION) if rows else no_positions(), "sources": tuple(names)}
