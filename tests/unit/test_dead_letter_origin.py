"""Dead letters name their message by its structured position (``#row`` included in the text), the headers a
dead letter gets from it, and the missing-payload header and log line when its message could not be fetched.
Dead letters are sized to fit the topic's ``max.message.bytes``; control events' ``ce_source`` is a URI."""

from __future__ import annotations

from typing import Any

import pytest

import hashlib
from urllib.parse import unquote, urlsplit

from driftline.connectors.kafka.fetch import describe_missing
from driftline.connectors.kafka.publish import (MISSING_PAYLOAD, SIZE_MARGIN, Publisher, _cloudevent, fit_dead_letter,
                                               record_size)
from driftline.events import BadEvent, Position, Source


@pytest.mark.parametrize(("at", "text", "message"), [
    (Position(Source("scoring"), 0, 0), "scoring[0]@0", ("scoring", 0, 0)),
    (Position(Source("scoring"), 12, 1_234_567_890_123), "scoring[12]@1234567890123", ("scoring", 12, 1_234_567_890_123)),
    (Position(Source("seldon.default.model.credit.inputs"), 2, 17, 3), "seldon.default.model.credit.inputs[2]@17#3",
     ("seldon.default.model.credit.inputs", 2, 17)),  # the fourth record of a message
    (Position(Source("odd[name]"), 1, 5), "odd[name][1]@5", ("odd[name]", 1, 5)),  # (never parsed back)
    (Position(Source("scores.jsonl", "line"), -1, 12), "scores.jsonl line 12", None),
])
def test_a_position_names_its_message(at: Position, text: str, message: tuple[str, int, int] | None) -> None:
    assert (str(at), at.message) == (text, message)
    assert BadEvent.of(at, "decode", "E", "r").origin == text


def kafka(origin: str) -> Position:
    """``t[p]@o`` (``#r``) of the tests below as a position."""
    topic, _, rest = origin.rpartition("[")
    partition, _, rest = rest.partition("]@")
    offset, _, row = rest.partition("#")
    return Position(Source(topic), int(partition), int(offset), int(row) if row else -1)


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
    publisher.message_max_bytes = 1_000_000
    publisher.limits = {"dlq": 1_048_588}
    publisher.undeliverable, publisher._errors, publisher._refused = [], [], []
    recorded = _Recorded()
    publisher.producer = recorded  # type: ignore[assignment]
    return publisher, recorded


def test_a_record_of_a_multi_record_message_gets_the_source_headers() -> None:
    publisher, recorded = _publisher()
    publisher.dead_letter(BadEvent.of(kafka("infer[2]@17#3"), "validate", "SchemaMismatch", "bad"), b"v", b"k")
    (record,) = recorded.produced
    headers = dict(record["headers"])
    assert (headers["driftline.source.topic"], headers["driftline.source.partition"],
            headers["driftline.source.offset"], headers["driftline.origin"]) == (b"infer", b"2", b"17", b"infer[2]@17#3")
    assert (record["value"], record["key"]) == (b"v", b"k")
    assert MISSING_PAYLOAD not in headers


def test_a_dead_letter_whose_message_is_gone_says_why() -> None:
    publisher, recorded = _publisher()
    publisher.dead_letter(BadEvent.of(kafka("t[0]@4"), "join", "Unmatched", "request without a response"),
                          missing="no longer in the log (deleted by retention or delete_records: it starts at offset 9)")
    (record,) = recorded.produced
    headers = dict(record["headers"])
    assert (record["value"], record["key"]) == (None, None)
    assert headers[MISSING_PAYLOAD].startswith(b"no longer in the log")
    assert headers["driftline.source.offset"] == b"4"


def test_missing_messages_are_summed_up_by_reason() -> None:
    missing = {("t", 0, o): "gone" for o in range(5)} | {("t", 1, 9): "timeout"}
    assert describe_missing(missing) == "5 gone (t[0]@0, t[0]@1, t[0]@2, …); 1 timeout (t[1]@9)"


