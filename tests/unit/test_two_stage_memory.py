"""Two stages (``kafka.stages: two``) without a broker or a store (:mod:`driftline.testing`): one member, two
members with a rebalance between them, an outage of the store mid-stream, a member that dies between
checkpoints — each leaves the rows one single-stage member leaves."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.config import Config
from driftline.testing import ManualClock
from memory_runs import MINUTE, MINUTES, T0, Member, clean_run, events, memory_config


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Config]:
    single = memory_config(tmp_path_factory.mktemp("profiles"))
    return single, single.model_copy(update={"kafka": single.kafka.model_copy(update={"stages": "two"})})


@pytest.fixture(scope="module")
def expected(configs: tuple[Config, Config]) -> dict[str, object]:
    rows = clean_run(configs[0]).store.rows()
    assert len(rows["windows"]) == MINUTES - 1 and rows["alerts"]  # the comparisons mean something
    return compared(rows)


def compared(rows: dict[str, object]) -> dict[str, object]:
    """What both shapes write (two stages have no score change watch and no version tracking yet)."""
    return {table: rows[table] for table in ("windows", "late", "alerts", "rollbacks")}


def test_one_member_in_two_stages_leaves_the_rows_of_one_stage(configs: tuple[Config, Config],
                                                                expected: dict[str, object]) -> None:
    member = clean_run(configs[1])
    assert compared(member.store.rows()) == expected
    assert sorted(r.window.window_id for step in member.sink.steps for r in step.reports) == sorted(expected["windows"])
    assert member.publisher.partials and member.loop.handler.merge_offsets.offsets


def test_a_rebalance_between_two_members_leaves_the_same_rows(configs: tuple[Config, Config],
                                                              expected: dict[str, object]) -> None:
    first = Member(configs[1])
    for m in range(2):  # (no checkpoint yet: the first comes after 3 s)
        first.minute(m)
    second = Member(configs[1], peer=first, here=[1], partials_here=[0, 1])
    checkpoints = dict(first.store.checkpoints)
    first.source.hand_over([1])  # a last checkpoint of each partition taken away, then forgotten here
    assert first.merge is not None
    first.merge.hand_over([0, 1])
    handed = {key for key, found in first.store.checkpoints.items() if checkpoints.get(key) != found}
    assert handed == {"driftline/scoring[1]", "driftline.merge/partials[1]"}  # (partials[0] carried nothing)
    for m in range(2, MINUTES):
        first.produce(m)
        first.drain(second)
    assert compared(first.store.rows()) == expected
    assert first.loop.handler.offsets.offsets.keys() == {"scoring[0]"}
    assert second.loop.handler.offsets.offsets.keys() == {"scoring[1]"}


def test_a_store_outage_mid_stream_pauses_both_stages_and_leaves_the_same_rows(
        configs: tuple[Config, Config], expected: dict[str, object]) -> None:
    member = Member(configs[1])
    for m in range(4):
        member.minute(m)
    member.store.fail_next(1)
    member.minute(4)
    assert member.loop.health.paused
    for m in range(5, MINUTES):
        member.minute(m)
    member.step(10.0)
    member.drain()
    assert not member.loop.health.paused and member.loop.health.outages == 1
    assert compared(member.store.rows()) == expected
    assert member.counted == sorted(member.counted)


def test_a_member_dying_between_checkpoints_leaves_the_same_rows(configs: tuple[Config, Config],
                                                                 expected: dict[str, object]) -> None:
    first = Member(configs[1])
    for m in range(5):
        first.minute(m)
    checkpointed = sum(offsets[key.partition("/")[2]] for key, (_, offsets, _) in first.store.checkpoints.items()
                       if key.startswith("driftline/"))
    assert 0 < checkpointed < 5 * 200  # (every 3 s: the last minutes read are not in a checkpoint)
    # first dies (no checkpoint at stop); another member starts every partition from its checkpoint
    second = Member(configs[1], peer=first)
    for m in range(5, MINUTES):
        second.minute(m)
    second.drain()
    assert compared(second.store.rows()) == expected
    assert second.loop.totals.events == MINUTES * 200 - checkpointed  # what followed the checkpoints: read again


def test_two_stages_honour_the_bound_on_open_panes_and_on_future_events(tmp_path: Path) -> None:
    """One partition runs minutes ahead while the other, quiet after its first minute, holds the watermark:
    stage 2 keeps at most ``max_open_panes`` panes open and counts the newest refused ones late; an event
    stamped beyond ``max_future`` of the clock goes to the dead-letter topic."""
    config = memory_config(tmp_path, windows={"max_open_panes": 3, "max_future": "2m"}, stages="two")
    member = Member(config, clock=ManualClock((T0 + 8 * MINUTE) / 1000))
    ahead = {**events(0, 0)[0], "request_id": "ahead", "event_time": T0 + 11 * MINUTE}
    member.source.produce(0, [ahead])
    member.source.produce(1, events(1, 0))
    for m in range(7):
        member.source.produce(0, events(0, m))
        member.step()
    member.drain()
    assert [bad.origin for bad, _ in member.publisher.dead_letters] == ["scoring[0]@0"]
    assert member.publisher.dead_letters[0][0].error_class == "FutureEvent"
    merge = next(iter(member.loop.handler.shards["partials[1]"].merges.values()))
    first = T0 // MINUTE
    assert sorted(merge.state.panes) == [first, first + 1, first + 2]  # (minute 6 is open in stage 1; 3-5 refused)
    assert sorted(member.store.late.values()) == [100, 100, 100]  # (one window per pane: 1-minute tumbling)
    assert member.loop.totals.late == 300 and not member.store.windows
