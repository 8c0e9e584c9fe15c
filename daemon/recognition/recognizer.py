"""Recognizer and stream, one object per concept (as sherpa-onnx's Python API has them).

    recognizer = Recognizer.from_model_dir("models/rnnt-v2-int4")
    stream = recognizer.create_stream()
    stream.accept_waveform(16000, samples)   # any rate, any piece size, float32 in [-1, 1]
    recognizer.decode(stream)                # runs every chunk that is ready
    if recognizer.is_endpoint(stream):       # the decoder has heard a pause
        print(recognizer.result(stream).text)
        recognizer.reset(stream)             # next utterance, same stream and audio clock
    stream.input_finished(); recognizer.decode(stream)

    stream = recognizer.create_stream(context=["Ananya Krishnamurthy", "the lava lamp"])

A context (a list of display forms, or {"contacts": [...], "devices": [...], "phrases": [...]})
biases the beam search towards those phrases; it is spelled with the model folder's bpe.model,
and its graph is cached on the recognizer, since the same user's context comes back every
utterance. Greedy search ignores the context (it only checks its shape).

The stream owns everything per utterance (resampler, feature extractor, frame buffer, encoder
state, search); the recognizer owns the model and is shared by all streams. `is_endpoint` is
the decoder-only rule a program without a VAD can use; the daemon's pipeline end-points with
the VAD and two end-pointers instead (endpoint.py).
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_asr.daemon.capture.audio import StreamResampler, check_float_audio
from edge_asr.daemon.constants import FRAME_SHIFT_S, SAMPLE_RATE
from edge_asr.daemon.frontend.features import StreamingFbank
from edge_asr.daemon.recognition.config import (  # noqa: F401  (the public API)
    CONTEXT_CACHE_NODES,
    CONTEXT_CACHE_SIZE,
    DEFAULT_ENDPOINT_RULES,
    DEFAULT_MODEL_DIR,
    MODELS_DIR,
    SOURCE_MODEL_DIR,
    Context,
    EndpointRule,
    RecognizerConfig,
    Result,
)
from edge_asr.daemon.recognition.context_graph import (
    ContextBuilder,
    ContextGraph,
    context_entries,
)
from edge_asr.daemon.recognition.name_rescue import (
    ContextPhrase,
    SlotBonus,
    rescue,
)
from edge_asr.daemon.recognition.ngram_lm import LmFormatError
from edge_asr.daemon.recognition.search import GreedySearch, Hypothesis, ModifiedBeamSearch
from edge_asr.daemon.recognition.token_lm import LM_FILE, LM_FILES, TokenLM
from edge_asr.daemon.recognition.transducer import (
    PACKED_SUFFIX,
    ModelError,
    TransducerModel,
    read_model_file,
)


class OnlineStream:
    def __init__(self, recognizer: Recognizer, context_graph: ContextGraph | None = None) -> None:
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
    def best_text(self) -> str:
        return self._model.detokenize(list(self.search.ranked[0].tokens))

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


@functools.lru_cache(maxsize=4)
def _load_token_lm(folder: Path, versions: tuple, tokens: tuple[str, ...]) -> TokenLM:
    """One TokenLM per LM folder (and version of its files, `_lm_versions`) in the process:
    it takes a second to load and is read-only but for its cache, which streams of several
    threads may share."""
    return TokenLM.load(folder, tokens)


def _lm_versions(folder: Path) -> tuple:
    """What tells one version of a folder's LM files from another: each file's modification
    time and size (None for a file that is not there)."""
    out = []
    for name in LM_FILES:
        try:
            stat = (folder / name).stat()
            out.append((name, stat.st_mtime_ns, stat.st_size))
        except FileNotFoundError:
            out.append((name, None))
    return tuple(out)


def context_claims(said: str, plain: str, phrases: Sequence[ContextPhrase]) -> bool:
    """Whether the biased beam's best text `said` owes anything to the context: a phrase
    said as whole words, or half a name, a contact's word that the plain beam's best
    (`plain`) did not hear ("call nikolai whit" against "redial wit cell")."""
    if any(f" {p.text} " in f" {said} " for p in phrases):
        return True
    heard = set(said.split()) - set(plain.split())
    return any(heard.intersection(p.text.split()) for p in phrases if p.slot)


class Recognizer:
    def __init__(self, config: RecognizerConfig | None = None,
                 model: TransducerModel | None = None) -> None:
        config = config or RecognizerConfig()
        if config.decoding_method not in ("greedy_search", "modified_beam_search"):
            raise ValueError(f"unknown decoding_method {config.decoding_method!r}: "
                             "use greedy_search or modified_beam_search")
        if not 0.0 <= config.rescue_distance <= 1.0 or config.rescue_candidates < 0 \
                or config.rescue_nbest < 1:
            raise ValueError("rescue_distance must be in [0, 1], rescue_candidates >= 0 and "
                             f"rescue_nbest >= 1, got {config.rescue_distance}, "
                             f"{config.rescue_candidates} and {config.rescue_nbest}")
        if min(config.rescue_slot_bonus, config.context_slot_bonus,
               config.context_slot_bonus_large) < 0 or \
                isinstance(config.slot_words, str) or \
                not all(isinstance(w, str) and w.strip() for w in config.slot_words):
            raise ValueError("rescue_slot_bonus, context_slot_bonus and "
                             "context_slot_bonus_large must be >= 0 and slot_words a list of "
                             f"words, got {config.rescue_slot_bonus}, "
                             f"{config.context_slot_bonus}, {config.context_slot_bonus_large} "
                             f"and {config.slot_words!r}")
        if config.beam < 1 or config.context_beam < 0 or config.context_own_slots < 0:
            raise ValueError("beam must be >= 1, context_beam and context_own_slots >= 0, "
                             f"got {config.beam}, {config.context_beam} and "
                             f"{config.context_own_slots}")
        if not (0.0 <= config.lm_scale < float("inf") and np.isfinite(config.token_bonus)):
            raise ValueError("lm_scale must be >= 0 and token_bonus finite, got "
                             f"{config.lm_scale} and {config.token_bonus}")
        self.config = config
        self.model = model or TransducerModel(config.model_dir, threads=config.threads)
        self.lm = self._load_lm() if config.lm_scale > 0 and \
            config.decoding_method == "modified_beam_search" else None
        self.slot_bonus = SlotBonus(
            frozenset(w.strip().lower() for w in config.slot_words),
            config.rescue_slot_bonus)
        self._context_builder: ContextBuilder | None = None
        self._contexts: OrderedDict[tuple, ContextGraph] = OrderedDict()
        self._contexts_lock = threading.Lock()
        # Each graph's phrases as the model spells them (context_phrases), kept while the
        # graph lives: a user's context comes back every utterance.
        self._phrases: weakref.WeakKeyDictionary[ContextGraph, list[ContextPhrase]] = \
            weakref.WeakKeyDictionary()

    @classmethod
    def from_model_dir(cls, model_dir: str | Path = DEFAULT_MODEL_DIR, **options: object
                       ) -> Recognizer:
        """A recognizer of the model in `model_dir`; `options` are RecognizerConfig's fields
        (decoding_method="greedy_search", beam=8, lm_scale=0, ...)."""
        return cls(RecognizerConfig(model_dir=model_dir, **options))

    def new_search(self, context_graph: ContextGraph | None = None
                   ) -> GreedySearch | ModifiedBeamSearch:
        if self.config.decoding_method == "greedy_search":
            return GreedySearch(self.model)  # greedy search has no use for a context
        biased = context_graph is not None and not context_graph.is_empty
        beam = self.config.beam_with_context if biased else self.config.beam
        return ModifiedBeamSearch(self.model, beam, context_graph, self.config.length_norm,
                                  self.config.context_own_slots, self.lm, self.config.lm_scale,
                                  self.config.token_bonus)

    def plain_search(self, context_graph: ContextGraph | None) -> ModifiedBeamSearch | None:
        """The unbiased beam run beside a biased one (`context_fallback`), else None."""
        if (not self.config.context_fallback or context_graph is None
                or context_graph.is_empty or self.config.decoding_method == "greedy_search"):
            return None
        return ModifiedBeamSearch(self.model, self.config.beam_with_context, None,
                                  self.config.length_norm, lm=self.lm,
                                  lm_scale=self.config.lm_scale,
                                  token_bonus=self.config.token_bonus)

    def _load_lm(self) -> TokenLM:
        path = self.model.dir / LM_FILE  # its sha256 was checked with the model's files
        if not path.is_file():
            raise ModelError(f"{self.model.dir}: no {LM_FILE}, which lm_scale = "
                             f"{self.config.lm_scale} needs (python -m edge_asr.models.device_lm "
                             "makes it; lm_scale = 0 decodes without it)")
        try:
            folder = self.model.dir.resolve()
            return _load_token_lm(folder, _lm_versions(folder), tuple(self.model.tokens))
        except LmFormatError as e:
            raise ModelError(f"{path}: not a device LM for this model: {e}") from e

    def spell(self, phrase: str) -> tuple[str, list[int]]:
        """A phrase's normalised words and the model's tokens for them, as a context entry
        is spelled; ContextError if the model cannot spell it."""
        return self._builder().encode("phrase", phrase)

    def _builder(self) -> ContextBuilder:
        if self._context_builder is None:
            path = self.model.dir / "bpe.model"
            if not path.is_file() and not path.with_name(path.name + PACKED_SUFFIX).is_file():
                raise ModelError(f"{self.model.dir}: no bpe.model, which contextual biasing "
                                 "needs to spell the context (export it beside tokens.txt)")
            proto = read_model_file(self.model.dir, "bpe.model")  # plain or packed
            try:
                builder = ContextBuilder(proto, self.config.context_bonus,
                                         sorted(self.slot_bonus.words),
                                         self.config.context_slot_bonus,
                                         self.config.context_slot_bonus_large)
            except (OSError, RuntimeError) as e:
                raise ModelError(f"{path}: not a sentencepiece model: {e}") from e
            pieces = [builder.sp.id_to_piece(i) for i in range(builder.sp.get_piece_size())]
            if pieces != self.model.tokens:
                raise ModelError(f"{path}: its pieces differ from tokens.txt (another model's?)")
            self._context_builder = builder
        return self._context_builder

    def context_graph(self, context: Context | None) -> ContextGraph | None:
        """The graph of a context, built once per distinct content; ContextError if invalid."""
        if context is None:
            return None
        key = tuple(context_entries(context))  # checks shape, types and counts first
        if self.config.decoding_method == "greedy_search":
            return None
        # Streams of several threads (the daemon's worker, Recognize calls) share the cache.
        with self._contexts_lock:
            graph = self._contexts.get(key)
            if graph is not None:
                self._contexts.move_to_end(key)
                return graph
        graph = self._builder().build(context)  # outside the lock: building takes a while
        with self._contexts_lock:
            self._contexts[key] = graph
            while len(self._contexts) > 1 and (
                    len(self._contexts) > CONTEXT_CACHE_SIZE
                    or sum(g.num_nodes for g in self._contexts.values()) > CONTEXT_CACHE_NODES):
                self._contexts.popitem(last=False)
        return graph

    def create_stream(self, context: Context | None = None) -> OnlineStream:
        return OnlineStream(self, self.context_graph(context))

    def decode(self, stream: OnlineStream) -> int:
        """Run every ready chunk through encoder and search; returns the chunks decoded.

        Once the input is finished and its last chunk decoded, the search is finalized
        (unfinished context matches give their bonus back), exactly once.
        """
        n = 0
        while stream.ready():
            enc, stream.state = self.model.run_encoder(stream.next_chunk()[None], stream.state)
            stream.search.step(enc[0])
            if stream.plain is not None:
                stream.plain.step(enc[0])
            n += 1
        if stream.finished and not stream.finalized:
            self.end_utterance(stream)
        return n

    def is_endpoint(self, stream: OnlineStream,
                    rules: Sequence[EndpointRule] = DEFAULT_ENDPOINT_RULES) -> bool:
        """Whether the decoder has heard the utterance end: any of `rules` fires on the
        best hypothesis's trailing blanks and the frames decoded since the last reset."""
        frame_s = FRAME_SHIFT_S * self.model.info.frames_per_output
        said = bool(stream.search.ranked[0].tokens)
        trailing = stream.trailing_blank_frames * frame_s
        length = stream.utterance_frames * frame_s
        return any(rule.fires(said, trailing, length) for rule in rules)

    def reset(self, stream: OnlineStream) -> None:
        """Start the stream's next utterance: a fresh search (same context) and encoder
        state from here on, while the buffered audio and the clock of timestamps go on.
        The encoder starts afresh as in training, where every utterance began from a zero
        state: carried over a 2 s pause, the state made the model mishear the next
        utterance's first words (20 of the 24 bundled clips after clip 2, greedy)."""
        stream.state = self.model.initial_state()
        offset = stream.search.frame_offset
        stream.search = self.new_search(stream.context_graph)
        stream.search.frame_offset = offset
        stream.plain = self.plain_search(stream.context_graph)
        if stream.plain is not None:
            stream.plain.frame_offset = offset
        stream.utterance_start = offset
        stream.rescue_memo = None
        stream.finalized = False

    def end_utterance(self, stream: OnlineStream) -> None:
        """The utterance is over (end of input or a final end-point): unfinished context
        matches give their bonus back, then `settle` decides on what is left."""
        if stream.finalized:
            return
        stream.search.finalize()
        stream.finalized = True
        self.settle(stream)

    def settle(self, stream: OnlineStream) -> None:
        """The n-best at an end-point, while a context is set: the name rescue's second
        pass, then the plain beam standing in if the context has won no phrase. Once per
        frame count (the rescue is a forward pass per candidate)."""
        search = stream.search
        if (not isinstance(search, ModifiedBeamSearch) or search.context is None
                or search.led_at == search.frame_offset):
            return
        self.rescue_names(stream)
        self._fall_back(stream)

    def _fall_back(self, stream: OnlineStream) -> None:
        if stream.plain is None:
            return
        stream.plain.finalize()
        plain = stream.plain.ranked
        said = self.model.detokenize(list(stream.search.nbest[0].tokens))
        if not context_claims(said, self.model.detokenize(list(plain[0].tokens)),
                              self.context_phrases(stream)):
            stream.search.stand_in(plain)

    def context_phrases(self, stream: OnlineStream) -> list[ContextPhrase]:
        """The stream's context phrases as the model spells them (none without context),
        worked out once per context graph."""
        search = stream.search
        graph = search.context if isinstance(search, ModifiedBeamSearch) else None
        if graph is None:
            return []
        with self._contexts_lock:
            phrases = self._phrases.get(graph)
        if phrases is None:
            # The rescue's slot bonus goes to contacts, or to every entry of a list without
            # kinds (a device after "call" is no name the grammar expects).
            phrases = [ContextPhrase(self.model.detokenize(list(p.tokens)), p.tokens,
                                     graph.bonus if p.bonus is None else p.bonus,
                                     p.kind in (None, "contacts"))
                       for p in graph.phrases]
            with self._contexts_lock:
                self._phrases[graph] = phrases
        return phrases

    def rescue_names(self, stream: OnlineStream) -> None:
        """The second pass of biasing (name_rescue.py) over the frames decoded so far; the
        rescued hypothesis, if any, leads the n-best. A no-op without a context or with
        name_rescue off."""
        search = stream.search
        if (not self.config.name_rescue or not isinstance(search, ModifiedBeamSearch)
                or search.context is None):
            return
        best = search.ranked[0]
        memo = stream.rescue_memo
        if memo is not None and memo[0] == best.tokens:
            # The same best hypothesis, a few more frames (the speculative end-point's, now
            # at the final): the same answer; only the phrase that won is checked again.
            if memo[1] is None:
                search.lead_with(None)
                return
            phrases = [memo[1]]
        else:
            phrases = self.context_phrases(stream)
        others = search.ranked[1:self.config.rescue_nbest]
        found = rescue(self.model, search.encoder_out, best, phrases, self._builder().sp.encode,
                       self.config.rescue_distance, self.config.rescue_candidates, others,
                       self.slot_bonus)
        search.lead_with(found[0] if found else None)
        stream.rescue_memo = (best.tokens, found[1] if found else None)

    def result(self, stream: OnlineStream) -> Result:
        nbest: list[Hypothesis] = stream.search.nbest
        best = nbest[0]
        seconds_per_frame = FRAME_SHIFT_S * self.model.info.frames_per_output
        return Result(
            text=self.model.detokenize(list(best.tokens)),
            tokens=list(best.tokens),
            timestamps=[t * seconds_per_frame for t in best.timestamps],
            nbest=[self.model.detokenize(list(h.tokens)) for h in nbest],
            nbest_log_probs=[h.log_prob for h in nbest],
            nbest_bias=[h.bias for h in nbest],
        )
