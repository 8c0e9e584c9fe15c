"""The daemon's two end-pointers, as one pure state machine (no threads, no model).

The worker calls `update` once per decoded chunk (every 40-160 ms) with every VAD flag
that became available since the last call, the best path's trailing blank frames and
its text, and forwards the events it gets back. Speech onset and resumption are judged
frame by frame from the VAD flags, so their times are exact to one VAD frame; end-point
decisions are taken once per call, at `now`, because blanks and text only change when
a chunk is decoded.

Per utterance the events come in this order (ARCHITECTURE.md, "Events and the two
end-pointers"):

    SPEECH_STARTED, SPECULATIVE_ENDPOINT (revision 1), then exactly one of
    CONFIRMED (revision 1 stands)  or  RESET ... FINAL_ENDPOINT (revision 2)

- SPECULATIVE_ENDPOINT fires once per utterance, after `spec_silence` of VAD silence (or
  `spec_lead` before the final end-pointer's threshold, if that is later) and `spec_blank`
  of trailing blanks.
- The final end-point fires after a silence that depends on how finished the text looks
  (`completeness`): up to `final_silence_max` for "dial five five five", down to
  `final_silence_min` for "turn the lights off".
- Speech that resumes after the speculative end-point continues the same utterance and
  emits RESET at once, so clients drop their work early; no second speculative follows,
  and the next end decision is FINAL_ENDPOINT with revision 2.
- If speech did not resume but the best text at the final decision differs from the
  text at the speculative point, RESET and FINAL_ENDPOINT come together. The text is
  compared only then, because the best path may change and change back during the pause.
- A final decision without an earlier speculative one (`max_utterance`, the end of the
  input, or thresholds set so that both fire in one call) emits SPECULATIVE_ENDPOINT and
  CONFIRMED together, so every utterance follows the same grammar.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from edge_asr.daemon.endpointing.completeness import looks_complete
from edge_asr.daemon.endpointing.endpoint_config import EndpointConfig

_EPS = 1e-9  # frame times are sums of floats; thresholds compare with this slack

# Where the final end-pointer's silence threshold is anchored on the completeness scale:
# at or below UNFINISHED it waits final_silence_max, at UNSURE final_silence, at or
# above FINISHED final_silence_min; linear in between.
_UNFINISHED_AT = 0.1
_UNSURE_AT = 0.5
_FINISHED_AT = 0.9


class EventKind(Enum):
    SPEECH_STARTED = "speech_started"
    SPECULATIVE_ENDPOINT = "speculative_endpoint"
    CONFIRMED = "confirmed"
    RESET = "reset"
    FINAL_ENDPOINT = "final_endpoint"


class EndReason(Enum):
    """Why an end-point fired."""

    SILENCE = "silence"  # the silence and blank thresholds were met
    SILENCE_TIMEOUT = "silence_timeout"  # long VAD silence, whatever blanks and text say
    MAX_UTTERANCE = "max_utterance"
    BLANK_TIMEOUT = "blank_timeout"  # no new word for a while, though the VAD hears sound
    NO_WORDS = "no_words"  # sound without any word: music or chatter, not a request
    END_OF_INPUT = "end_of_input"  # `finish` closed an open utterance


class Phase(Enum):
    IDLE = "idle"  # no utterance
    ONSET = "onset"  # speech heard, not yet min_speech of it
    SPEAKING = "speaking"  # utterance open, no speculative end-point yet
    SPECULATED = "speculated"  # speculative end-point out, awaiting confirm or reset
    REVISING = "revising"  # RESET out; only the final end-point remains


_OPEN = (Phase.SPEAKING, Phase.SPECULATED, Phase.REVISING)


@dataclass
class UtteranceTiming:
    """Decision times of one utterance in audio seconds, for metrics."""

    index: int  # 0-based count of utterances in this stream
    speech_start: float  # start of the first voiced frame of the onset
    started_at: float  # SPEECH_STARTED decision
    speech_end: float | None = None  # end of the last voiced frame so far (VAD)
    speculative_at: float | None = None
    reset_at: float | None = None
    final_at: float | None = None  # CONFIRMED or FINAL_ENDPOINT decision
    reason: EndReason | None = None  # why the final end-point fired
    speculative_text: str | None = None
    final_text: str | None = None

    @property
    def reset(self) -> bool:
        return self.reset_at is not None


@dataclass(frozen=True)
class EndpointEvent:
    kind: EventKind
    time: float  # audio seconds of the decision
    utterance: int  # UtteranceTiming.index
    text: str  # best text at the decision
    # Lattice revision: carried (SPECULATIVE_ENDPOINT 1, FINAL_ENDPOINT 2), kept standing
    # (CONFIRMED 1) or withdrawn (RESET 1); None on SPEECH_STARTED.
    revision: int | None = None
    reason: EndReason | None = None  # on SPECULATIVE_ENDPOINT, CONFIRMED, FINAL_ENDPOINT
    timing: UtteranceTiming | None = None  # snapshot, on CONFIRMED and FINAL_ENDPOINT


# P(the request is over) given the trailing VAD silence and trailing blanks, in seconds:
# the learned end-of-query model's view of the open utterance (query_end.py).
EndProbability = Callable[[float, float], float]


class Endpointer:
    """Dual end-pointer for one audio stream. See the module docstring for the contract.

    With `query_end_threshold`, the final end-pointer is driven by the P(over) that each
    `update` is given (`end_probability`) instead of the completeness rules.
    """

    def __init__(self, config: EndpointConfig | None = None,
                 completeness: Callable[[str], float] = looks_complete,
                 query_end_threshold: float | None = None) -> None:
        self.config = config or EndpointConfig()
        self._completeness = completeness  # lambda text: 0.5 turns the adjustment off
        if query_end_threshold is not None and not 0 < query_end_threshold < 1:
            raise ValueError(f"query_end_threshold must be in (0, 1), got {query_end_threshold}")
        self.query_end_threshold = query_end_threshold
        self._phase = Phase.IDLE
        self._now = 0.0
        self._count = 0  # utterances started so far
        self._timing: UtteranceTiming | None = None
        self._playback = False  # the device played audio lately (update's `playback`)
        self._clear_utterance_state()

    # ------------------------------------------------------------ public API

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def timing(self) -> UtteranceTiming | None:
        """The open utterance's timing, or the last closed one's (None before any)."""
        return self._timing

    @property
    def now(self) -> float:
        return self._now

    @property
    def trailing_silence(self) -> float:
        """VAD silence since the last speech of the open utterance, in seconds."""
        if self._phase not in _OPEN or self._silence_start is None:
            return 0.0
        # A voiced run too short yet to end the silence (resume_speech) does not count as
        # silence either: speech that has begun again must not make the pause look longer.
        return max(0.0, self._now - self._silence_start - self._voiced_run)

    def final_silence_for(self, text: str, noisy: bool = False) -> float:
        """The final end-pointer's silence threshold for this text (in noise, if `noisy`)."""
        c = self.config
        score = min(1.0, max(0.0, float(self._completeness(text))))
        extra = c.final_silence_noisy_extra if noisy else 0.0
        if score <= _UNSURE_AT:
            span = (_UNSURE_AT - score) / (_UNSURE_AT - _UNFINISHED_AT)
            longest = c.final_silence_max + (c.final_silence_max_noisy_extra if noisy else 0.0)
            return extra + c.final_silence + min(1.0, span) * (longest - c.final_silence)
        span = (score - _UNSURE_AT) / (_FINISHED_AT - _UNSURE_AT)
        return extra + c.final_silence - min(1.0, span) * (c.final_silence - c.final_silence_min)

    def update(self, now: float, speech_flags: Sequence[bool], trailing_blanks: int | None,
               text: str, snr_db: float | None = None,
               end_probability: EndProbability | None = None,
               playback: bool = False) -> list[EndpointEvent]:
        """Feed what happened up to audio time `now`.

        now: audio seconds at the end of the last flag in `speech_flags` (Vad.time_s).
        speech_flags: VAD flags since the last call, oldest first, `vad_frame_s` each.
        trailing_blanks: blank encoder frames at the end of the best path (None: unknown,
            the end-pointers then go by the VAD alone).
        text: the current best hypothesis, normalised.
        snr_db: the VAD's estimate of speech over noise (Vad.snr_db), None if unknown.
        end_probability: the learned end-of-query model for the open utterance, asked only
            in a pause of at least final_silence_min (used with query_end_threshold).
        playback: the device's loudspeaker has played lately, so residual echo may break the
            VAD's silence (EndpointConfig.query_end_pause_from_blanks).
        """
        self._check_inputs(now, trailing_blanks)
        events: list[EndpointEvent] = []
        frame_s = self.config.vad_frame_s
        n = len(speech_flags)
        for i, flag in enumerate(speech_flags):
            end = now - (n - 1 - i) * frame_s
            self._on_frame(bool(flag), end - frame_s, end, text, events)
        self._now = now
        self._playback = playback
        if self._phase in _OPEN:
            noisy = snr_db is not None and snr_db < self.config.noisy_snr_db
            learned = end_probability if self.query_end_threshold is not None else None
            self._decide_end(trailing_blanks, text, noisy, events, learned)
        return events

    def finish(self, now: float, text: str) -> list[EndpointEvent]:
        """The input ended at `now`: close an open utterance, drop an unfinished onset."""
        self._check_inputs(now, None)
        self._now = now
        events: list[EndpointEvent] = []
        if self._phase in _OPEN:
            self._end(EndReason.END_OF_INPUT, text, events)
        elif self._phase is Phase.ONSET:
            self._phase = Phase.IDLE
        return events

    def reset(self) -> None:
        """Forget everything: a new stream whose clock starts again at 0."""
        self._phase = Phase.IDLE
        self._now = 0.0
        self._count = 0
        self._timing = None
        self._clear_utterance_state()

    # ------------------------------------------------------------ frames

    def _check_inputs(self, now: float, trailing_blanks: int | None) -> None:
        if not math.isfinite(now) or now < self._now - _EPS:
            raise ValueError(f"audio time must be finite and never go back: {now} after "
                             f"{self._now}")
        if trailing_blanks is not None and trailing_blanks < 0:
            raise ValueError(f"trailing_blanks must be >= 0, got {trailing_blanks}")

    def _clear_utterance_state(self) -> None:
        self._onset_start = 0.0
        self._onset_voiced = 0.0
        self._onset_gap = 0.0
        self._voiced_run = 0.0  # consecutive voiced time ending at the latest frame
        self._silence_start: float | None = None  # None while speaking
        self._spec_text: str | None = None

    def _on_frame(self, speech: bool, start: float, end: float, text: str,
                  events: list[EndpointEvent]) -> None:
        if self._phase is Phase.IDLE:
            if speech:
                self._phase = Phase.ONSET
                self._onset_start, self._onset_voiced, self._onset_gap = start, 0.0, 0.0
                self._onset_frame(speech, end, text, events)
        elif self._phase is Phase.ONSET:
            self._onset_frame(speech, end, text, events)
        else:
            self._open_frame(speech, start, end, text, events)

    def _onset_frame(self, speech: bool, end: float, text: str,
                     events: list[EndpointEvent]) -> None:
        c = self.config
        if not speech:
            self._onset_gap += c.vad_frame_s
            if self._onset_gap >= c.onset_max_gap - _EPS:
                self._phase = Phase.IDLE  # a noise blip, not the start of a request
            return
        self._onset_gap = 0.0
        self._onset_voiced += c.vad_frame_s
        if self._onset_voiced >= c.min_speech - _EPS:
            self._start_utterance(end, text, events)

    def _start_utterance(self, at: float, text: str, events: list[EndpointEvent]) -> None:
        self._phase = Phase.SPEAKING
        self._timing = UtteranceTiming(self._count, speech_start=self._onset_start,
                                       started_at=at, speech_end=at)
        self._count += 1
        self._voiced_run = self._onset_voiced
        self._silence_start = None
        self._spec_text = None
        events.append(self._event(EventKind.SPEECH_STARTED, at, text))

    def _open_frame(self, speech: bool, start: float, end: float, text: str,
                    events: list[EndpointEvent]) -> None:
        assert self._timing is not None
        if not speech:
            self._voiced_run = 0.0  # a short voiced run inside the silence stays silence
            if self._silence_start is None:
                self._silence_start = start
            return
        self._voiced_run += self.config.vad_frame_s
        if self._silence_start is not None:
            if self._voiced_run < self.config.resume_speech - _EPS:
                return
            self._silence_start = None  # speech resumed: the same utterance goes on
            if self._phase is Phase.SPECULATED:
                self._phase = Phase.REVISING
                self._timing.reset_at = end
                events.append(self._event(EventKind.RESET, end, text, revision=1))
        self._timing.speech_end = end

    # ------------------------------------------------------------ decisions

    def _decide_end(self, trailing_blanks: int | None, text: str, noisy: bool,
                    events: list[EndpointEvent], learned: EndProbability | None) -> None:
        assert self._timing is not None
        c = self.config
        silence = self.trailing_silence + _EPS
        blank_s = math.inf if trailing_blanks is None else trailing_blanks * c.encoder_frame_s
        blank_s += _EPS
        if learned is not None:
            self._decide_end_learned(silence, blank_s, text, noisy, events, learned)
            return
        final_silence = self.final_silence_for(text, noisy)  # both end-pointers use it
        if self._now - self._timing.speech_start >= c.max_utterance - _EPS:
            self._end(EndReason.MAX_UTTERANCE, text, events)
        elif silence >= c.silence_timeout:
            self._end(EndReason.SILENCE_TIMEOUT, text, events)
        elif trailing_blanks is not None and text and c.blank_timeout \
                and blank_s >= c.blank_timeout:
            self._end(EndReason.BLANK_TIMEOUT, text, events)
        elif trailing_blanks is not None and not text and c.no_words_timeout \
                and blank_s >= c.no_words_timeout:
            self._end(EndReason.NO_WORDS, text, events)
        elif silence >= final_silence and blank_s >= c.final_blank:
            self._end(EndReason.SILENCE, text, events)
        elif (c.speculative and self._phase is Phase.SPEAKING and text
              and silence >= max(c.spec_silence_noisy if noisy else c.spec_silence,
                                 final_silence - self._spec_lead(final_silence))
              and blank_s >= c.spec_blank):
            # Not on sound that gave no word yet: in noise that is most often a false
            # start, and speculating on it only earns a RESET when the request begins.
            self._speculate(EndReason.SILENCE, text, events)

    def _decide_end_learned(self, silence: float, blank_s: float, text: str, noisy: bool,
                            events: list[EndpointEvent], learned: EndProbability) -> None:
        """The final end-point when the classifier says the request is over (after at least
        final_silence_min), or after silence_timeout whatever it says; the speculative one
        stays at spec_silence, ahead of it, with RESET as its safety net."""
        assert self._timing is not None
        c = self.config
        if self._now - self._timing.speech_start >= c.max_utterance - _EPS:
            self._end(EndReason.MAX_UTTERANCE, text, events)
        elif silence >= c.silence_timeout:
            self._end(EndReason.SILENCE_TIMEOUT, text, events)
        elif (silence >= c.final_silence_min and blank_s >= c.final_blank
              and learned(self._pause(silence, blank_s), blank_s - _EPS)
              >= self.query_end_threshold):
            self._end(EndReason.SILENCE, text, events)
        elif (c.speculative and self._phase is Phase.SPEAKING and text
              and silence >= (c.spec_silence_noisy if noisy else c.spec_silence)
              and blank_s >= c.spec_blank):
            self._speculate(EndReason.SILENCE, text, events)

    def _pause(self, silence: float, blank_s: float) -> float:
        """The pause the classifier hears (EndpointConfig.query_end_pause_from_blanks)."""
        mode = self.config.query_end_pause_from_blanks
        if (mode == "always" or mode == "playback" and self._playback) \
                and math.isfinite(blank_s):
            return max(silence, blank_s) - _EPS
        return silence - _EPS

    def _spec_lead(self, final_silence: float) -> float:
        c = self.config
        return c.spec_lead_unfinished if final_silence >= c.final_silence_max - _EPS \
            else c.spec_lead

    def _speculate(self, reason: EndReason, text: str, events: list[EndpointEvent]) -> None:
        assert self._timing is not None
        self._phase = Phase.SPECULATED
        self._spec_text = _canonical(text)
        self._timing.speculative_at = self._now
        self._timing.speculative_text = self._spec_text
        events.append(self._event(EventKind.SPECULATIVE_ENDPOINT, self._now, text,
                                  revision=1, reason=reason))

    def _end(self, reason: EndReason, text: str, events: list[EndpointEvent]) -> None:
        assert self._timing is not None
        if self._phase is Phase.SPEAKING:
            self._speculate(reason, text, events)
        timing = self._timing
        timing.final_at, timing.reason, timing.final_text = self._now, reason, _canonical(text)
        if self._phase is Phase.SPECULATED and _canonical(text) == self._spec_text:
            kind, revision = EventKind.CONFIRMED, 1
        else:
            if self._phase is Phase.SPECULATED:  # the best path changed during the pause
                timing.reset_at = self._now
                events.append(self._event(EventKind.RESET, self._now, text, revision=1))
            kind, revision = EventKind.FINAL_ENDPOINT, 2
        events.append(self._event(kind, self._now, text, revision=revision, reason=reason,
                                  timing=dataclasses.replace(timing)))
        self._phase = Phase.IDLE
        self._clear_utterance_state()

    def _event(self, kind: EventKind, at: float, text: str, revision: int | None = None,
               reason: EndReason | None = None,
               timing: UtteranceTiming | None = None) -> EndpointEvent:
        assert self._timing is not None
        return EndpointEvent(kind, at, self._timing.index, _canonical(text), revision, reason,
                             timing)


def _canonical(text: str) -> str:
    return " ".join(text.split())
