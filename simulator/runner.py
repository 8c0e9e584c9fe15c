"""Plays a scenario against a real daemon and a real cloud, and scores what clients saw.

One run:
  1. the room renders the microphone signal and the ground truth (simulator/room.py);
  2. `edge-asr cloud` starts in its own process, behind the network emulator;
  3. `edge-asr daemon` starts in its own process (pinned to the device profile's cores,
     a music player beside it when asked) and plays the signal as its microphone;
  4. this process is the client: it sets the context, subscribes, and stamps every event
     with the wall time it arrived, until the daemon has played everything and exits;
  5. the daemon's utterances are matched to the requests by time and scored with the same
     definitions as `edge-asr eval` (models/evaluate.py `summarize`); with a wake word or
     other speech in the room, its WAKE_WORD events and what it made of speech nobody
     addressed to it are counted too (simulator/addressed.py).

User-perceived latency is the time from the end of a request's speech to the arrival, at
the client, of its RESCORED (or ON_DEVICE_FINAL) event. It needs the audio to be paced in
real time, so accelerated runs leave it out.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import soundfile as sf

from edge_asr.daemon.api.client import start_cloud, wait_for_socket
from edge_asr.daemon.api.proto import edge_asr_pb2, edge_asr_pb2_grpc
from edge_asr.daemon.recognition.recognizer import DEFAULT_MODEL_DIR
from edge_asr.daemon.text import normalize_text
from edge_asr.models.augment import SAMPLE_RATE
from edge_asr.models.evaluate import names_in, summarize, word_error_rate
from edge_asr.simulator.addressed import addressed_figures, mark_wakes, non_addressed
from edge_asr.simulator.netem import NetworkEmulator
from edge_asr.simulator.process_stats import process_cpu_seconds
from edge_asr.simulator.room import Request, Session, render_session
from edge_asr.simulator.scenario import REPO_ROOT, Scenario

_E = edge_asr_pb2.EventType
_RESULTS = (_E.RESCORED, _E.ON_DEVICE_FINAL)
_DECISIONS = (_E.CONFIRMED, _E.FINAL_ENDPOINT)
_MAX_CONTEXT = 1400  # what SetContext accepts


@dataclass
class ReceivedEvent:
    kind: str
    utterance_id: str
    audio_time: float
    arrived: float  # wall time (time.time()) when the client received it
    text: str = ""
    revision: int = 0
    reason: str = ""
    lattice_bytes: int = 0
    speech_start: float | None = None
    intent: str = ""
    score: float = 0.0  # on WAKE_WORD


@dataclass
class Utterance:
    """What the daemon made of one stretch of speech: its events, by kind."""

    id: str
    events: list[ReceivedEvent] = field(default_factory=list)

    def first(self, *kinds: str) -> ReceivedEvent | None:
        return next((e for e in self.events if e.kind in kinds), None)

    @property
    def start(self) -> float:
        e = self.first("SPEECH_STARTED")
        if e is not None and e.speech_start is not None:
            return e.speech_start
        return self.events[0].audio_time

    @property
    def end(self) -> float:
        decision = self.first("CONFIRMED", "FINAL_ENDPOINT")
        return decision.audio_time if decision else self.events[-1].audio_time


@dataclass
class RunResult:
    scenario: str
    speculative: bool
    realtime: bool
    duration: float
    rows: list[dict]  # one per request: eval's keys plus the simulator's
    summary: dict
    events: list[ReceivedEvent]
    network: dict
    daemon_exit: int
    wake_word: str = ""  # the phrase the daemon listened for; "" = none
    non_addressed: list[dict] = field(default_factory=list)  # addressed.non_addressed rows


class ScenarioClock:
    """The scenario's time, for the network emulator's outage windows: the audio time of the
    latest event, running on with the wall clock when the audio is paced in real time."""

    def __init__(self, realtime: bool) -> None:
        self.realtime = realtime
        self._audio, self._wall = 0.0, time.monotonic()
        self._lock = threading.Lock()

    def observe(self, audio_time: float) -> None:
        with self._lock:
            if audio_time >= self._audio:
                self._audio, self._wall = audio_time, time.monotonic()

    def __call__(self) -> float:
        with self._lock:
            if self.realtime:
                return self._audio + time.monotonic() - self._wall
            return self._audio


def _context(requests: list[Request], extra: list[str]) -> edge_asr_pb2.ContextLists:
    """One context for the session: the scenario's contacts and every request's entries,
    each under the kind its manifest gave, without repeats, at most SetContext's limit."""
    by_kind: dict[str, list[str]] = {"contacts": list(extra), "devices": [], "phrases": []}
    for r in requests:
        for kind, names in r.context.items():
            by_kind[kind] += names
    seen: set[str] = set()
    room = _MAX_CONTEXT
    for kind, names in by_kind.items():
        kept = [n for n in dict.fromkeys(names) if n not in seen][:room]
        seen.update(kept)
        room -= len(kept)
        by_kind[kind] = kept
    return edge_asr_pb2.ContextLists(**by_kind)


