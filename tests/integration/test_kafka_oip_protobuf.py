"""Seldon Core v2 topics in protobuf on a real Kafka 4.4 broker: ``inference.ModelInferRequest`` on
``seldon.<ns>.model.<m>.inputs`` and ``ModelInferResponse`` on ``.outputs``, typed and raw contents, keyed by
the request id, joined into windows in chDB; malformed messages land in the dead-letter topic with headers."""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer

from driftline.app.run import consumer_loop
from driftline.app.synthetic import credit_applications
from driftline.config import Config
from driftline.connectors.kafka.publish import Publisher
from driftline.connectors.kafka.source import KafkaSource
from driftline.connectors.profiles import save_profile
from driftline.engine.profile import build_profile
from driftline.schemas.open_inference import oip_messages
from tests.integration.conftest import opened
from tests.integration.streams import drain
from tests.kafka_broker import KafkaBroker, create_topic

pytestmark = pytest.mark.integration
T0 = 1_767_225_600_000
MINUTE = 60_000
FEATURES = ("income", "age", "channel")
INPUTS, OUTPUTS = "seldon.seldon-mesh.model.credit.inputs", "seldon.seldon-mesh.model.credit.outputs"
DEAD, CONTROL = "oip-pb.dead-letter", "oip-pb.control"
MESSAGES = oip_messages()


@pytest.fixture(scope="module")
def broker(broker: KafkaBroker) -> KafkaBroker:
    """The session's shared broker (conftest), with this module's topics (seldon.seldon-mesh.*, oip-pb.*)."""
    for topic in (INPUTS, OUTPUTS, DEAD, CONTROL):
        create_topic(broker.bootstrap, topic, 2)
    return broker


def config(tmp_path: Path, bootstrap: str) -> Config:
    data = credit_applications(np.random.default_rng(1), 20_000)
    profile = build_profile({**{f: data[f] for f in FEATURES}, "score": data["score"]}, model="credit",
                            model_version="3", categorical=("channel",), score_column="score")
    save_profile(profile, tmp_path / "credit-3.json")
    oip = {"format": "oip-protobuf", "model": "credit", "model_version": "3"}  # the message from the name
    return Config.model_validate({
        "store": {"dsn": f"chdb://{tmp_path / 'store'}"},
        "windows": {"size": "1m", "allowed_lateness": 0, "max_future": None},
        "models": [{"name": "credit", "references": {"3": str(tmp_path / "credit-3.json")},
                    "policy": {"min_samples": 50}}],
        "kafka": {"bootstrap_servers": bootstrap, "group_id": "oip-pb", "batch_size": 200, "poll_timeout": 200,
                  "dead_letter_topic": DEAD, "control_topic": CONTROL,
                  "topics": [{"topic": INPUTS, **oip, "feature_names": list(FEATURES)},
                             {"topic": OUTPUTS, **oip, "score_output": "predict_proba"}]},
    })


def request(income: float, age: float, channel: str, raw: bool) -> bytes:
    """One tensor per feature, [1, 1] each, as MLServer's pandas codec sends columns."""
    tensors: list[dict[str, Any]] = [{"name": name, "datatype": datatype, "shape": [1, 1]} for name, datatype in
                                     (("income", "FP64"), ("age", "FP64"), ("channel", "BYTES"))]
    if raw:
        contents = [struct.pack("<d", income), struct.pack("<d", age),
                    struct.pack("<I", len(channel.encode())) + channel.encode()]
        return bytes(MESSAGES.request(inputs=tensors, raw_input_contents=contents).SerializeToString())
    typed = [{"fp64_contents": [income]}, {"fp64_contents": [age]}, {"bytes_contents": [channel.encode()]}]
    for tensor, values in zip(tensors, typed, strict=True):
        tensor["contents"] = values
    return bytes(MESSAGES.request(inputs=tensors).SerializeToString())


