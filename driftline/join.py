"""Join scoring requests and responses by request id, within a bounded event time, columnar.

Each :meth:`Joiner.push` adds a batch to what is pending, matches requests with responses by
``request_id`` (a sort-based intersection, no per-event Python), emits combined events (the
request's time, model and version; the response's score and decision) and keeps the rest pending.
Combined events pass straight through.

Bounded: a half that waited longer than ``max_wait_ms`` of event time behind the newest event seen,
or that would push the pending count over ``max_pending`` (oldest first), leaves as *unmatched*:
counted per side and returned, never silently dropped. A repeated request id (a producer retry) is a
*duplicate*: on the same side within a batch or while pending, or — for up to ``max_wait_ms`` of event
time, ``max_pending`` ids — after its event was already joined or passed through; the first is kept,
the others are counted and returned, never counted twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.events import COMBINED, REQUEST, RESPONSE, Events, events_from_dict, events_to_dict


DUPLICATE_REASON = "duplicate request_id (the first one was kept)"
"""How a bad-event report names a repeated request id."""


@dataclass
class JoinResult:
    joined: Events
    unmatched_requests: Events = field(default_factory=Events.empty)
    unmatched_responses: Events = field(default_factory=Events.empty)
    duplicates: Events = field(default_factory=Events.empty)
    mismatched: Events = field(default_factory=Events.empty)
    """Both halves of every pair whose response names another model or version than its request."""


class Joiner:
    def __init__(self, max_wait_ms: int, max_pending: int) -> None:
        self.max_wait_ms = max_wait_ms
        self.max_pending = max_pending
        self.pending = Events.empty()
        self.max_event_time: int | None = None
        self.emitted_ids = np.zeros(0, dtype=str)
        """Request ids joined or passed through within the last ``max_wait_ms`` (sorted), with their times."""
        self.emitted_times = np.zeros(0, dtype=np.int64)

    def push(self, events: Events) -> JoinResult:
        if len(events):
            newest = int(events.event_time.max())
            self.max_event_time = newest if self.max_event_time is None else max(self.max_event_time, newest)
        self._remember(Events.empty())  # forget ids older than max_wait behind the newest event
        events, repeated = self._drop_emitted(events)
        combined, combined_repeats = _drop_duplicates(events.take(np.flatnonzero(events.kind == COMBINED)))
        halves = Events.concat([self.pending, events.take(np.flatnonzero(events.kind != COMBINED))])
        halves, duplicates = _drop_duplicates(halves)
        duplicates = Events.concat([repeated, combined_repeats, duplicates])
        requests = np.flatnonzero(halves.kind == REQUEST)
        responses = np.flatnonzero(halves.kind == RESPONSE)
        ids_req = halves.request_id[requests].astype(str)
        ids_resp = halves.request_id[responses].astype(str)
        _, at_req, at_resp = np.intersect1d(ids_req, ids_resp, assume_unique=True, return_indices=True)
        req_rows, resp_rows = requests[at_req], responses[at_resp]
        agree = ((halves.model[req_rows] == halves.model[resp_rows])
                 & (halves.model_version[req_rows] == halves.model_version[resp_rows]))
        joined = halves.take(req_rows[agree])
        joined.kind = np.full(len(joined), COMBINED, dtype=np.int8)
        joined.score = halves.score[resp_rows[agree]]
        joined.decision = halves.decision[resp_rows[agree]]
        mismatched = halves.take(np.concatenate((req_rows[~agree], resp_rows[~agree])))
        matched = np.zeros(len(halves), dtype=bool)
        matched[req_rows] = True
        matched[resp_rows] = True
        waiting = halves.take(np.flatnonzero(~matched))
        self.pending, expired = self._expire(waiting)
        out = Events.concat([combined, joined])
        self._remember(out)
        return JoinResult(
            joined=out,
            unmatched_requests=expired.take(np.flatnonzero(expired.kind == REQUEST)),
            unmatched_responses=expired.take(np.flatnonzero(expired.kind == RESPONSE)),
            duplicates=duplicates,
            mismatched=mismatched,
        )

    def _drop_emitted(self, events: Events) -> tuple[Events, Events]:
        """Events whose request id was already joined or passed through recently (a producer's retry of
        a combined event, a half repeated after its pair was matched) are duplicates, not new traffic."""
        if not len(events) or not len(self.emitted_ids):
            return events, Events.empty()
        ids = events.request_id.astype(str)
        at = np.minimum(np.searchsorted(self.emitted_ids, ids), len(self.emitted_ids) - 1)
        seen = self.emitted_ids[at] == ids
        if not seen.any():
            return events, Events.empty()
        return events.take(np.flatnonzero(~seen)), events.take(np.flatnonzero(seen))

    def _remember(self, emitted: Events) -> None:
        """Add these ids (kept sorted, merged in rather than sorted again), forget those older than
        ``max_wait_ms`` behind the newest event, and keep at most ``max_pending`` (the newest)."""
        ids, times = self.emitted_ids, self.emitted_times
        if len(emitted):
            new_ids = emitted.request_id.astype(str)
            order = np.argsort(new_ids, kind="stable")
            at = np.searchsorted(ids, new_ids[order], side="right")
            ids = np.insert(ids.astype(new_ids.dtype) if ids.dtype.itemsize < new_ids.dtype.itemsize else ids,
                            at, new_ids[order])
            times = np.insert(times, at, emitted.event_time[order])
        if self.max_event_time is not None and len(times):
            recent = times >= self.max_event_time - self.max_wait_ms
            if not recent.all():
                ids, times = ids[recent], times[recent]
        if len(ids) > self.max_pending:  # bounded like the pending halves: the oldest are forgotten first
            newest = np.sort(np.argpartition(times, len(times) - self.max_pending)[-self.max_pending:])
            ids, times = ids[newest], times[newest]
        self.emitted_ids, self.emitted_times = ids, times

    def snapshot(self) -> dict[str, Any]:
        return {"pending": events_to_dict(self.pending), "max_event_time": self.max_event_time,
                "emitted_ids": self.emitted_ids.tolist(), "emitted_times": self.emitted_times.tolist()}

    def restore(self, data: Mapping[str, Any]) -> None:
        self.pending = events_from_dict(data["pending"])
        self.max_event_time = data["max_event_time"]
        self.emitted_ids = np.asarray(data["emitted_ids"], dtype=str)
        self.emitted_times = np.asarray(data["emitted_times"], dtype=np.int64)

    def flush(self) -> JoinResult:
        """End of input: everything still pending is unmatched."""
        expired, self.pending = self.pending, Events.empty()
        return JoinResult(Events.empty(), expired.take(np.flatnonzero(expired.kind == REQUEST)),
                          expired.take(np.flatnonzero(expired.kind == RESPONSE)))

    def _expire(self, waiting: Events) -> tuple[Events, Events]:
        if not len(waiting) or self.max_event_time is None:
            return waiting, Events.empty()
        stale = waiting.event_time < self.max_event_time - self.max_wait_ms
        overflow = int((~stale).sum()) - self.max_pending
        if overflow > 0:
            fresh = np.flatnonzero(~stale)
            oldest = fresh[np.argsort(waiting.event_time[fresh], kind="stable")[:overflow]]
            stale[oldest] = True
        return waiting.take(np.flatnonzero(~stale)), waiting.take(np.flatnonzero(stale))


def _drop_duplicates(halves: Events) -> tuple[Events, Events]:
    """Keep the first request and the first response of each id."""
    if not len(halves):
        return halves, Events.empty()
    ids = halves.request_id.astype(str)
    order = np.lexsort((ids, halves.kind))  # stable: within equal (kind, id), first come first
    repeat = np.zeros(len(halves), dtype=bool)
    repeat[order[1:]] = (ids[order[1:]] == ids[order[:-1]]) & (halves.kind[order[1:]] == halves.kind[order[:-1]])
    if not repeat.any():
        return halves, Events.empty()
    return halves.take(np.flatnonzero(~repeat)), halves.take(np.flatnonzero(repeat))


def group_indices(events: Events) -> dict[tuple[str, str], NDArray[np.intp]]:
    """Row indices of each (model, version) in the batch, in arrival order."""
    if not len(events):
        return {}
    first = (events.model[0], events.model_version[0])
    if (events.model == first[0]).all() and (events.model_version == first[1]).all():  # one model: common
        return {(str(first[0]), str(first[1])): np.arange(len(events))}
    keys = np.char.add(np.char.add(events.model.astype(str), "\x1f"), events.model_version.astype(str))
    unique, inverse = np.unique(keys, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(unique) + 1))
    return {tuple(k.split("\x1f", 1)): order[bounds[i]:bounds[i + 1]]  # type: ignore[misc]
            for i, k in enumerate(unique.tolist())}
