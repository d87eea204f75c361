"""Outages do not stop the Kafka service and lose nothing: with the store failing mid-stream, and with the
broker restarted mid-stream, the closed windows, late counts, alerts and rollback requests in the store
equal those of one clean pass over the same topic (real Kafka 4 broker, chDB on disk).

The store in tests is chDB, in-process: it cannot be taken down. Its outage is fault injection at the store
boundary, around the real component, not a mock: :class:`FlakyClient` wraps the real clickhouse-connect
client of the real ClickHouseStore and, for planned stretches of calls, raises what clickhouse-connect
raises when its HTTP connection to a ClickHouse server is reset (an ``OperationalError`` from urllib3's
``ProtocolError``); every other call goes through to chDB. The broker restart is the real thing:
``KafkaBroker.restart()`` (a clean stop, then a start on the same folder and ports), on a private broker
(``own_broker``): the store tests use the session's shared one.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import urllib3.exceptions
from clickhouse_connect.driver.exceptions import OperationalError
from confluent_kafka import Consumer, Producer, TopicPartition

from driftline.app.run import consumer_loop
from driftline.config import Config
from driftline.connectors.clickhouse import ClickHouseStore, StoreError
from driftline.connectors.kafka.publish import Publisher
from driftline.connectors.kafka.source import KafkaSource
from driftline.streaming.loop import ConsumerLoop
from tests.integration.conftest import opened, table_rows
from tests.integration.streams import (MINUTE, PARTITIONS, T0, ce_ids, drain, outcome, produce, service_config,
                                       single_stage_pass, stream_events)
from tests.integration.waits import wait_until
from tests.kafka_broker import KafkaBroker, create_topic

pytestmark = pytest.mark.integration
MINUTES = 6
INCIDENT = (3, 4)
"""Minutes with income sent in thousands: their windows drift and alerts fire."""
IDLE_AFTER = "10m"
"""Longer than any test here runs: a partition read to its end holds the watermark throughout."""


def on_partition(event: dict[str, Any], partition: int) -> bool:
    """Whether :func:`produce` sends the event to ``partition`` (round-robin by request number)."""
    return int(event["request_id"][1:]) % PARTITIONS == partition


def create_topics(bootstrap: str, prefix: str) -> None:
    for suffix in ("scoring", "dead-letter", "control"):
        create_topic(bootstrap, f"{prefix}.{suffix}", PARTITIONS)


def service(cfg: Config, store: ClickHouseStore) -> ConsumerLoop:
    return consumer_loop(cfg, store, KafkaSource(cfg.kafka), Publisher(cfg.kafka))


def close(svc: ConsumerLoop) -> None:
    svc.source.close()
    svc.delivery.publisher.flush()


def clean_pass(root: Path, bootstrap: str, prefix: str, total: int) -> dict[str, list[tuple[Any, ...]]]:
    """One undisturbed run over the whole topic, with its own group and store."""
    rows = single_stage_pass(service_config(root / "clean", bootstrap, prefix, f"{prefix}-clean",
                                            checkpoint_interval=0), total)
    assert rows["windows"] and rows["alerts"], "the clean pass should close windows and fire alerts"
    return rows


# -- 1. the store away -------------------------------------------------------------------------------------


def connection_reset() -> OperationalError:
    """What clickhouse-connect raises when the server's connection drops mid-request (http_sync.py)."""
    cause = urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "Connection reset"))
    try:
        raise OperationalError(f"Error {cause} executing HTTP request attempt 2 (http://clickhouse:8123)") from cause
    except OperationalError as exc:
        return exc


@dataclass
class Outage:
    """Once a call matches ``starts_at`` (op, target), it and the next ``calls - 1`` calls fail."""

    starts_at: Callable[[str, str], bool]
    calls: int
    failed: list[str] = field(default_factory=list)


