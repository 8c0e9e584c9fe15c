"""The wake-word detector: the transducer searching a keyword graph.

The device's own acoustic model listens to every stretch of speech the VAD hears, with a
beam search (no device LM: the request grammar has no wake phrase) whose context graph holds
only the wake phrase, boosted per token. The phrase is heard when the best hypothesis says
it as whole words; its score is the geometric mean of the transducer's probabilities of the
phrase's tokens along that path (blanks between them included), which is what a threshold
can hold (icefall's and sherpa-onnx's keyword spotters judge a keyword the same way).
The encoder that heard the phrase is the one that goes on to recognise the request. Where
the model folder ships a verifier for the phrase (verifier.py), each detection must also
convince it: the boosted beam finds the phrase in words that only sound like it.

    spotter = KeywordSpotter(recognizer, WakeWordConfig(phrase="hey marvin"))
    for piece in audio:
        detection = spotter.accept(piece)
        if detection: ...   # detection.end, detection.score; then spotter.close()
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from edge_asr.daemon.constants import FRAME_SHIFT_S, SAMPLE_RATE
from edge_asr.daemon.recognition.context_graph import ContextError, ContextGraph
from edge_asr.daemon.recognition.recognizer import Recognizer
from edge_asr.daemon.recognition.search import Hypothesis, ModifiedBeamSearch
from edge_asr.daemon.recognition.stream import OnlineStream
from edge_asr.daemon.wakeword.verifier import WakeVerifier, load_verifier, pooled_features


@dataclass(frozen=True)
class WakeWordConfig:
    phrase: str = ""  # what wakes the device; "" = no wake word, every utterance recognised
    # Lowest score (mean token probability of the phrase, 0-1) that counts as the phrase,
    # and the phrase's bonus per token in the spotter's beam (log-prob), chosen for "hey
    # marvin" on dev voices and dev recordings (`bench/wakeword.py --voices dev --bonus B
    # --threshold T`), never on test audio. Bonus 4, threshold 0.1: no miss clean, 8% at
    # 10 dB, 1.3 false accepts an hour; bonus 2 missed 8% and 19%; threshold 0.15 misses
    # 4% and 19% for 0.6 false accepts an hour. The verifier (`verify`) then takes out
    # most of the false accepts that are left.
    threshold: float = 0.1
    bonus: float = 4.0
    beam: int = 4
    # Encoder frames (40 ms each) after the phrase's last token before it counts: the word
    # must be over ("hey marvins" is not the phrase).
    settle_frames: int = 2
    awake_s: float = 5.0  # how long after the phrase a request may begin
    # The request is recognised from the encoder state that heard the phrase (the speaker's
    # voice already in it), not from a cold start.
    anchored: bool = True
    # A second opinion on each detection from the model folder's verifier (verifier.py),
    # where it has one for this phrase.
    verify: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.phrase, str):
            raise ValueError("wake_word.phrase must be a string")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"wake_word.threshold must be in [0, 1], got {self.threshold!r}")
        if not 0.0 <= self.bonus <= 10.0:
            raise ValueError(f"wake_word.bonus must be in [0, 10], got {self.bonus!r}")
        if not 1 <= self.beam <= 16:
            raise ValueError(f"wake_word.beam must be in [1, 16], got {self.beam!r}")
        if not 0 <= self.settle_frames <= 25:
            raise ValueError(f"wake_word.settle_frames must be in [0, 25], got "
                             f"{self.settle_frames!r}")
        if not 0.5 <= self.awake_s <= 60.0:
            raise ValueError(f"wake_word.awake_s must be in [0.5, 60] seconds, got "
                             f"{self.awake_s!r}")

    @property
    def enabled(self) -> bool:
        return bool(self.phrase.strip())


@dataclass(frozen=True)
class Detection:
    """The phrase, heard. Times are seconds from the start of the spotter's audio."""

    text: str  # the phrase as the model spells it
    tokens: tuple[int, ...]
    start: float  # where its first token was emitted
    # The end of the encoder chunk that emitted its last token: a request's stream resumes
    # here, from `state` (the encoder state after that chunk; None if no longer kept). The
    # encoder looks ahead within a chunk, so a token's own frame can precede its audio.
    end: float
    score: float
    state: tuple[np.ndarray, np.ndarray] | None
    confirmed: float | None = None  # the verifier's probability; None without one


