"""The recognition pipeline of one audio stream: VAD, recognizer, end-pointers, lattices.

It is driven by pushing 16 kHz audio (`accept`) and returns the events that audio caused,
in the order of ARCHITECTURE.md, "Events and the two end-pointers". It has no threads and
no I/O, so the daemon's worker thread, a gRPC `Recognize` call and `edge-asr eval` all run
exactly this code.

While nobody speaks, only the VAD runs. When the end-pointer hears speech start, a fresh
recognizer stream is opened and fed from a little before the onset (kept in a short
history), so every utterance is decoded from clean state with the context that applies
to it; when the final end-point fires the stream is dropped.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.endpointing.endpoint import (
    EndpointConfig,
    Endpointer,
    EndpointEvent,
    EventKind,
)
from edge_asr.daemon.frontend.vad import Vad
from edge_asr.daemon.recognition.hypotheses import hypothesis_path, stable_prefix
from edge_asr.daemon.recognition.name_rescue import whole_word_bias
from edge_asr.daemon.recognition.recognizer import Context, OnlineStream, Recognizer
from edge_asr.daemon.uplink.lattice import Lattice, build_lattice


class EventType(Enum):
    SPEECH_STARTED = "SPEECH_STARTED"
    PARTIAL = "PARTIAL"
    SPECULATIVE_ENDPOINT = "SPECULATIVE_ENDPOINT"
    CONFIRMED = "CONFIRMED"
    RESET = "RESET"
    FINAL_ENDPOINT = "FINAL_ENDPOINT"
    RESCORED = "RESCORED"
    ON_DEVICE_FINAL = "ON_DEVICE_FINAL"

    @property
    def is_final(self) -> bool:
        """Events that close or revise an utterance: never dropped on the way to a client."""
        return self is not EventType.PARTIAL

    @property
    def closes_utterance(self) -> bool:
        """The last event of every utterance (ARCHITECTURE.md, "Events and the two
        end-pointers")."""
        return self in (EventType.RESCORED, EventType.ON_DEVICE_FINAL)


@dataclass
class Event:
    type: EventType
    utterance_id: str
    audio_time: float  # stream seconds at which the decision was taken
    text: str = ""
    stable_prefix: str = ""
    revision: int = 0
    nbest: list[tuple[str, float]] = field(default_factory=list)  # (text, score) best first
    lattice: Lattice | None = None
    reason: str = ""
    speech_start: float | None = None  # stream seconds of the utterance's first speech
    wall_time: float = field(default_factory=time.time)
    intent: str = ""  # on RESCORED: what the cloud's NLU made of the best path
    slots: dict[str, str] = field(default_factory=dict)


@dataclass
class PipelineConfig:
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    vad_mode: int = 2
    vad_frame_ms: int = 30
    vad_noise_gate_db: float = 3.0  # see daemon/frontend/vad.py
    vad_level_gate: float = 0.4  # see daemon/frontend/vad.py (level_gate)
    preroll_s: float = 0.3  # audio before the detected onset fed to the new stream
    partials: bool = True
    model_version: str = ""


_ids = itertools.count(1)


class Pipeline:
    def __init__(self, recognizer: Recognizer, config: PipelineConfig | None = None,
                 source: str = "mic") -> None:
        self.recognizer = recognizer
        self.config = config or PipelineConfig()
        endpoint = self.config.endpoint
        if abs(endpoint.vad_frame_s - self.config.vad_frame_ms / 1000) > 1e-9:
            endpoint = EndpointConfig(**{**endpoint.__dict__,
                                         "vad_frame_s": self.config.vad_frame_ms / 1000})
        self.endpointer = Endpointer(endpoint)
        self.vad = Vad(self.config.vad_mode, self.config.vad_frame_ms,
                       self.config.vad_noise_gate_db, level_gate=self.config.vad_level_gate)
        self.source = source
        self._context: Context | None = None
        self._next_context: Context | None = None
        self._history: deque[np.ndarray] = deque()
        self._history_samples = 0
        self._samples_seen = 0
        self._stream: OnlineStream | None = None
        self._stream_start = 0.0  # stream seconds where the recognizer stream begins
        self._utterance_id = ""
        self._last_partial = ""
        self._speculative: list[tuple[str, float]] | None = None
        self.utterances = 0

    # ---------------------------------------------------------------- public API

    def set_context(self, context: Context | None) -> None:
        """Applies from the next utterance on (the open one keeps its graph)."""
        self.recognizer.context_graph(context)  # validate now: a bad context fails here
        self._next_context = context

    @property
    def now(self) -> float:
        return self._samples_seen / SAMPLE_RATE

    def accept(self, samples: np.ndarray) -> list[Event]:
        self._samples_seen += samples.size
        self._remember(samples)
        events: list[Event] = []
        flags = self.vad.process(samples)
        if self._stream is not None:
            self._stream.accept_waveform(SAMPLE_RATE, samples)
            decoded = self.recognizer.decode(self._stream)
        else:
            decoded = 0
        text, blanks = self._best()
        for ep in self.endpointer.update(self.vad.time_s, flags, blanks, text,
                                         snr_db=self.vad.snr_db):
            events += self._on_endpoint(ep)
        if decoded and self._stream is not None and self.config.partials:
            events += self._partial()
        return events

    def finish(self) -> list[Event]:
        """End of input: close any open utterance with what was heard."""
        events: list[Event] = []
        if self._stream is not None:
            self._stream.input_finished()
            self.recognizer.decode(self._stream)
        text, _ = self._best()
        for ep in self.endpointer.finish(self.vad.time_s, text):
            events += self._on_endpoint(ep)
        return events

    # ---------------------------------------------------------------- internals

    def _remember(self, samples: np.ndarray) -> None:
        keep = int((self.config.preroll_s + 0.5) * SAMPLE_RATE)
        self._history.append(samples)
        self._history_samples += samples.size
        while self._history and self._history_samples - self._history[0].size >= keep:
            self._history_samples -= self._history.popleft().size

    def _open_stream(self, speech_start: float) -> None:
        self._context = self._next_context
        self._stream = self.recognizer.create_stream(self._context)
        start = max(0.0, speech_start - self.config.preroll_s)
        history = np.concatenate(list(self._history)) if self._history else np.zeros(0)
        history_start = self.now - history.size / SAMPLE_RATE
        skip = max(0, int(round((start - history_start) * SAMPLE_RATE)))
        self._stream_start = history_start + skip / SAMPLE_RATE
        self._stream.accept_waveform(SAMPLE_RATE, history[skip:].astype(np.float32))
        self.recognizer.decode(self._stream)
        self._utterance_id = f"{self.source}-{next(_ids)}"
        self._last_partial = ""
        self._speculative = None

    def _best(self) -> tuple[str, int | None]:
        if self._stream is None:
            return "", None
        # The beam's own best: the end-pointer follows what the beam hears.
        return self._stream.best_text, self._stream.trailing_blank_frames

    def _nbest(self) -> list[tuple[str, float]]:
        result = self.recognizer.result(self._stream)
        scores = [lp + b for lp, b in zip(result.nbest_log_probs, result.nbest_bias, strict=True)]
        return list(zip(result.nbest, scores, strict=True))

    def _lattice(self, revision: int, speculative: bool) -> Lattice:
        frame_s = 0.01 * self.recognizer.model.info.frames_per_output
        pieces = self.recognizer.model.tokens
        paths = [hypothesis_path(h, pieces, frame_s) for h in self._stream.hypotheses]
        phrases = self.recognizer.context_phrases(self._stream)
        if phrases:  # a path keeps the bonus of the phrases it says as whole words only
            paths = whole_word_bias(paths, phrases, self.recognizer.slot_bonus)
        return build_lattice(paths, self._utterance_id, revision, speculative,
                             self.config.model_version)

    def _partial(self) -> list[Event]:
        nbest = self._nbest()
        text = nbest[0][0] if nbest else ""
        if text == self._last_partial:
            return []
        self._last_partial = text
        return [Event(EventType.PARTIAL, self._utterance_id, self.now, text,
                      stable_prefix=stable_prefix([t for t, _ in nbest]))]

    def _on_endpoint(self, ep: EndpointEvent) -> list[Event]:
        kind = ep.kind
        if kind is EventKind.SPEECH_STARTED:
            timing = self.endpointer.timing
            self._open_stream(timing.speech_start if timing else ep.time)
            self.utterances += 1
            return [Event(EventType.SPEECH_STARTED, self._utterance_id, ep.time,
                          speech_start=timing.speech_start if timing else ep.time)]
        if self._stream is None:  # cannot happen: every end follows a start
            return []
        uid = self._utterance_id
        if kind is EventKind.SPECULATIVE_ENDPOINT:
            # The name rescue and the fallback run at end-points only (`settle`); the
            # end-pointer compares the beam's own best texts, so CONFIRMED still means "the
            # beam did not change its mind".
            self.recognizer.settle(self._stream)
            self._speculative = self._nbest()
            return [Event(EventType.SPECULATIVE_ENDPOINT, uid, ep.time, self._speculative[0][0],
                          revision=1, nbest=self._speculative, lattice=self._lattice(1, True),
                          reason=ep.reason.value if ep.reason else "")]
        if kind is EventKind.RESET:
            return [Event(EventType.RESET, uid, ep.time, ep.text, revision=1,
                          reason="speech resumed" if ep.reason is None else ep.reason.value)]
        # CONFIRMED or FINAL_ENDPOINT: the utterance is over; the stream is closed.
        if kind is EventKind.CONFIRMED:  # the speculative n-best (rescue included) stands
            self._stream.search.finalize()
            nbest = self._speculative or self._nbest()
            event = Event(EventType.CONFIRMED, uid, ep.time, nbest[0][0], revision=1,
                          nbest=nbest, reason=ep.reason.value if ep.reason else "")
        else:
            self.recognizer.end_utterance(self._stream)
            nbest = self._nbest()
            event = Event(EventType.FINAL_ENDPOINT, uid, ep.time, nbest[0][0], revision=2,
                          nbest=nbest, lattice=self._lattice(2, False),
                          reason=ep.reason.value if ep.reason else "")
        if ep.timing is not None:
            event.speech_start = ep.timing.speech_start
        self._stream = None
        return [event]
