"""The Open Inference Protocol in protobuf, as Seldon Core v2 writes it to Kafka: ``inference.ModelInferRequest``
on ``seldon.<ns>.model.<m>.inputs``, ``inference.ModelInferResponse`` on ``.outputs``, keyed by the request id.

A message is read into the OIP JSON form and from there follows the JSON decoder
(docs/events.md, *The protobuf form*).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from google.protobuf.message import DecodeError as ProtobufError

from driftline.connectors.formats.codecs import DecodeError
from driftline.connectors.formats.inference import MessageView, Record, TensorMapping, oip_body_records, oip_json
from driftline.schemas.open_inference import oip_messages

MessageKind = Literal["request", "response"]
INFER_TYPE_HEADER = "seldon-infer-type"
_HEADER_KINDS: dict[str, MessageKind | Literal["json"]] = {
    "proto/infermodelrequest": "request", "proto/infermodelresponse": "response",
    "json/infermodelrequest": "json", "json/infermodelresponse": "json"}
_NAMES = {"request": "ModelInferRequest", "response": "ModelInferResponse"}


@dataclass(frozen=True)
class Datatype:
    """How an OIP datatype is carried: its raw element as a little-endian ``struct`` code (``None`` for
    BYTES, length-prefixed) and its typed ``contents`` field (``None`` for FP16, which only travels raw)."""

    raw: str | None
    contents: str | None


DATATYPES = {
    "BOOL": Datatype("?", "bool_contents"),
    "UINT8": Datatype("B", "uint_contents"), "UINT16": Datatype("H", "uint_contents"),
    "UINT32": Datatype("I", "uint_contents"), "UINT64": Datatype("Q", "uint64_contents"),
    "INT8": Datatype("b", "int_contents"), "INT16": Datatype("h", "int_contents"),
    "INT32": Datatype("i", "int_contents"), "INT64": Datatype("q", "int64_contents"),
    "FP16": Datatype("e", None), "FP32": Datatype("f", "fp32_contents"), "FP64": Datatype("d", "fp64_contents"),
    "BYTES": Datatype(None, "bytes_contents"),
}


def oip_protobuf(message: MessageView, mapping: TensorMapping, kind: MessageKind) -> list[Record]:
    """A ModelInferRequest (``kind`` request) or ModelInferResponse, unless the header says otherwise."""
    named = _header_kind(message.headers)
    if named == "json":
        return oip_json(message, mapping)
    kind = named or kind
    parsed = _parse(message.value, kind)
    return oip_body_records(_body(parsed, kind), message, mapping)


def _header_kind(headers: Mapping[str, bytes]) -> MessageKind | Literal["json"] | None:
    value = next((v for k, v in headers.items() if k.lower() == INFER_TYPE_HEADER), None)
    if value is None:
        return None
    text = value.decode("utf-8", "replace")
    if text.lower() not in _HEADER_KINDS:
        raise DecodeError(f"header {INFER_TYPE_HEADER} {text!r} is none of {', '.join(sorted(_HEADER_KINDS))}",
                          "WrongMessageType")
    return _HEADER_KINDS[text.lower()]


def _parse(value: bytes, kind: MessageKind) -> Any:
    parsed = _read(value, kind)
    if parsed is not None:
        return parsed
    other: MessageKind = "response" if kind == "request" else "request"
    if _read(value, other) is not None:  # e.g. a response's raw_output_contents (6) do not parse as a request's
        raise DecodeError(f"a {_NAMES[other]} where the topic carries {_NAMES[kind]} messages", "WrongMessageType")
    raise DecodeError(f"not a protobuf {_NAMES[kind]}: the bytes do not parse (truncated, or another format), or "
                      f"hold fields it does not have", "ProtobufDecodeError")


def _read(value: bytes, kind: MessageKind) -> Any | None:
    """The message, or None when the bytes do not parse or hold fields it does not have."""
    messages = oip_messages()
    parsed = (messages.request if kind == "request" else messages.response)()
    try:
        parsed.ParseFromString(value)
    except ProtobufError:
        return None
    size = parsed.ByteSize()
    parsed.DiscardUnknownFields()  # e.g. a request's raw_input_contents (7) read as a response
    return parsed if parsed.ByteSize() == size else None


def _body(parsed: Any, kind: MessageKind) -> dict[str, Any]:
    """The message in the OIP JSON form, its tensors' values read from typed or raw contents."""
    side, raw_field = ("inputs", "raw_input_contents") if kind == "request" else ("outputs", "raw_output_contents")
    tensors, raw = list(getattr(parsed, side)), list(getattr(parsed, raw_field))
    if not tensors:
        raise DecodeError(f"a {_NAMES[kind]} without {side}", "SchemaMismatch")
    if raw and len(raw) != len(tensors):
        raise DecodeError(f"{raw_field} has {len(raw)} entries for {len(tensors)} {side}", "RawContentsMismatch")
    body: dict[str, Any] = {"id": parsed.id, "model_name": parsed.model_name, "model_version": parsed.model_version}
    body[side] = [_tensor(t, raw[i] if raw else None, f"{side[:-1]} {t.name or i!r}", raw_field)
                  for i, t in enumerate(tensors)]
    return body