class FlakyClient:
    """The real clickhouse-connect client of a ClickHouseStore, with planned outages (one after the other)."""

    def __init__(self, real: Any, outages: list[Outage]) -> None:
        self.real = real
        self.outages = list(outages)
        self.calls: list[tuple[str, str]] = []

    def _call(self, op: str, target: str, run: Callable[[], Any]) -> Any:
        self.calls.append((op, target))
        if self.outages:
            outage = self.outages[0]
            if outage.failed or outage.starts_at(op, target):
                outage.failed.append(f"{op} {target}")
                if len(outage.failed) == outage.calls:
                    self.outages.pop(0)
                raise connection_reset()
        return run()

    def insert(self, table: str, *args: Any, **kwargs: Any) -> Any:
        return self._call("insert", table, lambda: self.real.insert(table, *args, **kwargs))

    def command(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        return self._call("command", sql, lambda: self.real.command(sql, *args, **kwargs))

    def query(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        return self._call("query", sql, lambda: self.real.query(sql, *args, **kwargs))

    def close(self) -> None:
        self.real.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def nth(op: str, table: str, n: int) -> Callable[[str, str], bool]:
    """Matches the n-th call (from 1) of ``op`` on ``table`` counted from when this outage is the next one."""
    seen = [0]

    def match(call_op: str, target: str) -> bool:
        if call_op == op and (target.endswith(f".{table}") or f".{table} " in target):
            seen[0] += 1
        return seen[0] == n
    return match


def persisted_offsets(client: Any, group: str) -> dict[int, int]:
    """The offsets of the group's newest checkpoint in the store, per partition (read past the faults)."""
    import json

    rows = client.query("SELECT offsets FROM driftline.checkpoints FINAL WHERE group_id = {g:String}",
                        parameters={"g": group}).result_rows
    offsets = json.loads(rows[0][0]) if rows else {}
    return {int(name.rsplit("[", 1)[1].rstrip("]")): int(o) for name, o in offsets.items()}


def test_the_store_away_mid_stream_pauses_consumption_and_loses_nothing(
        tmp_path: Path, broker: KafkaBroker, caplog: pytest.LogCaptureFixture) -> None:
    """The store fails at startup (reading the checkpoint: an outage like the others), then for 4 calls from a checkpoint write on (the
    batch and three retries fail), then for 3 calls from the first alert insert of a window-closing batch
    (its windows are already written: the retry writes them again). The service never raises, pauses and
    retries with backoff, never commits past the persisted checkpoint, and ends equal to a clean pass."""
    prefix = "storeaway"
    create_topics(broker.bootstrap, prefix)
    topic = f"{prefix}.scoring"
    total = produce(broker.bootstrap, topic, stream_events(range(MINUTES), incident_minutes=INCIDENT))
    expected = clean_pass(tmp_path, broker.bootstrap, prefix, total)

    group = f"{prefix}-flaky"
    cfg = service_config(tmp_path / "flaky", broker.bootstrap, prefix, group, checkpoint_interval=0, retry_backoff=50,
                         retry_backoff_max=400)
    outages = [Outage(nth("query", "checkpoints", 1), 2),
               Outage(nth("insert", "checkpoints", 3), 4),
               Outage(nth("insert", "alerts", 1), 3)]
    inspector = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    checks = [0]
    caplog.set_level(logging.WARNING, logger="driftline.service")
    try:
        with opened(cfg) as store:
            flaky = FlakyClient(store.client, outages)
            store._client = flaky
            svc = service(cfg, store)  # (reads nothing yet: its first steps read the checkpoint, through two failures)
            commit = svc.source.commit_offsets

            def checked_commit(offsets: Mapping[str, int]) -> None:  # every commit: never past what the store holds
                persisted = persisted_offsets(flaky.real, group)
                for name, offset in offsets.items():
                    partition = int(name.rsplit("[", 1)[1].rstrip("]"))
                    assert offset <= persisted.get(partition, 0), (name, offset)
                commit(offsets)

            svc.source.commit_offsets = checked_commit  # type: ignore[method-assign]

            def during_outage() -> None:  # the group's committed offsets, from the broker, while paused
                if svc.health.paused:
                    persisted = persisted_offsets(flaky.real, group)
                    for tp in inspector.committed(partitions, timeout=10):
                        assert tp.offset <= persisted.get(tp.partition, 0), (tp, persisted)
                    checks[0] += 1

            try:
                drain(svc, total, before_step=during_outage)
            finally:
                close(svc)
            health = svc.health
            rows = outcome(store)
            store._client = flaky.real
    finally:
        inspector.close()
    gc.collect()
    assert not flaky.outages, f"outages left unplayed: {flaky.outages}"
    assert health.retries == 9 and not health.paused, health  # 2 + 4 + 3 failed attempts, one store call each
    assert 2 <= health.outages <= 3 and checks[0] >= 9, (health, checks)
    retries = [r.getMessage() for r in caplog.records if "consumption paused" in r.getMessage()]
    assert len(retries) == 9, retries
    assert all("store unavailable at the start (OperationalError): query failed" in r for r in retries[:2]), retries
    assert all("store unavailable (OperationalError): insert into driftline." in r for r in retries[2:]), retries
    assert rows == expected


def test_a_rejected_statement_still_stops_the_service(tmp_path: Path, broker: KafkaBroker) -> None:
    """Not every store error is an outage: a statement the store rejects (here: the windows table is gone,
    as after a bad migration) stops the service loudly, and nothing is committed."""
    prefix = "storebroken"
    create_topics(broker.bootstrap, prefix)
    total = produce(broker.bootstrap, f"{prefix}.scoring", stream_events(range(2)))
    cfg = service_config(tmp_path, broker.bootstrap, prefix, f"{prefix}-group", checkpoint_interval=0)
    with opened(cfg) as store:
        store.query("SELECT 1")
        store.client.command("DROP TABLE driftline.windows")
        svc = service(cfg, store)
        try:
            with pytest.raises(StoreError) as raised:
                drain(svc, total)
        finally:
            close(svc)
    gc.collect()
    assert "windows" in str(raised.value) and type(raised.value) is StoreError
    assert svc.health.retries == 0 and svc.health.commit_failures == 0


# -- 2. the broker restarted ---------------------------------------------------------------------------------


def high_watermarks(bootstrap: str, topic: str) -> dict[int, int]:
    """Every partition's end offset, asked of the broker by a consumer of its own."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "restart-inspector"})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)}
    finally:
        consumer.close()


def fetched_to(consumer: Consumer, topic: str) -> dict[int, int]:
    """How far ``consumer`` has fetched each partition, without asking the broker: librdkafka's cached high
    watermark of a partition is the one its last fetch response for the partition carried, along with the
    messages up to it (-1001 before any fetch)."""
    return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)[1] for p in range(PARTITIONS)}


def fetched(consumer: Consumer, topic: str, ends: Mapping[int, int]) -> bool:
    """Whether ``consumer``'s fetches have reached ``ends`` (partition → offset) on every partition."""
    now = fetched_to(consumer, topic)
    return all(now[p] >= end for p, end in ends.items())


def test_a_broker_restart_mid_stream_loses_nothing(tmp_path: Path, own_broker: KafkaBroker) -> None:
    """Minutes 0-2 are consumed; minute 3 (and dead letters) is produced and fetched, then the broker is
    restarted: stopped cleanly, then started on the same folder and ports (what `KafkaBroker.restart()` does,
    in two halves so that the service steps in between). With the broker down the service processes what it
    had fetched (dead letters are due), its publishes are not acknowledged within publish_timeout, it pauses,
    goes back to its checkpoint and retries with backoff, polling; once the broker is back it redoes the batch
    and goes on. Producers write throughout: partition 0's producer queues minutes 4-5 locally while the
    broker is down (librdkafka buffers, ``message.timeout.ms`` outlasts the outage) and delivers them as soon
    as it is back, so partition 0 is read to its end two minutes of event time ahead of the others, whose
    producers then write minutes 4-5 a minute at a time. Partitions 1 and 2, read to their end meanwhile,
    hold the watermark (``kafka.idle_after`` outlasts the test): no window closes early, no event is late.
    The store then equals a clean pass over the whole topic, and every alert and rollback request in it is
    on the control topic."""
    prefix = "restart"
    create_topics(own_broker.bootstrap, prefix)
    topic = f"{prefix}.scoring"
    events = stream_events(range(MINUTES), incident_minutes=INCIDENT)
    bad = [(p, b"not json %d" % i) for i, p in enumerate((0, 1, 2, 0, 1, 2))]
    group = f"{prefix}-live"
    cfg = service_config(tmp_path / "live", own_broker.bootstrap, prefix, group, checkpoint_interval=0,
                         retry_backoff=100, retry_backoff_max=1000, publish_timeout=2000, idle_after=IDLE_AFTER,
                         client={"reconnect.backoff.max.ms": "500", "socket.timeout.ms": "5000"})
    minute = [[e for e in events if e["event_time"] // MINUTE - T0 // MINUTE == m] for m in range(MINUTES)]
    backlog = Producer({"bootstrap.servers": own_broker.bootstrap, "enable.idempotence": True,
                        "message.timeout.ms": 300_000, "reconnect.backoff.max.ms": 500})
    sent = 0
    with opened(cfg) as store:
        svc = service(cfg, store)
        try:
            sent += produce(own_broker.bootstrap, topic, [e for m in minute[:3] for e in m])  # a backlog
            drain(svc, sent)
            sent += produce(own_broker.bootstrap, topic, [], extra=bad)  # dead letters first: every batch publishes
            sent += produce(own_broker.bootstrap, topic, minute[3])
            # the service's consumer fetches them (into its client's queue; the service does not step) before
            # the broker goes, so that it has something to process with the broker down
            ends = high_watermarks(own_broker.bootstrap, topic)
            consumer = svc.source.consumer
            wait_until(lambda: fetched(consumer, topic, ends), 30,
                       lambda: f"the consumer to fetch {topic} to {ends} (fetched to {fetched_to(consumer, topic)})")
            # KafkaBroker.restart() is stop() then start(); the service steps in between, on what it had fetched
            own_broker.stop()
            deadline = time.monotonic() + 30
            while not svc.health.paused:
                assert time.monotonic() < deadline, f"no outage seen with the broker down: {svc.health}"
                svc.step()
            # partition 0's producer goes on writing while the broker is down: queued in its client
            queued = [e for m in minute[4:] for e in m if on_partition(e, 0)]
            for event in queued:
                backlog.produce(topic, json.dumps(event).encode(), event["request_id"].encode(), partition=0)
            for _ in range(5):  # paused, polling, retrying with backoff while the broker is down
                svc.step()
            own_broker.start()
            assert backlog.flush(120) == 0, "partition 0's backlog was not delivered after the restart"
            sent += len(queued)
            drain(svc, sent)  # partition 0 read to its end in minute 5, partitions 1 and 2 in minute 3
            late_while_ahead = svc.totals.late
            for m in minute[4:]:  # then partitions 1 and 2's producers, a minute at a time
                sent += produce(own_broker.bootstrap, topic, [e for e in m if not on_partition(e, 0)])
                drain(svc, sent)
            health, late, unreachable = svc.health, svc.totals.late, svc.source.unreachable
        finally:
            close(svc)
        rows = outcome(store)
        detections = table_rows(store, "change_detections")
    gc.collect()
    print(f"\nbroker restart: {health}; late events {late} ({late_while_ahead} before partitions 1 and 2 caught up)")
    assert health.outages >= 1 and health.retries >= 1 and not health.paused, health
    assert unreachable >= 1, "the consumer's error callback never reported the broker unreachable"
    assert late == 0 and rows["late_events"] == []
    assert rows == clean_pass(tmp_path, own_broker.bootstrap, prefix, sent)
    # every alert, rollback request and change detection in the store reached the control topic (some twice:
    # the redone batch; the ce_id deduplicates)
    stored = {row[0].decode() if isinstance(row[0], bytes) else row[0]
              for table_rows_ in (rows["alerts"], rows["rollback_requests"], detections) for row in table_rows_}
    assert set(ce_ids(own_broker.bootstrap, f"{prefix}.control")) == stored
