"""One source's offsets, by partition: what has been delivered (what a checkpoint holds and a commit
commits), the batch in hand, which partitions moved since their checkpoint, and where a retry reads again."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from driftline.connectors.messages import MessageBatch, split_partition_name


class OffsetTracker:
    def __init__(self) -> None:
        self.offsets: dict[str, int] = {}
        """Partition (``topic[p]``) → the offset after its last delivered message."""
        self.dirty: set[str] = set()
        """Partitions delivered since their checkpoint."""
        self.since: dict[tuple[str, int], int] = {}
        """(topic, partition) → where a retry reads it again: the first offset read since its checkpoint."""
        self._pending: dict[str, int] = {}
        """The offset after each partition's last message in the batch in hand."""

    def read(self, batch: MessageBatch) -> None:
        """A batch is in hand: where its partitions end (delivered once it is) and begin (for a retry)."""
        self._pending = batch.next_offsets()
        self._note(batch.first_offsets())

    def polled_while_paused(self, messages: Iterable[Any]) -> None:
        """Messages a paused consumer still handed out: not consumed, read again at the retry."""
        self._note({(m.topic(), m.partition()): m.offset() for m in reversed(list(messages)) if m.error() is None})

    def _note(self, first: Mapping[tuple[str, int], int]) -> None:
        for key, offset in first.items():
            self.since[key] = min(self.since.get(key, offset), offset)

    def delivered(self) -> None:
        """The batch in hand went through: its offsets are the ones to checkpoint and commit."""
        self.offsets.update(self._pending)
        self.dirty |= self._pending.keys()
        self._pending = {}

    def checkpointed(self, names: Iterable[str] | None = None) -> None:
        """These partitions' offsets (every partition's, by default) are in a checkpoint now."""
        if names is None:
            self.dirty.clear()
            self.since.clear()
            return
        for name in names:
            self.dirty.discard(name)
            self.since.pop(split_partition_name(name), None)

    def start(self, name: str, offset: int | None) -> None:
        """A partition (re)starts from its checkpoint's offset (None: it has none)."""
        if offset is None:
            self.offsets.pop(name, None)
        else:
            self.offsets[name] = offset
        self.checkpointed([name])

    def forget(self, names: Iterable[str]) -> None:
        """Partitions taken away from this member."""
        for name in names:
            self.offsets.pop(name, None)
            self.checkpointed([name])

    def rewind(self, offsets: Mapping[str, int], since: Mapping[tuple[str, int], int] | None = None) -> None:
        """Back to a checkpoint's offsets; ``since`` (when given) is where each partition is read again."""
        self.offsets, self.dirty, self._pending = dict(offsets), set(), {}
        if since is not None:
            self.since = dict(since)