def _tensor(tensor: Any, raw: bytes | None, where: str, raw_field: str) -> dict[str, Any]:
    if not tensor.name:
        raise DecodeError(f"{where}: a tensor without a name", "SchemaMismatch")
    datatype = DATATYPES.get(tensor.datatype)
    if datatype is None:
        raise DecodeError(f"{where}: datatype {tensor.datatype!r} is none of {', '.join(DATATYPES)}",
                          "UnknownDatatype")
    shape = list(tensor.shape)
    if any(d < 0 for d in shape):
        raise DecodeError(f"{where}: shape {shape} has a negative dimension", "SchemaMismatch")
    count = math.prod(shape)
    typed = [field.name for field, _ in tensor.contents.ListFields()] if tensor.HasField("contents") else []
    if raw is not None:
        if typed:
            raise DecodeError(f"{where}: typed contents ({', '.join(typed)}) beside {raw_field}; a message "
                              "carries one or the other", "RawAndTypedContents")
        data = _raw_values(raw, tensor.datatype, datatype, count, where)
    else:
        data = _typed_values(tensor.contents, typed, tensor.datatype, datatype, where)
        if len(data) != count:
            raise DecodeError(f"{where}: {len(data)} values in contents; shape {shape} needs {count}",
                              "ContentsMismatch")
    return {"name": tensor.name, "shape": shape, "datatype": tensor.datatype, "data": data}


def _typed_values(contents: Any, typed: Sequence[str], name: str, datatype: Datatype, where: str) -> list[Any]:
    if datatype.contents is None:
        raise DecodeError(f"{where}: {name} has no typed contents field; it travels only raw", "ContentsMismatch")
    wrong = [f for f in typed if f != datatype.contents]
    if wrong:
        raise DecodeError(f"{where}: a {name} tensor with {', '.join(wrong)}; its values go in {datatype.contents}",
                          "ContentsMismatch")
    values = list(getattr(contents, datatype.contents))
    return _texts(values, where) if name == "BYTES" else values


def _raw_values(raw: bytes, name: str, datatype: Datatype, count: int, where: str) -> list[Any]:
    if datatype.raw is None:
        return _texts(_length_prefixed(raw, count, where), where)
    size = count * struct.calcsize(datatype.raw)  # compared before unpacking: a shape may claim 2^60 elements
    if len(raw) != size:
        raise DecodeError(f"{where}: {len(raw)} raw bytes; {count} {name} elements take {size}", "RawContentsSize")
    return list(struct.unpack(f"<{count}{datatype.raw}", raw))  # BOOL ("?"): any non-zero byte is true


def _length_prefixed(raw: bytes, count: int, where: str) -> list[bytes]:
    """``count`` BYTES elements, each a 4-byte little-endian length and that many bytes."""
    elements, position = [], 0
    for i in range(count):
        if position + 4 > len(raw):
            raise DecodeError(f"{where}: raw BYTES end before the length of element {i} of {count}",
                              "TruncatedRawContents")
        (length,) = struct.unpack_from("<I", raw, position)
        position += 4
        if position + length > len(raw):
            raise DecodeError(f"{where}: raw BYTES element {i} claims {length} bytes; {len(raw) - position} are left",
                              "TruncatedRawContents")
        elements.append(raw[position:position + length])
        position += length
    if position != len(raw):
        raise DecodeError(f"{where}: {len(raw) - position} raw bytes left after the {count} BYTES elements",
                          "RawContentsSize")
    return elements


def _texts(values: list[bytes], where: str) -> list[str]:
    """BYTES elements as text, as the JSON form carries them."""
    try:
        return [v.decode("utf-8") for v in values]
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{where}: a BYTES element is not UTF-8 text ({exc.reason})", "ContentsMismatch") from None
