"""Inference payloads as serving layers write them: Open Inference Protocol JSON (Seldon Core v2, MLServer)
and KServe payload-logger CloudEvents (binary and structured mode, V1 and V2 bodies)."""

from __future__ import annotations

import json

import pytest

from driftline.connectors.formats.codecs import DecodeError
from driftline.connectors.formats.inference import MessageView, TensorMapping, kserve_cloudevent, oip_json
from driftline.events import EventBuilder, Source

T0 = 1_767_225_600_000
CREDIT = TensorMapping(model="credit", model_version="3", feature_names=("income", "age", "channel"))


def view(body: object, key: bytes | None = b"carjjolvqj3j2pfbut10", headers: dict[str, bytes] | None = None,
         timestamp: int | None = T0) -> MessageView:
    value = body if isinstance(body, bytes) else json.dumps(body).encode()
    return MessageView(value, key, headers or {}, timestamp)


def test_oip_request_with_one_tensor_of_rows_and_configured_names() -> None:
    body = {"inputs": [{"name": "predict", "shape": [2, 3], "datatype": "BYTES",
                        "data": [[41250.0, 37, "web"], [18000.5, 22, "app"]]}]}
    records = oip_json(view(body), CREDIT)
    assert [r["request_id"] for r in records] == ["carjjolvqj3j2pfbut10#0", "carjjolvqj3j2pfbut10#1"]
    assert records[1]["features"] == {"income": 18000.5, "age": 22, "channel": "app"}
    assert all(r["kind"] == "request" and r["event_time"] == T0 and r["model"] == "credit" for r in records)


def test_oip_request_with_a_tensor_per_feature_and_the_body_id() -> None:
    body = {"id": "42", "model_name": "fraud", "model_version": "7",
            "inputs": [{"name": "amount", "shape": [1], "datatype": "FP64", "data": [12.5]},
                       {"name": "merchant", "shape": [1, 1], "datatype": "BYTES", "data": [["grocery"]]}]}
    (record,) = oip_json(view(body, key=None), TensorMapping())
    assert (record["request_id"], record["model"], record["model_version"]) == ("42", "fraud", "7")
    assert record["features"] == {"amount": 12.5, "merchant": "grocery"}


def test_oip_response_takes_the_probability_of_the_last_class() -> None:
    body = {"model_name": "credit", "id": "42",
            "outputs": [{"name": "predict_proba", "shape": [2, 2], "datatype": "FP32", "data": [0.9, 0.1, 0.3, 0.7]},
                        {"name": "decision", "shape": [2], "datatype": "BYTES", "data": ["approve", "decline"]}]}
    mapping = TensorMapping("credit", "3", score_output="predict_proba", decision_output="decision")
    records = oip_json(view(body), mapping)
    assert [(r["score"], r["decision"], r["kind"]) for r in records] == [(0.1, "approve", "response"),
                                                                          (0.7, "decline", "response")]


def test_oip_records_validate_and_join_as_scoring_events() -> None:
    request = oip_json(view({"inputs": [{"name": "x", "shape": [1, 3], "data": [[1.0, 2, "web"]]}]}), CREDIT)
    response = oip_json(view({"outputs": [{"name": "p", "shape": [1], "data": [0.2]}]}), CREDIT)
    builder = EventBuilder(Source("topic"))
    assert all(builder.add(r, (0, 0, 1, -1)) for r in request + response)
    events = builder.build()
    assert list(events.kind) == [1, 2] and len(set(events.request_id)) == 1


@pytest.mark.parametrize(("body", "reason"), [
    (b"not json", "not JSON"),
    ([1, 2], "JSON object"),
    ({"inputs": []}, "non-empty"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "data": [1, 2]}]}, "feature_names"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "data": [1, 2, 3, 4]}]}, "configured features"),
    ({"inputs": [{"name": "income", "data": [1]}, {"name": "age", "data": [30]}]}, "feature 'channel'"),
    ({"outputs": [{"name": "p", "data": [0.1]}]}, None),
    ({"something": 1}, "inputs"),
])
def test_bad_oip_bodies_are_decode_errors(body: object, reason: str | None) -> None:
    mapping = CREDIT if reason != "feature_names" else TensorMapping("credit", "3")
    if reason is None:  # a valid response
        assert oip_json(view(body), mapping)[0]["score"] == 0.1
        return
    with pytest.raises(DecodeError, match=reason):
        oip_json(view(body), mapping)


