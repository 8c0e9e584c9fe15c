"""Property-based fuzzing of the daemon's client API with hypothesis: figures printed,
exit status 1 when it found a crash or a hang (tests/test_fuzz.py runs the same cases, a
few hundred, as a test).

    python bench/fuzz.py [--cases 10000] [--model models/rnnt-v4-int4] [--seed 0]

A real daemon (no audio source of its own, local-only) serves in this process on a Unix
socket, as `edge-asr daemon --source none` would. Each case is one call of an RPC:
Recognize streams (configs with any sample rate, encoding and context, including huge and
unicode strings; audio bytes of any length and content: noise, tones, silence, NaN,
infinities, odd byte counts, pieces over a second or over the message limit; configs out
of order, empty messages), SetContext lists, Subscribe flags, GetStatus, and for every RPC
raw bytes that may not parse at all. Every call must end within its deadline, and either
succeed or fail with a status from ALLOWED and a message saying why; a Recognize that
succeeds must close every utterance it started. After all cases the daemon must still
answer GetStatus with no stream left open.

Prints the cases run by RPC, their outcomes by status code, crashes (any other status, an
empty message, an utterance left open, the daemon not answering), hangs (a call past its
deadline) and the wall time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from edge_asr.daemon.api.proto import edge_asr_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "/edge_asr.v1.EdgeAsr/"
# What a refusal may say; "OK" and "OPEN" (a Subscribe stream that is still streaming when
# the fuzzer hangs up) are successes.
ALLOWED = {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "OUT_OF_RANGE"}
SUCCESS = {"OK", "OPEN"}
DEADLINE_S = 30.0
SUBSCRIBE_WAIT_S = 0.05  # a Subscribe refused is refused at once; past this it is open
RATES = [8000, 16000, 22050, 24000, 32000, 44100, 48000]
_REQUEST_TYPES = {"Recognize": pb.RecognizeRequest, "SetContext": pb.ContextLists,
                  "Subscribe": pb.SubscribeRequest, "GetStatus": pb.GetStatusRequest}
_RESPONSE_TYPES = {"Recognize": pb.Event, "SetContext": pb.SetContextReply,
                   "Subscribe": pb.Event, "GetStatus": pb.Status}


@dataclass(frozen=True)
class Call:
    """One call: `requests` are messages, or with `raw` the bytes sent as the messages."""

    rpc: str
    requests: tuple
    raw: bool = False

    def __repr__(self) -> str:  # what a failing case prints: sizes, not megabytes
        sizes = [len(r) if self.raw else r.ByteSize() for r in self.requests]
        kinds = ["raw" if self.raw else (r.WhichOneof("request") or "empty")
                 if self.rpc == "Recognize" else type(r).__name__ for r in self.requests]
        return f"Call({self.rpc}, {list(zip(kinds, sizes, strict=True))[:12]})"


# -- strategies ----------------------------------------------------------------------------

def weighted(*choices: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """One of the strategies, each `weight` times as likely (st.one_of draws each once)."""
    return st.sampled_from([s for weight, s in choices for _ in range(weight)]).flatmap(
        lambda s: s)


def _repeat(text: str, n: int) -> str:
    return (text or "x") * n


_plain = st.sampled_from(["Zoë O'Brien", "the lava lamp", "Ananya Krishnamurthy", "call",
                         "ok ok ok", "李小龙", "🎵 road trip", "Siobhan", "kitchen", "d'Artagnan"])
_texts = weighted(
    (6, _plain),
    (1, st.text(max_size=30)),  # any unicode but surrogates (protobuf strings are UTF-8)
    (1, st.sampled_from(["", " ", "\n", "\u0000", "\u202e\u200b", "?!", "a" * 101])),
    (1, st.text(min_size=95, max_size=105)),  # about the 100-character limit of an entry
    # huge: up to 0.3 M characters of up to 4 bytes, past the 16,000-character budget and
    # sometimes past the 1 MiB message limit
    (1, st.builds(_repeat, st.text(min_size=1, max_size=3), st.integers(1, 300_000))),
)


def _numbered(text: str, n: int) -> list[str]:
    return [f"{text} {i}" for i in range(n)]


_lists = weighted(
    (4, st.lists(_plain, max_size=4)),
    (2, st.lists(_texts, max_size=6)),
    # long address books: around the 1,000-contact and 200-entry limits
    (1, st.builds(_numbered, st.sampled_from(["Name", "the lamp", "ü"]),
                  st.integers(150, 1100))),
)
context_lists = st.builds(pb.ContextLists, contacts=_lists, devices=_lists, phrases=_lists)

sample_rates = st.one_of(st.sampled_from(RATES), st.sampled_from([0, 1, 7999, 96000]),
                         st.integers(0, 2**32 - 1))
encodings = st.one_of(st.sampled_from([0, 1, 2]), st.integers(-(2**31), 2**31 - 1))


def _recognize_config(rate: int, encoding: int, context: pb.ContextLists | None,
                      partials: bool) -> pb.RecognizeRequest:
    config = pb.RecognizeConfig(sample_rate=rate, encoding=encoding, partials=partials)
    if context is not None:
        config.context.CopyFrom(context)
    return pb.RecognizeRequest(config=config)


_SIGNALS = ("speech", "speech", "speech", "noise", "tone", "silence", "clipped", "nan", "inf",
            "bytes")
_SPEECH: list[np.ndarray] = []  # the bundled clips, read on first use


def _speech(rng: np.random.Generator, samples: int) -> np.ndarray:
    """A stretch of the bundled recordings (any clip, any offset), looped to length."""
    if not _SPEECH:
        from edge_asr.daemon.capture.audio import read_audio

        _SPEECH.extend(read_audio(p) for p in sorted((ROOT / "tests" / "data").glob("*.flac")))
    clip = _SPEECH[rng.integers(len(_SPEECH))]
    return np.resize(np.roll(clip, -rng.integers(len(clip))), samples)


def make_audio(signal: str, samples: int, encoding: str, seed: int) -> bytes:
    """Audio bytes from a seed (cheap to draw, however long): a signal in an encoding, or
    arbitrary bytes, which have any length."""
    rng = np.random.default_rng(seed)
    if signal == "bytes":
        return rng.bytes(samples)
    t = np.arange(samples) / 16000
    x = {"speech": lambda: _speech(rng, samples),
         "noise": lambda: rng.normal(0, 0.3, samples),
         "tone": lambda: 0.5 * np.sin(2 * np.pi * rng.uniform(50, 4000) * t),
         "silence": lambda: np.zeros(samples),
         "clipped": lambda: rng.choice([-1.0, 1.0], samples) * 4.0,
         "nan": lambda: np.where(rng.random(samples) < 0.01, np.nan, 0.1),
         "inf": lambda: np.where(rng.random(samples) < 0.01, np.inf, 0.1)}[signal]()
    if encoding == "f32":
        return x.astype("<f4").tobytes()
    return (np.clip(np.nan_to_num(x), -1, 1) * 32767).astype("<i2").tobytes()


_signals = st.sampled_from(_SIGNALS)
_encodings = st.sampled_from(["s16", "f32"])
_seeds = st.integers(0, 2**32 - 1)
audio_requests = st.builds(
    lambda audio: pb.RecognizeRequest(audio=audio),
    weighted(
        # up to half a second at 16 kHz: whole pieces at every rate
        (8, st.builds(make_audio, _signals, st.integers(0, 8000), _encodings, _seeds)),
        (1, st.binary(max_size=64)),
        # over a second, and over the 1 MiB message limit
        (1, st.builds(make_audio, _signals, st.integers(8001, 600_000), _encodings, _seeds))))
config_requests = st.builds(_recognize_config, sample_rates, encodings,
                            st.one_of(st.none(), context_lists), st.booleans())
# Mostly what a client means to send (a config, then audio), often not.
good_configs = st.builds(_recognize_config, st.sampled_from(RATES), st.sampled_from([1, 2]),
                         st.one_of(st.none(), context_lists), st.booleans())
empty_requests = st.just(pb.RecognizeRequest())


def _good_stream(config: pb.RecognizeRequest, signal: str, pieces: list[tuple[int, int]]
                 ) -> Call:
    """What a client means to send: a config, then whole pieces of plausible audio."""
    encoding = "f32" if config.config.encoding == pb.F32LE else "s16"
    return Call("Recognize", (config, *(pb.RecognizeRequest(
        audio=make_audio(signal, n, encoding, seed)) for n, seed in pieces)))


good_streams = st.builds(_good_stream, good_configs,
                         st.sampled_from(["speech", "speech", "noise", "tone", "silence"]),
                         st.lists(st.tuples(st.integers(0, 8000), _seeds), min_size=2,
                                  max_size=12))
any_streams = st.builds(
    lambda first, rest: Call("Recognize", (first, *rest)),
    weighted((6, good_configs), (2, config_requests), (1, audio_requests),
             (1, empty_requests)),
    st.lists(weighted((12, audio_requests), (1, config_requests), (1, empty_requests)),
             max_size=6))
recognize_calls = weighted((1, good_streams), (1, any_streams))
set_context_calls = st.builds(lambda c: Call("SetContext", (c,)), context_lists)
subscribe_calls = st.builds(lambda p: Call("Subscribe", (pb.SubscribeRequest(partials=p),)),
                            st.booleans())
get_status_calls = st.just(Call("GetStatus", (pb.GetStatusRequest(),)))
raw_calls = st.builds(
    lambda rpc, pieces: Call(rpc, tuple(pieces if rpc == "Recognize" else pieces[:1]), True),
    st.sampled_from(list(_REQUEST_TYPES)), st.lists(st.binary(max_size=200), min_size=1,
                                                    max_size=4))
calls = weighted((5, recognize_calls), (2, set_context_calls), (1, subscribe_calls),
                 (1, get_status_calls), (1, raw_calls))


# -- running one call ----------------------------------------------------------------------

@dataclass
class Outcome:
    call: str  # the RPC, "raw " before it for raw bytes
    code: str  # "OK", "OPEN" or a status code's name
    details: str
    seconds: float
    events: int = 0
    unclosed: list[str] = field(default_factory=list)  # utterances started, never closed

    @property
    def verdict(self) -> str:
        if self.code == "DEADLINE_EXCEEDED":
            return "hang"
        if self.code in SUCCESS:
            return "crash" if self.unclosed else "ok"
        return "ok" if self.code in ALLOWED and self.details.strip() else "crash"


def _method(channel: grpc.Channel, call: Call) -> Any:
    request = _REQUEST_TYPES[call.rpc]
    serialize = (lambda b: b) if call.raw else request.SerializeToString
    deserialize = _RESPONSE_TYPES[call.rpc].FromString
    make = {"Recognize": channel.stream_stream, "Subscribe": channel.unary_stream}.get(
        call.rpc, channel.unary_unary)
    return make(SERVICE + call.rpc, request_serializer=serialize,
                response_deserializer=deserialize)


def run_case(channel: grpc.Channel, call: Call, deadline_s: float = DEADLINE_S) -> Outcome:
    name = ("raw " if call.raw else "") + call.rpc
    method = _method(channel, call)
    start = time.monotonic()
    events: list[pb.Event] = []
    try:
        if call.rpc == "Recognize":
            events = list(method(iter(call.requests), timeout=deadline_s))
        elif call.rpc == "Subscribe":
            return _subscribe(method, call, name, start, deadline_s)
        else:
            method(call.requests[0], timeout=deadline_s)
    except grpc.RpcError as e:
        return Outcome(name, e.code().name, e.details() or "", time.monotonic() - start,
                       len(events))
    return Outcome(name, "OK", "", time.monotonic() - start, len(events), _unclosed(events))


def _subscribe(method: Any, call: Call, name: str, start: float, deadline_s: float
               ) -> Outcome:
    """A daemon without a source never ends a subscription: one refused ends at once, one
    still running after SUBSCRIBE_WAIT_S is open, and is hung up on."""
    stream = method(call.requests[0], timeout=deadline_s)
    done = threading.Event()
    stream.add_done_callback(lambda _: done.set())
    if not done.wait(SUBSCRIBE_WAIT_S):
        stream.cancel()
        return Outcome(name, "OPEN", "", time.monotonic() - start)
    code = stream.code()
    return Outcome(name, code.name, stream.details() or "", time.monotonic() - start)


def _unclosed(events: list[pb.Event]) -> list[str]:
    open_ids: dict[str, None] = {}
    for e in events:
        if e.type == pb.SPEECH_STARTED:
            open_ids[e.utterance_id] = None
        elif e.type in (pb.RESCORED, pb.ON_DEVICE_FINAL):
            open_ids.pop(e.utterance_id, None)
    return list(open_ids)


def still_serving(channel: grpc.Channel, settle_s: float = 10.0) -> tuple[bool, str]:
    """Whether the daemon answers GetStatus with no stream left open (hung-up subscriptions
    take a moment to be noticed); and what it said."""
    get = channel.unary_unary(SERVICE + "GetStatus",
                              request_serializer=pb.GetStatusRequest.SerializeToString,
                              response_deserializer=pb.Status.FromString)
    end = time.monotonic() + settle_s
    while True:
        try:
            status = get(pb.GetStatusRequest(), timeout=10)
        except grpc.RpcError as e:
            return False, f"GetStatus failed: {e.code().name} {e.details()}"
        streams = int(status.counters["streams_active"])
        said = f"subscribers {status.subscribers}, streams open {streams}"
        if (status.subscribers == 0 and streams == 0) or time.monotonic() > end:
            return status.subscribers == 0 and streams == 0, said
        time.sleep(0.1)


# -- the daemon under test -----------------------------------------------------------------

class ServedDaemon:
    """A daemon without a source of its own serving on a Unix socket in a temporary folder
    (short: socket paths are limited), and a channel to it."""

    def __init__(self, model_dir: Path | str) -> None:
        from edge_asr.daemon.api.config import DaemonConfig, SourceConfig
        from edge_asr.daemon.api.server import serve
        from edge_asr.daemon.api.service import Daemon
        from edge_asr.daemon.recognition.recognizer import RecognizerConfig

        self.folder = tempfile.mkdtemp(prefix="edge-asr-fuzz-")
        self.socket = os.path.join(self.folder, "api.sock")
        config = DaemonConfig(recognizer=RecognizerConfig(model_dir=model_dir),
                              source=SourceConfig(kind="none"), local_only=True)
        config.server.socket = self.socket
        self.daemon = Daemon(config)
        self.served = serve(self.daemon, self.socket)
        self.channel = grpc.insecure_channel(f"unix:{self.socket}")

    def close(self) -> None:
        self.channel.close()
        self.served.server.stop(0).wait(10)
        self.daemon.stop()
        os.rmdir(self.folder)


# -- the bench -----------------------------------------------------------------------------

def fuzz(channel: grpc.Channel, cases: int, seed: int) -> list[Outcome]:
    outcomes: list[Outcome] = []

    @hypothesis_seed(seed)
    @settings(max_examples=cases, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(call=calls)
    def one(call: Call) -> None:
        outcome = run_case(channel, call)
        outcomes.append(outcome)
        if outcome.verdict != "ok":
            print(f"  {outcome.verdict}: {call!r} -> {outcome.code} {outcome.details[:200]!r}"
                  f"{' unclosed ' + str(outcome.unclosed) if outcome.unclosed else ''}",
                  flush=True)
        if len(outcomes) % 1000 == 0:
            print(f"  {len(outcomes)} cases", flush=True)

    one()
    return outcomes


def report(outcomes: list[Outcome], serving: tuple[bool, str], wall_s: float,
           model: str, seed: int) -> None:
    verdicts = Counter(o.verdict for o in outcomes)
    print(f"\nfuzzed {len(outcomes)} cases in {wall_s:.1f} s (model {model}, seed {seed})")
    print("by call: " + ", ".join(f"{k} {v}" for k, v in Counter(
        o.call for o in outcomes).most_common()))
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in Counter(
        o.code for o in outcomes).most_common()))
    for call, _ in Counter(o.call for o in outcomes).most_common():
        codes = Counter(o.code for o in outcomes if o.call == call)
        print(f"  {call}: " + ", ".join(f"{k} {v}" for k, v in codes.most_common()))
    slowest = max(outcomes, key=lambda o: o.seconds)
    print(f"slowest call: {slowest.call} {slowest.seconds:.2f} s ({slowest.code}); "
          f"Recognize events {sum(o.events for o in outcomes)}")
    print(f"crashes {verdicts['crash']}, hangs {verdicts['hang']}; daemon still answers "
          f"GetStatus: {'yes' if serving[0] else 'NO'} ({serving[1]})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=10_000)
    p.add_argument("--model", default=str(ROOT / "models" / "rnnt-v4-int4"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    served = ServedDaemon(args.model)
    try:
        t0 = time.monotonic()
        outcomes = fuzz(served.channel, args.cases, args.seed)
        wall = time.monotonic() - t0
        serving = still_serving(served.channel)
    finally:
        served.close()
    report(outcomes, serving, wall, Path(args.model).name, args.seed)
    bad = sum(o.verdict != "ok" for o in outcomes)
    sys.exit(0 if bad == 0 and serving[0] else 1)


if __name__ == "__main__":
    main()
