"""Dead letters name their message by origin: parsing it back (``#row`` included), the headers a dead
letter gets from it, and the missing-payload header and log line when its message could not be fetched."""

from __future__ import annotations

from typing import Any

import pytest

from driftline.connectors.kafka import MISSING_PAYLOAD, Publisher, origin, parse_origin
from driftline.connectors.kafka_fetch import describe_missing
from driftline.events import BadEvent


@pytest.mark.parametrize(("text", "expected"), [
    ("scoring[0]@0", ("scoring", 0, 0)),
    ("scoring[12]@1234567890123", ("scoring", 12, 1_234_567_890_123)),
    ("seldon.default.model.credit.inputs[2]@17#3", ("seldon.default.model.credit.inputs", 2, 17)),  # a record of 4
    ("odd[name][1]@5", ("odd[name]", 1, 5)),  # the last bracket is the partition
    ("a@b[3]@9#0", ("a@b", 3, 9)),
])
def test_an_origin_names_its_message(text: str, expected: tuple[str, int, int]) -> None:
    assert parse_origin(text) == expected


@pytest.mark.parametrize("text", ["", "scores.jsonl:12", "scoring[0]", "scoring@5", "scoring[x]@5", "scoring[0]@-1",
                                  "scoring[0]@5#", "scoring[0]@5#a", "[0]@5"])
def test_other_origins_name_none(text: str) -> None:
    assert parse_origin(text) is None


def test_origin_and_parse_origin_round_trip() -> None:
    for topic, partition, offset in [("t", 0, 0), ("a.b-c_d", 7, 99), ("x[1]", 3, 4)]:
        assert parse_origin(origin(topic, partition, offset)) == (topic, partition, offset)


class _Recorded:
    def __init__(self) -> None:
        self.produced: list[dict[str, Any]] = []

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.produced.append({"topic": topic, **kwargs})


def _publisher() -> tuple[Publisher, _Recorded]:
    """A Publisher whose producer records what it is given (no broker: the headers are the point)."""
    publisher = Publisher.__new__(Publisher)
    publisher.config = type("C", (), {"dead_letter_topic": "dlq"})()  # type: ignore[assignment]
    publisher.dead_letter_cap = 1_000
    recorded = _Recorded()
    publisher.producer = recorded  # type: ignore[assignment]
    return publisher, recorded


def test_a_record_of_a_multi_record_message_gets_the_source_headers() -> None:
    publisher, recorded = _publisher()
    publisher.dead_letter(BadEvent("infer[2]@17#3", "validate", "SchemaMismatch", "bad"), b"v", b"k")
    (record,) = recorded.produced
    headers = dict(record["headers"])
    assert (headers["driftline.source.topic"], headers["driftline.source.partition"],
            headers["driftline.source.offset"], headers["driftline.origin"]) == (b"infer", b"2", b"17", b"infer[2]@17#3")
    assert (record["value"], record["key"]) == (b"v", b"k")
    assert MISSING_PAYLOAD not in headers


def test_a_dead_letter_whose_message_is_gone_says_why() -> None:
    publisher, recorded = _publisher()
    publisher.dead_letter(BadEvent("t[0]@4", "join", "Unmatched", "request without a response"),
                          missing="no longer in the log (deleted by retention or delete_records: it starts at offset 9)")
    (record,) = recorded.produced
    headers = dict(record["headers"])
    assert (record["value"], record["key"]) == (None, None)
    assert headers[MISSING_PAYLOAD].startswith(b"no longer in the log")
    assert headers["driftline.source.offset"] == b"4"


def test_missing_messages_are_summed_up_by_reason() -> None:
    missing = {("t", 0, o): "gone" for o in range(5)} | {("t", 1, 9): "timeout"}
    assert describe_missing(missing) == "5 gone (t[0]@0, t[0]@1, t[0]@2, …); 1 timeout (t[1]@9)"