class KeywordSpotter:
    """One stretch of audio searched for the wake phrase; open a new one per stretch."""

    def __init__(self, recognizer: Recognizer, config: WakeWordConfig,
                 verifier: WakeVerifier | None = None) -> None:
        """`verifier`: by default the model folder's for the phrase (with `config.verify`)."""
        if not config.enabled:
            raise ValueError("a KeywordSpotter needs a wake phrase")
        self.config = config
        self.text, self.tokens = spell_phrase(recognizer, config.phrase)
        if verifier is None and config.verify:
            verifier = load_verifier(str(recognizer.config.model_dir), self.text)
        self.verifier = verifier
        self._model = recognizer.model
        self._word_start = {i for i, piece in enumerate(self._model.tokens)
                            if piece.startswith("\u2581")}
        graph = ContextGraph([self.tokens], config.bonus, self._model.info.vocab_size)
        self._stream = OnlineStream(recognizer)  # features and encoder state
        self._stream.search = ModifiedBeamSearch(self._model, config.beam, graph)
        self._stream.plain = None
        # (feature frames consumed, encoder state) after each chunk, for about the last 2 s:
        # a request resumes from the state that heard the phrase's end.
        self._states: deque[tuple[int, tuple[np.ndarray, np.ndarray]]] = deque(maxlen=64)
        self._checked = 0  # tokens of the best hypothesis already searched for the phrase
        self.seconds = 0.0  # audio accepted

    def accept(self, samples: np.ndarray) -> Detection | None:
        """Feed 16 kHz float32 audio; the phrase's detection, once its word is over."""
        self.seconds += samples.size / SAMPLE_RATE
        stream = self._stream
        stream.accept_waveform(SAMPLE_RATE, samples)
        while stream.ready():
            enc, stream.state = self._model.run_encoder(stream.next_chunk()[None], stream.state)
            stream.search.step(enc[0])
            self._states.append((stream.frames_decoded, stream.state))
        return self._find()

    def _find(self) -> Detection | None:
        search = self._stream.search
        best = search.ranked[0]
        tokens, n = best.tokens, len(self.tokens)
        frame_s = FRAME_SHIFT_S * self._model.info.frames_per_output
        for i in range(0, len(tokens) - n + 1):
            if tokens[i:i + n] != self.tokens:
                continue
            over = i + n < len(tokens) and tokens[i + n] in self._word_start
            settled = search.frame_offset - (best.timestamps[i + n - 1] + 1) \
                >= self.config.settle_frames
            if i + n < len(tokens) and not over:
                continue  # the phrase's last word goes on ("computers")
            if not (over or settled):
                return None  # wait for the word to end
            score = self.score(best, i, n)
            if score < self.config.threshold:
                continue
            consumed, state = self._state_after(best.timestamps[i + n - 1])
            found = Detection(self.text, self.tokens, best.timestamps[i] * frame_s,
                              consumed * FRAME_SHIFT_S, score, state)
            if self.verifier is None:
                return found
            confirmed = self.verifier.probability(self.features(found))
            if confirmed >= self.verifier.threshold:
                return replace(found, confirmed=confirmed)
        return None

    def features(self, detection: Detection) -> np.ndarray:
        """What the verifier judges a detection of this spotter by (verifier.py)."""
        per_output = self._model.info.frames_per_output
        first = int(round(detection.start / (FRAME_SHIFT_S * per_output)))
        end = int(round(detection.end / FRAME_SHIFT_S)) // per_output
        return pooled_features(self._stream.search.encoder_out, first, end, detection.score)

    @staticmethod
    def score(hyp: Hypothesis, first: int, n: int) -> float:
        """Geometric mean probability of tokens first..first+n-1 of `hyp` along its path."""
        before = hyp.trace[first - 1][0] if first > 0 else 0.0
        return math.exp((hyp.trace[first + n - 1][0] - before) / n)

    def _state_after(self, frame: int) -> tuple[int, tuple[np.ndarray, np.ndarray] | None]:
        """(feature frames consumed, encoder state) after the chunk that produced encoder
        frame `frame`."""
        feature_frame = frame * self._model.info.frames_per_output
        for consumed, state in self._states:
            if consumed > feature_frame:
                return consumed, state
        return self._stream.frames_decoded, None


class RollingSpotter:
    """Keyword spotters over overlapping windows of one stretch of speech.

    One search over a whole stretch commits its beam to whatever was said first (a
    television, a conversation), and a phrase said straight after those words is then heard
    as more of them. So a fresh spotter starts every `STRIDE_S` seconds and each lives
    `WINDOW_S`: every phrase up to WINDOW_S - STRIDE_S long lies whole in a window that
    began at most STRIDE_S before it. At most WINDOW_S / STRIDE_S spotters run at once,
    and only while the VAD hears speech."""

    STRIDE_S = 1.0
    WINDOW_S = 3.0

    def __init__(self, recognizer: Recognizer, config: WakeWordConfig) -> None:
        self._recognizer, self._config = recognizer, config
        self._spotters: list[tuple[float, KeywordSpotter]] = []
        self.seconds = 0.0  # audio accepted
        self._next_start = 0.0

    def accept(self, samples: np.ndarray) -> Detection | None:
        """Feed 16 kHz float32 audio; the phrase's detection (times from the start of this
        object's audio), once its word is over."""
        if self.seconds >= self._next_start:
            self._spotters.append((self.seconds, KeywordSpotter(self._recognizer, self._config)))
            self._next_start = self.seconds + self.STRIDE_S
        self._spotters = [(start, spotter) for start, spotter in self._spotters
                          if self.seconds - start < self.WINDOW_S]
        self.seconds += samples.size / SAMPLE_RATE
        for start, spotter in self._spotters:
            found = spotter.accept(samples)
            if found is not None:
                return replace(found, start=found.start + start, end=found.end + start)
        return None


def spell_phrase(recognizer: Recognizer, phrase: str) -> tuple[str, tuple[int, ...]]:
    """The wake phrase's normalised words and tokens, or a ValueError saying why not."""
    try:
        text, ids = recognizer.spell(phrase)
    except ContextError as e:
        raise ValueError(f"wake word: {e}") from e
    return text, tuple(ids)
