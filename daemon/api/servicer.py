"""The EdgeAsr servicer (protos/edge_asr.proto) over the daemon's core: Subscribe,
Recognize, SetContext and GetStatus, with the stream caps and errors server.py describes."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import grpc

from edge_asr.daemon.api.access import Refused, idle_limited
from edge_asr.daemon.api.bus import EventBus, Subscription, SubscriptionClosed
from edge_asr.daemon.api.config import ServerConfig
from edge_asr.daemon.api.messages import context_from_proto, event_to_proto, status_to_proto
from edge_asr.daemon.api.proto import edge_asr_pb2, edge_asr_pb2_grpc
from edge_asr.daemon.capture.audio import AudioFormatError, check_sample_rate
from edge_asr.daemon.capture.push import PushSource
from edge_asr.daemon.driver import StreamDriver
from edge_asr.daemon.frontend.cleanup import MicFrontEnd
from edge_asr.daemon.pipeline import Event, Pipeline
from edge_asr.daemon.recognition.context_graph import ContextError
from edge_asr.daemon.recognition.transducer import ModelError
from edge_asr.daemon.uplink.finisher import Finisher

log = logging.getLogger(__name__)

SERVICE_NAME = edge_asr_pb2.DESCRIPTOR.services_by_name["EdgeAsr"].full_name
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
DEFAULT_WORKERS = 64
RESERVED_WORKERS = 8  # threads kept free of streaming calls, for unary calls
# Each Recognize call decodes on its own thread; a few at once already fill a 2-core device.
DEFAULT_MAX_RECOGNIZE = 4
PUSH_PIECE_MS = 20  # pushed audio reaches the pipeline in pieces as a microphone's would
MAX_PUSH_PIECE_S = 1.0  # longest audio one Recognize message may carry
_POLL_S = 1.0  # a blocked Subscribe re-checks that its client is still there this often
DEFAULT_IDLE_TIMEOUT_S = ServerConfig.idle_timeout_s

_ENCODINGS = {edge_asr_pb2.PCM_S16LE: "pcm_s16le", edge_asr_pb2.F32LE: "f32le"}


class Core(Protocol):
    """What the servicer needs of the daemon (edge_asr.daemon.api.service.Daemon has it)."""

    bus: EventBus

    def new_pipeline(self, source: str) -> Pipeline:
        """A fresh pipeline over the shared model; `source` prefixes its utterance ids."""
        ...

    def new_finisher(self, emit: Callable[[Event], None]) -> Finisher:
        """Closes a stream's utterances (RESCORED / ON_DEVICE_FINAL) through `emit`."""
        ...

    def new_echo_frontend(self) -> MicFrontEnd:
        """An echo canceller for a Recognize call that sends its playback reference."""
        ...

    def set_context(self, context: dict[str, list[str]]) -> int:
        """Sets the own source's context from the next utterance; returns its entries.
        Raises ContextError naming a bad entry (the old context then stays)."""
        ...

    def status(self) -> dict[str, Any]:
        """Status fields by name (see Status in edge_asr.proto); other numbers are counters."""
        ...


# -- conversions --------------------------------------------------------------------------

def _push_reference(played: PushSource | None, request: edge_asr_pb2.RecognizeRequest,
                    rate: int, encoding: str) -> None:
    """The playback of one audio message into its own source, checked against the audio;
    silence where nothing played. Refused in words when it does not fit the call."""
    if played is None:
        if request.reference:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                          "a reference came with the audio, but the RecognizeConfig did not "
                          "ask for playback_reference")
        return
    reference = request.reference or bytes(len(request.audio))
    if len(reference) != len(request.audio):
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                      f"the reference must be exactly as long as the audio "
                      f"({len(request.audio)} bytes), got {len(reference)} bytes")
    try:
        played.push(reference, rate, encoding)
    except AudioFormatError as e:
        raise AudioFormatError(f"playback reference: {e}") from e


def _drain(events: queue.SimpleQueue) -> Iterator[edge_asr_pb2.Event]:
    while True:
        try:
            yield event_to_proto(events.get_nowait())
        except queue.Empty:
            return


def _encoding_name(encoding: int) -> str:
    if encoding == edge_asr_pb2.ENCODING_UNSPECIFIED:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                       "RecognizeConfig.encoding is not set; use PCM_S16LE or F32LE")
    if encoding not in _ENCODINGS:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                       f"unknown encoding {encoding}; known: PCM_S16LE, F32LE")
    return _ENCODINGS[encoding]