def test_oip_needs_a_request_id_and_a_model() -> None:
    with pytest.raises(DecodeError, match="request id"):
        oip_json(view({"inputs": [{"name": "a", "data": [1]}]}, key=None), CREDIT)
    with pytest.raises(DecodeError, match="model"):
        oip_json(view({"inputs": [{"name": "a", "data": [1]}]}), TensorMapping())


KSERVE_HEADERS = {"ce_specversion": b"1.0", "ce_id": b"0009174a-24a8-4603-b098-09c8799950e9",
                  "ce_source": b"http://localhost:9081/", "ce_time": b"2026-01-01T00:23:26.0789529Z",
                  "ce_inferenceservicename": b"sklearn-iris", "ce_namespace": b"default",
                  "content-type": b"application/json"}
IRIS = TensorMapping(model_version="1", feature_names=("sepal_length", "sepal_width", "petal_length", "petal_width"))


def test_kserve_binary_v1_request_and_response_share_the_event_id() -> None:
    request = kserve_cloudevent(view({"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}, key=None,
                                     headers={**KSERVE_HEADERS, "ce_type": b"org.kubeflow.serving.inference.request"}),
                                IRIS)
    response = kserve_cloudevent(view({"predictions": [1, 1]}, key=None,
                                      headers={**KSERVE_HEADERS,
                                               "ce_type": b"org.kubeflow.serving.inference.response"}), IRIS)
    assert [r["request_id"] for r in request] == [r["request_id"] for r in response]
    assert request[0]["model"] == "sklearn-iris" and request[0]["features"]["petal_width"] == 1.4
    assert request[0]["event_time"] == T0 + 23 * 60_000 + 26_079  # ce_time, not the record's timestamp
    assert [r["score"] for r in response] == [1, 1]


def test_kserve_without_ce_time_takes_the_kafka_timestamp_as_documented() -> None:
    """docs/events.md: ``ce_time`` is optional in CloudEvents; without it the event time is the message's
    Kafka timestamp (the logger's produce time, or the broker's append time)."""
    headers = {k: v for k, v in KSERVE_HEADERS.items() if k != "ce_time"}
    request = kserve_cloudevent(view({"instances": [[6.8, 2.8, 4.8, 1.4]]}, key=None, timestamp=T0 + 5,
                                     headers={**headers, "ce_type": b"org.kubeflow.serving.inference.request"}), IRIS)
    assert request[0]["event_time"] == T0 + 5


def test_kserve_structured_v2_request() -> None:
    event = {"specversion": "1.0", "type": "org.kubeflow.serving.inference.request", "id": "abc",
             "source": "http://localhost:9081/", "time": "2026-01-01T00:00:00Z",
             "inferenceservicename": "credit", "datacontenttype": "application/json",
             "data": {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "BYTES", "data": [[1.0, 30, "web"]]}]}}
    (record,) = kserve_cloudevent(view(event, key=None,
                                       headers={"content-type": b"application/cloudevents+json"}),
                                  TensorMapping(model_version="3", feature_names=("income", "age", "channel")))
    assert (record["request_id"], record["model"], record["event_time"]) == ("abc", "credit", T0)


@pytest.mark.parametrize(("headers", "body", "reason"), [
    ({}, b"\x00\x01", "not a CloudEvent"),
    ({**KSERVE_HEADERS, "ce_type": b"com.example.other"}, {"instances": [[1, 2, 3, 4]]}, "KServe"),
    ({**KSERVE_HEADERS, "ce_type": b"org.kubeflow.serving.inference.request", "ce_id": b""},
     {"instances": [[1, 2, 3, 4]]}, "id"),
    ({**KSERVE_HEADERS, "ce_type": b"org.kubeflow.serving.inference.request"}, {"instances": [[1, 2]]},
     "features"),
    ({**KSERVE_HEADERS, "ce_type": b"org.kubeflow.serving.inference.request", "ce_time": b"yesterday"},
     {"instances": [[1, 2, 3, 4]]}, "time"),
])
def test_bad_kserve_events_are_decode_errors(headers: dict[str, bytes], body: object, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        kserve_cloudevent(view(body, key=None, headers=headers), IRIS)
