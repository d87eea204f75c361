"""What serving layers write to Kafka, as scoring records: the Open Inference Protocol (V2) in JSON, as
Seldon Core v2 and MLServer write it, and KServe's payload-logger CloudEvents.

Tensors, rows and request ids: docs/events.md, *What serving layers write*.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from driftline.connectors.formats.codecs import DecodeError
from driftline.events import InvalidEvent, json_error_reason, parse_event_time

Record = dict[str, Any]
KSERVE_REQUEST = "org.kubeflow.serving.inference.request"
KSERVE_RESPONSE = "org.kubeflow.serving.inference.response"


@dataclass(frozen=True)
class TensorMapping:
    """How one topic's tensors map onto driftline's fields (from the topic's configuration)."""

    model: str | None = None
    model_version: str | None = None
    feature_names: tuple[str, ...] = ()
    score_output: str | None = None
    decision_output: str | None = None


@dataclass(frozen=True)
class MessageView:
    """The parts of a Kafka message a decoder may read."""

    value: bytes
    key: bytes | None
    headers: Mapping[str, bytes]
    timestamp_ms: int | None


def oip_json(message: MessageView, mapping: TensorMapping) -> list[Record]:
    """An Open Inference Protocol JSON request (``inputs``) or response (``outputs``)."""
    return oip_body_records(_json(message.value), message, mapping)


def oip_body_records(body: Mapping[str, Any], message: MessageView, mapping: TensorMapping) -> list[Record]:
    """The records of an OIP body in its JSON form (the protobuf decoder reads its messages into it):
    the request id is the message key (Seldon's XID), else the body's ``id``; the event time is the
    message's timestamp."""
    request_id = _text(message.key) or str(body.get("id") or "")
    if not request_id:
        raise DecodeError("no request id: neither a message key nor an \"id\" in the body", "SchemaMismatch")
    return _oip_records(body, request_id, message.timestamp_ms, mapping)


def kserve_cloudevent(message: MessageView, mapping: TensorMapping) -> list[Record]:
    """A KServe payload-logger CloudEvent: binary mode (``ce_*`` headers, the body as value) or
    structured mode (``application/cloudevents+json``, the body under ``data``)."""
    headers = {k.lower(): v for k, v in message.headers.items()}
    content_type = _text(headers.get("content-type")) or ""
    if "ce_type" in headers:
        attributes = {k[3:]: _text(v) for k, v in headers.items() if k.startswith("ce_")}
        body = _json(message.value)
    elif content_type.startswith("application/cloudevents+json") or message.value.lstrip().startswith(b"{"):
        event = _json(message.value)
        if "specversion" not in event or "type" not in event:
            raise DecodeError("not a CloudEvent: no ce_* headers and no structured specversion/type",
                              "SchemaMismatch")
        attributes = {k: str(v) for k, v in event.items() if k != "data"}
        body = event.get("data")
        if isinstance(body, str):
            body = _json(body.encode())
    else:
        raise DecodeError("not a CloudEvent: no ce_* headers", "SchemaMismatch")
    if not isinstance(body, dict):
        raise DecodeError("the CloudEvent's data is not a JSON object", "SchemaMismatch")
    kind, event_id = attributes.get("type"), attributes.get("id")
    if kind not in (KSERVE_REQUEST, KSERVE_RESPONSE):
        raise DecodeError(f"CloudEvent type {kind!r} is not a KServe inference request or response",
                          "SchemaMismatch")
    if not event_id:
        raise DecodeError("CloudEvent without an id", "SchemaMismatch")
    time_ms = message.timestamp_ms
    if attributes.get("time"):
        try:
            time_ms = parse_event_time(attributes["time"])
        except InvalidEvent as exc:
            raise DecodeError(f"CloudEvent time: {exc}", "SchemaMismatch") from None
    mapping = TensorMapping(mapping.model or attributes.get("inferenceservicename"), mapping.model_version,
                            mapping.feature_names, mapping.score_output, mapping.decision_output)
    if "instances" in body or "predictions" in body:  # the V1 protocol
        return _v1_records(body, event_id, time_ms, mapping, request=kind == KSERVE_REQUEST)
    return _oip_records(body, event_id, time_ms, mapping)


def _oip_records(body: Mapping[str, Any], request_id: str, time_ms: int | None,
                 mapping: TensorMapping) -> list[Record]:
    model = mapping.model or body.get("model_name")
    version = mapping.model_version or body.get("model_version")
    if not model or not version:
        raise DecodeError("no model or model_version: set them on the topic or send model_name/model_version",
                          "SchemaMismatch")
    head = {"model": str(model), "model_version": str(version), "event_time": time_ms}
    if "inputs" in body:
        columns = _features(_tensors(body["inputs"]), mapping.feature_names)
        rows = _rows(columns)
        return [{**head, "kind": "request", "request_id": _row_id(request_id, i, rows),
                 "features": {name: values[i] for name, values in columns.items()}} for i in range(rows)]
    if "outputs" in body:
        outputs = _tensors(body["outputs"])
        scores = _score(outputs, mapping.score_output)
        decisions = _column(outputs, mapping.decision_output) if mapping.decision_output else None
        return [{**head, "kind": "response", "request_id": _row_id(request_id, i, len(scores)), "score": scores[i],
                 "decision": None if decisions is None else decisions[i]} for i in range(len(scores))]
    raise DecodeError("an inference body needs \"inputs\" (a request) or \"outputs\" (a response)", "SchemaMismatch")


def _v1_records(body: Mapping[str, Any], request_id: str, time_ms: int | None, mapping: TensorMapping,
                request: bool) -> list[Record]:
    if not mapping.model or not mapping.model_version:
        raise DecodeError("V1 bodies carry no model version: set model and model_version on the topic",
                          "SchemaMismatch")
    head = {"model": mapping.model, "model_version": mapping.model_version, "event_time": time_ms}
    if request:
        instances = body.get("instances")
        if not isinstance(instances, list):
            raise DecodeError("\"instances\" must be a list of rows", "SchemaMismatch")
        records = []
        for i, row in enumerate(instances):
            if isinstance(row, dict):
                features = row
            elif isinstance(row, list) and len(row) == len(mapping.feature_names):
                features = dict(zip(mapping.feature_names, row, strict=True))
            else:
                raise DecodeError(f"instance {i} has {len(row) if isinstance(row, list) else 'no'} values; the topic "
                                  f"names {len(mapping.feature_names)} features", "SchemaMismatch")
            records.append({**head, "kind": "request", "request_id": _row_id(request_id, i, len(instances)),
                            "features": features})
        return records
    predictions = body.get("predictions")
    if not isinstance(predictions, list):
        raise DecodeError("\"predictions\" must be a list", "SchemaMismatch")
    return [{**head, "kind": "response", "request_id": _row_id(request_id, i, len(predictions)),
             "score": _scalar_score(p)} for i, p in enumerate(predictions)]


def _tensors(items: Any) -> dict[str, tuple[list[int], list[Any]]]:
    if not isinstance(items, list) or not items:
        raise DecodeError("tensors must be a non-empty list", "SchemaMismatch")
    tensors = {}
    for t in items:
        if not isinstance(t, dict) or "name" not in t or "data" not in t:
            raise DecodeError("every tensor needs a name and data", "SchemaMismatch")
        shape = [int(d) for d in t.get("shape", [])]
        tensors[str(t["name"])] = (shape, _flatten(t["data"]))
    return tensors


def _features(tensors: dict[str, tuple[list[int], list[Any]]], names: Sequence[str]) -> dict[str, list[Any]]:
    if len(tensors) == 1 and names:
        ((shape, data),) = tensors.values()
        width = len(names)
        if len(data) % width:
            raise DecodeError(f"a tensor of {len(data)} values is not rows of the {width} configured features",
                              "SchemaMismatch")
        return {name: data[j::width] for j, name in enumerate(names)}
    missing = [name for name in names if name not in tensors]
    if missing:
        raise DecodeError(f"no input tensor for the configured feature {missing[0]!r} (inputs: {', '.join(tensors)})",
                          "SchemaMismatch")
    columns = {}
    for name, (shape, data) in tensors.items():
        if len(shape) > 1 and shape[-1] != 1:
            raise DecodeError(f"tensor {name!r} of shape {shape} is not one feature; name the columns with "
                              "feature_names", "SchemaMismatch")
        columns[name] = data
    return columns


def _rows(columns: Mapping[str, list[Any]]) -> int:
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise DecodeError(f"input tensors have different row counts: {sorted(lengths)}", "SchemaMismatch")
    return lengths.pop()


def _score(outputs: dict[str, tuple[list[int], list[Any]]], name: str | None) -> list[Any]:
    key = name or next(iter(outputs))
    if key not in outputs:
        raise DecodeError(f"no output tensor {key!r} (outputs: {', '.join(outputs)})", "SchemaMismatch")
    shape, data = outputs[key]
    width = shape[-1] if len(shape) >= 2 else 1
    return data[width - 1::width] if width > 1 else data


def _column(outputs: dict[str, tuple[list[int], list[Any]]], name: str) -> list[Any]:
    if name not in outputs:
        raise DecodeError(f"no output tensor {name!r} (outputs: {', '.join(outputs)})", "SchemaMismatch")
    return outputs[name][1]


def _scalar_score(prediction: Any) -> Any:
    if isinstance(prediction, list):  # class probabilities: the last class
        return prediction[-1] if prediction else None
    return prediction


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if data and isinstance(data[0], list):
        return [value for row in data for value in _flatten(row)]
    return data


def _row_id(request_id: str, row: int, rows: int) -> str:
    return request_id if rows == 1 else f"{request_id}#{row}"


def _json(value: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(value)
    except ValueError as exc:
        raise DecodeError(f"not JSON: {json_error_reason(exc)}", type(exc).__name__) from None
    if not isinstance(body, dict):
        raise DecodeError(f"expected a JSON object, got {type(body).__name__}", "SchemaMismatch")
    return body


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
