"""The Open Inference Protocol's protobuf messages, ``inference.ModelInferRequest`` and
``inference.ModelInferResponse``, as classes of the official ``protobuf`` runtime.

The schema is ``open_inference.proto`` beside this file, written out here as a descriptor so that no
protoc and no generated ``_pb2`` module (tied to one protobuf release) are needed; a unit test compiles
the ``.proto`` with grpcio-tools and checks both are the same. The classes are built on first use, in a
descriptor pool of their own: a process that also loads another copy of the ``inference`` package
(tritonclient, mlserver) sees no clash.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "inference"
_F = descriptor_pb2.FieldDescriptorProto
_CONTENTS = (("bool_contents", _F.TYPE_BOOL), ("int_contents", _F.TYPE_INT32), ("int64_contents", _F.TYPE_INT64),
             ("uint_contents", _F.TYPE_UINT32), ("uint64_contents", _F.TYPE_UINT64),
             ("fp32_contents", _F.TYPE_FLOAT), ("fp64_contents", _F.TYPE_DOUBLE), ("bytes_contents", _F.TYPE_BYTES))


@dataclass(frozen=True)
class OipMessages:
    """The two message classes (``protobuf`` builds them at run time, so they are typed ``Any``)."""

    request: Any
    response: Any


@cache
def oip_messages() -> OipMessages:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_descriptor())
    return OipMessages(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.ModelInferRequest")),
                       message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.ModelInferResponse")))


def file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """``open_inference.proto`` as protoc describes it."""
    parameter = descriptor_pb2.DescriptorProto(name="InferParameter", field=[
        _field("bool_param", 1, _F.TYPE_BOOL, oneof=0), _field("int64_param", 2, _F.TYPE_INT64, oneof=0),
        _field("string_param", 3, _F.TYPE_STRING, oneof=0)])
    parameter.oneof_decl.add(name="parameter_choice")
    contents = descriptor_pb2.DescriptorProto(name="InferTensorContents", field=[
        _field(name, number, kind, repeated=True) for number, (name, kind) in enumerate(_CONTENTS, start=1)])
    request = _message("ModelInferRequest", [
        _tensor("ModelInferRequest.InferInputTensor"),
        _message("InferRequestedOutputTensor", [_parameters()],
                 [_field("name", 1, _F.TYPE_STRING),
                  _parameters_field("ModelInferRequest.InferRequestedOutputTensor", 2)]),
        _parameters()],
        [*_head("ModelInferRequest"), _message_field("inputs", 5, "ModelInferRequest.InferInputTensor"),
         _message_field("outputs", 6, "ModelInferRequest.InferRequestedOutputTensor"),
         _field("raw_input_contents", 7, _F.TYPE_BYTES, repeated=True)])
    response = _message("ModelInferResponse", [_tensor("ModelInferResponse.InferOutputTensor"),
                                               _parameters()],
                        [*_head("ModelInferResponse"), _message_field("outputs", 5, "ModelInferResponse.InferOutputTensor"),
                         _field("raw_output_contents", 6, _F.TYPE_BYTES, repeated=True)])
    return descriptor_pb2.FileDescriptorProto(name="open_inference.proto", package=PACKAGE, syntax="proto3",
                                              message_type=[parameter, contents, request, response])


def _message(name: str, nested: list[descriptor_pb2.DescriptorProto],
             fields: list[descriptor_pb2.FieldDescriptorProto]) -> descriptor_pb2.DescriptorProto:
    return descriptor_pb2.DescriptorProto(name=name.rsplit(".", 1)[-1], field=fields, nested_type=nested)


def _head(owner: str) -> list[descriptor_pb2.FieldDescriptorProto]:
    """Fields 1–4, the same in a request and a response."""
    return [_field("model_name", 1, _F.TYPE_STRING), _field("model_version", 2, _F.TYPE_STRING),
            _field("id", 3, _F.TYPE_STRING), _parameters_field(owner, 4)]


def _tensor(path: str) -> descriptor_pb2.DescriptorProto:
    """An input or output tensor: name, datatype, shape, parameters, typed contents."""
    return _message(path, [_parameters()], [
        _field("name", 1, _F.TYPE_STRING), _field("datatype", 2, _F.TYPE_STRING),
        _field("shape", 3, _F.TYPE_INT64, repeated=True), _parameters_field(path, 4),
        _message_field("contents", 5, "InferTensorContents", repeated=False)])


def _parameters() -> descriptor_pb2.DescriptorProto:
    """The entry message of a ``map<string, InferParameter> parameters`` field, nested beside it."""
    entry = _message("ParametersEntry", [], [_field("key", 1, _F.TYPE_STRING),
                                             _message_field("value", 2, "InferParameter", repeated=False)])
    entry.options.map_entry = True
    return entry


def _parameters_field(owner: str, number: int) -> descriptor_pb2.FieldDescriptorProto:
    return _message_field("parameters", number, f"{owner}.ParametersEntry")


def _message_field(name: str, number: int, type_name: str, repeated: bool = True) -> descriptor_pb2.FieldDescriptorProto:
    return _field(name, number, _F.TYPE_MESSAGE, repeated=repeated, type_name=f".{PACKAGE}.{type_name}")


def _field(name: str, number: int, kind: int, *, repeated: bool = False, type_name: str | None = None,
           oneof: int | None = None) -> descriptor_pb2.FieldDescriptorProto:
    field = descriptor_pb2.FieldDescriptorProto(
        name=name, number=number, type=kind,
        label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL, json_name=_camel(name))
    if type_name is not None:
        field.type_name = type_name
    if oneof is not None:
        field.oneof_index = oneof
    return field


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)
