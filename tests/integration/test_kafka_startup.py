"""``driftline run`` at start against a real Kafka 4 broker (auto.create.topics.enable=false, as
scripts/kafka-broker runs it): missing topics stop the start at once, naming them, or are created when
``kafka.create_topics`` says so; and static group membership (``kafka.group_instance_id``) gives a
process restarted after kill -9 its partitions back without waiting for the dead member's session to expire."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from driftline.config import Config
from driftline.connectors.kafka.admin import MissingTopics, admin_client, check_topics, topic_limits
from tests.integration.streams import committed_total, produce, service_config, stream_events
from tests.integration.waits import wait_until
from tests.kafka_broker import KafkaBroker, create_topic

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 3


def write(cfg: Config, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "driftline.yaml"
    path.write_text(json.dumps(cfg.model_dump(mode="json")))
    return path


def start(path: Path, **env: str) -> subprocess.Popen[bytes]:
    """``driftline run``, its stderr to ``stderr.log`` beside the configuration (read by :func:`stderr`)."""
    with open(path.parent / "stderr.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "driftline.app.cli", "run", "--config", str(path)],
                                stdout=subprocess.DEVNULL, stderr=log, cwd=path.parent,
                                env={**os.environ, "PYTHONPATH": str(REPO), **env})


def stderr(path: Path) -> str:
    return (path.parent / "stderr.log").read_text(errors="replace")


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        raise


def test_missing_topics_stop_driftline_run_at_once_and_are_named(tmp_path: Path, broker: KafkaBroker) -> None:
    """The dead-letter and control topics do not exist: exit 2 with an error naming both and their settings,
    long before kafka.publish_timeout (10 minutes here) would have passed on a first dead letter."""
    create_topic(broker.bootstrap, "absent.scoring", 1)
    cfg = service_config(tmp_path, broker.bootstrap, "absent", "absent-group", publish_timeout="10m")
    path = write(cfg, tmp_path / "run")
    process = start(path)
    try:
        code = process.wait(120)  # (a deadline for a process that would otherwise wait 10 minutes)
    finally:
        if process.poll() is None:
            process.kill()
    text = stderr(path)
    assert code == 2, text
    assert ("2 Kafka topics missing" in text and "absent.control (kafka.control_topic)" in text
            and "absent.dead-letter (kafka.dead_letter_topic)" in text and "kafka.create_topics" in text), text


def test_create_topics_creates_the_written_topics_with_the_configured_settings(tmp_path: Path,
                                                                               broker: KafkaBroker) -> None:
    cfg = service_config(tmp_path, broker.bootstrap, "made", "made-group", create_topics=True,
                         new_topics={"partitions": 2, "config": {"max.message.bytes": "2097152"}})
    admin = admin_client(cfg.kafka)
    with pytest.raises(MissingTopics) as missing:  # a topic it reads is never created
        check_topics(cfg.kafka, admin)
    assert missing.value.topics == {"made.scoring": "kafka.topics.0.topic"}
    assert "made.scoring (kafka.topics.0.topic)" in str(missing.value)
    create_topic(broker.bootstrap, "made.scoring", 1)
    limits = check_topics(cfg.kafka, admin)
    assert limits == {"made.dead-letter": 2_097_152, "made.control": 2_097_152}
    metadata = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).topics
    assert len(metadata["made.dead-letter"].partitions) == len(metadata["made.control"].partitions) == 2
    assert check_topics(cfg.kafka, admin) == limits  # a second start finds them
    assert topic_limits(admin, ["made.scoring"]) == {"made.scoring": 1_048_588}  # the broker's default


def test_a_static_member_restarted_after_kill_9_gets_its_partitions_back_within_the_session_timeout(
        tmp_path: Path, broker: KafkaBroker) -> None:
    """session.timeout.ms is 60 s: a new dynamic member would wait for the killed one's session to expire
    before the group hands it any partition. With kafka.group_instance_id (from the environment, as a pod's
    name would be set) the restarted process takes the dead member's place at once and consumes what was
    produced meanwhile well within that: the deadline below (40 s from its start) is shorter than the
    session timeout."""
    topic = "static.scoring"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    for name in ("static.dead-letter", "static.control"):
        create_topic(broker.bootstrap, name, 1)
    cfg = service_config(tmp_path, broker.bootstrap, "static", "static-group", batch_size=50,
                         checkpoint_interval="200ms",
                         client={"session.timeout.ms": "60000", "heartbeat.interval.ms": "1000"})
    path = write(cfg, tmp_path / "run")
    env = {"DRIFTLINE__KAFKA__GROUP_INSTANCE_ID": "driftline-0"}

    def committed() -> int:
        try:
            return committed_total(broker.bootstrap, "static-group", topic, PARTITIONS)
        except KafkaException:  # (the group's coordinator still loading on a fresh broker: not yet)
            return 0

    def wait_for(total: int, process: subprocess.Popen[bytes], timeout: float) -> None:
        def done() -> bool:
            assert process.poll() is None, f"driftline run exited: {stderr(path)[-2000:]}"
            return committed() >= total

        wait_until(done, timeout, lambda: f"{total} messages committed ({committed()} committed)", interval=0.2)

    first = start(path, **env)
    try:
        sent = produce(broker.bootstrap, topic, stream_events(range(2)), partitions=PARTITIONS)
        wait_for(sent, first, timeout=90)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    second = start(path, **env)
    try:
        sent += produce(broker.bootstrap, topic, stream_events(range(2, 4)), partitions=PARTITIONS)
        wait_for(sent, second, timeout=40)
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        group = admin.describe_consumer_groups(["static-group"], request_timeout=10)["static-group"].result()
        assert [m.group_instance_id for m in group.members] == ["driftline-0"]
    finally:
        stop(second)
