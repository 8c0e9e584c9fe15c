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
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import NamedTuple

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health

from edge_asr.daemon.api.probes import add_health_and_reflection
from edge_asr.daemon.api.proto import cloud_pb2, lattice_pb2
from edge_asr.daemon.uplink.lattice import Lattice, LatticeError, from_proto, validate
from edge_asr.simulator.cloud.lm import CloudLM
from edge_asr.simulator.cloud.nlu import NluCancelled, NluOptions, NluResult, run_nlu, understand
from edge_asr.simulator.cloud.rescore import RescoreOptions, ScoredPath, rescore
from edge_asr.simulator.cloud.security import CloudSecurity

log = logging.getLogger(__name__)

SERVICE_NAME = cloud_pb2.DESCRIPTOR.services_by_name["Cloud"].full_name
_CLOSED = object()  # ends a session's outbox
_SEND_POLL_S = 0.5  # a blocked send re-checks that the session is still open this often


@dataclass(frozen=True)
class CloudOptions:
    nbest: int = 10  # hypotheses returned when the request says 0
    max_nbest: int = 50
    max_paths: int = 50  # lattice paths rescored
    max_lattice_bytes: int = 256 * 1024  # refused with an Error above this, session goes on
    max_message_bytes: int = 1 << 20  # gRPC's hard limit: the call ends above it
    max_pending: int = 8  # uploads a session may have queued
    max_sessions: int = 64
    nlu_cost_s: float = 0.0  # emulated NLU service time (cancellable)
    slow_s: float = 0.0  # extra latency before every result, to emulate a slow cloud
    recent_utterances: int = 256  # utterances a session remembers for Reset and Confirm
    server_id: str = "edge-asr-cloud"

    def __post_init__(self) -> None:
        if min(self.nbest, self.max_nbest, self.max_paths, self.max_pending,
               self.max_sessions, self.recent_utterances) < 1:
            raise ValueError("nbest, max_nbest, max_paths, max_pending, max_sessions and "
                             "recent_utterances must be at least 1")
        if self.nlu_cost_s < 0 or self.slow_s < 0:
            raise ValueError("nlu_cost_s and slow_s must be >= 0")
        if self.max_lattice_bytes >= self.max_message_bytes:
            raise ValueError("max_lattice_bytes must be below max_message_bytes, so that an "
                             "oversized lattice gets an Error instead of ending the session")


class _Undecodable(NamedTuple):
    reason: str


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- shared work --------------------------------------------------------------------------

def check_lattice(message: lattice_pb2.Lattice, max_bytes: int) -> Lattice:
    """The wire lattice as a validated Lattice, or _Refused with the reason."""
    size = message.ByteSize()
    if size > max_bytes:
        raise _Refused(grpc.StatusCode.RESOURCE_EXHAUSTED,
                       f"lattice is {size} bytes, more than the {max_bytes} allowed")
    try:
        lattice = from_proto(message)
        validate(lattice)
    except LatticeError as exc:
        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"bad lattice: {exc}") from exc
    return lattice


def _hypotheses(scored: list[ScoredPath]) -> list[cloud_pb2.Hypothesis]:
    return [cloud_pb2.Hypothesis(words=p.words, acoustic=p.acoustic, bias=p.bias, lm=p.lm,
                                 total=p.total) for p in scored]


def _intent(result: NluResult) -> cloud_pb2.Intent:
    return cloud_pb2.Intent(name=result.intent, slots=result.slots)


def _wait(seconds: float, cancel: threading.Event) -> None:
    if seconds > 0 and cancel.wait(seconds) or cancel.is_set():
        raise NluCancelled()


class _Engine:
    """Rescoring plus NLU for one lattice; shared by sessions and the unary call."""

    def __init__(self, lm: CloudLM, options: CloudOptions) -> None:
        self.lm = lm
        self.options = options
        understand(["stop"])  # loads the NLU's gazetteers now, not in the first request

    def nbest_for(self, requested: int) -> int:
        return min(requested or self.options.nbest, self.options.max_nbest)

    def run(self, lattice: Lattice, nbest: int, cancel: threading.Event, nlu: bool = True
            ) -> tuple[list[ScoredPath], NluResult | None, dict[str, float]]:
        """Raises NluCancelled when `cancel` is set before the result is ready."""
        started = time.monotonic()
        scored = rescore(lattice, self.lm, RescoreOptions(self.options.max_paths,
                                                          self.nbest_for(nbest)))
        rescored = time.monotonic()
        if cancel.is_set():
            raise NluCancelled()
        result = None
        if nlu:
            best = scored[0].words if scored else ()
            result = run_nlu(best, NluOptions(self.options.nlu_cost_s), cancel)
        understood = time.monotonic()
        _wait(self.options.slow_s, cancel)
        return scored, result, {"rescore_ms": 1000 * (rescored - started),
                                "nlu_ms": 1000 * (understood - rescored)}


