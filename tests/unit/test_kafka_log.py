"""librdkafka's log lines, rate-limited (driftline.connectors.kafka.log): the first line of a kind at once,
then one line per interval with the count, on a fake clock."""

from __future__ import annotations

import logging
import re

import pytest

from driftline.connectors.kafka.log import LibrdkafkaLog, RepeatLimiter

CONNECT_FAILED = ("[thrd:127.0.0.1:{port}/bootstrap]: 127.0.0.1:{port}/bootstrap: Connect to ipv4#127.0.0.1:{port} "
                  "failed: Connection refused (after {ms}ms in state CONNECT, {n} identical error(s) suppressed)")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counted(line: str) -> int:
    match = re.search(r"\[(\d+) such lines in the last \d+ s\]$", line)
    return int(match.group(1)) if match else 1


def test_thirty_lines_a_second_for_a_minute_become_one_line_per_interval_with_the_count() -> None:
    clock = FakeClock()
    limiter = RepeatLimiter(10.0, clock)
    out: list[str] = []
    for i in range(30 * 60):  # a broker down for a minute
        out += limiter.offer("connect", CONNECT_FAILED.format(port=9092, ms=i % 3, n=i))
        clock.now += 1 / 30
    out += limiter.flush()
    assert len(out) == 1 + 6  # the first at once, then one every 10 s (the last one by flush)
    assert out[0] == CONNECT_FAILED.format(port=9092, ms=0, n=0)
    assert all("such lines in the last 10 s" in line for line in out[1:])
    assert sum(map(counted, out)) == 30 * 60  # every line counted once


def test_kinds_are_limited_apart_and_a_pending_count_comes_with_the_next_line_of_any_kind() -> None:
    clock = FakeClock()
    limiter = RepeatLimiter(10.0, clock)
    assert limiter.offer("a", "a1") == ["a1"]
    assert limiter.offer("a", "a2") == []
    assert limiter.offer("b", "b1") == ["b1"]  # another kind: at once
    clock.now += 11
    assert limiter.offer("b", "b2") == ["a2 [1 such lines in the last 11 s]", "b2 [1 such lines in the last 11 s]"]
    clock.now += 11
    assert limiter.offer("a", "a3") == ["a3"]  # a's stretch ended with its summary: a new one starts
    assert limiter.flush() == []  # b's last stretch (b2 alone) was logged already


def test_a_lone_line_per_interval_is_logged_as_it_is() -> None:
    clock = FakeClock()
    limiter = RepeatLimiter(10.0, clock)
    out = []
    for _ in range(5):
        out += limiter.offer("a", "once in a while")
        clock.now += 60
    assert out[0] == "once in a while" and len(out) == 5 and sum(map(counted, out)) == 5


def test_the_adapter_takes_confluent_kafkas_call_and_groups_by_text_without_numbers(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    adapter = LibrdkafkaLog(limiter=RepeatLimiter(10.0, clock))
    with caplog.at_level(logging.INFO, logger="driftline.kafka.librdkafka"):
        for i in range(40):
            adapter.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-1",
                        CONNECT_FAILED.format(port=9092, ms=i, n=i))
        adapter.log(logging.INFO, "%s [%s] %s", "CONFWARN", "rdkafka#producer-1", "something else")
        clock.now += 10
        adapter.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-1", CONNECT_FAILED.format(port=9092, ms=0, n=0))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and adapter.offered == 42
    assert lines[0].startswith("FAIL [rdkafka#producer-1] [thrd:127.0.0.1:9092/bootstrap]")
    assert lines[1] == "CONFWARN [rdkafka#producer-1] something else"
    assert lines[2].endswith("[40 such lines in the last 10 s]")
    assert caplog.records[0].levelno == logging.ERROR
