"""Open Inference Protocol in protobuf, as Seldon Core v2 writes it: messages are built with the real protobuf
classes, and the same inference as OIP JSON and as protobuf (typed or raw contents) gives the same records.
Only the malformed cases are hand-made bytes."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.config import Config
from driftline.connectors.formats.codecs import DecodeError
from driftline.connectors.formats.inference import MessageView, TensorMapping, oip_json
from driftline.connectors.formats.oip_protobuf import DATATYPES, oip_protobuf
from driftline.events import EventBuilder, Source
from driftline.schemas.open_inference import file_descriptor, oip_messages

T0 = 1_767_225_600_000
KEY = b"carjjolvqj3j2pfbut10"
CREDIT = TensorMapping(model="credit", model_version="3", feature_names=("income", "age", "channel"))
MESSAGES = oip_messages()


def view(value: bytes, key: bytes | None = KEY, headers: dict[str, bytes] | None = None) -> MessageView:
    return MessageView(value, key, headers or {}, T0)


def raw_bytes(datatype: str, data: list[Any]) -> bytes:
    """Raw tensor contents as the OIP spec lays them out, written independently of the decoder."""
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in data)
    codes = {"BOOL": "?", "UINT8": "B", "UINT16": "H", "UINT32": "I", "UINT64": "Q", "INT8": "b", "INT16": "h",
             "INT32": "i", "INT64": "q", "FP16": "e", "FP32": "f", "FP64": "d"}
    return struct.pack(f"<{len(data)}{codes[datatype]}", *data)


def proto(kind: str, body: dict[str, Any], raw: bool = False) -> bytes:
    """An OIP JSON body (flat data) as a protobuf message, typed or raw contents."""
    side = "inputs" if kind == "request" else "outputs"
    tensors, contents = [], []
    for t in body[side]:
        tensor = {"name": t["name"], "datatype": t["datatype"], "shape": t["shape"]}
        if raw:
            contents.append(raw_bytes(t["datatype"], t["data"]))
        else:
            field = DATATYPES[t["datatype"]].contents
            data = [v.encode() for v in t["data"]] if t["datatype"] == "BYTES" else t["data"]
            tensor["contents"] = {field: data}
        tensors.append(tensor)
    head = {k: body[k] for k in ("id", "model_name", "model_version") if k in body}
    if kind == "request":
        return bytes(MESSAGES.request(**head, inputs=tensors, raw_input_contents=contents).SerializeToString())
    return bytes(MESSAGES.response(**head, outputs=tensors, raw_output_contents=contents).SerializeToString())


REQUEST = {"id": "42", "inputs": [
    {"name": "income", "datatype": "FP64", "shape": [2, 1], "data": [41250.0, 18000.5]},
    {"name": "age", "datatype": "INT64", "shape": [2, 1], "data": [37, 22]},
    {"name": "channel", "datatype": "BYTES", "shape": [2, 1], "data": ["web", "app"]}]}
RESPONSE = {"id": "42", "model_name": "credit", "model_version": "3", "outputs": [
    {"name": "predict_proba", "datatype": "FP32", "shape": [2, 2], "data": [0.75, 0.25, 0.5, 0.5]},
    {"name": "decision", "datatype": "BYTES", "shape": [2], "data": ["approve", "decline"]}]}


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_a_request_reads_as_its_json_form(raw: bool) -> None:
    expected = oip_json(view(json.dumps(REQUEST).encode()), CREDIT)
    records = oip_protobuf(view(proto("request", REQUEST, raw)), CREDIT, "request")
    assert records == expected
    assert records[1]["features"] == {"income": 18000.5, "age": 22, "channel": "app"}
    assert [r["request_id"] for r in records] == [f"{KEY.decode()}#0", f"{KEY.decode()}#1"]


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_a_response_reads_as_its_json_form(raw: bool) -> None:
    mapping = TensorMapping("credit", "3", score_output="predict_proba", decision_output="decision")
    expected = oip_json(view(json.dumps(RESPONSE).encode()), mapping)
    records = oip_protobuf(view(proto("response", RESPONSE, raw)), mapping, "response")
    assert records == expected
    assert [(r["score"], r["decision"]) for r in records] == [(0.25, "approve"), (0.5, "decline")]


def test_one_tensor_of_rows_named_by_feature_names_and_the_body_id() -> None:
    body = {"id": "7", "model_name": "credit", "model_version": "3",
            "inputs": [{"name": "predict", "datatype": "FP64", "shape": [3, 2], "data": [1.0, 2.0, 3.0, 4.0, 5, 6]}]}
    mapping = TensorMapping(feature_names=("income", "age"))
    for raw in (False, True):
        records = oip_protobuf(view(proto("request", body, raw), key=None), mapping, "request")
        assert records == oip_json(view(json.dumps(body).encode(), key=None), mapping)
        assert [r["request_id"] for r in records] == ["7#0", "7#1", "7#2"]
        assert records[2]["features"] == {"income": 5.0, "age": 6.0}


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
def test_every_datatype_raw_and_typed(datatype: str) -> None:
    samples: dict[str, list[Any]] = {"BOOL": [True, False, True], "BYTES": ["a", "", "çé"], "FP16": [0.5, -2.0, 1024.0],
                                     "FP32": [0.5, -2.25, 3e6], "FP64": [0.1, -1e300, 2.5]}
    data = samples.get(datatype, [-5, 0, 100] if datatype.startswith("INT") else [0, 1, 100])
    body = {"inputs": [{"name": "x", "datatype": datatype, "shape": [3], "data": data}]}
    records = oip_protobuf(view(proto("request", body, raw=True)), TensorMapping("m", "1"), "request")
    assert [r["features"]["x"] for r in records] == data
    if datatype != "FP16":  # FP16 travels only raw
        typed = oip_protobuf(view(proto("request", body)), TensorMapping("m", "1"), "request")
        assert typed == records


FINITE = st.floats(allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(FINITE, st.integers(-2**63, 2**63 - 1), st.text(max_size=8)), min_size=1, max_size=5),
       raw=st.booleans())
def test_same_inference_as_json_and_as_protobuf_gives_identical_records(rows: list[tuple[float, int, str]],
                                                                         raw: bool) -> None:
    n = len(rows)
    body = {"inputs": [
        {"name": "income", "datatype": "FP32", "shape": [n, 1], "data": [r[0] for r in rows]},
        {"name": "age", "datatype": "INT64", "shape": [n, 1], "data": [r[1] for r in rows]},
        {"name": "channel", "datatype": "BYTES", "shape": [n], "data": [r[2] for r in rows]}]}
    assert (oip_protobuf(view(proto("request", body, raw)), CREDIT, "request")
            == oip_json(view(json.dumps(body).encode()), CREDIT))


def test_records_validate_and_join_as_scoring_events() -> None:
    mapping = TensorMapping("credit", "3", ("income", "age", "channel"), score_output="predict_proba")
    request = oip_protobuf(view(proto("request", REQUEST, raw=True)), mapping, "request")
    response = oip_protobuf(view(proto("response", RESPONSE)), mapping, "response")
    builder = EventBuilder(Source("topic"))
    assert all(builder.add(r, (0, 0, 1, -1)) for r in request + response)
    assert len(set(builder.build().request_id)) == 2


def test_the_seldon_infer_type_header_names_the_message() -> None:
    mapping = TensorMapping("credit", "3", score_output="predict_proba")
    response = proto("response", RESPONSE)
    headers = {"seldon-infer-type": b"proto/InferModelResponse"}
    assert oip_protobuf(view(response, headers=headers), mapping, "request")[0]["kind"] == "response"
    as_json = oip_protobuf(view(json.dumps(RESPONSE).encode(), headers={"Seldon-Infer-Type": b"json/inferModelResponse"}),
                           mapping, "response")
    assert as_json == oip_protobuf(view(response), mapping, "response")
    with pytest.raises(DecodeError, match="seldon-infer-type") as info:
        oip_protobuf(view(response, headers={"seldon-infer-type": b"avro"}), mapping, "response")
    assert info.value.error_class == "WrongMessageType"


def tensor_request(datatype: str = "FP64", shape: tuple[int, ...] = (2,), contents: dict[str, Any] | None = None,
                   raw: list[bytes] | None = None, name: str = "income") -> bytes:
    tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(shape)}
    if contents is not None:
        tensor["contents"] = contents
    return bytes(MESSAGES.request(inputs=[tensor], raw_input_contents=raw or []).SerializeToString())


VALID = proto("request", REQUEST)
TWO = TensorMapping("credit", "3")


@pytest.mark.parametrize(("value", "mapping", "error_class", "reason"), [
    (b"\xff\xff\xff", TWO, "ProtobufDecodeError", "not a protobuf ModelInferRequest"),
    (json.dumps(REQUEST).encode(), TWO, "ProtobufDecodeError", "do not parse"),
    (VALID[:-3], TWO, "ProtobufDecodeError", "truncated"),
    (proto("response", RESPONSE, raw=True), TWO, "WrongMessageType", "ModelInferResponse where"),
    (b"", TWO, "SchemaMismatch", "without inputs"),
    (proto("request", {"inputs": REQUEST["inputs"][:2]}), CREDIT, "SchemaMismatch", "feature 'channel'"),
    (tensor_request("FP33", contents={"fp64_contents": [1.0, 2.0]}), TWO, "UnknownDatatype", "FP33"),
    (tensor_request("", contents={"fp64_contents": [1.0, 2.0]}), TWO, "UnknownDatatype", "datatype ''"),
    (tensor_request(raw=[b"\x00" * 15]), TWO, "RawContentsSize", "15 raw bytes; 2 FP64 elements take 16"),
    (tensor_request(shape=(2**31, 2**30), raw=[b"\x00" * 16]), TWO, "RawContentsSize", "2305843009213693952 FP64"),
    (tensor_request("BYTES", shape=(2**40,), raw=[b"\x00" * 16]), TWO, "TruncatedRawContents", "element 4 of"),
    (tensor_request(raw=[b"\x00" * 16, b"\x00"]), TWO, "RawContentsMismatch", "2 entries for 1 inputs"),
    (tensor_request(contents={"fp64_contents": [1.0, 2.0]}, raw=[b"\x00" * 16]), TWO, "RawAndTypedContents",
     "fp64_contents"),
    (tensor_request(contents={"fp64_contents": [1.0]}), TWO, "ContentsMismatch", "1 values in contents; shape"),
    (tensor_request(contents={"fp32_contents": [1.0, 2.0]}), TWO, "ContentsMismatch", "go in fp64_contents"),
    (tensor_request(), TWO, "ContentsMismatch", "0 values"),
    (tensor_request("FP16", contents={"fp32_contents": [1.0, 2.0]}), TWO, "ContentsMismatch", "only raw"),
    (tensor_request("BYTES", raw=[b"\x03\x00\x00\x00abc\x09\x00\x00\x00ab"]), TWO, "TruncatedRawContents",
     "element 1 claims 9 bytes"),
    (tensor_request("BYTES", raw=[b"\x03\x00\x00\x00abc\x01\x00"]), TWO, "TruncatedRawContents", "length of element 1"),
    (tensor_request("BYTES", raw=[b"\x01\x00\x00\x00a\x01\x00\x00\x00bX"]), TWO, "RawContentsSize", "1 raw bytes left"),
    (tensor_request("BYTES", contents={"bytes_contents": [b"\xff", b"a"]}), TWO, "ContentsMismatch", "UTF-8"),
    (tensor_request(shape=(-1,), contents={"fp64_contents": [1.0]}), TWO, "SchemaMismatch", "negative"),
    (tensor_request(name="", contents={"fp64_contents": [1.0, 2.0]}), TWO, "SchemaMismatch", "without a name"),
])
def test_bad_messages_are_decode_errors_with_a_class(value: bytes, mapping: TensorMapping, error_class: str,
                                                     reason: str) -> None:
    with pytest.raises(DecodeError, match=reason) as info:
        oip_protobuf(view(value), mapping, "request")
    assert info.value.error_class == error_class


def test_a_request_on_a_response_topic_is_the_wrong_message_type() -> None:
    with pytest.raises(DecodeError, match="ModelInferRequest") as info:
        oip_protobuf(view(proto("request", REQUEST, raw=True)), TWO, "response")
    assert info.value.error_class == "WrongMessageType"


def test_a_response_without_a_configured_or_sent_model_is_a_decode_error() -> None:
    body = {"outputs": [{"name": "p", "datatype": "FP64", "shape": [1], "data": [0.5]}]}
    with pytest.raises(DecodeError, match="model"):
        oip_protobuf(view(proto("response", body)), TensorMapping(), "response")


def test_the_topic_name_says_which_message_unless_configured() -> None:
    def topic(**fields: Any) -> Any:
        return Config.model_validate({"kafka": {"topics": [{"format": "oip-protobuf", **fields}]}}).kafka.topics[0]

    assert topic(topic="seldon.default.model.credit.inputs").infer_message == "request"
    assert topic(topic="seldon.default.model.credit.outputs").infer_message == "response"
    assert topic(topic="credit-responses", oip_message="response").infer_message == "response"
    with pytest.raises(ValueError, match="oip_message"):
        topic(topic="credit-responses")


def test_the_descriptor_is_the_checked_in_proto() -> None:
    """driftline builds the schema in Python; protoc (grpcio-tools, a test dependency) must read the .proto
    the same way, byte for byte."""
    protoc = pytest.importorskip("grpc_tools.protoc")
    from google.protobuf import descriptor_pb2

    schemas = Path(__file__).parents[2] / "driftline" / "schemas"
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "oip.desc"
        assert protoc.main(["protoc", f"-I{schemas}", f"--descriptor_set_out={out}", "open_inference.proto"]) == 0
        (compiled,) = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    assert compiled == file_descriptor()


def test_fp32_values_are_the_float32_numbers() -> None:
    """Typed and raw FP32 give the float32 value (0.1 → 0.10000000149…), as a float32 array's JSON would."""
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [0.1]}]}
    for raw in (False, True):
        (record,) = oip_protobuf(view(proto("request", body, raw)), TWO, "request")
        assert record["features"]["x"] == float(np.float32(0.1))


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.binary(max_size=300),
                       st.tuples(st.sampled_from([VALID, proto("request", REQUEST, raw=True),
                                                  proto("response", RESPONSE, raw=True)]),
                                 st.integers(0, 400), st.binary(min_size=1, max_size=4))
                       .map(lambda t: t[0][:t[1]] + t[2] + t[0][t[1] + len(t[2]):])),
       kind=st.sampled_from(["request", "response"]))
def test_any_bytes_give_records_or_a_decode_error(value: bytes, kind: Any) -> None:
    """Random bytes, and valid messages with a few bytes overwritten: never another exception."""
    try:
        oip_protobuf(view(value), CREDIT, kind)
    except DecodeError as exc:
        assert exc.reason and exc.error_class
