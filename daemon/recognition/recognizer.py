"""Recognizer and stream, one object per concept (as sherpa-onnx's Python API has them).

    recognizer = Recognizer.from_model_dir("models/rnnt-v4-int4")
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

The stream (stream.py) owns everything per utterance (resampler, feature extractor, frame
buffer, encoder state, search); the recognizer owns the model and is shared by all streams,
and runs the streams' chunks, end-points and second passes. It loads the device LM and the
context speller beside the model (model_loading.py). `is_endpoint` is the decoder-only rule
a program without a VAD can use; the daemon's pipeline end-points with the VAD and two
end-pointers instead (endpoint.py).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_asr.daemon.constants import FRAME_SHIFT_S
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
from edge_asr.daemon.recognition.model_loading import load_context_builder, load_device_lm
from edge_asr.daemon.recognition.name_rescue import (
    ContextPhrase,
    SlotBonus,
    rescue,
)
from edge_asr.daemon.recognition.search import GreedySearch, Hypothesis, ModifiedBeamSearch
from edge_asr.daemon.recognition.stream import OnlineStream
from edge_asr.daemon.recognition.transducer import TransducerModel


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
        if not 0.0 < config.no_words_share <= 1.0:  # also refuses NaN
            raise ValueError("no_words_share must be in (0, 1] (1 keeps every word), got "
                             f"{config.no_words_share}")
        self.config = config
        self.model = model or TransducerModel(config.model_dir, threads=config.threads)
        uses_lm = config.lm_scale > 0 and config.decoding_method == "modified_beam_search"
        self.lm = load_device_lm(self.model, f"lm_scale = {config.lm_scale} (0 decodes "
                                 "without it)") if uses_lm else None
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

    def spell(self, phrase: str) -> tuple[str, list[int]]:
        """A phrase's normalised words and the model's tokens for them, as a context entry
        is spelled; ContextError if the model cannot spell it."""
        return self._builder().encode("phrase", phrase)

    def _builder(self) -> ContextBuilder:
        if self._context_builder is None:  # only a context needs it: loaded on first use
            self._context_builder = load_context_builder(self.model, self.config,
                                                         self.slot_bonus.words)
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