def _daemon_toml(scenario: Scenario, wav: Path, socket: str, cloud: str,
                 speculative: bool, reference: Path | None = None) -> str:
    dev = scenario.device
    model = dev.model or str(DEFAULT_MODEL_DIR)
    endpoint = dataclasses.replace(scenario.endpoint, speculative=speculative)
    link = dataclasses.replace(scenario.link, address=cloud)
    aec = dev.echo_cancellation and reference is not None  # nothing to cancel without one

    def table(name: str, values: dict) -> str:  # TOML has no null: None is the default
        return f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()
                                       if v is not None)

    return "\n".join([
        f"vad_level_gate = {json.dumps(dev.vad_level_gate)}\n",
        table("recognizer", {"model_dir": model, "decoding_method": dev.decoding,
                             "beam": dev.beam, "context_beam": dev.context_beam,
                             "threads": dev.threads}),
        table("endpoint", dataclasses.asdict(endpoint)),
        # the reference (what the device played) starts with the microphone's first sample
        table("source", {"kind": "files", "files": [str(wav)], "realtime": scenario.realtime,
                         "gap_s": 0.0, "wait_for_subscriber": True,
                         "reference": str(reference) if aec else ""}),
        table("frontend", {"echo_cancellation": aec,
                           "echo_canceller": dev.echo_canceller,
                           "noise_suppression": dev.noise_suppression}),
        table("server", {"socket": socket}),
        table("cloud", dataclasses.asdict(link)),
        # without it the daemon recognises all it hears, the phrase included
        table("wake_word", dataclasses.asdict(scenario.wake_word)
              if scenario.listens_for_wake_word else {"phrase": ""}),
    ])


def _received(event) -> ReceivedEvent:
    return ReceivedEvent(
        kind=_E.Name(event.type), utterance_id=event.utterance_id,
        audio_time=event.audio_time, arrived=time.time(), text=event.text,
        revision=event.revision, reason=event.reason,
        lattice_bytes=event.lattice.ByteSize() if event.HasField("lattice") else 0,
        speech_start=event.speech_start if event.HasField("speech_start") else None,
        intent=event.intent.name, score=event.score)


def _listen(socket: str, context: edge_asr_pb2.ContextLists, clock: ScenarioClock,
            daemon: subprocess.Popen) -> tuple[list[ReceivedEvent], float]:
    """Set the context, then collect every event until the daemon closes the stream.
    Returns the events and the daemon's CPU seconds when it began to serve."""
    if not wait_for_socket(daemon, socket, timeout=60):
        raise RuntimeError(f"the daemon did not start (exit status {daemon.poll()})")
    cpu_at_start = process_cpu_seconds(daemon.pid)
    events = []
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        stub = edge_asr_pb2_grpc.EdgeAsrStub(channel)
        stub.SetContext(context, timeout=60, wait_for_ready=True)
        for event in stub.Subscribe(edge_asr_pb2.SubscribeRequest(partials=True)):
            clock.observe(event.audio_time)
            if event.type != _E.PARTIAL:
                events.append(_received(event))
    return events, cpu_at_start


