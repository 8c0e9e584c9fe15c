"""The cloud-rescoring service (`edge-asr cloud`): gRPC server for protos/cloud.proto.

Per device session (`Session`, a bidirectional stream):

- Hello first, answered with Welcome; anything else first ends the call with
  FAILED_PRECONDITION.
- LatticeUpload: the lattice is checked (size, wire contract, revision newer than the
  utterance's last) and queued for the session's worker; a full queue, a bad lattice or an
  old revision is answered with an Error and the session goes on. An upload that replaces
  a revision whose work is still pending cancels that work (Cancelled, "superseded").
- The worker rescores the lattice with the cloud LM, runs the NLU on the best path (its
  cost is a cancellable wait) and sends Rescored, tagged (utterance_id, revision).
- Reset cancels the utterance's work in flight and is answered with Cancelled for the
  withdrawn revision; Reset of an unknown utterance gets an Error (NOT_FOUND).
- Confirm marks the revision final, so the utterance can be forgotten once answered.

Staleness: the check "is this job still its utterance's current, uncancelled work" and the
sending of its Rescored happen under the session's lock, as do cancellations, so no result
for a revision is ever sent after its Cancelled or after a newer revision was accepted.

The server is stateless per utterance: a session keeps only its recent utterances, so a
device may reconnect to any replica.

Undecodable client messages reach the session as `_Undecodable` (the deserializer never
raises) and get an Error; messages above the gRPC size limit end the call with
RESOURCE_EXHAUSTED (gRPC's own check).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import NamedTuple

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health

from edge_asr.daemon.api.probes import add_health_and_reflection
from edge_asr.daemon.api.proto import cloud_pb2
from edge_asr.simulator.cloud.engine import (
    DEFAULT_OPTIONS,
    CloudOptions,
    Engine,
    Refused,
    Undecodable,
    check_contacts,
    check_lattice,
    hypotheses,
    intent,
)
from edge_asr.simulator.cloud.lm import CloudLM
from edge_asr.simulator.cloud.nlu import NluCancelled
from edge_asr.simulator.cloud.security import CloudSecurity
from edge_asr.simulator.cloud.session import CLOSED, SEND_POLL_S, DeviceSession

log = logging.getLogger(__name__)

SERVICE_NAME = cloud_pb2.DESCRIPTOR.services_by_name["Cloud"].full_name


class CloudServicer:
    """Implements edge_asr.cloud.v1.Cloud (registered with lenient deserializers)."""

    def __init__(self, lm: CloudLM, options: CloudOptions = DEFAULT_OPTIONS) -> None:
        self.options = options
        self.engine = Engine(lm, options)
        self._lock = threading.Lock()
        self._sessions = 0
        self.counters = {"sessions": 0, "sessions_refused": 0, "rescore_calls": 0}

    def Session(self, requests: Iterator, context: grpc.ServicerContext
                ) -> Iterator[cloud_pb2.ServerMessage]:
        with self._lock:
            if self._sessions >= self.options.max_sessions:
                self.counters["sessions_refused"] += 1
                refused = True
            else:
                self._sessions += 1
                self.counters["sessions"] += 1
                refused = False
        if refused:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"the server has {self.options.max_sessions} sessions open")
        try:
            yield from self._session(requests, context)
        finally:
            with self._lock:
                self._sessions -= 1

    def _session(self, requests: Iterator, context: grpc.ServicerContext
                 ) -> Iterator[cloud_pb2.ServerMessage]:
        first = next(requests, None)
        if first is None:
            return
        if isinstance(first, Undecodable) or first.WhichOneof("message") != "hello":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "the first message of a session must be a Hello")
        session = DeviceSession(self.engine, first.hello.device_id or "device")
        context.add_callback(session.close)
        yield cloud_pb2.ServerMessage(welcome=cloud_pb2.Welcome(
            server_id=self.options.server_id, lm_version=self.engine.lm.version,
            max_lattice_bytes=self.options.max_lattice_bytes,
            max_pending=self.options.max_pending))

        def read() -> None:
            try:
                for message in requests:
                    session.handle(message)
                session.finish()
            except grpc.RpcError:
                session.close()  # the client went away
            except Exception:
                log.exception("session reader failed")
                session.close()

        reader = threading.Thread(target=read, name="cloud-reader", daemon=True)
        reader.start()
        try:
            while context.is_active():
                try:
                    message = session.outbox.get(timeout=SEND_POLL_S)
                except queue.Empty:
                    continue
                if message is CLOSED:
                    return
                yield message
        finally:
            session.close()

    def Rescore(self, request: cloud_pb2.RescoreRequest | Undecodable,
                context: grpc.ServicerContext) -> cloud_pb2.RescoreResponse:
        if isinstance(request, Undecodable):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"not a RescoreRequest: {request.reason}")
        with self._lock:
            self.counters["rescore_calls"] += 1
        try:
            lattice = check_lattice(request.lattice, self.options.max_lattice_bytes)
            contacts = check_contacts(request.context)
        except Refused as exc:
            context.abort(exc.code, exc.message)
        cancel = threading.Event()
        context.add_callback(cancel.set)  # the client gave up: stop the NLU wait
        started = time.monotonic()
        try:
            scored, result, timings = self.engine.run(lattice, request.nbest, cancel,
                                                      nlu=request.nlu, contacts=contacts)
        except NluCancelled:
            context.abort(grpc.StatusCode.CANCELLED, "the call was cancelled")
        return cloud_pb2.RescoreResponse(
            nbest=hypotheses(scored), intent=intent(result) if result else None,
            timings=cloud_pb2.Timings(total_ms=1000 * (time.monotonic() - started),
                                      **timings))


def _lenient(message_type: type) -> Callable[[bytes], object]:
    """A deserializer that hands undecodable bytes to the servicer instead of failing."""
    def parse(data: bytes) -> object:
        message = message_type()
        try:
            message.ParseFromString(data)
        except DecodeError as exc:
            return Undecodable(str(exc) or "malformed protobuf")
        return message
    return parse


def _handlers(servicer: CloudServicer) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(SERVICE_NAME, {
        "Session": grpc.stream_stream_rpc_method_handler(
            servicer.Session, request_deserializer=_lenient(cloud_pb2.ClientMessage),
            response_serializer=cloud_pb2.ServerMessage.SerializeToString),
        "Rescore": grpc.unary_unary_rpc_method_handler(
            servicer.Rescore, request_deserializer=_lenient(cloud_pb2.RescoreRequest),
            response_serializer=cloud_pb2.RescoreResponse.SerializeToString),
    })


class CloudServer(NamedTuple):
    server: grpc.Server
    port: int
    servicer: CloudServicer
    health: health.HealthServicer

    def stop(self, grace: float | None = None) -> threading.Event:
        self.health.enter_graceful_shutdown()
        return self.server.stop(grace)


class CloudServeError(RuntimeError):
    """The server cannot listen where it was asked to."""


def serve_cloud(lm: CloudLM, options: CloudOptions = DEFAULT_OPTIONS, host: str = "127.0.0.1",
                port: int = 0, security: CloudSecurity | None = None) -> CloudServer:
    """Starts the service on host:port (0: any free port, returned in .port); with TLS and
    a bearer token when `security` says so."""
    security = security or CloudSecurity()
    servicer = CloudServicer(lm, options)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=options.max_sessions + 8,
                                   thread_name_prefix="grpc-cloud"),
        interceptors=security.interceptors(),
        options=[("grpc.max_receive_message_length", options.max_message_bytes),
                 ("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((_handlers(servicer),))
    health_servicer = add_health_and_reflection(server, SERVICE_NAME)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        credentials = security.credentials()
        bound = server.add_secure_port(address, credentials) if credentials else \
            server.add_insecure_port(address)
    except (RuntimeError, OSError) as exc:
        raise CloudServeError(f"cannot listen on {address}: {exc}") from exc
    if bound == 0:
        raise CloudServeError(f"cannot listen on {address} (is the port in use?)")
    server.start()
    return CloudServer(server, bound, servicer, health_servicer)
