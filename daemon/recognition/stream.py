"""The per-utterance half of the recognizer API: `OnlineStream` takes audio at any rate and
in pieces of any size, and holds everything one stream needs between decodes (resampler,
feature extractor, frame buffer, encoder state, searches). recognizer.py's `Recognizer`,
shared by all streams, makes them and decodes them.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from edge_asr.daemon.capture.audio import StreamResampler, check_float_audio
from edge_asr.daemon.constants import FRAME_SHIFT_S, SAMPLE_RATE
from edge_asr.daemon.frontend.features import StreamingFbank
from edge_asr.daemon.recognition.context_graph import ContextGraph
from edge_asr.daemon.recognition.name_rescue import ContextPhrase
from edge_asr.daemon.recognition.search import GreedySearch, Hypothesis, ModifiedBeamSearch
from edge_asr.daemon.recognition.transducer import TransducerModel


class SearchMaker(Protocol):
    """What a stream needs of its recognizer: the model and fresh searches. A Protocol, so
    that this module does not import recognizer.py, which imports it."""

    model: TransducerModel

    def new_search(self, context_graph: ContextGraph | None = None
                   ) -> GreedySearch | ModifiedBeamSearch: ...

    def plain_search(self, context_graph: ContextGraph | None
                     ) -> ModifiedBeamSearch | None: ...


class OnlineStream:
    """One audio stream's recognition state, fed by `accept_waveform` and decoded by its
    recognizer (`Recognizer.decode`)."""

    def __init__(self, recognizer: SearchMaker, context_graph: ContextGraph | None = None
                 ) -> None:
        model = recognizer.model
        self.fbank = StreamingFbank()
        self._frames = np.zeros((0, 80), np.float32)
        self.state = model.initial_state()
        self.search = recognizer.new_search(context_graph)
        self.plain = recognizer.plain_search(context_graph)  # context_fallback's, or None
        self.finished = False
        self.finalized = False  # the search's end-of-input step has run
        # The name rescue's last question and answer: (best tokens, phrase put in or None).
        self.rescue_memo: tuple[tuple[int, ...], ContextPhrase | None] | None = None
        self.frames_decoded = 0  # feature frames whose encoder output is in the search
        self.context_graph = context_graph
        self.utterance_start = 0  # encoder frame at which the current utterance began
        self._model = model
        self._chunk = model.info.chunk_frames
        self._shift = model.info.chunk_shift
        self._resampler: StreamResampler | None = None  # at the rate of the first piece

    def accept_waveform(self, sample_rate: int, samples: np.ndarray) -> None:
        """Audio at `sample_rate` (one of audio.SUPPORTED_RATES; the same for the whole
        stream), mono float32 in [-1, 1], any piece size. Other rates are resampled with a
        streaming resampler, so pieces join without clicks. AudioFormatError for an
        unsupported rate, NaN, infinite or out-of-range samples; ValueError for a change of rate."""
        if self.finished:
            raise RuntimeError("accept_waveform after input_finished")
        if self._resampler is None:
            self._resampler = StreamResampler(sample_rate)
        elif sample_rate != self._resampler.rate:
            raise ValueError(f"this stream's audio is at {self._resampler.rate} Hz, not "
                             f"{sample_rate} Hz: use a new stream for another rate")
        samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        check_float_audio(samples)
        samples = self._resampler(samples)
        self.fbank.accept(samples)
        self._pull()

    def input_finished(self) -> None:
        """Flush: pad with silence so that every real frame reaches the encoder."""
        if self.finished:
            return
        if self._resampler is not None:
            self.fbank.accept(self._resampler(np.zeros(0, np.float32), last=True))
        tail = np.zeros(int((self._chunk + self._shift) * FRAME_SHIFT_S * SAMPLE_RATE), np.float32)
        self.fbank.accept(tail)
        self.fbank.finish()
        self.finished = True
        self._pull()

    def _pull(self) -> None:
        new = self.fbank.pop_frames()
        if new.size:
            self._frames = np.concatenate([self._frames, new])

    def ready(self) -> bool:
        return self._frames.shape[0] >= self._chunk

    def next_chunk(self) -> np.ndarray:
        chunk = self._frames[: self._chunk]
        self._frames = self._frames[self._shift :]  # keep the overlap the subsampling needs
        self.frames_decoded += self._shift
        return chunk

    # What an end-pointer reads, from the beam's own ranking (not the name rescue's).
    @property
    def best_tokens(self) -> tuple[int, ...]:
        return self.search.ranked[0].tokens

    @property
    def best_text(self) -> str:
        return self._model.detokenize(list(self.best_tokens))

    @property
    def trailing_blank_frames(self) -> int:
        """Encoder frames since the best hypothesis last emitted a token (all of the
        utterance's, if none)."""
        best = self.search.ranked[0]
        last = best.timestamps[-1] + 1 if best.timestamps else self.utterance_start
        return self.search.frame_offset - last

    @property
    def hypotheses(self) -> list[Hypothesis]:
        """The n-best as the search holds it (tokens, scores, frame timestamps)."""
        return self.search.nbest

    @property
    def utterance_frames(self) -> int:
        """Encoder frames decoded since the stream began or was last reset."""
        return self.search.frame_offset - self.utterance_start
