"""The recognition pipeline of one audio stream: VAD, recognizer, end-pointers, lattices.

It is driven by pushing 16 kHz audio (`accept`) and returns the events that audio caused,
in the order of ARCHITECTURE.md, "Events and the two end-pointers". It has no threads and
no I/O, so the daemon's worker thread, a gRPC `Recognize` call and `edge-asr eval` all run
exactly this code.

While nobody speaks, only the VAD runs. When the end-pointer hears speech start, a fresh
recognizer stream is opened and fed from a little before the onset (kept in a short
history), so every utterance is decoded from clean state with the context that applies
to it; when the final end-point fires the stream is dropped.

With a wake word (PipelineConfig.wake_word) the stretches of speech go to keyword spotters
instead (a fresh one each second over the last three, so the phrase is heard straight after
other words too), and nothing is recognised or sent until it hears the phrase: WAKE_WORD, then the
request that follows (in the same breath, its stream resuming from the spotter's encoder
state, or after a pause of up to `awake_s`), then back to listening for the phrase.
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
    Endpointer,
    EndpointEvent,
    EndProbability,
    EventKind,
)
from edge_asr.daemon.endpointing.endpoint_config import EndpointConfig
from edge_asr.daemon.endpointing.query_end import QueryEnd
from edge_asr.daemon.frontend.speech_gate import SpeechGate
from edge_asr.daemon.frontend.vad import Vad
from edge_asr.daemon.recognition.context_graph import context_by_kind
from edge_asr.daemon.recognition.hypotheses import hypothesis_path, no_words_share, stable_prefix
from edge_asr.daemon.recognition.name_rescue import whole_word_bias
from edge_asr.daemon.recognition.recognizer import Context, OnlineStream, Recognizer
from edge_asr.daemon.uplink.lattice import Lattice
from edge_asr.daemon.uplink.word_lattice import LatticeOptions, build_word_lattice
from edge_asr.daemon.wakeword.spotter import (
    Detection,
    KeywordSpotter,
    RollingSpotter,
    WakeWordConfig,
)


class EventType(Enum):
    WAKE_WORD = "WAKE_WORD"
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
    score: float = 0.0  # on WAKE_WORD: the detector's score (0-1)
    # With a lattice: the contacts of the utterance's context, which go to the cloud with
    # it to fill its LM's name class (simulator/cloud/name_classes.py)
    contacts: tuple[str, ...] = ()


@dataclass
class PipelineConfig:
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    vad_mode: int = 2
    vad_frame_ms: int = 30
    vad_noise_gate_db: float = 3.0  # see daemon/frontend/vad.py
    vad_level_gate: float = 0.4  # see daemon/frontend/vad.py (level_gate)
    # Silero's verdict too (daemon/frontend/speech_gate.py): music and television no longer
    # pass for speech, but it loses short and quiet words (RESULTS.md, "A neural VAD gate")
    vad_speech_model: bool = False
    preroll_s: float = 0.3  # audio before the detected onset fed to the new stream
    partials: bool = True
    model_version: str = ""
    wake_word: WakeWordConfig = field(default_factory=WakeWordConfig)  # off by default
    lattice: LatticeOptions = field(default_factory=LatticeOptions)

    def new_vad(self) -> Vad:
        return Vad(self.vad_mode, self.vad_frame_ms, self.vad_noise_gate_db,
                   level_gate=self.vad_level_gate,
                   speech_gate=SpeechGate() if self.vad_speech_model else None)


_ids = itertools.count(1)
# After the loudspeaker falls silent its echo rings on in the room and in the canceller's
# filter for a while (RT60 of a living room: 0.3-0.6 s).
PLAYBACK_ECHO_TAIL_S = 0.5


class Pipeline:
    def __init__(self, recognizer: Recognizer, config: PipelineConfig | None = None,
                 source: str = "mic", query_end: QueryEnd | None = None) -> None:
        """`query_end`: the learned end-of-query model to use; by default the model
        folder's (query_end.json), if it ships one and `config.endpoint.query_end`."""
        self.recognizer = recognizer
        self.config = config or PipelineConfig()
        endpoint = self.config.endpoint
        if abs(endpoint.vad_frame_s - self.config.vad_frame_ms / 1000) > 1e-9:
            endpoint = EndpointConfig(**{**endpoint.__dict__,
                                         "vad_frame_s": self.config.vad_frame_ms / 1000})
        if query_end is None and endpoint.query_end:
            query_end = QueryEnd.for_recognizer(recognizer)
        self.query_end = query_end if endpoint.query_end else None
        threshold = None
        if self.query_end is not None:
            threshold = endpoint.query_end_threshold or self.query_end.model.threshold
        self.endpointer = Endpointer(endpoint, query_end_threshold=threshold)
        self.vad = self.config.new_vad()
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
        self._playback_until = -1.0  # stream seconds until which playback may still echo
        self.utterances = 0
        # Wake word: the spotter open on the current stretch of speech while waiting for
        # the phrase; after it, `_awake_until` (stream seconds) while no request has begun.
        self._wake = self.config.wake_word if self.config.wake_word.enabled else None
        if self._wake is not None:
            KeywordSpotter(recognizer, self._wake)  # a phrase the model cannot spell fails here
        self._spotter: RollingSpotter | None = None
        self._spotter_start = 0.0  # stream seconds where the spotter's audio begins
        self._awake_until: float | None = None
        self._listening = self._wake is None  # requests are recognised (no wake word: always)
        self._start_event: Event | None = None  # a request opened at the phrase, not yet said
        self._ignoring = False  # the end-points of a stretch the request left empty
        self._request_start: float | None = None  # where a request opened at the phrase began
        self.wake_words = 0

    # ---------------------------------------------------------------- public API

    def set_context(self, context: Context | None) -> None:
        """Applies from the next utterance on (the open one keeps its graph)."""
        self.recognizer.context_graph(context)  # validate now: a bad context fails here
        self._next_context = context

    @property
    def now(self) -> float:
        return self._samples_seen / SAMPLE_RATE

    def accept(self, samples: np.ndarray, playback: bool = False,
               residual_echo: np.ndarray | None = None) -> list[Event]:
        """`playback`: the device's loudspeaker played during these samples (the front end
        cancelled its echo before they came here); the end-pointer allows for what is left.
        `residual_echo`: the canceller's estimate of that rest per 10 ms (Vad.process)."""
        self._samples_seen += samples.size
        if playback:
            self._playback_until = self.now + PLAYBACK_ECHO_TAIL_S
        self._remember(samples)
        events: list[Event] = []
        flags = self.vad.process(samples, residual_echo)
        decoded = 0
        if self._spotter is not None:
            detection = self._spotter.accept(samples)
            if detection is not None:
                events += self._on_wake(detection)
        elif self._stream is not None:
            self._stream.accept_waveform(SAMPLE_RATE, samples)
            decoded = self.recognizer.decode(self._stream)
        if (self._awake_until is not None and self._stream is None
                and self.now > self._awake_until):
            self._awake_until, self._listening = None, False  # nobody asked: wait again
        text, blanks = self._best()
        for ep in self.endpointer.update(self.vad.time_s, flags, blanks, text,
                                         snr_db=self.vad.snr_db,
                                         end_probability=self._end_probability(text),
                                         playback=self.now < self._playback_until):
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
        # The preroll, and with a wake word the 2 s back to where the phrase ended.
        keep = int((self.config.preroll_s + (2.5 if self._wake else 0.5)) * SAMPLE_RATE)
        self._history.append(samples)
        self._history_samples += samples.size
        while self._history and self._history_samples - self._history[0].size >= keep:
            self._history_samples -= self._history.popleft().size

    def _recent(self, start: float) -> tuple[np.ndarray, float]:
        """The kept audio from stream second `start` on (or the oldest kept), and where it
        begins."""
        history = np.concatenate(list(self._history)) if self._history else np.zeros(0)
        history_start = self.now - history.size / SAMPLE_RATE
        skip = max(0, int(round((start - history_start) * SAMPLE_RATE)))
        return history[skip:].astype(np.float32), history_start + skip / SAMPLE_RATE

    def _open_stream(self, speech_start: float, state: tuple | None = None,
                     preroll: bool = True) -> None:
        """A new recognizer stream from a little before `speech_start` (`preroll`) or from
        it exactly, with the encoder `state` to carry on from (the spotter's), if given.
        The decoder starts afresh even after a wake phrase: the model learnt requests that
        begin a sentence, and with the phrase as the decoder's context it dropped their
        first words (dev voices: request WER 32% with it, 23% without)."""
        self._context = self._next_context
        self._stream = self.recognizer.create_stream(self._context)
        if state is not None:
            self._stream.state = state
        start = speech_start - (self.config.preroll_s if preroll else 0.0)
        audio, self._stream_start = self._recent(max(0.0, start))
        self._stream.accept_waveform(SAMPLE_RATE, audio)
        self.recognizer.decode(self._stream)
        self._utterance_id = f"{self.source}-{next(_ids)}"
        self._last_partial = ""
        self._speculative = None

    def _best(self) -> tuple[str, int | None]:
        if self._stream is None:
            # A stretch the spotter hears ends by the VAD alone: its words are not a request.
            return "", None
        # The beam's own best: the end-pointer follows what the beam hears.
        return self._stream.best_text, self._stream.trailing_blank_frames

    def _end_probability(self, text: str) -> EndProbability | None:
        """The learned end-of-query model's view of the open request, if there is both."""
        if self.query_end is None or self._stream is None:
            return None
        query_end, tokens, snr = self.query_end, self._stream.best_tokens, self.vad.snr_db
        return lambda silence, blanks: query_end.probability(tokens, text, silence, blanks, snr)

    def _nbest(self) -> list[tuple[str, float]]:
        result = self.recognizer.result(self._stream)
        scores = [lp + b for lp, b in zip(result.nbest_log_probs, result.nbest_bias, strict=True)]
        nbest = list(zip(result.nbest, scores, strict=True))
        if self._no_words([bool(text.strip()) for text in result.nbest],
                          result.nbest_log_probs):
            return [(text, score) for text, score in nbest if not text.strip()]
        return nbest

    def _no_words(self, has_words: list[bool], log_probs: list[float]) -> bool:
        """Sound without words (RecognizerConfig.no_words_share): its guesses are dropped."""
        limit = self.recognizer.config.no_words_share
        return limit < 1.0 and no_words_share(has_words, log_probs) >= limit

    def _lattice(self, revision: int, speculative: bool) -> Lattice:
        frame_s = 0.01 * self.recognizer.model.info.frames_per_output
        pieces = self.recognizer.model.tokens
        paths = [hypothesis_path(h, pieces, frame_s) for h in self._stream.hypotheses]
        if self._no_words([bool(p.words) for p in paths],
                          [h.log_prob for h in self._stream.hypotheses]):
            paths = [p for p in paths if not p.words]
        phrases = self.recognizer.context_phrases(self._stream)
        if phrases:  # a path keeps the bonus of the phrases it says as whole words only
            paths = whole_word_bias(paths, phrases, self.recognizer.slot_bonus)
        return build_word_lattice(paths, self._utterance_id, revision, speculative,
                                  self.config.model_version, self.config.lattice)

    def _contacts(self) -> tuple[str, ...]:
        """The people of the utterance's context (a flat list whole)."""
        return tuple(context_by_kind(self._context).get("contacts", ()))

    def _partial(self) -> list[Event]:
        nbest = self._nbest()
        text = nbest[0][0] if nbest else ""
        if text == self._last_partial:
            return []
        self._last_partial = text
        return self._started() + [Event(EventType.PARTIAL, self._utterance_id, self.now, text,
                                         stable_prefix=stable_prefix([t for t, _ in nbest]))]

    # ---------------------------------------------------------------- wake word

    def _on_wake(self, detection: Detection) -> list[Event]:
        """The phrase: WAKE_WORD, and the request's stream if the speaker goes straight on."""
        self._spotter = None
        self.wake_words += 1
        self._listening = True
        self._awake_until = self.now + self._wake.awake_s
        offset = self._spotter_start
        events = [Event(EventType.WAKE_WORD, f"{self.source}-wake-{self.wake_words}",
                        self.now, detection.text, speech_start=offset + detection.start,
                        score=round(detection.score, 4))]
        if self.endpointer.phase.name in ("IDLE", "ONSET"):
            return events  # a pause after the phrase: the request opens on its own onset
        # Still speaking: the request begins where the phrase ended. Its SPEECH_STARTED
        # waits for its first word (`_started`): a pause that the end-pointer closes
        # before any word came is no request, and the device stays awake for one.
        anchor = detection.state if self._wake.anchored else None
        self._open_stream(offset + detection.end, state=anchor, preroll=False)
        self._awake_until = None
        self.utterances += 1
        self._request_start = offset + detection.end
        self._start_event = Event(EventType.SPEECH_STARTED, self._utterance_id, self.now,
                                  speech_start=self._request_start)
        return events

    def _started(self) -> list[Event]:
        """The request's SPEECH_STARTED, held back since the phrase, once words come."""
        if self._start_event is None:
            return []
        event, self._start_event = self._start_event, None
        return [event]

    def _open_spotter(self, speech_start: float) -> None:
        self._spotter = RollingSpotter(self.recognizer, self._wake)
        audio, self._spotter_start = self._recent(max(0.0, speech_start - self.config.preroll_s))
        self._spotter.accept(audio)

    def _spotting_endpoint(self, ep: EndpointEvent) -> list[Event]:
        """End-points while waiting for the phrase: they only open and close the spotter."""
        if ep.kind is EventKind.SPEECH_STARTED:
            timing = self.endpointer.timing
            self._open_spotter(timing.speech_start if timing else ep.time)
        elif ep.kind in (EventKind.CONFIRMED, EventKind.FINAL_ENDPOINT):
            self._spotter = None
        return []

    def _on_endpoint(self, ep: EndpointEvent) -> list[Event]:
        kind = ep.kind
        if self._ignoring:  # the rest of a stretch whose request never came
            self._ignoring = kind not in (EventKind.CONFIRMED, EventKind.FINAL_ENDPOINT)
            return []
        if not self._listening:
            return self._spotting_endpoint(ep)
        if kind is EventKind.SPEECH_STARTED:
            self._awake_until = None
            timing = self.endpointer.timing
            self._open_stream(timing.speech_start if timing else ep.time)
            self.utterances += 1
            return [Event(EventType.SPEECH_STARTED, self._utterance_id, ep.time,
                          speech_start=timing.speech_start if timing else ep.time)]
        if self._stream is None:  # cannot happen: every end follows a start
            return []
        uid = self._utterance_id
        if self._start_event is not None and kind is not EventKind.RESET \
                and not (self._stream.best_text and self._nbest()[0][0].strip()):
            # Opened at the phrase, closed before any word (or one the no-words check drops):
            # a pause after the phrase. Still awake; the request opens on the next onset.
            self._stream, self._start_event, self._request_start = None, None, None
            self.utterances -= 1
            self._awake_until = self.now + self._wake.awake_s
            self._ignoring = kind is EventKind.SPECULATIVE_ENDPOINT
            return []
        events = self._started()
        if kind is EventKind.SPECULATIVE_ENDPOINT:
            # The name rescue and the fallback run at end-points only (`settle`); the
            # end-pointer compares the beam's own best texts, so CONFIRMED still means "the
            # beam did not change its mind".
            self.recognizer.settle(self._stream)
            self._speculative = self._nbest()
            return events + [Event(EventType.SPECULATIVE_ENDPOINT, uid, ep.time,
                                   self._speculative[0][0], revision=1, nbest=self._speculative,
                                   lattice=self._lattice(1, True),
                                   contacts=self._contacts(),
                                   reason=ep.reason.value if ep.reason else "")]
        if kind is EventKind.RESET:
            reason = "speech resumed" if ep.reason is None else ep.reason.value
            return events + [Event(EventType.RESET, uid, ep.time, ep.text, revision=1,
                                   reason=reason)]
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
                          contacts=self._contacts(),
                          reason=ep.reason.value if ep.reason else "")
        if ep.timing is not None:  # the end-pointer's onset was the phrase's, if one opened it
            event.speech_start = self._request_start or ep.timing.speech_start
        self._stream, self._request_start = None, None
        self._listening = self._wake is None  # with a wake word: one request per phrase
        return events + [event]