# -- sessions -----------------------------------------------------------------------------

@dataclass
class _Job:
    utterance_id: str
    revision: int
    lattice: Lattice
    nbest: int
    arrived: float = field(default_factory=time.monotonic)
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: bool = False


@dataclass
class _Utterance:
    revision: int
    job: _Job | None
    withdrawn: bool = False  # a Reset withdrew `revision`
    confirmed: bool = False


class DeviceSession:
    """One device's session: its reader feeds handle(), its worker runs the jobs."""

    def __init__(self, engine: _Engine, device_id: str) -> None:
        self.engine = engine
        self.options = engine.options
        self.device_id = device_id
        self.outbox: queue.Queue = queue.Queue(maxsize=4 * self.options.max_pending + 16)
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._utterances: OrderedDict[str, _Utterance] = OrderedDict()
        self._closed = threading.Event()
        self._worker = threading.Thread(target=self._work, name=f"cloud-{device_id}",
                                        daemon=True)
        self._worker.start()

    # -- sending --------------------------------------------------------------------

    def _send(self, message: cloud_pb2.ServerMessage | object) -> None:
        """Blocks while the client reads slowly (flow control), never past close()."""
        while not self._closed.is_set():
            try:
                self.outbox.put(message, timeout=_SEND_POLL_S)
                return
            except queue.Full:
                continue

    def _error(self, code: grpc.StatusCode, text: str, utterance_id: str = "",
               revision: int = 0) -> None:
        self._send(cloud_pb2.ServerMessage(error=cloud_pb2.Error(
            code=code.name, message=text, utterance_id=utterance_id, revision=revision)))

    def _cancelled(self, utterance_id: str, revision: int, was_running: bool,
                   reason: str) -> None:
        self._send(cloud_pb2.ServerMessage(cancelled=cloud_pb2.Cancelled(
            utterance_id=utterance_id, revision=revision, was_running=was_running,
            reason=reason)))

    # -- client messages (reader thread) ----------------------------------------------

    def handle(self, message: cloud_pb2.ClientMessage | _Undecodable) -> None:
        if isinstance(message, _Undecodable):
            self._error(grpc.StatusCode.INVALID_ARGUMENT,
                        f"not a ClientMessage: {message.reason}")
            return
        kind = message.WhichOneof("message")
        if kind == "lattice":
            self._upload(message.lattice)
        elif kind == "reset":
            self._reset(message.reset.utterance_id)
        elif kind == "confirm":
            self._confirm(message.confirm.utterance_id, message.confirm.revision)
        elif kind == "hello":
            self._error(grpc.StatusCode.FAILED_PRECONDITION,
                        "Hello is only allowed as the first message")
        else:
            self._error(grpc.StatusCode.INVALID_ARGUMENT, "empty ClientMessage")

    def _upload(self, upload: cloud_pb2.LatticeUpload) -> None:
        wire = upload.lattice
        try:
            lattice = check_lattice(wire, self.options.max_lattice_bytes)
        except _Refused as exc:
            self._error(exc.code, exc.message, wire.utterance_id, wire.revision)
            return
        if not lattice.utterance_id:
            self._error(grpc.StatusCode.INVALID_ARGUMENT, "lattice has no utterance_id",
                        revision=lattice.revision)
            return
        with self._lock:
            known = self._utterances.get(lattice.utterance_id)
            if known is not None and lattice.revision <= known.revision:
                self._error(grpc.StatusCode.INVALID_ARGUMENT,
                            f"revision {lattice.revision} is not newer than revision "
                            f"{known.revision} of this utterance", lattice.utterance_id,
                            lattice.revision)
                return
            if self._pending >= self.options.max_pending:
                self._error(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"{self._pending} lattices already wait in this session "
                            f"(limit {self.options.max_pending})", lattice.utterance_id,
                            lattice.revision)
                return
            if known is not None and known.job is not None and not known.job.finished \
                    and not known.job.cancel.is_set():
                known.job.cancel.set()
                self._cancelled(known.job.utterance_id, known.job.revision, True,
                                "superseded")
            job = _Job(lattice.utterance_id, lattice.revision, lattice, upload.nbest)
            self._remember(lattice.utterance_id, _Utterance(lattice.revision, job))
            self._pending += 1
        self._jobs.put(job)

    def _remember(self, utterance_id: str, utterance: _Utterance) -> None:
        self._utterances[utterance_id] = utterance
        self._utterances.move_to_end(utterance_id)
        while len(self._utterances) > self.options.recent_utterances:
            self._utterances.popitem(last=False)

    def _reset(self, utterance_id: str) -> None:
        with self._lock:
            known = self._utterances.get(utterance_id)
            if known is None:
                self._error(grpc.StatusCode.NOT_FOUND,
                            f"Reset of unknown utterance {utterance_id!r}", utterance_id)
                return
            job = known.job
            was_running = job is not None and not job.finished and not job.cancel.is_set()
            if job is not None:
                job.cancel.set()
            known.withdrawn = True
            self._cancelled(utterance_id, known.revision, was_running, "reset")

    def _confirm(self, utterance_id: str, revision: int) -> None:
        with self._lock:
            known = self._utterances.get(utterance_id)
            if known is None or known.revision != revision or known.withdrawn:
                self._error(grpc.StatusCode.NOT_FOUND,
                            f"Confirm of revision {revision} of {utterance_id!r}, which is "
                            "not the utterance's standing revision", utterance_id, revision)
                return
            known.confirmed = True

    # -- work (worker thread) ---------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                self._run(job)
            except Exception:  # a bug in one job must not end the session's work
                log.exception("rescoring %s rev %d failed", job.utterance_id, job.revision)
                self._error(grpc.StatusCode.INTERNAL, "rescoring failed on the server",
                            job.utterance_id, job.revision)
            finally:
                with self._lock:
                    self._pending -= 1
                    job.finished = True

    def _run(self, job: _Job) -> None:
        if job.cancel.is_set():
            return
        started = time.monotonic()
        try:
            scored, result, timings = self.engine.run(job.lattice, job.nbest, job.cancel)
        except NluCancelled:
            return
        with self._lock:
            current = self._utterances.get(job.utterance_id)
            if job.cancel.is_set() or current is None or current.job is not job:
                return  # stale: a Reset or a newer revision came first
            now = time.monotonic()
            self._send(cloud_pb2.ServerMessage(rescored=cloud_pb2.Rescored(
                utterance_id=job.utterance_id, revision=job.revision,
                nbest=_hypotheses(scored), intent=_intent(result) if result else None,
                timings=cloud_pb2.Timings(queue_ms=1000 * (started - job.arrived),
                                          total_ms=1000 * (now - job.arrived), **timings))))
            if current.confirmed:
                del self._utterances[job.utterance_id]

    # -- lifetime ---------------------------------------------------------------------

    def finish(self) -> None:
        """The client half-closed: answer what is queued, then end the outbox."""
        self._jobs.put(None)
        self._worker.join()
        self._send(_CLOSED)

    def close(self) -> None:
        """The call is over: cancel all work and stop the worker."""
        self._closed.set()
        with self._lock:
            for utterance in self._utterances.values():
                if utterance.job is not None:
                    utterance.job.cancel.set()
        self._jobs.put(None)


