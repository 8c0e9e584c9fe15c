"""The EdgeAsr service registered so that bytes which are not the method's message get
INVALID_ARGUMENT naming the message, where gRPC's generated registration would end the call
with INTERNAL ("Exception deserializing request!"), which reads as a fault of the daemon.

The handlers are built from the service's descriptor, so every method of
protos/edge_asr.proto is covered as it is; the servicer never sees a malformed request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import DecodeError

from edge_asr.daemon.api.access import Refused
from edge_asr.daemon.api.proto import edge_asr_pb2

SERVICE = edge_asr_pb2.DESCRIPTOR.services_by_name["EdgeAsr"]


class Malformed:
    """What a request that did not parse becomes; the handler refuses it."""

    def __init__(self, message_name: str, error: Exception) -> None:
        self.message = (f"the request is not a valid {message_name} message ({error}); "
                        "send it as protos/edge_asr.proto defines it")


def _lenient(message_class: Any) -> Callable[[bytes], Any]:
    name = message_class.DESCRIPTOR.full_name

    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except (DecodeError, ValueError, RuntimeError) as e:  # what protobuf's parsers raise
            return Malformed(name, e)

    return parse


def _well_formed(requests: Iterator[Any]) -> Iterator[Any]:
    """A client stream's requests; a malformed one ends the call (the servicer turns a
    Refused into its status)."""
    for request in requests:
        if isinstance(request, Malformed):
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        yield request


def _handler(method: MethodDescriptor, behaviour: Callable) -> grpc.RpcMethodHandler:
    parse = _lenient(message_factory.GetMessageClass(method.input_type))
    serialize = message_factory.GetMessageClass(method.output_type).SerializeToString
    if method.client_streaming:
        def streamed(requests, context):
            return behaviour(_well_formed(requests), context)

        make = grpc.stream_stream_rpc_method_handler if method.server_streaming else \
            grpc.stream_unary_rpc_method_handler
        return make(streamed, request_deserializer=parse, response_serializer=serialize)
    if method.server_streaming:
        def unary_stream(request, context):
            if isinstance(request, Malformed):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            yield from behaviour(request, context)

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, request_deserializer=parse, response_serializer=serialize)

    def unary(request, context):
        if isinstance(request, Malformed):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return behaviour(request, context)

    return grpc.unary_unary_rpc_method_handler(
        unary, request_deserializer=parse, response_serializer=serialize)


def add_servicer(servicer: Any, server: grpc.Server) -> None:
    """Registers `servicer`'s methods (one per RPC of EdgeAsr, by name) on `server`."""
    handlers = {m.name: _handler(m, getattr(servicer, m.name)) for m in SERVICE.methods}
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
    server.add_registered_method_handlers(SERVICE.full_name, handlers)
