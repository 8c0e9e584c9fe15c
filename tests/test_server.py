"""The gRPC client API over loopback, and the event bus behind Subscribe.

The servicer runs over a REAL recognizer: a tiny random transducer exported here (with a
sentencepiece model beside tokens.txt, so contexts can be spelled), fed a speech-like
signal (amplitude-modulated harmonic bursts between silences) that webrtcvad hears as
speech. Random weights mean random words, but the event grammar, the errors and the
plumbing are exactly the daemon's.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from edge_asr.daemon.api.bus import EventBus, SubscriptionClosed
from edge_asr.daemon.api.client import bearer_channel
from edge_asr.daemon.api.messages import event_to_proto
from edge_asr.daemon.api.proto import edge_asr_pb2 as pb
from edge_asr.daemon.api.proto import edge_asr_pb2_grpc as pb_grpc
from edge_asr.daemon.api.server import SERVICE_NAME, Served, ServeError, serve
from edge_asr.daemon.frontend.cleanup import FrontEndConfig, MicFrontEnd
from edge_asr.daemon.frontend.vad import Vad
from edge_asr.daemon.pipeline import Event, EventType, Pipeline, PipelineConfig
from edge_asr.daemon.recognition.context_graph import context_entries
from edge_asr.daemon.recognition.recognizer import Recognizer, RecognizerConfig
from edge_asr.daemon.uplink.finisher import Finisher
from edge_asr.daemon.uplink.lattice import Path as LatticePath
from edge_asr.daemon.uplink.lattice import WordArc, build_lattice, from_proto

SR = 16000
LEAD_S, BURST_S, GAP_S = 0.5, 0.8, 1.8  # GAP_S outlasts every end-pointer threshold


# -- the model, the signal and a core ------------------------------------------------------

@pytest.fixture(scope="module")
def model_dir(tiny_model_dir) -> Path:
    assert (tiny_model_dir / "bpe.model").is_file()
    return tiny_model_dir


@pytest.fixture(scope="module")
def recognizer(model_dir) -> Recognizer:
    return Recognizer(RecognizerConfig(model_dir=model_dir))


def burst(seconds: float, f0: float, rate: int = SR) -> np.ndarray:
    """A voiced-sounding burst: a harmonic tone with a 4 Hz (syllable-rate) envelope."""
    t = np.arange(int(seconds * rate)) / rate
    tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 12))
    envelope = (0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t)) * np.minimum(
        1.0, np.minimum(t, t[-1] - t) / 0.02)
    return (0.25 * tone / np.abs(tone).max() * envelope).astype(np.float32)


def speech_like(bursts: int, rate: int = SR) -> np.ndarray:
    parts = [np.zeros(int(LEAD_S * rate), np.float32)]
    for i in range(bursts):
        parts += [burst(BURST_S, 140.0 + 40 * i, rate), np.zeros(int(GAP_S * rate), np.float32)]
    return np.concatenate(parts)


@dataclass
class FakeDaemon:
    """The Core protocol over a real recognizer, without an audio source of its own."""

    recognizer: Recognizer
    bus: EventBus = field(default_factory=EventBus)
    context: dict[str, list[str]] | None = None
    entries: int = 0

    def new_pipeline(self, source: str) -> Pipeline:
        return Pipeline(self.recognizer, PipelineConfig(model_version="test"), source=source)

    def new_echo_frontend(self) -> MicFrontEnd:
        return MicFrontEnd(FrontEndConfig(echo_cancellation=True))

    def new_finisher(self, emit) -> Finisher:
        return Finisher(emit)  # local-only: ON_DEVICE_FINAL right after the final decision

    def set_context(self, context: dict[str, list[str]]) -> int:
        entries = context_entries(context)
        self.recognizer.context_graph(context if entries else None)  # ContextError here
        self.context, self.entries = context, len(entries)
        return self.entries

    def status(self) -> dict[str, Any]:
        return {"uptime_s": 1.25, "model": "random-test", "model_version": "test",
                "utterances": 0, "subscribers": self.bus.subscribers,
                "dropped_partials": self.bus.dropped, "overruns": 0,
                "context_entries": self.entries, "rtf": 0.0, "source": "none",
                "audio_seconds": 0.0}


@dataclass
class Api:
    core: FakeDaemon
    served: Served
    channel: grpc.Channel
    stub: pb_grpc.EdgeAsrStub

    @property
    def servicer(self):
        return self.served.server.servicer


@pytest.fixture
def start(recognizer) -> Iterator[Callable[..., Api]]:
    """Starts servers on 127.0.0.1:0 (or a Unix socket); stops them after the test."""
    apis: list[Api] = []

    def _start(bus: EventBus | None = None, unix: str | None = None, **options: Any) -> Api:
        core = FakeDaemon(recognizer, bus or EventBus())
        served = serve(core, unix, None if unix else "127.0.0.1:0", **options)
        channel = grpc.insecure_channel(f"unix:{unix}") if unix else \
            bearer_channel(f"127.0.0.1:{served.port}", served.server.tcp_token)
        api = Api(core, served, channel, pb_grpc.EdgeAsrStub(channel))
        apis.append(api)
        return api

    yield _start
    for api in apis:
        api.channel.close()
        api.served.server.stop(0).wait(10)


@pytest.fixture
def api(start) -> Api:
    return start()


def test_the_signal_is_speech_to_webrtcvad():
    flags = np.array(Vad(2, 30).process(speech_like(2)))
    frame = 0.03

    def share(t0: float, t1: float) -> float:
        return float(flags[int(t0 / frame):int(t1 / frame)].mean())

    first = LEAD_S
    second = LEAD_S + BURST_S + GAP_S
    assert share(0, LEAD_S - 0.05) == 0
    assert share(first + 0.05, first + BURST_S - 0.05) > 0.9
    assert share(first + BURST_S + 0.15, second - 0.05) == 0  # past its hangover
    assert share(second + 0.05, second + BURST_S - 0.05) > 0.9


# -- Recognize -----------------------------------------------------------------------------

def encode(samples: np.ndarray, encoding: int) -> bytes:
    if encoding == pb.F32LE:
        return samples.astype("<f4").tobytes()
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def audio_requests(samples: np.ndarray, rate: int, encoding: int, partials: bool = True,
                   piece_s: float = 0.1, **config: Any) -> list[pb.RecognizeRequest]:
    first = pb.RecognizeRequest(config=pb.RecognizeConfig(
        sample_rate=rate, encoding=encoding, partials=partials, **config))
    step = int(piece_s * rate)
    return [first] + [pb.RecognizeRequest(audio=encode(samples[i:i + step], encoding))
                      for i in range(0, len(samples), step)]


def recognize(stub: pb_grpc.EdgeAsrStub, requests: list[pb.RecognizeRequest]
              ) -> list[pb.Event]:
    return list(stub.Recognize(iter(requests), timeout=60))


def refused(stub: pb_grpc.EdgeAsrStub, requests: list[pb.RecognizeRequest]
            ) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        recognize(stub, requests)
    return err.value


NAME = pb.EventType.Name


def grammar_ok(types: list[str], closing: str = "ON_DEVICE_FINAL") -> bool:
    """SPEECH_STARTED PARTIAL* SPECULATIVE PARTIAL* (CONFIRMED | RESET PARTIAL* FINAL), then
    the closing event (RESCORED, or ON_DEVICE_FINAL without a cloud)."""
    t = [x for x in types if x != "PARTIAL"]
    return t in (["SPEECH_STARTED", "SPECULATIVE_ENDPOINT", "CONFIRMED", closing],
                 ["SPEECH_STARTED", "SPECULATIVE_ENDPOINT", "RESET", "FINAL_ENDPOINT", closing])


@pytest.mark.parametrize("rate, encoding, partials", [
    (16000, pb.PCM_S16LE, True), (48000, pb.F32LE, False)])
def test_recognize_streams_each_burst_in_order(api, rate, encoding, partials):
    events = recognize(api.stub, audio_requests(speech_like(2, rate), rate, encoding,
                                                partials=partials))
    by_utterance: dict[str, list[str]] = {}
    for e in events:
        by_utterance.setdefault(e.utterance_id, []).append(NAME(e.type))
    assert len(by_utterance) == 2, by_utterance
    for types in by_utterance.values():
        assert grammar_ok(types), types
        assert ("PARTIAL" in types) == partials
    times = [e.audio_time for e in events]
    assert times == sorted(times) and times[-1] <= 2 * (BURST_S + GAP_S) + LEAD_S + 0.1
    spec = next(e for e in events if e.type == pb.SPECULATIVE_ENDPOINT)
    assert spec.revision == 1 and spec.HasField("lattice") and spec.lattice.revision == 1
    assert spec.nbest and spec.nbest[0].text == spec.text
    assert from_proto(spec.lattice).utterance_id == spec.utterance_id
    start = next(e for e in events if e.type == pb.SPEECH_STARTED)
    assert start.HasField("speech_start") and abs(start.speech_start - LEAD_S) < 0.1
    assert NAME(events[-2].type) in ("CONFIRMED", "FINAL_ENDPOINT")
    closing = events[-1]
    assert NAME(closing.type) == "ON_DEVICE_FINAL" and closing.reason == "local-only"
    assert closing.text == events[-2].text or closing.text == spec.text


def test_half_close_sends_the_open_utterance(api):
    # Audio that stops mid-burst: only the end of the input can close the utterance.
    audio = speech_like(1)[: int((LEAD_S + BURST_S * 0.75) * SR)]
    events = recognize(api.stub, audio_requests(audio, SR, pb.PCM_S16LE))
    assert grammar_ok([NAME(e.type) for e in events])
    assert events[-2].reason == "end_of_input" and events[-1].reason == "local-only"


def test_recognize_with_a_context(api):
    requests = audio_requests(speech_like(1), SR, pb.PCM_S16LE, partials=False,
                              context=pb.ContextLists(contacts=["Zoe O'Brien"],
                                                      devices=["the lava lamp"]))
    assert grammar_ok([NAME(e.type) for e in recognize(api.stub, requests)])


def _good_call_still_works(stub: pb_grpc.EdgeAsrStub) -> None:
    events = recognize(stub, audio_requests(speech_like(1), SR, pb.PCM_S16LE, partials=False))
    assert grammar_ok([NAME(e.type) for e in events])


def _config(**kw: Any) -> pb.RecognizeRequest:
    return pb.RecognizeRequest(config=pb.RecognizeConfig(**{"sample_rate": SR,
                                                            "encoding": pb.PCM_S16LE, **kw}))


def _audio(data: bytes) -> pb.RecognizeRequest:
    return pb.RecognizeRequest(audio=data)


_SILENCE = bytes(640)  # 20 ms of PCM_S16LE
_NAN = np.array([0.0, np.nan, 0.0], "<f4").tobytes()
# int16-sized values sent as f32le: clipped, they would be noise or silence without a word
_LOUD = (burst(0.2, 200.0, SR) * 1000).astype("<f4").tobytes()
_HUGE = (burst(0.2, 200.0, SR) * 1e6).astype("<f4").tobytes()
BAD_INPUTS = {
    "rate 11025": ([_config(sample_rate=11025), _audio(_SILENCE)],
                   grpc.StatusCode.INVALID_ARGUMENT, "unsupported sample rate 11025 Hz"),
    "unknown encoding": ([_config(encoding=7), _audio(_SILENCE)],
                         grpc.StatusCode.INVALID_ARGUMENT, "unknown encoding 7"),
    "encoding not set": ([_config(encoding=pb.ENCODING_UNSPECIFIED)],
                         grpc.StatusCode.INVALID_ARGUMENT, "encoding is not set"),
    "NaN float32": ([_config(encoding=pb.F32LE), _audio(bytes(400)), _audio(_NAN)],
                    grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
    "float x1000": ([_config(encoding=pb.F32LE), _audio(_LOUD)],
                    grpc.StatusCode.INVALID_ARGUMENT, "must lie in [-1, 1]"),
    "float x1e6": ([_config(encoding=pb.F32LE), _audio(_HUGE)],
                   grpc.StatusCode.INVALID_ARGUMENT, "must lie in [-1, 1]"),
    "odd byte count": ([_config(), _audio(_SILENCE), _audio(bytes(3))],
                       grpc.StatusCode.INVALID_ARGUMENT, "3 bytes is not a whole number"),
    "audio before config": ([_audio(_SILENCE), _config()],
                            grpc.StatusCode.INVALID_ARGUMENT, "must be a RecognizeConfig"),
    "no message at all": ([], grpc.StatusCode.INVALID_ARGUMENT, "got nothing"),
    "a second config": ([_config(), _audio(_SILENCE), _config()],
                        grpc.StatusCode.INVALID_ARGUMENT, "only the first message"),
    "piece over 1 s": ([_config(), _audio(bytes(2 * int(1.5 * SR)))],
                       grpc.StatusCode.INVALID_ARGUMENT, "longer than the maximum of 1 s"),
    "message over 1 MiB": ([_config(), _audio(bytes((1 << 20) + 2))],
                           grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max"),
    "bad context entry": ([_config(context=pb.ContextLists(contacts=["Zoe", "?!"]))],
                          grpc.StatusCode.INVALID_ARGUMENT, "'?!'"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_is_refused_and_the_server_goes_on(api, name):
    requests, code, message = BAD_INPUTS[name]
    err = refused(api.stub, requests)
    assert err.code() == code, err
    assert message in err.details(), err.details()
    _good_call_still_works(api.stub)


def test_set_context(api):
    reply = api.stub.SetContext(pb.ContextLists(contacts=["Zoe O'Brien"], phrases=["a b"]))
    assert reply.entries == 2 and api.core.entries == 2
    with pytest.raises(grpc.RpcError) as err:
        api.stub.SetContext(pb.ContextLists(devices=["the lava lamp", "?!"]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "devices" in err.value.details() and "'?!'" in err.value.details()
    assert api.core.entries == 2  # the old context stays
    with pytest.raises(grpc.RpcError) as err:
        api.stub.SetContext(pb.ContextLists(contacts=["x" * 101]))
    assert "longer than 100 characters" in err.value.details()
    assert api.stub.SetContext(pb.ContextLists()).entries == 0


@pytest.mark.parametrize("how", ["cancel", "close the channel"])
def test_a_client_vanishing_mid_stream_leaves_the_server_serving(start, how):
    api = start()
    release = threading.Event()
    requests = audio_requests(speech_like(1), SR, pb.PCM_S16LE)

    def stalling() -> Iterator[pb.RecognizeRequest]:
        yield from requests[:12]  # into the burst, so the pipeline has an utterance open
        release.wait(30)

    channel = bearer_channel(f"127.0.0.1:{api.served.port}", api.served.server.tcp_token)
    call = pb_grpc.EdgeAsrStub(channel).Recognize(stalling(), timeout=60)
    try:
        first = next(call)
        assert first.type == pb.SPEECH_STARTED
        assert api.servicer.active_streams == 1
        if how == "cancel":
            call.cancel()
        else:
            channel.close()
        deadline = time.monotonic() + 10
        while api.servicer.active_streams and time.monotonic() < deadline:
            time.sleep(0.02)
        assert api.servicer.active_streams == 0
        assert api.servicer.counters["clients_vanished"] == 1
    finally:
        release.set()
        channel.close()
    _good_call_still_works(api.stub)
    assert api.stub.GetStatus(pb.GetStatusRequest()).counters["clients_vanished"] == 1


# -- Subscribe -----------------------------------------------------------------------------

def make_events(utterances: int, partials_each: int, text: str = "hello there"
                ) -> list[Event]:
    events = []
    for u in range(utterances):
        uid = f"mic-{u}"
        events.append(Event(EventType.SPEECH_STARTED, uid, u + 0.1, speech_start=u + 0.05))
        events += [Event(EventType.PARTIAL, uid, u + 0.2 + 0.01 * p, f"{text} {p}")
                   for p in range(partials_each)]
        lattice = build_lattice([LatticePath([WordArc("hello", 0.0, 0.3, -1.0),
                                              WordArc("there", 0.3, 0.6, -2.0, 0.5)])],
                                uid, 1, True, "test")
        events.append(Event(EventType.SPECULATIVE_ENDPOINT, uid, u + 0.7, text, revision=1,
                            nbest=[(text, -2.5)], lattice=lattice, reason="silence"))
        events.append(Event(EventType.CONFIRMED, uid, u + 0.9, text, revision=1,
                            nbest=[(text, -2.5)], reason="silence"))
    return events


def wait_for(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class Listener(threading.Thread):
    """A Subscribe client collecting everything until its stream ends."""

    def __init__(self, stub: pb_grpc.EdgeAsrStub, partials: bool = True,
                 start_reading: threading.Event | None = None) -> None:
        super().__init__(daemon=True)
        self.call = stub.Subscribe(pb.SubscribeRequest(partials=partials), timeout=60)
        self.start_reading = start_reading
        self.events: list[pb.Event] = []
        self.error: grpc.RpcError | None = None

    def run(self) -> None:
        if self.start_reading is not None:
            self.start_reading.wait(30)
        try:
            for event in self.call:
                self.events.append(event)
        except grpc.RpcError as e:
            self.error = e


def finals(events: list[Any]) -> list[tuple[str, str]]:
    names = [(NAME(e.type), e.utterance_id) if isinstance(e, pb.Event) else
             (e.type.name, e.utterance_id) for e in events]
    return [n for n in names if n[0] != "PARTIAL"]


def test_twenty_subscribers_receive_every_final(api):
    listeners = [Listener(api.stub) for _ in range(20)]
    for listener in listeners:
        listener.start()
    wait_for(lambda: api.core.bus.subscribers == 20)
    published = make_events(utterances=25, partials_each=4)
    for event in published:
        api.core.bus.publish(event)
    api.core.bus.close()  # the source ended: every stream ends with OK after its queue
    for listener in listeners:
        listener.join(30)
        assert not listener.is_alive() and listener.error is None, listener.error
        assert finals(listener.events) == finals(published)
        received_partials = sum(e.type == pb.PARTIAL for e in listener.events)
        dropped = sum(e.dropped_partials_before for e in listener.events)
        assert received_partials + dropped == 25 * 4
    spec = next(e for e in listeners[0].events if e.type == pb.SPECULATIVE_ENDPOINT)
    assert [w for w in spec.lattice.words] == ["hello", "there"]
    assert spec.nbest[0].text == "hello there" and spec.reason == "silence"


def test_a_slow_subscriber_loses_partials_but_no_finals(start):
    api = start(bus=EventBus(max_queue=8))
    go = threading.Event()
    slow = Listener(api.stub, start_reading=go)
    fast = Listener(api.stub, partials=False)
    slow.start()
    fast.start()
    wait_for(lambda: api.core.bus.subscribers == 2)
    # Long partials fill gRPC's flow-control windows, so the bus queue does fill up.
    published = make_events(utterances=40, partials_each=100, text="x" * 400)
    for event in published:
        api.core.bus.publish(event)
    go.set()
    api.core.bus.close()
    for listener in (slow, fast):
        listener.join(30)
        assert listener.error is None, listener.error
        assert finals(listener.events) == finals(published)
    dropped = sum(e.dropped_partials_before for e in slow.events)
    received = sum(e.type == pb.PARTIAL for e in slow.events)
    assert dropped > 0 and received + dropped == 40 * 100
    assert not any(e.type == pb.PARTIAL for e in fast.events)
    assert api.core.bus.dropped == dropped
    assert api.stub.GetStatus(pb.GetStatusRequest()).dropped_partials == dropped


def test_subscribe_ends_cleanly_when_the_server_stops(api):
    listeners = [Listener(api.stub) for _ in range(3)]
    for listener in listeners:
        listener.start()
    wait_for(lambda: api.core.bus.subscribers == 3)
    api.core.bus.publish(make_events(1, 0)[0])
    t0 = time.monotonic()
    assert api.served.server.stop(grace=5).wait(10)
    for listener in listeners:
        listener.join(10)
        assert listener.error is None and len(listener.events) == 1
    assert time.monotonic() - t0 < 3  # the streams ended at once, not after the grace
    assert api.core.bus.subscribers == 0


# -- health, reflection, status, listening -------------------------------------------------

def test_health_is_serving(api):
    stub = health_pb2_grpc.HealthStub(api.channel)
    for service in ("", SERVICE_NAME):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_describes_the_service(api):
    stub = reflection_pb2_grpc.ServerReflectionStub(api.channel)
    requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME)]
    listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
    assert described.file_descriptor_response.file_descriptor_proto


def test_status(api):
    status = api.stub.GetStatus(pb.GetStatusRequest())
    assert (status.model, status.model_version, status.source) == ("random-test", "test", "none")
    assert status.uptime_s == 1.25
    assert status.counters["audio_seconds"] == 0.0 and "recognize_calls" in status.counters


def test_unix_socket_has_mode_0660_and_serves(start):
    folder = tempfile.mkdtemp(prefix="edge-asr-")  # short: Unix socket paths are limited
    path = os.path.join(folder, "api.sock")
    try:
        api = start(unix=path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        assert api.stub.GetStatus(pb.GetStatusRequest(), timeout=10).model == "random-test"
        with pytest.raises(ServeError, match="already serving"):
            serve(api.core, path)
        api.served.server.stop(0).wait(10)
        assert not os.path.exists(path)
    finally:
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(folder)


def test_a_stale_socket_file_is_replaced(start):
    folder = tempfile.mkdtemp(prefix="edge-asr-")
    path = os.path.join(folder, "api.sock")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
            dead.bind(path)  # a daemon that died without removing its socket
        api = start(unix=path)
        assert api.stub.GetStatus(pb.GetStatusRequest(), timeout=10).model == "random-test"
    finally:
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(folder)


def test_streaming_calls_are_capped_and_unary_calls_still_answer(start):
    api = start(max_workers=10, max_recognize=1)  # two streaming calls, one Recognize
    release = threading.Event()

    def stalling() -> Iterator[pb.RecognizeRequest]:
        yield _config()
        release.wait(30)

    recognizing = api.stub.Recognize(stalling(), timeout=30)
    try:
        wait_for(lambda: api.servicer.active_streams == 1)
        err = refused(api.stub, [_config()])
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "at most 1 pushed streams" in err.details()
        listener = Listener(api.stub)
        listener.start()
        wait_for(lambda: api.core.bus.subscribers == 1)
        third = api.stub.Subscribe(pb.SubscribeRequest(), timeout=10)
        with pytest.raises(grpc.RpcError) as err:
            next(third)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "at most 2 streaming calls" in err.value.details()
        health = health_pb2_grpc.HealthStub(api.channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
        assert api.stub.GetStatus(pb.GetStatusRequest()).counters["streams_refused"] == 2
    finally:
        release.set()
        recognizing.cancel()
        api.core.bus.close()


@pytest.mark.parametrize("address, message", [
    ("0.0.0.0:0", "not a loopback address"), ("192.168.1.10:50051", "not a loopback"),
    ("example.com:50051", "not a loopback"), ("127.0.0.1", "is not HOST:PORT")])
def test_only_loopback_tcp(recognizer, address, message):
    with pytest.raises(ServeError, match=message):
        serve(FakeDaemon(recognizer), None, address)


def test_every_pipeline_event_type_has_a_wire_name():
    for t in EventType:
        assert NAME(event_to_proto(Event(t, "u", 0.0)).type) == t.name


# -- the bus on its own --------------------------------------------------------------------

def _partial(n: int) -> Event:
    return Event(EventType.PARTIAL, "u", float(n), f"p{n}")


def _final(n: int) -> Event:
    return Event(EventType.CONFIRMED, "u", float(n), f"f{n}")


def drain(sub) -> list[tuple[str, int]]:
    """(text, dropped_before) of everything queued now, up to the end of the subscription."""
    out = []
    with contextlib.suppress(SubscriptionClosed):
        while (d := sub.get(timeout=0)) is not None:
            out.append((d.event.text, d.dropped_before))
    return out


def test_bus_drops_the_oldest_partial_first_and_says_where():
    bus = EventBus(max_queue=3)
    sub = bus.subscribe()
    for event in (_partial(1), _final(1), _partial(2), _partial(3), _partial(4)):
        bus.publish(event)
    # p1 gave way to p3, then p2 to p4: f1 carries p1's drop, p3 carries p2's.
    assert drain(sub) == [("f1", 1), ("p3", 1), ("p4", 0)]
    assert sub.dropped == 2 and bus.dropped == 2


def test_bus_never_drops_finals_and_a_new_partial_gives_way_to_them():
    bus = EventBus(max_queue=2, max_backlog=100)
    sub = bus.subscribe()
    for n in range(1, 6):
        bus.publish(_final(n))
    bus.publish(_partial(1))  # nothing older may go: the new partial does
    bus.publish(_final(6))
    assert drain(sub) == [(f"f{n}", 0) for n in range(1, 6)] + [("f6", 1)]
    assert sub.over_bound == 4 and bus.over_bound == 4 and sub.dropped == 1


def test_bus_disconnects_a_subscriber_that_never_reads():
    bus = EventBus(max_queue=2, max_backlog=5)
    stuck, reader = bus.subscribe(), bus.subscribe(partials=False)
    for n in range(8):
        bus.publish(_final(n))
        assert reader.get(timeout=0) is not None
    with pytest.raises(SubscriptionClosed) as closed:
        stuck.get(timeout=0)
    assert closed.value.disconnected and "fell 5 final events behind" in closed.value.reason
    assert bus.subscribers == 1 and bus.disconnected == 1


def test_bus_close_delivers_what_is_queued_then_ends():
    bus = EventBus()
    sub, no_partials = bus.subscribe(), bus.subscribe(partials=False)
    bus.publish(_partial(1))
    bus.publish(_final(1))
    bus.close()
    assert drain(sub) == [("p1", 0), ("f1", 0)]
    assert drain(no_partials) == [("f1", 0)]
    for s in (sub, no_partials, bus.subscribe()):
        with pytest.raises(SubscriptionClosed, match="ended"):
            s.get(timeout=0)
    assert bus.subscribers == 0


def test_bus_close_of_a_subscription_wakes_its_reader():
    bus = EventBus()
    sub = bus.subscribe()
    result: list[BaseException] = []

    def read() -> None:
        try:
            sub.get(timeout=30)
        except SubscriptionClosed as e:
            result.append(e)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.05)
    sub.close()
    reader.join(5)
    assert result and bus.subscribers == 0
    bus.publish(_final(1))  # publishing to nobody is fine


def test_bus_subscribers_come_and_go_while_events_flow():
    bus = EventBus(max_queue=16)
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            while not stop.is_set():
                sub = bus.subscribe(partials=True)
                sub.get(timeout=0.001)
                sub.close()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    keeper = bus.subscribe(partials=False)
    threads = [threading.Thread(target=churn) for _ in range(3)]
    for t in threads:
        t.start()
    for n in range(2000):
        bus.publish(_partial(n) if n % 10 else _final(n))
    stop.set()
    for t in threads:
        t.join(5)
    assert not errors
    assert [text for text, _ in drain(keeper)] == [f"f{n}" for n in range(0, 2000, 10)]
    assert bus.subscribers == 1


# -- the playback reference ------------------------------------------------------------------

def _music_echo(seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """What the device plays, and its echo at the microphone (about -30 dBFS)."""
    from edge_asr.simulator.room import Playback, render_playback

    reference, echo = render_playback(Playback(kind="music", delay_ms=30),
                                      int(seconds * SR), np.random.default_rng(4))
    room = np.random.default_rng(5).standard_normal(len(echo)) * 3e-4
    return reference, (echo * 0.03 + room).astype(np.float32)


def _with_reference(mic: np.ndarray, reference: np.ndarray | None, piece_s: float = 0.1
                    ) -> list[pb.RecognizeRequest]:
    step = int(piece_s * SR)
    first = _config(partials=False, playback_reference=reference is not None)
    return [first] + [pb.RecognizeRequest(
        audio=encode(mic[i:i + step], pb.PCM_S16LE),
        reference=b"" if reference is None else encode(reference[i:i + step], pb.PCM_S16LE))
        for i in range(0, len(mic), step)]


def test_a_call_that_sends_its_playback_hears_no_speech_in_the_music(api):
    reference, mic = _music_echo(12.0)
    heard = recognize(api.stub, _with_reference(mic, None))
    assert any(e.type == pb.SPEECH_STARTED for e in heard)  # the music alone fools the VAD
    cancelled = recognize(api.stub, _with_reference(mic, reference))
    assert not any(e.type == pb.SPEECH_STARTED for e in cancelled)


def test_speech_over_the_playback_is_still_recognised(api):
    reference, mic = _music_echo(LEAD_S + BURST_S + GAP_S + 3.0)
    speech = np.zeros_like(mic)
    start = int(3.0 * SR)  # the canceller has heard the music for 3 s
    said = speech_like(1)
    speech[start:start + len(said)] = said[: len(speech) - start]
    events = recognize(api.stub, _with_reference(mic + speech, reference))
    assert grammar_ok([NAME(e.type) for e in events])
    begun = next(e for e in events if e.type == pb.SPEECH_STARTED)
    assert abs(begun.speech_start - (3.0 + LEAD_S)) < 0.2


def test_a_playback_reference_that_does_not_fit_is_refused_in_words(api):
    audio = bytes(3200)
    err = refused(api.stub, [_config(playback_reference=True),
                             pb.RecognizeRequest(audio=audio, reference=bytes(3198))])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "exactly as long as the audio (3200 bytes), got 3198" in err.details()
    err = refused(api.stub, [_config(), pb.RecognizeRequest(audio=audio, reference=audio)])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "did not ask for playback_reference" in err.details()
    err = refused(api.stub, [_config(playback_reference=True, encoding=pb.F32LE),
                             pb.RecognizeRequest(audio=bytes(12), reference=_NAN)])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("playback reference:")
    _good_call_still_works(api.stub)
    # an audio message without its reference: nothing played then
    events = recognize(api.stub, [_config(playback_reference=True, partials=False)]
                       + [pb.RecognizeRequest(audio=r.audio)
                          for r in audio_requests(speech_like(1), SR, pb.PCM_S16LE)[1:]])
    assert grammar_ok([NAME(e.type) for e in events])