class EdgeAsrServicer(edge_asr_pb2_grpc.EdgeAsrServicer):
    def __init__(self, core: Core, max_streams: int = DEFAULT_WORKERS - RESERVED_WORKERS,
                 max_recognize: int = DEFAULT_MAX_RECOGNIZE,
                 max_piece_s: float = MAX_PUSH_PIECE_S,
                 idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S) -> None:
        if max_recognize < 1 or max_streams <= max_recognize:
            raise ValueError(f"max_recognize must be at least 1 and max_streams more than it "
                             f"(room for a subscriber), got {max_recognize} and {max_streams}")
        if not idle_timeout_s > 0:
            raise ValueError(f"idle_timeout_s must be more than 0, got {idle_timeout_s}")
        self.core = core
        self.max_streams = max_streams
        self.max_recognize = max_recognize
        self.max_subscribers = max_streams - max_recognize  # Recognize keeps its own threads
        self.max_piece_s = max_piece_s
        self.idle_timeout_s = idle_timeout_s
        self._lock = threading.Lock()
        self._streams = 0
        self._recognizing = 0
        self._subscriptions: set[Subscription] = set()
        self._stopping = False
        self.counters = {"recognize_calls": 0, "recognize_refused": 0, "clients_vanished": 0,
                         "streams_refused": 0, "subscribers_disconnected": 0,
                         "recognize_idle_ended": 0}

    # -- bookkeeping -------------------------------------------------------------------

    @property
    def active_streams(self) -> int:
        """Subscribe and Recognize calls running now."""
        return self._streams

    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    @contextlib.contextmanager
    def _stream_slot(self, recognize: bool = False) -> Iterator[None]:
        with self._lock:
            if self._stopping:
                raise Refused(grpc.StatusCode.UNAVAILABLE, "the daemon is shutting down")
            full = self._full_message(recognize)
            if full:
                self.counters["streams_refused"] += 1
                raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, full)
            self._streams += 1
            self._recognizing += int(recognize)
        try:
            yield
        finally:
            with self._lock:
                self._streams -= 1
                self._recognizing -= int(recognize)

    def _full_message(self, recognize: bool) -> str:
        """Why a new streaming call of this kind finds no slot ("" when it does); under
        self._lock."""
        if recognize and self._recognizing >= self.max_recognize:
            return (f"the daemon recognizes at most {self.max_recognize} pushed streams at "
                    "once (they share the device's CPU with its own source); try again later")
        if not recognize and self._streams - self._recognizing >= self.max_subscribers:
            return (f"the daemon serves at most {self.max_streams} streaming calls at once, "
                    f"{self.max_subscribers} of them Subscribe (the other {self.max_recognize} "
                    "are kept for Recognize); try again later")
        return ""

    def shutdown(self, reason: str = "the daemon is shutting down") -> None:
        """Ends every Subscribe stream with OK once it has sent what is queued for it;
        later streaming calls are refused with UNAVAILABLE."""
        with self._lock:
            self._stopping = True
            subs = list(self._subscriptions)
        for sub in subs:
            sub.end(reason)

    # -- Subscribe ---------------------------------------------------------------------

    def Subscribe(self, request: edge_asr_pb2.SubscribeRequest,
                  context: grpc.ServicerContext) -> Iterator[edge_asr_pb2.Event]:
        try:
            with self._stream_slot():
                yield from self._subscribe(request.partials, context)
        except Refused as e:
            context.abort(e.code, e.message)

    def _subscribe(self, partials: bool, context: grpc.ServicerContext
                   ) -> Iterator[edge_asr_pb2.Event]:
        sub = self.core.bus.subscribe(partials=partials)
        with self._lock:
            self._subscriptions.add(sub)
            if self._stopping:  # shutdown() ran after this call got its slot
                sub.end("the daemon is shutting down")
        # Called by gRPC when the call ends for any reason (client gone, server stop):
        # wakes the get() below at once.
        context.add_callback(lambda: sub.close("the call ended"))
        try:
            while True:
                try:
                    delivery = sub.get(timeout=_POLL_S)
                except SubscriptionClosed as closed:
                    if closed.disconnected:
                        self._count("subscribers_disconnected")
                        raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                       closed.reason) from None
                    return  # the source ended or the daemon stops: the stream ends OK
                if delivery is None:
                    if not context.is_active():
                        return
                    continue
                yield event_to_proto(delivery.event, delivery.dropped_before)
        finally:
            sub.close()
            with self._lock:
                self._subscriptions.discard(sub)

    # -- Recognize ---------------------------------------------------------------------

    def Recognize(self, request_iterator: Iterator[edge_asr_pb2.RecognizeRequest],
                  context: grpc.ServicerContext) -> Iterator[edge_asr_pb2.Event]:
        self._count("recognize_calls")
        refused: Refused | None = None
        finished = False
        try:
            with self._stream_slot(recognize=True):
                yield from self._recognize(idle_limited(request_iterator,
                                                         self.idle_timeout_s))
            finished = True
        except Refused as e:
            refused = e
            if e.code is grpc.StatusCode.DEADLINE_EXCEEDED:
                self._count("recognize_idle_ended")
        except (AudioFormatError, ContextError) as e:
            refused = Refused(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except ModelError as e:
            refused = Refused(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except grpc.RpcError:
            pass  # the request iterator says the client cancelled or vanished: see below
        except Exception as e:  # a bug, not the client's fault: say so, keep serving
            log.exception("Recognize failed")
            refused = Refused(grpc.StatusCode.INTERNAL, f"recognition failed: {e!r}")
        finally:
            # Neither finished nor refused: the client went away, while we waited for its
            # audio (RpcError) or sent it events (gRPC closes this generator). Its pipeline
            # and source go with this frame.
            if not finished and refused is None:
                self._count("clients_vanished")
                log.info("Recognize from %s ended before the client half-closed (it cancelled, "
                         "went away, or sent a message over the size limit)", context.peer())
        if refused is not None:
            if refused.code is grpc.StatusCode.INVALID_ARGUMENT:
                self._count("recognize_refused")
            context.abort(refused.code, refused.message)

    def _recognize(self, requests: Iterator[edge_asr_pb2.RecognizeRequest]
                   ) -> Iterator[edge_asr_pb2.Event]:
        first = next(requests, None)
        if first is None or first.WhichOneof("request") != "config":
            got = "nothing" if first is None else (first.WhichOneof("request") or "an empty "
                                                   "message")
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                           f"the first message of Recognize must be a RecognizeConfig "
                           f"(config), then audio; got {got}")
        pipeline, rate, encoding = self._open(first.config)
        source = PushSource(piece_ms=PUSH_PIECE_MS, max_piece_s=self.max_piece_s)
        # The playback, resampled beside the audio: the same lengths in, the same pieces out.
        played = PushSource(piece_ms=PUSH_PIECE_MS, max_piece_s=self.max_piece_s) \
            if first.config.playback_reference else None
        closed: queue.SimpleQueue[Event] = queue.SimpleQueue()  # the finisher's output
        driver = StreamDriver(pipeline, self.core.new_finisher(closed.put),
                              self.core.new_echo_frontend() if played is not None else None)
        for request in requests:
            kind = request.WhichOneof("request")
            if kind != "audio":
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                               "only the first message of Recognize may be a RecognizeConfig"
                               if kind == "config" else
                               "a RecognizeRequest must carry config or audio; got neither")
            source.push(request.audio, rate, encoding)
            _push_reference(played, request, rate, encoding)
            yield from self._run(driver, source, closed, played)
        source.end()  # the client half-closed: flush the resampler, then the utterance
        if played is not None:
            played.end()
        yield from self._run(driver, source, closed, played)
        # The call ends once every utterance is closed (the cloud answered, or its
        # deadline passed): the client gets RESCORED or ON_DEVICE_FINAL for each.
        driver.finish(wait_s=30.0)
        yield from _drain(closed)

    def _open(self, config: edge_asr_pb2.RecognizeConfig) -> tuple[Pipeline, int, str]:
        encoding = _encoding_name(config.encoding)
        check_sample_rate(config.sample_rate)
        pipeline = self.core.new_pipeline("push")
        if not config.partials:  # a copy: the config object is shared with other pipelines
            pipeline.config = dataclasses.replace(pipeline.config, partials=False)
        if config.HasField("context"):
            context = context_from_proto(config.context)
            if any(context.values()):
                pipeline.set_context(context)
        return pipeline, config.sample_rate, encoding

    @staticmethod
    def _run(driver: StreamDriver, source: PushSource, closed: queue.SimpleQueue,
             played: PushSource | None = None) -> Iterator[edge_asr_pb2.Event]:
        reference = played.pieces(timeout=0) if played is not None else iter(())
        for piece in source.pieces(timeout=0):  # only what is ready; never waits
            driver.feed(piece, next(reference, None))
            yield from _drain(closed)
        yield from _drain(closed)  # answers the cloud sent meanwhile

    # -- unary calls -------------------------------------------------------------------

    def SetContext(self, request: edge_asr_pb2.ContextLists,
                   context: grpc.ServicerContext) -> edge_asr_pb2.SetContextReply:
        try:
            entries = self.core.set_context(context_from_proto(request))
        except ContextError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except ModelError as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        return edge_asr_pb2.SetContextReply(entries=entries)

    def GetStatus(self, request: edge_asr_pb2.GetStatusRequest,
                  context: grpc.ServicerContext) -> edge_asr_pb2.Status:
        values: dict[str, Any] = {}
        stats = self.core.bus.stats()
        values["events_published"] = stats["published"]
        values["finals_over_bound"] = stats["finals_over_bound"]
        with self._lock:
            values.update(self.counters)
            values["streams_active"] = self._streams
        values.update(self.core.status())  # the core's own figures win
        return status_to_proto(values)
