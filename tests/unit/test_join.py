"""The request/response join: matches across batches, combined pass-through, bounded waiting (event
time and count), duplicates, model/version mismatches, flush; and nothing is ever lost."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import event as note, given, settings
from hypothesis import strategies as st

from driftline.events import COMBINED, REQUEST, RESPONSE, EventBuilder, Events, Source
from driftline.events.join import JoinResult, Joiner, RecentIds, group_indices, id_hashes, newest_per_source

T0 = 1_767_225_600_000
MINUTE = 60_000
_serial = iter(range(10 ** 9))


def event(kind: int, request_id: str, t: int = 0, *, model: str = "m", version: str = "1",
          score: float = 0.5, decision: str = "approve", features: dict[str, Any] | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"request_id": request_id, "model": model, "model_version": version, "event_time": T0 + t,
                         "position": next(_serial)}
    if kind in (REQUEST, COMBINED):
        r["features"] = features if features is not None else {"x": float(t)}
    if kind in (RESPONSE, COMBINED):
        r["score"], r["decision"] = score, decision
    return r


def batch(*records: dict[str, Any]) -> Events:
    builder = EventBuilder(Source("src", "line"))
    for r in records:
        r = dict(r)
        position = r.pop("position")
        assert builder.add(r, position), builder.bad
    return builder.build()


def positions(events: Events) -> list[int]:
    """The line numbers of the events."""
    return events.position["offset"].tolist()


def pos(r: dict[str, Any]) -> int:
    return int(r["position"])


def test_request_and_response_in_one_batch_are_joined() -> None:
    joiner = Joiner(max_wait_ms=MINUTE, max_pending=100)
    req = event(REQUEST, "a", 0, features={"income": 1.0, "country": "DE"})
    resp = event(RESPONSE, "a", 40, score=0.9, decision="decline")
    out = joiner.push(batch(req, resp))
    assert len(out.joined) == 1
    j = out.joined
    assert j.kind.tolist() == [COMBINED]
    assert j.request_id.tolist() == ["a"]
    assert j.event_time.tolist() == [T0]  # the request's time
    assert j.score.tolist() == [0.9] and j.decision.tolist() == ["decline"]  # the response's output
    assert j.features["income"].tolist() == [1.0] and j.features["country"].tolist() == ["DE"]
    assert positions(j) == [pos(req)]  # errors later point at the request's line
    assert len(joiner.pending) == 0
    assert all(len(e) == 0 for e in (out.unmatched_requests, out.unmatched_responses, out.duplicates, out.mismatched))


@pytest.mark.parametrize("response_first", [False, True])
def test_halves_are_joined_across_batches(response_first: bool) -> None:
    joiner = Joiner(max_wait_ms=MINUTE, max_pending=100)
    req, resp = event(REQUEST, "a", 0), event(RESPONSE, "a", 30_000, score=0.25)
    first, second = (resp, req) if response_first else (req, resp)
    out1 = joiner.push(batch(first, event(REQUEST, "b", 1)))
    assert len(out1.joined) == 0 and len(joiner.pending) == 2
    out2 = joiner.push(batch(second))
    assert out2.joined.request_id.tolist() == ["a"] and out2.joined.score.tolist() == [0.25]
    assert out2.joined.event_time.tolist() == [T0]
    assert joiner.pending.request_id.tolist() == ["b"]


def test_many_pairs_across_batches_in_any_order() -> None:
    joiner = Joiner(max_wait_ms=10 * MINUTE, max_pending=1_000)
    ids = [f"id{i:03d}" for i in range(200)]
    rng = np.random.default_rng(3)
    halves = [event(REQUEST, i, k) for k, i in enumerate(ids)] + \
             [event(RESPONSE, i, k + 5, score=k / 1000) for k, i in enumerate(ids)]
    order = rng.permutation(len(halves))
    joined = []
    for chunk in np.array_split(order, 7):
        joined.append(joiner.push(batch(*(halves[i] for i in chunk))).joined)
    all_joined = Events.concat(joined)
    assert sorted(all_joined.request_id.tolist()) == ids
    by_id = dict(zip(all_joined.request_id.tolist(), all_joined.score.tolist(), strict=True))
    assert all(by_id[i] == k / 1000 for k, i in enumerate(ids))
    assert len(joiner.pending) == 0


def test_combined_events_pass_straight_through() -> None:
    joiner = Joiner(max_wait_ms=MINUTE, max_pending=100)
    pending_request = event(REQUEST, "a", 0)
    joiner.push(batch(pending_request))
    combined = [event(COMBINED, "a", 10, score=0.7), event(COMBINED, "c", 20), event(COMBINED, "c", 30)]
    out = joiner.push(batch(*combined))
    assert positions(out.joined) == [pos(c) for c in combined[:2]]  # even an id that is pending as a half
    assert out.joined.kind.tolist() == [COMBINED] * 2
    assert out.joined.score.tolist()[0] == 0.7
    assert positions(joiner.pending) == [pos(pending_request)]  # a combined event never consumes a half
    assert positions(out.duplicates) == [pos(combined[2])]  # a producer's retry is not counted twice


def test_a_retry_after_its_event_was_joined_is_a_duplicate() -> None:
    joiner = Joiner(max_wait_ms=MINUTE, max_pending=100)
    first = joiner.push(batch(event(REQUEST, "a", 0), event(RESPONSE, "a", 5), event(COMBINED, "b", 6)))
    assert len(first.joined) == 2
    retry = [event(COMBINED, "b", 7), event(REQUEST, "a", 8)]
    out = joiner.push(batch(*retry))
    assert len(out.joined) == 0 and positions(out.duplicates) == [pos(r) for r in retry]
    assert len(joiner.pending) == 0  # the repeated half does not wait to become "unmatched"
    later = joiner.push(batch(event(COMBINED, "z", 2 * MINUTE), event(COMBINED, "b", 2 * MINUTE + 1)))
    assert len(later.joined) == 2  # past max_wait an id may come back as new traffic


def test_a_half_older_than_max_wait_behind_the_newest_event_is_unmatched() -> None:
    joiner = Joiner(max_wait_ms=MINUTE, max_pending=100)
    req, resp = event(REQUEST, "a", 0), event(RESPONSE, "b", 10)
    joiner.push(batch(req, resp))
    out = joiner.push(batch(event(COMBINED, "z", MINUTE)))  # exactly max_wait behind: still waits
    assert len(out.unmatched_requests) == 0 and len(joiner.pending) == 2
    out = joiner.push(batch(event(COMBINED, "z", MINUTE + 1)))  # a combined event advances event time too
    assert positions(out.unmatched_requests) == [pos(req)]
    assert len(out.unmatched_responses) == 0 and len(joiner.pending) == 1
    out = joiner.push(batch(event(REQUEST, "q", MINUTE + 11)))
    assert positions(out.unmatched_responses) == [pos(resp)]
    assert joiner.pending.request_id.tolist() == ["q"]


def test_expiry_follows_event_time_not_arrival() -> None:
    joiner = Joiner(max_wait_ms=MINUTE, max_pending=100)
    # a late response (event time far behind) still joins with a pending request in the same push
    joiner.push(batch(event(REQUEST, "a", 0), event(REQUEST, "new", 10 * MINUTE)))
    assert joiner.pending.request_id.tolist() == ["new"]  # "a" expired on this very push
    out = joiner.push(batch(event(RESPONSE, "late", 0), event(REQUEST, "late", 1)))
    assert out.joined.request_id.tolist() == ["late"]  # matched before expiry
    out = joiner.push(batch(event(RESPONSE, "a", 5)))
    assert out.unmatched_responses.request_id.tolist() == ["a"]  # arrives already stale: unmatched at once
    assert joiner.max_event_time == T0 + 10 * MINUTE


def test_max_pending_bounds_what_waits_and_the_oldest_leave_first() -> None:
    joiner = Joiner(max_wait_ms=10 ** 12, max_pending=3)
    halves = [event(REQUEST, f"r{t}", t) for t in (4, 0, 3)] + [event(RESPONSE, f"s{t}", t) for t in (1, 2)]
    out = joiner.push(batch(*halves))
    assert sorted(out.unmatched_requests.request_id.tolist() + out.unmatched_responses.request_id.tolist()) == \
        ["r0", "s1"]
    assert sorted(joiner.pending.request_id.tolist()) == ["r3", "r4", "s2"]
    out = joiner.push(batch(event(REQUEST, "r9", 9)))
    assert out.unmatched_responses.request_id.tolist() == ["s2"]
    assert sorted(joiner.pending.request_id.tolist()) == ["r3", "r4", "r9"]
    # a match frees its slot before the bound is applied
    out = joiner.push(batch(event(RESPONSE, "r3", 10), event(REQUEST, "r10", 10)))
    assert out.joined.request_id.tolist() == ["r3"]
    assert len(out.unmatched_requests) == 0 and len(joiner.pending) == 3


def test_duplicates_keep_the_first_and_return_the_rest() -> None:
    joiner = Joiner(max_wait_ms=MINUTE, max_pending=100)
    first, retry = event(REQUEST, "a", 0, features={"x": 1.0}), event(REQUEST, "a", 5, features={"x": 2.0})
    out = joiner.push(batch(first, retry))
    assert positions(out.duplicates) == [pos(retry)]
    retry2 = event(REQUEST, "a", 6, features={"x": 3.0})
    resp, resp_retry = event(RESPONSE, "a", 7, score=0.1), event(RESPONSE, "a", 8, score=0.2)
    out = joiner.push(batch(retry2, resp, resp_retry))
    assert sorted(positions(out.duplicates)) == sorted([pos(retry2), pos(resp_retry)])
    assert positions(out.joined) == [pos(first)]  # the first request, pending from the previous batch
    assert out.joined.features["x"].tolist() == [1.0] and out.joined.score.tolist() == [0.1]
    assert len(joiner.pending) == 0


def test_same_id_on_both_sides_is_not_a_duplicate() -> None:
    out = Joiner(MINUTE, 100).push(batch(event(REQUEST, "a", 0), event(RESPONSE, "a", 1)))
    assert len(out.duplicates) == 0 and len(out.joined) == 1


def test_model_or_version_mismatch_is_returned_not_joined() -> None:
    joiner = Joiner(max_wait_ms=MINUTE, max_pending=100)
    responses = [event(RESPONSE, "a", 1, model="other"), event(RESPONSE, "b", 1, version="2")]
    out = joiner.push(batch(event(REQUEST, "a", 0), event(REQUEST, "b", 0), event(REQUEST, "c", 0),
                            *responses, event(RESPONSE, "c", 1)))
    assert out.joined.request_id.tolist() == ["c"]
    mismatched = out.mismatched
    assert sorted(zip(mismatched.request_id.tolist(), mismatched.kind.tolist(), strict=True)) == \
        [("a", REQUEST), ("a", RESPONSE), ("b", REQUEST), ("b", RESPONSE)]  # both halves of each pair
    assert {pos(r) for r in responses} <= set(positions(mismatched))
    assert len(joiner.pending) == 0


def test_the_request_of_a_mismatched_pair_is_not_lost() -> None:
    joiner = Joiner(max_wait_ms=MINUTE, max_pending=100)
    req = event(REQUEST, "a", 0, model="credit")
    out = joiner.push(batch(req, event(RESPONSE, "a", 1, model="fraud")))
    rest = joiner.flush()
    seen = [*positions(out.joined), *positions(out.unmatched_requests), *positions(out.mismatched),
            *positions(out.duplicates), *positions(rest.unmatched_requests)]
    assert pos(req) in seen


def test_ids_that_differ_by_a_trailing_nul_are_different_ids() -> None:
    builder = EventBuilder(Source("src", "line"))
    kept = [builder.add({k: v for k, v in event(kind, rid, 0).items() if k != "position"}, i)
            for i, (kind, rid) in enumerate([(REQUEST, "a"), (RESPONSE, "a\x00"), (REQUEST, "b"), (REQUEST, "b\x00")])]
    joiner = Joiner(max_wait_ms=MINUTE, max_pending=100)
    out = joiner.push(builder.build())
    if all(kept):  # (refusing such ids at validation would do as well)
        assert len(out.joined) == 0 and len(out.duplicates) == 0
        assert len(joiner.pending) == 4


def test_flush_returns_everything_pending_as_unmatched() -> None:
    joiner = Joiner(max_wait_ms=MINUTE, max_pending=100)
    req, resp = event(REQUEST, "a", 0), event(RESPONSE, "b", 0)
    joiner.push(batch(req, resp))
    rest = joiner.flush()
    assert isinstance(rest, JoinResult)
    assert positions(rest.unmatched_requests) == [pos(req)]
    assert positions(rest.unmatched_responses) == [pos(resp)]
    assert len(rest.joined) == 0 and len(rest.duplicates) == 0 and len(rest.mismatched) == 0
    assert len(joiner.pending) == 0
    assert len(joiner.flush().unmatched_requests) == 0  # flushing twice returns nothing more


def test_empty_pushes_are_harmless() -> None:
    joiner = Joiner(max_wait_ms=MINUTE, max_pending=100)
    out = joiner.push(Events.empty())
    assert len(out.joined) == 0 and joiner.max_event_time is None
    joiner.push(batch(event(REQUEST, "a", 0)))
    joiner.push(Events.empty())
    assert len(joiner.pending) == 1


def test_group_and_count_by_model_version() -> None:
    events = batch(event(COMBINED, "1", model="a", version="1"), event(COMBINED, "2", model="b", version="1"),
                   event(COMBINED, "3", model="a", version="2"), event(COMBINED, "4", model="a", version="1"))
    groups = group_indices(events)
    assert {k: v.tolist() for k, v in groups.items()} == {("a", "1"): [0, 3], ("a", "2"): [2], ("b", "1"): [1]}
    assert group_indices(Events.empty()) == {}


# -- nothing is lost -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    kind: int
    rid: int
    t: int
    wrong_model: bool = False


def items(mismatch: bool) -> st.SearchStrategy[list[Item]]:
    ids = st.integers(0, 2) if mismatch else st.integers(0, 7)  # few ids: a mismatched pair is likely
    return st.lists(st.builds(Item, st.sampled_from([REQUEST, RESPONSE, COMBINED]), ids,
                              st.integers(0, 10 * MINUTE), st.booleans() if mismatch else st.just(False)),
                    min_size=2 if mismatch else 0, max_size=40)


def run_interleaving(stream: list[Item], cuts: list[int], max_wait: int, max_pending: int) -> None:
    records = []
    for k, it in enumerate(stream):
        model = "other" if it.wrong_model and it.kind == RESPONSE else "m"
        records.append(event(it.kind, f"id{it.rid}", it.t, model=model, score=k / 100))
    score_of = {pos(r): r.get("score") for r in records}
    by_pos = {pos(r): r for r in records}
    joiner = Joiner(max_wait, max_pending)
    outputs: dict[str, list[str]] = {"joined": [], "unmatched": [], "duplicates": [], "mismatched": [], "pending": []}
    joined_scores: list[tuple[str, float]] = []
    bounds = sorted({0, len(records), *(c % (len(records) + 1) for c in cuts)})
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        newest_before = joiner.max_event_time
        out = joiner.push(batch(*records[lo:hi]))
        assert len(joiner.pending) <= max_pending
        outputs["joined"] += positions(out.joined)
        joined_scores += list(zip(positions(out.joined), out.joined.score.tolist(), strict=True))
        expired = Events.concat([out.unmatched_requests, out.unmatched_responses])
        outputs["unmatched"] += positions(expired)
        outputs["duplicates"] += positions(out.duplicates)
        outputs["mismatched"] += positions(out.mismatched)
        assert set(out.unmatched_requests.kind.tolist()) <= {REQUEST}
        assert set(out.unmatched_responses.kind.tolist()) <= {RESPONSE}
        assert set(out.joined.kind.tolist()) <= {COMBINED}
        # a half leaves unmatched only when stale by event time or pushed out by the count bound
        if len(expired) and joiner.max_event_time is not None:
            stale = expired.event_time < joiner.max_event_time - max_wait
            assert stale.all() or len(joiner.pending) == max_pending, (newest_before, expired.event_time)
        assert not (set(positions(joiner.pending)) & set(positions(expired)))
    outputs["pending"] = positions(joiner.pending)

    everything = [p for where in outputs.values() for p in where]
    counts = Counter(everything)
    assert all(c == 1 for c in counts.values()), counts  # nothing twice
    assert set(everything) <= set(by_pos)
    # every joined row is a combined event or a request; what is missing is exactly the joined requests' responses
    for p in outputs["joined"]:
        assert by_pos[p].get("features") is not None
    consumed = set(by_pos) - set(everything)
    assert all("features" not in by_pos[p] for p in consumed), "only responses may be consumed by a join"
    joined_requests = [p for p in outputs["joined"] if "score" not in by_pos[p]]
    assert len(consumed) == len(joined_requests)
    consumed_ids = Counter(by_pos[p]["request_id"] for p in consumed)
    assert consumed_ids == Counter(by_pos[p]["request_id"] for p in joined_requests)
    consumed_scores = {(by_pos[p]["request_id"], score_of[p]) for p in consumed}
    for p, score in joined_scores:
        if p in joined_requests:
            assert (by_pos[p]["request_id"], score) in consumed_scores
        else:
            assert score == score_of[p]  # combined: its own score

    for where, found in outputs.items():  # what the examples exercised (--hypothesis-show-statistics)
        note(f"{where}: {'some' if found else 'none'}")

    # and after flush, nothing waits: every input is accounted for
    rest = joiner.flush()
    assert sorted(positions(Events.concat([rest.unmatched_requests, rest.unmatched_responses]))) == \
        sorted(outputs["pending"])


settings_ = settings(max_examples=50, deadline=None)


@given(items(mismatch=False), st.lists(st.integers(0, 40), max_size=6),
       st.sampled_from([0, 1_000, MINUTE, 10 ** 12]), st.sampled_from([1, 2, 5, 1_000]))
@settings_
def test_nothing_is_lost_in_any_interleaving(stream: list[Item], cuts: list[int], max_wait: int,
                                             max_pending: int) -> None:
    run_interleaving(stream, cuts, max_wait, max_pending)


@given(items(mismatch=True), st.lists(st.integers(0, 40), max_size=6),
       st.sampled_from([0, 1_000, MINUTE, 10 ** 12]), st.sampled_from([1, 2, 5, 1_000]))
@settings_
def test_nothing_is_lost_with_mismatched_models(stream: list[Item], cuts: list[int], max_wait: int,
                                                max_pending: int) -> None:
    run_interleaving(stream, cuts, max_wait, max_pending)


# -- the remembered ids ------------------------------------------------------------------------------------


def test_id_hashes_are_fnv1a_of_the_code_points_whatever_the_array() -> None:
    expected = 0xCBF29CE484222325
    for code in map(ord, "r1é"):
        expected = ((expected ^ code) * 0x100000001B3) % 2 ** 64
    for ids in (np.asarray(["r1é", "r1"]), np.asarray(["r1é", "r1"], dtype=object)):
        hashes = id_hashes(ids)
        assert hashes.dtype == np.uint64 and int(hashes[0]) == expected and hashes[0] != hashes[1]
    assert id_hashes(np.asarray(["ab", "ab"])).tolist() == id_hashes(np.asarray(["ab", "abc"]))[:1].tolist() * 2


def test_recent_ids_decide_as_a_plain_dictionary_would() -> None:
    """Random batches of ids (some repeated, some from long ago), times moving forward with disorder:
    every lookup equals the plain rule (seen within the horizon behind the newest event), through many
    merges of the small run into the large one, and through a checkpoint."""
    rng = np.random.default_rng(3)
    recent, plain = RecentIds(horizon_ms=5_000, bound=10 ** 6), {}
    recent.MIN_SMALL = 64  # merge often
    newest = None
    for step in range(300):
        ids = rng.integers(0, 3_000, rng.integers(1, 60)).astype(str)
        ids = np.unique(ids)  # (the joiner drops repeats within a batch before it asks)
        times = step * 100 + rng.integers(-2_000, 2_000, len(ids))
        newest = int(times.max()) if newest is None else max(newest, int(times.max()))
        seen = recent.seen(id_hashes(ids), newest)
        assert seen.tolist() == [i in plain and plain[i] >= newest - 5_000 for i in ids.tolist()]
        fresh = ~seen
        recent.add(id_hashes(ids[fresh]), times[fresh], newest)
        plain.update(zip(ids[fresh].tolist(), times[fresh].tolist()))
        if step == 150:
            again = RecentIds(5_000, 10 ** 6)
            again.MIN_SMALL = 64
            again.restore(json.loads(json.dumps(recent.snapshot(newest))))
            recent = again
    recent.compact(newest)
    assert 0 < len(recent) and (recent.large[1] >= newest - 5_000).all()  # what is past the horizon was let go


def test_recent_ids_keep_the_newest_within_the_bound() -> None:
    recent = RecentIds(horizon_ms=10 ** 9, bound=100)
    times = np.arange(300, dtype=np.int64)
    recent.add(id_hashes(times.astype(str)), times, 299)
    recent.compact(299)
    assert len(recent) == 100
    assert recent.seen(id_hashes(times.astype(str)), 299).tolist() == [False] * 200 + [True] * 100


def test_a_checkpoint_of_the_ids_themselves_is_still_read() -> None:
    recent = RecentIds(horizon_ms=MINUTE, bound=100)
    recent.restore({"emitted_ids": ["a", "b"], "emitted_times": [T0, T0 + 1]})
    assert recent.seen(id_hashes(np.asarray(["b", "c", "a"])), T0 + 2).tolist() == [True, False, True]


# -- a backlog joins as live traffic does: each side's clock is its own partitions' ----------------------------


@dataclass
class Topics:
    """Pairs on Kafka partitions, as the service reads them: each record with its ``topic[p]`` source."""

    records: list[dict[str, Any]]
    sources: list[str]

    def partitions(self) -> list[str]:
        return sorted(set(self.sources))


def pairs(n: int, *, requests: str = "in", responses: str = "out", partitions: int = 2,
          missing: frozenset[int] = frozenset(), spacing: int = 1_000, seed: int = 4) -> Topics:
    """``n`` request/response pairs ``spacing`` ms apart, in production order (each response 30–900 ms
    after its request), requests on ``requests[p]`` and responses on ``responses[p]`` (round robin by
    a random key: a pair's halves need not share a partition number); the ``missing`` responses are
    never sent."""
    rng = np.random.default_rng(seed)
    timed = []
    for i in range(n):
        t = i * spacing
        timed.append((t, event(REQUEST, f"r{i:05d}", t), f"{requests}[{rng.integers(partitions)}]"))
        if i not in missing:
            late = int(rng.integers(30, 900))
            timed.append((t + late, event(RESPONSE, f"r{i:05d}", t + late, score=i / n),
                          f"{responses}[{rng.integers(partitions)}]"))
    timed.sort(key=lambda x: x[0])
    return Topics([r for _, r, _ in timed], [s for _, _, s in timed])


def sourced(records: list[dict[str, Any]], sources: list[str]) -> Events:
    events = batch(*records)
    events.source = np.asarray(sources, dtype=object)
    return events


@dataclass
class Read:
    joined: list[tuple[str, float]]
    unmatched: list[str]
    """Request ids, in the order they left."""
    unmatched_before_end: list[str]


def consume(topics: Topics, order: list[int], batch_size: int, *, live: bool = False,
            restore_at: int | None = None) -> Read:
    """Read the records in ``order`` (indices into ``topics.records``) as the service does: in batches,
    the partitions' holding sets told before each push as the Kafka source would tell them (a partition
    is fresh until read; read to its end when everything it holds — live: everything sent so far — has
    been read); then the end of input. ``restore_at``: go on from a snapshot (through JSON) after
    that many batches."""
    joiner = Joiner(max_wait_ms=MINUTE, max_pending=100_000)
    everything = frozenset(topics.partitions())
    left = Counter(topics.sources)  # what each partition still holds
    read: set[str] = set()
    out = Read([], [], [])
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    for k, chunk in enumerate(chunks):
        if restore_at is not None and k == restore_at:
            again = Joiner(max_wait_ms=MINUTE, max_pending=100_000)
            again.restore(json.loads(json.dumps(joiner.snapshot())))
            joiner = again
        ended = read if live else {p for p in read if left[p] == 0}
        joiner.hold(everything - frozenset(ended), everything - read, everything)
        result = joiner.push(sourced([topics.records[i] for i in chunk], [topics.sources[i] for i in chunk]))
        for i in chunk:
            left[topics.sources[i]] -= 1
            read.add(topics.sources[i])
        out.joined += list(zip(result.joined.request_id.tolist(), result.joined.score.tolist(), strict=True))
        out.unmatched += result.unmatched_requests.request_id.tolist() + result.unmatched_responses.request_id.tolist()
    out.unmatched_before_end = list(out.unmatched)
    rest = joiner.flush()
    out.unmatched += rest.unmatched_requests.request_id.tolist() + rest.unmatched_responses.request_id.tolist()
    return out


def backlog_orders(topics: Topics) -> dict[str, list[int]]:
    """Ways a consumer may read a backlog: a whole topic before the other (either), one partition at a time,
    and both topics at once with one read five times faster than the other."""
    by_partition = {p: [i for i, s in enumerate(topics.sources) if s == p] for p in topics.partitions()}
    first = by_partition[topics.partitions()[0]]
    requests = [i for i, r in enumerate(topics.records) if "features" in r]
    responses = [i for i, r in enumerate(topics.records) if "features" not in r]

    def ahead(fast: list[int], slow: list[int]) -> list[int]:
        merged, f, s = [], 0, 0
        while f < len(fast) or s < len(slow):
            merged += fast[f:f + 250] + slow[s:s + 50]
            f, s = f + 250, s + 50
        return merged

    return {"requests first": requests + responses, "responses first": responses + requests,
            "a partition at a time": [i for p in topics.partitions() for i in by_partition[p]],
            "partitions in reverse": [i for p in reversed(topics.partitions()) for i in by_partition[p]],
            "requests read ahead": ahead(requests, responses), "responses read ahead": ahead(responses, requests),
            "a partition read ahead": ahead(first, sorted(set(range(len(topics.sources))) - set(first)))}


@pytest.mark.parametrize("ordering", ["requests first", "responses first", "a partition at a time",
                                      "partitions in reverse", "requests read ahead", "responses read ahead",
                                      "a partition read ahead"])
def test_a_backlog_gives_the_joins_of_live_traffic(ordering: str) -> None:
    """3,000 pairs over 50 minutes of event time with a one-minute wait: read live, every pair joins; read as
    a backlog in any order, the same pairs join (with the old clock — the newest event over every
    partition — reading the requests first left nearly every one unmatched)."""
    topics = pairs(3_000)
    live = consume(topics, list(range(len(topics.records))), 100, live=True)
    assert len(live.joined) == 3_000 and live.unmatched == []
    backlog = consume(topics, backlog_orders(topics)[ordering], 100)
    assert sorted(backlog.joined) == sorted(live.joined)
    assert backlog.unmatched == []


@pytest.mark.parametrize("ordering", ["a partition at a time", "partitions in reverse", "a partition read ahead"])
def test_one_topic_carrying_both_sides_read_as_a_backlog(ordering: str) -> None:
    """KServe's CloudEvents: requests and responses on the partitions of one topic (not keyed by request id:
    a pair's halves on different partitions). A partition's clock counts for both sides (a partition is
    read in order: one side cannot be read before the other)."""
    topics = pairs(2_000, requests="ce", responses="ce", partitions=3)
    live = consume(topics, list(range(len(topics.records))), 100, live=True)
    assert len(live.joined) == 2_000 and live.unmatched == []
    backlog = consume(topics, backlog_orders(topics)[ordering], 100)
    assert sorted(backlog.joined) == sorted(live.joined) and backlog.unmatched == []


@pytest.mark.parametrize("ordering", ["requests first", "responses first", "a partition at a time",
                                      "requests read ahead", "responses read ahead"])
def test_a_backlog_still_expires_what_the_other_side_has_moved_past(ordering: str) -> None:
    """Requests whose responses were never sent leave unmatched in every order, and before the end of input
    once the responses' partitions have moved a minute past them (requests read first: while the responses
    are read; responses first: at once, as the requests come, for those the responses are already past)."""
    missing = frozenset(range(100, 2_900, 97))
    topics = pairs(3_000, missing=missing)
    expected = sorted(f"r{i:05d}" for i in missing)
    live = consume(topics, list(range(len(topics.records))), 100, live=True)
    backlog = consume(topics, backlog_orders(topics)[ordering], 100)
    assert sorted(live.unmatched) == expected and sorted(live.joined) == sorted(backlog.joined)
    assert sorted(backlog.unmatched) == expected
    assert len(backlog.unmatched_before_end) >= len(expected) - 2  # only the last ones wait for the end


def test_a_request_expires_when_the_responses_partitions_move_on_not_the_requests() -> None:
    joiner = Joiner(max_wait_ms=MINUTE, max_pending=100)
    everything = frozenset({"in[0]", "out[0]", "out[1]"})
    joiner.hold(everything, everything, everything)
    joiner.push(sourced([event(REQUEST, "a", 0), event(REQUEST, "b", 2 * MINUTE + 1)], ["in[0]", "in[0]"]))
    assert sorted(joiner.pending.request_id.tolist()) == ["a", "b"]  # the responses' partitions unread: fresh
    joiner.hold(everything, frozenset({"out[1]"}), everything)
    out = joiner.push(sourced([event(RESPONSE, "x", 5 * MINUTE)], ["out[0]"]))
    assert len(out.unmatched_requests) == 0  # out[1] may still bring a's response
    joiner.hold(everything, frozenset(), everything)
    out = joiner.push(sourced([event(RESPONSE, "y", MINUTE + 1)], ["out[1]"]))
    assert out.unmatched_requests.request_id.tolist() == ["a"]  # both response partitions a minute past it
    assert joiner.clock(RESPONSE) == T0 + MINUTE + 1 and joiner.clock(REQUEST) == T0 + 2 * MINUTE + 1
    assert joiner.pending.request_id.tolist() == ["b", "x", "y"]  # x, y: the requests are not a minute past them
    joiner.hold(frozenset({"in[0]"}), frozenset(), everything)  # the responses read to their end
    out = joiner.push(Events.empty())
    assert joiner.clock(RESPONSE) == T0 + 5 * MINUTE  # nothing more to read of them: the newest time of all
    assert out.unmatched_requests.request_id.tolist() == ["b"] and len(out.unmatched_responses) == 0


def test_a_partition_not_assigned_here_holds_with_its_mark() -> None:
    joiner = Joiner(max_wait_ms=MINUTE, max_pending=100)
    joiner.push(sourced([event(RESPONSE, "x", 0), event(REQUEST, "a", 0), event(REQUEST, "b", MINUTE)],
                        ["out[0]", "in[0]", "in[0]"]))
    assert joiner.clock(RESPONSE) == T0  # without hold: every partition seen of the responses' topic
    restored = Joiner(max_wait_ms=MINUTE, max_pending=100)
    restored.restore(json.loads(json.dumps(joiner.snapshot())))
    restored.hold(frozenset({"in[0]"}), frozenset(), frozenset({"in[0]"}))  # out[0] not handed back yet
    assert restored.clock(RESPONSE) == T0
    out = restored.push(sourced([event(REQUEST, "c", 6 * MINUTE)], ["in[0]"]))
    assert len(out.unmatched_requests) == 0 and "a" in restored.pending.request_id.tolist()
    assert out.unmatched_responses.request_id.tolist() == ["x"]  # the requests' partition is 6 minutes past it


@pytest.mark.parametrize("ordering", ["requests first", "responses read ahead"])
def test_a_backlog_goes_on_from_a_snapshot_as_it_would_have(ordering: str) -> None:
    topics = pairs(1_500, missing=frozenset(range(0, 1_500, 50)))
    order = backlog_orders(topics)[ordering]
    straight = consume(topics, order, 100)
    for k in (3, 17, 25):
        again = consume(topics, order, 100, restore_at=k)
        assert again == straight


def test_a_snapshot_from_before_the_per_partition_clocks_still_loads() -> None:
    joiner = Joiner(max_wait_ms=MINUTE, max_pending=100)
    joiner.push(batch(event(REQUEST, "a", 0)))
    old = {k: v for k, v in joiner.snapshot().items() if k not in ("marks", "topics", "holding")}
    restored = Joiner(max_wait_ms=MINUTE, max_pending=100)
    restored.restore(json.loads(json.dumps(old)))
    assert restored.pending.request_id.tolist() == ["a"] and restored.max_event_time == T0
    restored.hold(frozenset({"out[0]"}), frozenset({"out[0]"}), frozenset({"out[0]"}))
    assert len(restored.push(batch(event(COMBINED, "z", 2 * MINUTE))).unmatched_requests) == 0  # out[0] unread
    restored.hold(frozenset(), frozenset(), frozenset({"out[0]"}))  # (read to its end)
    assert restored.push(Events.empty()).unmatched_requests.request_id.tolist() == ["a"]


@pytest.mark.parametrize("run", [1, 40])
def test_newest_per_source_and_kind_as_a_plain_dictionary_would(run: int) -> None:
    """In runs of one partition (the common batch) and event by event (beyond 256 runs: by a sort)."""
    rng = np.random.default_rng(7)
    n = 2_000
    names = np.repeat(rng.choice(["in[0]", "in[1]", "out[0]", "ce[10]"], n // run), run).astype(object)
    kinds = np.repeat(rng.choice([REQUEST, RESPONSE, COMBINED], n // run), run).astype(np.int8)
    times = rng.integers(0, 10 ** 6, n).astype(np.int64)
    plain: dict[tuple[str, int], int] = {}
    for name, kind, t in zip(names.tolist(), kinds.tolist(), times.tolist(), strict=True):
        plain[name, kind] = max(t, plain.get((name, kind), t))
    assert newest_per_source(names, kinds, times) == plain