HEADERS = [("driftline.stage", b"decode"), ("driftline.error.class", b"JSONDecodeError"),
           ("driftline.error.reason", b"not JSON" * 20), ("driftline.origin", b"scoring[0]@7")]


def test_a_value_near_the_broker_limit_is_cut_so_the_whole_record_fits() -> None:
    """The issue's case: a 1,048,500-byte message, the topic at Kafka's default 1,048,588 bytes: value and
    headers together were over it; now the value is cut and the headers keep its size and hash."""
    original = b"x" * 1_048_500
    fitted = fit_dead_letter(original, b"key", HEADERS, limit=1_048_588, cap=1_048_576)
    assert fitted is not None
    value, headers = fitted
    assert value is not None and original.startswith(value) and len(value) < len(original)
    assert record_size(b"key", value, headers) <= 1_048_588 - SIZE_MARGIN
    extra = dict(headers[len(HEADERS):])
    assert extra == {"driftline.truncated": b"true", "driftline.original.bytes": b"1048500",
                     "driftline.original.sha256": hashlib.sha256(original).hexdigest().encode()}


def test_a_value_that_fits_is_kept_whole_and_the_cap_still_applies() -> None:
    assert fit_dead_letter(b"v" * 1000, b"k", HEADERS, limit=1_048_588, cap=1_048_576) == (b"v" * 1000, HEADERS)
    assert fit_dead_letter(None, None, HEADERS, limit=2_000, cap=10) == (None, HEADERS)
    value, headers = fit_dead_letter(b"v" * 1000, b"k", HEADERS, limit=4_000_000, cap=100)  # type: ignore[misc]
    assert value == b"v" * 100 and dict(headers)["driftline.original.bytes"] == b"1000"


def test_a_dead_letter_whose_key_and_headers_do_not_fit_is_undeliverable_not_produced() -> None:
    publisher, recorded = _publisher()
    publisher.limits = {"dlq": 2_000}
    bad = BadEvent.of(kafka("scoring[1]@9"), "decode", "JSONDecodeError", "not JSON")
    publisher.dead_letter(bad, b"v" * 5_000, b"k" * 3_000)
    assert recorded.produced == []
    (gone,) = publisher.take_undeliverable()
    assert (gone.bad, gone.value_bytes, gone.key_bytes, gone.limit) == (bad, 5_000, 3_000, 2_000)
    assert (gone.source_topic, gone.source_partition, gone.source_offset) == ("scoring", 1, 9)
    assert gone.value_sha256 == hashlib.sha256(b"v" * 5_000).hexdigest() and "do not fit" in gone.error
    assert publisher.take_undeliverable() == []


def test_a_dead_letter_is_cut_to_the_topic_limit_the_publisher_read() -> None:
    publisher, recorded = _publisher()
    publisher.limits = {"dlq": 3_000}
    publisher.dead_letter_cap = 1_000_000
    publisher.dead_letter(BadEvent.of(kafka("scoring[0]@1"), "decode", "JSONDecodeError", "not JSON"), b"v" * 10_000, b"k")
    (record,) = recorded.produced
    assert record_size(record["key"], record["value"], record["headers"]) <= 3_000 - SIZE_MARGIN
    assert dict(record["headers"])["driftline.original.bytes"] == b"10000"


def test_ce_source_percent_encodes_the_model_name() -> None:
    model = 'credit "gold" v2/eu'
    headers = dict(_cloudevent("io.driftline.alert.v1", "id-1", model, f"{model}/3/income", 0))
    source = headers["ce_source"].decode()
    assert source == "/driftline/models/credit%20%22gold%22%20v2%2Feu"
    assert urlsplit(source).path == source  # a URI-reference with nothing past its path
    assert unquote(source.rsplit("/", 1)[1]) == model
    plain = dict(_cloudevent("io.driftline.alert.v1", "id-1", "credit_scoring-v1.2~x", "s", 0))
    assert plain["ce_source"] == b"/driftline/models/credit_scoring-v1.2~x"  # unreserved characters stay
