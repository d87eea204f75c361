"""The single-stage service without a broker or a store (:mod:`driftline.testing`): an outage of the store
mid-stream, and a member that dies between checkpoints, leave the same rows as a run without either; the
retry waits its backoff on the service's own clock; the process's counters never go backwards while
the restorable totals go back to the checkpoint's."""

from __future__ import annotations

import pytest

from driftline.config import Config
from memory_runs import MINUTES, Member, clean_run, memory_config


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return memory_config(tmp_path_factory.mktemp("profiles"))


def test_a_store_outage_mid_stream_leaves_the_same_rows(config: Config) -> None:
    expected = clean_run(config)
    assert len(expected.store.windows) == MINUTES - 1 and expected.store.alerts  # the comparison means something
    run = Member(config)
    for m in range(4):
        run.minute(m)
    run.store.fail_next(1)
    totals_before = run.loop.totals.events
    run.minute(4)  # the batch fails: paused, back to the last checkpoint's state
    assert run.loop.health.paused and run.loop.health.outages == 1
    assert run.loop.totals.events < totals_before  # the restorable totals went back …
    for m in range(5, MINUTES):
        run.minute(m)  # (produced meanwhile; nothing is consumed while paused)
    assert run.loop.health.paused  # the backoff (10 s) runs on the service's clock: 3 s have passed
    run.step(10.0)  # the retry: everything since the checkpoint read again
    run.drain()
    assert not run.loop.health.paused
    assert run.store.rows() == expected.store.rows()
    assert run.counted == sorted(run.counted)  # … the process's counters never did
    assert run.loop.counters.events > expected.loop.counters.events  # (a redone batch counts again)


def test_a_member_dying_between_checkpoints_leaves_the_same_rows(config: Config) -> None:
    expected = clean_run(config)
    first = Member(config)
    for m in range(5):
        first.minute(m)
    assert first.store.checkpoints and first.loop.handler.seq >= 1
    # first dies (no checkpoint at stop); another member starts from the store's checkpoint
    second = Member(config, peer=first)
    for m in range(5, MINUTES):
        second.minute(m)
    second.drain()
    assert second.store.rows() == expected.store.rows()


def test_a_store_away_at_the_start_is_an_outage_not_a_blocked_constructor(config: Config) -> None:
    expected = clean_run(config)
    run = Member(config)  # (nothing is read in the constructor)
    run.store.fail_next(2)
    run.minute(0)  # the checkpoint cannot be read: paused before anything is consumed
    assert run.loop.health.paused and run.loop.health.outages == 1 and not run.loop.offsets
    run.step(10.0)  # the retry is due: consumption resumes …
    run.step()  # … the checkpoint read fails once more: paused again, the backoff doubled
    assert run.loop.health.paused and run.loop.health.retries == 2 and not run.loop.offsets
    run.step(20.0)
    for m in range(1, MINUTES):
        run.minute(m)
    run.drain()
    assert not run.loop.health.paused and run.loop.health.outages == 1
    assert run.store.rows() == expected.store.rows()