class CloudServicer:
    """Implements edge_asr.cloud.v1.Cloud (registered with lenient deserializers)."""

    def __init__(self, lm: CloudLM, options: CloudOptions = CloudOptions()) -> None:
        self.options = options
        self.engine = _Engine(lm, options)
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
        if isinstance(first, _Undecodable) or first.WhichOneof("message") != "hello":
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
                    message = session.outbox.get(timeout=_SEND_POLL_S)
                except queue.Empty:
                    continue
                if message is _CLOSED:
                    return
                yield message
        finally:
            session.close()

    def Rescore(self, request: cloud_pb2.RescoreRequest | _Undecodable,
                context: grpc.ServicerContext) -> cloud_pb2.RescoreResponse:
        if isinstance(request, _Undecodable):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"not a RescoreRequest: {request.reason}")
        with self._lock:
            self.counters["rescore_calls"] += 1
        try:
            lattice = check_lattice(request.lattice, self.options.max_lattice_bytes)
        except _Refused as exc:
            context.abort(exc.code, exc.message)
        cancel = threading.Event()
        context.add_callback(cancel.set)  # the client gave up: stop the NLU wait
        started = time.monotonic()
        try:
            scored, result, timings = self.engine.run(lattice, request.nbest, cancel,
                                                      nlu=request.nlu)
        except NluCancelled:
            context.abort(grpc.StatusCode.CANCELLED, "the call was cancelled")
        return cloud_pb2.RescoreResponse(
            nbest=_hypotheses(scored), intent=_intent(result) if result else None,
            timings=cloud_pb2.Timings(total_ms=1000 * (time.monotonic() - started),
                                      **timings))


def _lenient(message_type: type) -> Callable[[bytes], object]:
    """A deserializer that hands undecodable bytes to the servicer instead of failing."""
    def parse(data: bytes) -> object:
        message = message_type()
        try:
            message.ParseFromString(data)
        except DecodeError as exc:
            return _Undecodable(str(exc) or "malformed protobuf")
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


def serve_cloud(lm: CloudLM, options: CloudOptions = CloudOptions(), host: str = "127.0.0.1",
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
