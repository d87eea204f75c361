"""A consumed batch of Kafka messages field by field (:class:`MessageBatch`), and how a partition is named in
offsets, checkpoints and logs. Plain data: no Kafka client here, so processing and the protocols may name
them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.events import positions


def partition_name(topic: str, partition: int) -> str:
    """How a partition is named in offsets, checkpoints and logs: ``topic[partition]``."""
    return f"{topic}[{partition}]"


@dataclass
class MessageBatch:
    """Messages of one consume call, field by field (no end-of-partition events, no errors)."""

    messages: list[Any]
    """The consumed messages (confluent-kafka's ``Message``, or a twin with the same methods)."""
    values: list[bytes | None]
    topics: list[str]
    sources: list[str]
    """Each message's partition, ``topic[partition]``."""
    offsets: list[int]
    partitions: list[int]

    @classmethod
    def of(cls, messages: list[Any]) -> MessageBatch:
        topics = [m.topic() for m in messages]
        partitions = [m.partition() for m in messages]
        offsets = [m.offset() for m in messages]
        names = {key: partition_name(*key) for key in set(zip(topics, partitions))}
        sources = [names[key] for key in zip(topics, partitions)]
        return cls(messages, [m.value() for m in messages], topics, sources, offsets, partitions)

    def __len__(self) -> int:
        return len(self.messages)

    def positions(self, topics: Mapping[str, int]) -> NDArray[np.void]:
        """Each message's :data:`~driftline.events.POSITION`, its source the index ``topics`` gives its topic."""
        first = self.topics[0] if self.topics else ""
        index: Any = topics.get(first, -1) if self.topics.count(first) == len(self) else \
            np.fromiter((topics.get(t, -1) for t in self.topics), dtype=np.int32, count=len(self))
        return positions(index, np.asarray(self.partitions, dtype=np.int32), np.asarray(self.offsets, dtype=np.int64),
                         n=len(self))

    def next_offsets(self) -> dict[str, int]:
        """Each partition's offset after its last message here (a partition's messages come in order)."""
        return {name: last + 1 for name, last in dict(zip(self.sources, self.offsets)).items()}

    def first_offsets(self) -> dict[tuple[str, int], int]:
        """(topic, partition) → its first offset here."""
        return dict(zip(zip(reversed(self.topics), reversed(self.partitions)), reversed(self.offsets)))


def split_partition_name(name: str) -> tuple[str, int]:
    """``topic[3]`` → (topic, 3)."""
    topic, _, rest = name.rpartition("[")
    return topic, int(rest.rstrip("]"))
