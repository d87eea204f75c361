"""A crash of the Kafka service, at either side of its checkpoint, loses nothing and counts nothing twice:
the windows in the store equal those of one clean pass over the same topic (real broker, chDB)."""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import pytest

from driftline.app.run import consumer_loop
from driftline.config import Config
from driftline.connectors.kafka.publish import Publisher
from driftline.connectors.kafka.source import KafkaSource
from tests.integration.conftest import opened
from tests.integration.streams import PER_MINUTE, produce, service_config, stream_events, windows
from tests.kafka_broker import KafkaBroker, create_topic

pytestmark = pytest.mark.integration
TOPIC = "recovery.scoring"
MINUTES = 5


class Crash(Exception):
    """Stands for the process dying at that point (kill -9): nothing after it runs."""


@pytest.fixture(scope="module")
def broker(broker: KafkaBroker) -> KafkaBroker:
    """The session's shared broker (conftest), with this module's topics (recovery.*) and its stream produced."""
    for topic in (TOPIC, "recovery.dead-letter", "recovery.control"):
        create_topic(broker.bootstrap, topic, 3)
    produce(broker.bootstrap, TOPIC, stream_events(range(MINUTES)))
    return broker


def config(tmp_path: Path, bootstrap: str, group: str) -> Config:
    return service_config(tmp_path, bootstrap, "recovery", group, checkpoint_interval=0)  # one per batch


def run(cfg: Config, store: Any, stop_after: int | None = None, crash: str | None = None) -> int:
    """Step until the topic is drained (or crash after ``stop_after`` batches); returns messages consumed."""
    source, publisher = KafkaSource(cfg.kafka), Publisher(cfg.kafka)
    service = consumer_loop(cfg, store, source, publisher)
    consumed, batches, idle = 0, 0, 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and (consumed == 0 or idle < 8):  # joining the group takes a while
            if stop_after is not None and batches == stop_after:
                if crash == "before checkpoint":
                    store.write_checkpoint = _raise  # type: ignore[method-assign]
                else:
                    service.source.commit_offsets = _raise  # type: ignore[method-assign]
            try:
                report = service.step()
            except Crash:
                vars(store).pop("write_checkpoint", None)  # the store outlives the process that died
                return consumed
            consumed += report.messages
            batches += 1 if report.messages else 0
            idle = 0 if report.messages else idle + 1
        return consumed
    finally:
        source.consumer.close()  # leave the group (a real crash would wait out the session timeout)


def _raise(*_: Any, **__: Any) -> None:
    raise Crash


@pytest.mark.parametrize("crash", ["before checkpoint", "after checkpoint, before commit"])
def test_a_crash_loses_nothing_and_counts_nothing_twice(tmp_path: Path, broker: KafkaBroker, crash: str) -> None:
    tag = crash.split()[0]
    clean_cfg = config(tmp_path / "clean", broker.bootstrap, f"recovery-clean-{tag}")
    with opened(clean_cfg) as store:
        assert run(clean_cfg, store) == PER_MINUTE * MINUTES
        expected = windows(store)
    gc.collect()
    assert {row[3] for row in expected} == {PER_MINUTE}  # minutes 0-3 closed, full
    crashy = config(tmp_path / "crashy", broker.bootstrap, f"recovery-crashy-{tag}")
    with opened(crashy) as store:
        first = run(crashy, store, stop_after=4, crash=crash)
        assert 0 < first < PER_MINUTE * MINUTES
        second = run(crashy, store)  # the restart: restores the checkpoint, goes on from its offsets
        assert second > 0
        assert windows(store) == expected
        late = store.query("SELECT count() FROM driftline.late_events")[1][0][0]
    assert late == 0