def _reap(proc: subprocess.Popen, timeout: float) -> tuple[int, os.struct_rusage]:
    """Wait for `proc` to exit (killing it after `timeout`) and return its exit status and
    its resource usage: the CPU time of the whole run, counted by the kernel."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage
        if time.monotonic() > deadline:
            proc.kill()
            deadline = math.inf
        time.sleep(0.05)


def group_utterances(events: list[ReceivedEvent]) -> list[Utterance]:
    """The events of each utterance; a WAKE_WORD stands alone (its id is its own), and
    notices about the source (AUDIO_OVERRUN, SOURCE_LOST ...: no utterance id) belong to
    no utterance."""
    by_id: dict[str, Utterance] = {}
    for e in events:
        if e.kind == "WAKE_WORD" or not e.utterance_id:
            continue
        by_id.setdefault(e.utterance_id, Utterance(e.utterance_id)).events.append(e)
    return sorted(by_id.values(), key=lambda u: u.start)


@dataclass
class Matching:
    owned: dict[int, list[Utterance]]  # utterances whose words count for the request
    covering: dict[int, list[Utterance]]  # every utterance that overlaps it
    spurious: list[Utterance]  # utterances that overlap no request (noise taken for speech)


def match(requests: list[Request], utterances: list[Utterance], slack: float = 0.5) -> Matching:
    """Each daemon utterance's words go to the request its speech overlaps most (within
    `slack` seconds of it). An utterance that runs over several requests (in babble the VAD
    may hear speech throughout) also covers the others: they were heard, merged into it.
    A request spans its wake phrase too, which a daemon without the wake word hears as
    words (and may end an utterance after)."""
    owned: dict[int, list[Utterance]] = {r.index: [] for r in requests}
    covering: dict[int, list[Utterance]] = {r.index: [] for r in requests}
    spurious = []
    for u in utterances:
        best, best_overlap = None, 0.0
        for r in requests:
            overlap = min(u.end, r.speech_end + slack) - max(u.start, r.start - slack)
            if overlap > 0:
                covering[r.index].append(u)
            if overlap > best_overlap:
                best, best_overlap = r, overlap
        if best is None:
            spurious.append(u)
        else:
            owned[best.index].append(u)
    return Matching(owned, covering, spurious)


def score_request(r: Request, owned: list[Utterance], covering: list[Utterance],
                  wall_offset: float | None, phrase_in_reference: bool = False) -> dict:
    """One request's row, with eval's keys and definitions (see models/evaluate.py). A
    request merged into another's utterance has no words of its own; its end-points and
    result are those of the utterance that swallowed it. With `phrase_in_reference` (a wake
    phrase said to a daemon that does not wait for it) the phrase is among the words it
    should hear."""
    reference = normalize_text(r.said if phrase_in_reference else r.text)
    timed = owned or covering
    decisions = [u.first(*(_E.Name(k) for k in _DECISIONS)) for u in timed]
    results = [u.first(*(_E.Name(k) for k in _RESULTS)) for u in timed]
    hypothesis = normalize_text(" ".join(
        d.text for u, d in zip(timed, decisions, strict=True) if d and d.text and u in owned))
    delivered = normalize_text(" ".join(
        x.text for u, x in zip(timed, results, strict=True) if x and x.text and u in owned))
    spec = timed[0].first("SPECULATIVE_ENDPOINT") if timed else None
    spoken = names_in(reference, r.context_names)
    perceived = None
    if wall_offset is not None and results and results[-1] is not None:
        # the request's answer is complete when its last utterance's result arrives
        perceived = results[-1].arrived - (r.speech_end + wall_offset)
    rescored = all(x is not None and x.kind == "RESCORED" for x in results) and bool(results)
    return {
        "index": r.index, "audio_filepath": r.source, "text": reference,
        "utterance_ids": [u.id for u in timed],  # the daemon utterances behind this row
        "hypothesis": hypothesis,
        "rescored": delivered if rescored else None,
        "delivered": delivered,
        "speculative_endpoint": spec.audio_time if spec else None,
        "final_endpoint": decisions[0].audio_time if decisions and decisions[0] else None,
        "reset": any(u.first("RESET") for u in owned),
        "lattice_bytes": sum(e.lattice_bytes for u in owned for e in u.events),
        "utterances": len(owned),
        "cpu_seconds": 0.0,  # the daemon's CPU is measured for the whole session
        "duration": round(r.speech_end - r.speech_start, 3),
        "speech_start": round(r.speech_start, 3), "speech_end": round(r.speech_end, 3),
        "phrase_start": None if r.phrase_start is None else round(r.phrase_start, 3),
        "phrase_end": None if r.phrase_end is None else round(r.phrase_end, 3),
        "tags": r.tags,
        "context_names": spoken,
        "context_names_recognized": [n for n in spoken if names_in(hypothesis, [n])],
        "result_kinds": [x.kind if x else None for x in results],
        "result_reasons": [x.reason for x in results if x and x.reason],
        "intent": next((x.intent for x in results if x and x.intent), ""),
        "missed": not timed,
        "merged": not owned and bool(covering),
        "lost": any(x is None for x in results),
        "perceived_latency": None if perceived is None else round(perceived, 3),
    }


def wall_offset(events: list[ReceivedEvent]) -> float:
    """Wall time minus audio time for the stream: the smallest difference seen is the one
    with the least processing and delivery lag."""
    return min(e.arrived - e.audio_time for e in events)


def run_once(scenario: Scenario, session: Session, wav: Path, speculative: bool,
             log=print, reference: Path | None = None) -> RunResult:
    with tempfile.TemporaryDirectory(prefix="edge-asr-sim-") as tmp:
        clock = ScenarioClock(scenario.realtime)
        lm = scenario.cloud.lm or str(REPO_ROOT / "models" / "cloud-lm")
        cloud_args = ["--nlu-cost-ms", str(scenario.cloud.nlu_cost_ms),
                      "--slow-ms", str(scenario.cloud.slow_ms)]
        cloud, cloud_address = start_cloud(Path(lm), extra_args=cloud_args)
        netem = NetworkEmulator(cloud_address, scenario.network, clock, seed=scenario.seed)
        player = daemon = None
        try:
            device_address = netem.start()
            socket = os.path.join(tmp, "daemon.sock")
            config = Path(tmp) / "daemon.toml"
            config.write_text(_daemon_toml(scenario, wav, socket, device_address, speculative,
                                           reference))
            cores = set(scenario.device.cores)
            if scenario.device.music_load:
                player = subprocess.Popen(
                    [sys.executable, "-m", "edge_asr.simulator.cpu_load", "--load",
                     str(scenario.device.music_load), "--core", str(min(cores))])
            daemon = subprocess.Popen(
                [sys.executable, "-m", "edge_asr.daemon.cli", "daemon", "--config", str(config)],
                preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)
            log(f"  daemon pid {daemon.pid}, cloud {cloud_address} behind {device_address}"
                f", speculation {'on' if speculative else 'off'}")
            events, cpu_at_start = _listen(socket, _context(session.requests,
                                                           scenario.utterances.contacts),
                                           clock, daemon)
            _, usage = _reap(daemon, timeout=60.0)
            cpu = usage.ru_utime + usage.ru_stime - cpu_at_start
        finally:
            for proc in (daemon, player, cloud):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=10)
            netem.stop()
    utterances = group_utterances(events)
    matching = match(session.requests, utterances)
    offset = wall_offset(events) if scenario.realtime and events else None
    listening = scenario.listens_for_wake_word
    rows = [score_request(r, matching.owned[r.index], matching.covering[r.index], offset,
                          phrase_in_reference=not listening)
            for r in session.requests]
    wakes = [e for e in events if e.kind == "WAKE_WORD"]
    if listening:
        mark_wakes(rows, session.requests, wakes)
    others = non_addressed(matching.spurious, session.others)
    summary = dataclasses.asdict(summarize(rows))
    summary["rtf"] = round(cpu / session.duration, 4)
    summary["daemon_cpu_seconds"] = round(cpu, 2)
    # utterances over another source's speech are counted as that, not as noise
    summary.update(_simulator_figures(rows, matching.spurious, len(others)))
    summary.update(addressed_figures(rows, session.requests, wakes, others, session.duration,
                                     listening, bool(scenario.room.other_speech)))
    if offset is not None:
        # how far behind the audio the daemon's decisions reach the client: CPU contention
        # and a slow device show here first
        lags = [e.arrived - offset - e.audio_time for e in events
                if e.kind in ("CONFIRMED", "FINAL_ENDPOINT")]
        summary["decision_lag_p50"] = _median(lags)
        summary["decision_lag_p90"] = round(float(np.percentile(lags, 90)), 3) if lags else None
    return RunResult(scenario.name, speculative, scenario.realtime, session.duration, rows,
                     summary, events, dataclasses.asdict(netem.stats), daemon.returncode,
                     scenario.wake_word.phrase if listening else "", others)


def _median(values: list[float]) -> float | None:
    return round(float(np.median(values)), 3) if values else None


def _simulator_figures(rows: list[dict], spurious: list[Utterance],
                       over_other_speech: int = 0) -> dict:
    perceived = [r["perceived_latency"] for r in rows if r["perceived_latency"] is not None]
    kinds = [k for r in rows for k in r["result_kinds"] if k]
    return {
        # what the user got, whether the cloud rescored it or the device answered alone
        "delivered_wer": word_error_rate([r["text"] for r in rows],
                                         [r["delivered"] for r in rows]),
        "lost": sum(r["lost"] for r in rows),
        "missed": sum(r["missed"] for r in rows),
        "merged": sum(r["merged"] for r in rows),
        "spurious": len(spurious) - over_other_speech,
        "rescored_results": kinds.count("RESCORED"),
        "on_device_finals": kinds.count("ON_DEVICE_FINAL"),
        "perceived_p50": _median(perceived),
        "perceived_p90": round(float(np.percentile(perceived, 90)), 3) if perceived else None,
    }


def run_scenario(scenario: Scenario, out_dir: Path, log=print) -> list[RunResult]:
    """Renders the session once, plays it (twice when comparing speculation on and off),
    and writes the session audio, its ground truth and the results under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    session = render_session(scenario.utterances, scenario.room, scenario.base, scenario.seed,
                             wake_phrase=scenario.wake_word.phrase.strip())
    wav = out_dir / "session.wav"
    sf.write(wav, session.samples, SAMPLE_RATE, subtype="PCM_16")
    with open(out_dir / "timeline.jsonl", "w") as f:  # the ground truth, labelled
        for row in session.timeline():
            f.write(json.dumps(row) + "\n")
    reference = None
    if session.reference is not None:  # what the device played, for its echo canceller
        reference = out_dir / "reference.wav"
        sf.write(reference, session.reference, SAMPLE_RATE, subtype="PCM_16")
    log(f"{scenario.name}: {len(session.requests)} requests, {session.duration:.1f} s of audio"
        f" ({'real time' if scenario.realtime else 'accelerated'})"
        + (f", {len(session.others)} sentences not addressed to the device"
           if session.others else "")
        + (f", wake word {scenario.wake_word.phrase!r}"
           f"{'' if scenario.listens_for_wake_word else ' said, not listened for'}"
           if scenario.wake_word.enabled else ""))
    runs = []
    for speculative in ([True, False] if scenario.compare_speculation else [True]):
        result = run_once(scenario, session, wav, speculative, log, reference)
        runs.append(result)
        name = "results" if speculative else "results-no-speculation"
        with open(out_dir / f"{name}.jsonl", "w") as f:
            for row in result.rows:
                f.write(json.dumps(row) + "\n")
        with open(out_dir / f"{name}-events.jsonl", "w") as f:
            for e in result.events:
                f.write(json.dumps(dataclasses.asdict(e)) + "\n")
        if session.others:
            with open(out_dir / f"{name}-non-addressed.jsonl", "w") as f:
                for row in result.non_addressed:
                    f.write(json.dumps(row) + "\n")
    return runs