def response(p: float, raw: bool) -> bytes:
    tensor: dict[str, Any] = {"name": "predict_proba", "datatype": "FP64", "shape": [1, 2]}
    if raw:
        return bytes(MESSAGES.response(model_name="credit", outputs=[tensor],
                                       raw_output_contents=[struct.pack("<2d", 1 - p, p)]).SerializeToString())
    return bytes(MESSAGES.response(model_name="credit", outputs=[{**tensor, "contents": {"fp64_contents": [1 - p, p]}}])
                 .SerializeToString())


MALFORMED = {  # key → (topic, value, the dead letter's error class)
    b"truncated": (INPUTS, request(41250.0, 37.0, "web", raw=False)[:-4], b"ProtobufDecodeError"),
    b"response-on-inputs": (INPUTS, response(0.3, raw=True), b"WrongMessageType"),
    b"short-raw": (OUTPUTS, bytes(MESSAGES.response(outputs=[{"name": "predict_proba", "datatype": "FP64",
                                                              "shape": [1, 2]}], raw_output_contents=[b"\x00" * 12])
                                 .SerializeToString()), b"RawContentsSize"),
}


def produce(bootstrap: str, minutes: int, per_minute: int) -> int:
    rng = np.random.default_rng(2)
    data = credit_applications(rng, minutes * per_minute)
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(minutes * per_minute):
        key = f"xid{i:08d}".encode()  # Seldon keys both halves by the request's XID
        stamp = T0 + (i // per_minute) * MINUTE + int(rng.integers(0, MINUTE - 100))
        value = request(float(data["income"][i]), float(data["age"][i]), str(data["channel"][i]), raw=i % 2 == 1)
        producer.produce(INPUTS, value, key, timestamp=stamp)
        producer.produce(OUTPUTS, response(float(data["score"][i]), raw=i % 3 == 0), key, timestamp=stamp + 30)
    for key, (topic, value, _) in MALFORMED.items():
        producer.produce(topic, value, key, timestamp=T0)
    assert producer.flush(30) == 0
    return 2 * minutes * per_minute + len(MALFORMED)


def dead_letters(bootstrap: str, expected: int) -> list[Any]:
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "oip-pb-dlq-reader",
                       "auto.offset.reset": "earliest"})
    reader.subscribe([DEAD])
    letters: list[Any] = []
    deadline = time.monotonic() + 20
    while len(letters) < expected and time.monotonic() < deadline:
        letters += [m for m in reader.consume(10, 1.0) if m.error() is None]
    reader.close()
    return letters


def test_seldon_protobuf_topics_join_into_windows(tmp_path: Path, broker: KafkaBroker) -> None:
    cfg = config(tmp_path, broker.bootstrap)
    total = produce(broker.bootstrap, minutes=3, per_minute=200)
    with opened(cfg) as store:
        source, publisher = KafkaSource(cfg.kafka), Publisher(cfg.kafka)
        service = consumer_loop(cfg, store, source, publisher)
        try:
            drain(service, total)  # and let the partitions report their ends
        finally:
            source.close()
        _, rows = store.query("SELECT window_start, window_rows FROM driftline.windows FINAL "
                              "WHERE feature = 'income' AND baseline = 'reference' ORDER BY window_start")
        _, scores = store.query("SELECT n FROM driftline.windows FINAL "
                                "WHERE role = 'score' AND baseline = 'reference' ORDER BY window_start")
    assert [r[1] for r in rows] == [200, 200]  # every request joined; minute 2 is still open in event time
    assert [r[0] for r in scores] == [200, 200]  # every response's score read
    letters = {m.key(): dict(m.headers()) for m in dead_letters(broker.bootstrap, len(MALFORMED))}
    assert set(letters) == set(MALFORMED)
    for key, (topic, _, error_class) in MALFORMED.items():
        headers = letters[key]
        assert (headers["driftline.stage"], headers["driftline.error.class"]) == (b"decode", error_class), key
        assert headers["driftline.source.topic"] == topic.encode()
        assert headers["driftline.error.reason"]
