"""``kafka.stages: two`` on a real broker (chDB store): one member in two stages, two members of one
group, and a member joining mid-stream (a rebalance) all leave the rows one single-stage process leaves.

Several members are two-stage consumer loops stepped in turn in this one thread (chDB opens one
store per process, so they share it; a member's rows are told apart by nothing, so the test also reads
the tables without FINAL: a window written twice with different counts would show there)."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from driftline.app.run import consumer_loop
from driftline.config import Config, WindowConfig
from driftline.connectors.clickhouse import ClickHouseStore, StoreUnavailable
from driftline.connectors.kafka.publish import Publisher
from driftline.connectors.kafka.source import KafkaSource
from driftline.streaming.two_stage import merge_settings
from tests.integration.conftest import opened, table_rows
from tests.integration.streams import (MINUTE, PER_MINUTE, committed_total, outcome, produce, service_config, single_stage_pass,
                                       stream_events)
from tests.integration.waits import wait_until
from tests.kafka_broker import KafkaBroker, create_topic

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
PREFIX = "two"
TOPIC, PARTIALS = f"{PREFIX}.scoring", f"{PREFIX}.partials"
PARTITIONS, MINUTES = 6, 6
TOTAL = PER_MINUTE * MINUTES


@pytest.fixture(scope="module")
def broker(broker: KafkaBroker) -> KafkaBroker:
    """The session's shared broker (conftest), with this module's topics (two.*) and its stream produced."""
    create_topic(broker.bootstrap, TOPIC, PARTITIONS)
    create_topic(broker.bootstrap, PARTIALS, 2)
    for topic in (f"{PREFIX}.dead-letter", f"{PREFIX}.control"):
        create_topic(broker.bootstrap, topic, 1)
    produce(broker.bootstrap, TOPIC, stream_events(range(MINUTES), incident_minutes=(2, 3, 4)),
            partitions=PARTITIONS)
    return broker


@pytest.fixture(scope="module")
def single(broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[Any, ...]]]:
    """What one single-stage process leaves in its store."""
    rows = single_stage_pass(service_config(tmp_path_factory.mktemp("single"), broker.bootstrap, PREFIX, "two-single",
                                            checkpoint_interval=0), TOTAL)
    assert {row[9] for row in rows["windows"]} == {PER_MINUTE}  # minutes 0-4 closed, full
    assert rows["alerts"]  # income in thousands in minutes 2-4: the policy fires
    return rows


def two_stage_config(folder: Path, bootstrap: str, group: str, **kafka: Any) -> Config:
    settings = {"checkpoint_interval": 0, "stages": "two", "partials_topic": PARTIALS,
                "client": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}, **kafka}
    return service_config(folder, bootstrap, PREFIX, group, **settings)


class Member:
    """One member of the group: its two consumers, its producer, its service."""

    def __init__(self, cfg: Config, store: ClickHouseStore) -> None:
        self.source = KafkaSource(cfg.kafka)
        self.merge_source = KafkaSource(merge_settings(cfg.kafka))
        self.service = consumer_loop(cfg, store, self.source, Publisher(cfg.kafka), merge_source=self.merge_source)

    def close(self) -> None:
        self.service.checkpoint()
        self.source.close()
        self.merge_source.close()


def partials_end(bootstrap: str, topic: str = PARTIALS) -> dict[str, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "two-inspector"})
    try:
        return {f"{topic}[{p}]": consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(2)}
    finally:
        consumer.close()


def settle(bootstrap: str, members: list[Member], timeout: float = 50, idle_steps: int = 6,
           partials: str = PARTIALS, total: int = TOTAL) -> None:
    """Step the members in turn until every message is counted by stage 1, every partials record added up
    by stage 2, everything checkpointed, and ``idle_steps`` rounds brought nothing."""
    deadline, idle = time.monotonic() + timeout, 0
    while idle < idle_steps:
        assert time.monotonic() < deadline, [(m.service.offsets, m.service.handler.merge_offsets.offsets) for m in members]
        messages = sum(m.service.step().messages for m in members)
        counted = {name: o for m in members for name, o in m.service.offsets.items()}
        merged = {name: o for m in members for name, o in m.service.handler.merge_offsets.offsets.items()}
        done = sum(counted.values()) >= total and all(merged.get(name, 0) >= end
                                                      for name, end in partials_end(bootstrap, partials).items())
        idle = idle + 1 if done and not messages else 0


def step_until(member: Member, counted: int, timeout: float = 30) -> None:
    """Step one member until it has counted ``counted`` messages (stage 1's offsets)."""
    deadline = time.monotonic() + timeout
    while sum(member.service.offsets.values()) < counted:
        assert time.monotonic() < deadline, f"{sum(member.service.offsets.values())} of {counted} counted"
        member.service.step()


def rows_written(store: ClickHouseStore) -> dict[str, list[tuple[Any, ...]]]:
    rows = outcome(store)
    unmerged = sorted(set(table_rows(store, "windows", final=False)))
    assert unmerged == sorted(set(rows["windows"])), "a window was written twice with different contents"
    return rows


def test_one_member_in_two_stages_writes_what_one_single_stage_process_writes(
        tmp_path: Path, broker: KafkaBroker, single: dict[str, list[tuple[Any, ...]]]) -> None:
    cfg = two_stage_config(tmp_path, broker.bootstrap, "two-one")
    with opened(cfg) as store:
        member = Member(cfg, store)
        try:
            settle(broker.bootstrap, [member])
        finally:
            member.close()
        rows = rows_written(store)
    assert rows == single


def test_two_members_of_one_group_write_what_one_process_writes(
        tmp_path: Path, broker: KafkaBroker, single: dict[str, list[tuple[Any, ...]]]) -> None:
    cfg = two_stage_config(tmp_path, broker.bootstrap, "two-pair")
    with opened(cfg) as store:
        members = [Member(cfg, store), Member(cfg, store)]
        try:
            settle(broker.bootstrap, members)
            owned = [set(m.source.assigned) for m in members]
        finally:
            for member in members:
                member.close()
        rows = rows_written(store)
    assert all(owned) and not owned[0] & owned[1]  # the partitions were split between the two
    assert rows == single


def test_producer_retries_are_dropped_as_the_single_stage_service_drops_them(
        tmp_path: Path, broker: KafkaBroker, single: dict[str, list[tuple[Any, ...]]]) -> None:
    """The same stream with every 40th event sent again a little later in its partition (a producer's
    retry): two members, the second joining after a third of it, write what one single-stage process
    writes without the retries, and report each retry as a duplicate."""
    # A partials topic of its own: stage 2 adds every record of the one it reads.
    topic, partials = f"{PREFIX}.retried", f"{PREFIX}.retried-partials"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    create_topic(broker.bootstrap, partials, 2)
    events = stream_events(range(MINUTES), incident_minutes=(2, 3, 4))
    retried: list[dict[str, Any]] = []
    for i, event in enumerate(events):
        retried.append(event)
        if i >= 150 and i % 40 == 0:
            retried.append(events[i - 150])  # its partition's event of ~25 messages before, again
    total = produce(broker.bootstrap, topic, retried, partitions=PARTITIONS)
    cfg = two_stage_config(tmp_path, broker.bootstrap, "two-retried", topics=[{"topic": topic}],
                           partials_topic=partials)
    with opened(cfg) as store:
        members = [Member(cfg, store)]
        try:
            step_until(members[0], total // 3)
            members.append(Member(cfg, store))
            settle(broker.bootstrap, members, partials=partials, total=total)
            duplicates = sum(m.service.totals.duplicates for m in members)
        finally:
            for member in members:
                member.close()
        rows = rows_written(store)
    assert duplicates == total - TOTAL > 0
    assert rows == single


def test_a_member_joining_mid_stream_changes_nothing(
        tmp_path: Path, broker: KafkaBroker, single: dict[str, list[tuple[Any, ...]]]) -> None:
    cfg = two_stage_config(tmp_path, broker.bootstrap, "two-join")
    with opened(cfg) as store:
        first = Member(cfg, store)
        members = [first]
        try:
            step_until(first, TOTAL // 3)  # a third of the stream, in batches of 150
            assert sum(first.service.offsets.values()) < TOTAL
            members.append(Member(cfg, store))
            settle(broker.bootstrap, members)
            owned = [set(m.source.assigned) for m in members]
        finally:
            for member in members:
                member.close()
        rows = rows_written(store)
    assert all(owned)  # the second member took partitions over from the first
    assert rows == single


def test_a_member_leaving_mid_stream_changes_nothing(
        tmp_path: Path, broker: KafkaBroker, single: dict[str, list[tuple[Any, ...]]]) -> None:
    """Two members share the stream; after a third of it one stops cleanly (its partitions' last
    checkpoints written as the group takes them away) and the other reads the rest."""
    cfg = two_stage_config(tmp_path, broker.bootstrap, "two-leave")
    with opened(cfg) as store:
        members = [Member(cfg, store), Member(cfg, store)]
        try:
            deadline = time.monotonic() + 30
            while sum(o for m in members for o in m.service.offsets.values()) < TOTAL // 3 or \
                    not all(m.source.assigned for m in members):
                assert time.monotonic() < deadline
                for member in members:
                    member.service.step()
            members.pop().close()
            settle(broker.bootstrap, members)
            owned = set(members[0].source.assigned)
        finally:
            for member in members:
                member.close()
        rows = rows_written(store)
    assert len(owned) == PARTITIONS
    assert rows == single


def test_a_member_dying_between_checkpoints_loses_nothing_and_counts_nothing_twice(
        tmp_path: Path, broker: KafkaBroker, single: dict[str, list[tuple[Any, ...]]]) -> None:
    """The first member reads a third of the stream with a checkpoint after each batch, then a few batches
    more without one (their partials published, some added up and persisted), and dies; the next member
    starts every partition from its checkpoint: those batches are read again, their partials published
    again and recognised by stage 2."""
    cfg = two_stage_config(tmp_path, broker.bootstrap, "two-die")
    with opened(cfg) as store:
        first = Member(cfg, store)
        try:
            step_until(first, TOTAL // 3)
            checkpointed = sum(first.service.offsets.values())
            first.service.handler._checkpoint = lambda *_: []  # type: ignore[method-assign]  # from here on: none
            step_until(first, checkpointed + 6 * 150)
        finally:
            first.source.close()  # the process dies: nothing is checkpointed or committed on the way out
            first.merge_source.close()
        second = Member(cfg, store)
        try:
            settle(broker.bootstrap, [second])
            read_again = second.service.totals.events
        finally:
            second.close()
        rows = rows_written(store)
    assert read_again == TOTAL - checkpointed  # the batches after the last checkpoint were read twice
    assert rows == single


def test_the_store_away_mid_stream_pauses_both_stages_and_changes_nothing(
        tmp_path: Path, broker: KafkaBroker, single: dict[str, list[tuple[Any, ...]]]) -> None:
    """The store fails while stage 2 writes its audit trail (twice in a row) and later while checkpointing:
    both stages go back to their checkpoints, pause, and read again from there."""
    cfg = two_stage_config(tmp_path, broker.bootstrap, "two-outage", retry_backoff=50, retry_backoff_max=100)
    with opened(cfg) as store:
        member = Member(cfg, store)
        store.audit = failing(store.audit, {3, 4})  # type: ignore[method-assign]
        store.write_checkpoints = failing(store.write_checkpoints, {6})  # type: ignore[method-assign]
        try:
            settle(broker.bootstrap, [member])
            health = member.service.health
        finally:
            member.close()
            for name in ("audit", "write_checkpoints"):
                vars(store).pop(name)
        rows = rows_written(store)
    assert health.retries == 3 and health.outages >= 2 and not health.paused  # (3 outages when a batch came between)
    assert rows == single


def test_the_store_away_during_a_rebalance_holds_the_new_partitions_and_changes_nothing(
        tmp_path: Path, broker: KafkaBroker, single: dict[str, list[tuple[Any, ...]]]) -> None:
    """A second member joins while the store fails: its partitions' checkpoints cannot be read (three
    times), so they are held — assigned, not read — until the store answers; the first member's next
    checkpoint write fails too (its last checkpoint of the partitions it hands over, or a batch's)."""
    cfg = two_stage_config(tmp_path, broker.bootstrap, "two-rebalance-outage", retry_backoff=50,
                           retry_backoff_max=100)
    with opened(cfg) as store:
        first = Member(cfg, store)
        members = [first]
        try:
            step_until(first, TOTAL // 3)
            second = Member(cfg, store)  # (it reads its start-up checkpoint here)
            members.append(second)
            store.read_checkpoint = failing(store.read_checkpoint, {1, 2, 3})  # type: ignore[method-assign]
            store.write_checkpoints = failing(store.write_checkpoints, {1})  # type: ignore[method-assign]
            held, deadline = set(), time.monotonic() + 30
            while not second.source.assigned:
                assert time.monotonic() < deadline
                first.service.step()
                second.service.step()
                held |= second.source.held | second.merge_source.held
            settle(broker.bootstrap, members)
            owned = [set(m.source.assigned) for m in members]
            still_held = [m.source.held | m.merge_source.held for m in members]
        finally:
            for member in members:
                member.close()
            for name in ("read_checkpoint", "write_checkpoints"):
                vars(store).pop(name, None)
        rows = rows_written(store)
    assert held and all(owned) and not any(still_held)
    assert rows == single


def failing(call: Any, failures: set[int]) -> Any:
    """``call``, raising StoreUnavailable on the calls numbered in ``failures`` (from 1)."""
    calls = 0

    def flaky(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls in failures:
            raise StoreUnavailable(f"call {calls} failed (injected)", "injected")
        return call(*args, **kwargs)

    return flaky


def test_out_of_order_hopping_windows_are_the_same_for_one_member_and_two(tmp_path: Path, broker: KafkaBroker) -> None:
    """Events out of order by up to 20 s in each partition, 1-minute windows every 30 s, 10 s of allowed
    lateness: late events on every partition. One member, then two members of another group (the second
    joining after a third of the stream), write the same windows, late counts and alerts."""
    topic, partials = f"{PREFIX}.disorder", f"{PREFIX}.disorder-partials"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    create_topic(broker.bootstrap, partials, 2)
    rng = np.random.default_rng(11)
    events = stream_events(range(MINUTES), incident_minutes=(2, 3, 4))
    for event in events:
        event["event_time"] += int(rng.integers(-20_000, 20_000))
    produce(broker.bootstrap, topic, events, partitions=PARTITIONS)

    def config(folder: Path, group: str) -> Config:
        cfg = two_stage_config(folder, broker.bootstrap, group, partials_topic=partials, topics=[{"topic": topic}])
        return cfg.model_copy(update={"windows": WindowConfig(size=MINUTE, hop=MINUTE // 2, allowed_lateness=10_000,
                                                               max_future=None)})

    results = []
    for group, join_after in (("disorder-one", None), ("disorder-two", TOTAL // 3)):
        cfg = config(tmp_path / group, group)
        with opened(cfg) as store:
            members = [Member(cfg, store)]
            try:
                if join_after is not None:
                    step_until(members[0], join_after)
                    members.append(Member(cfg, store))
                settle(broker.bootstrap, members, partials=partials)
            finally:
                for member in members:
                    member.close()
            results.append(rows_written(store))
        gc.collect()
    one, two = results
    assert one["windows"] and one["late_events"] and one["alerts"]
    assert two == one


def test_two_driftline_run_processes_write_what_one_process_writes(tmp_path: Path, broker: KafkaBroker) -> None:
    """Two ``driftline run`` processes, each with its own chDB store (chDB opens one store per process), in
    one group; the stream is produced once both are in both groups, so no state has to move between their
    stores; the union of their stores' rows is then the rows of one single-stage process."""
    topic, partials, group = f"{PREFIX}.live", f"{PREFIX}.live-partials", "two-live"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    create_topic(broker.bootstrap, partials, 2)
    configs = []
    for name in ("a", "b"):
        cfg = service_config(tmp_path / name, broker.bootstrap, PREFIX, group, batch_size=50,
                             checkpoint_interval=200, stages="two", partials_topic=partials, topics=[{"topic": topic}],
                             client={"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"})
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
        path = tmp_path / name / "driftline.yaml"
        path.write_text(json.dumps(cfg.model_dump(mode="json")))
        configs.append((cfg, path))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [subprocess.Popen([sys.executable, "-m", "driftline.app.cli", "run", "--config", str(path)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=path.parent, env=env)
                 for _, path in configs]
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        wait_for(lambda: all(members(admin, g) == 2 for g in (group, f"{group}.merge")), processes, "both members")
        produce(broker.bootstrap, topic, stream_events(range(MINUTES), incident_minutes=(2, 3, 4)),
                partitions=PARTITIONS)
        wait_for(lambda: committed_total(broker.bootstrap, group, topic, PARTITIONS) >= TOTAL, processes, "stage 1")
        end = sum(partials_end(broker.bootstrap, partials).values())
        wait_for(lambda: committed_total(broker.bootstrap, f"{group}.merge", partials, 2) >= end, processes, "stage 2")
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                assert process.wait(30) == 0
            except subprocess.TimeoutExpired:
                process.kill()
                raise
    union: dict[str, set[tuple[Any, ...]]] = {}
    counted: list[set[str]] = []  # the source partitions each process checkpointed
    for cfg, _ in configs:
        with opened(cfg) as store:
            for table, rows in outcome(store).items():
                union.setdefault(table, set()).update(rows)
            counted.append({row[0] for row in store.query(
                "SELECT DISTINCT group_id FROM driftline.checkpoints WHERE group_id LIKE '%.live[%'")[1]})
        gc.collect()
    assert all(counted) and set.union(*counted) == {f"{group}/{topic}[{p}]" for p in range(PARTITIONS)}
    expected = single_stage_pass(service_config(tmp_path / "single", broker.bootstrap, PREFIX, f"{group}-single",
                                                topics=[{"topic": topic}]), TOTAL)
    assert expected["windows"] and expected["alerts"]
    assert {table: sorted(rows) for table, rows in union.items()} == {t: sorted(rows) for t, rows in expected.items()}


def wait_for(condition: Any, processes: list[subprocess.Popen[bytes]], what: str, timeout: float = 45) -> None:
    """Wait until ``condition()``, failing at once if a process exits."""
    def done() -> bool:
        assert all(p.poll() is None for p in processes), f"driftline run exited while waiting for {what}"
        return bool(condition())

    wait_until(done, timeout, what, interval=0.2)


def members(admin: AdminClient, group: str) -> int:
    try:
        description = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    except Exception:  # (not known yet)
        return 0
    return len(description.members) if str(description.state).endswith("STABLE") else 0
