"""Streaming transducer search over encoder frames: greedy and modified beam search.

Both searches are incremental: `step()` takes the encoder frames of one chunk and the
hypotheses carry over to the next chunk, so partial results are available at every chunk.
"Modified" beam search (as in icefall / sherpa-onnx) emits at most one token per frame,
which lets all hypotheses of a frame be scored in one batched joiner call.

Contextual biasing (shallow fusion with a `ContextGraph`) is done by the beam search only:
each hypothesis keeps its acoustic log-prob in `log_prob` and the bonus it currently holds
in `bias`, and hypotheses are ranked by `log_prob + bias` (`Hypothesis.score`). The greedy
search ignores any context: it has no alternatives for a bonus to choose between.

The device LM (`TokenLM`, shallow fusion) works the same way: `lm_score` holds the scaled
LM log-prob of the tokens so far, and is part of the ranking but not of `log_prob`; the
lattice sent to the cloud carries the two apart (`WordArc.acoustic`, `WordArc.lm`), so the
cloud can weigh the device LM against its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from edge_asr.daemon.recognition.context_graph import ROOT, ContextGraph, ContextState
from edge_asr.daemon.recognition.token_lm import TokenLM, TokenLmState
from edge_asr.daemon.recognition.transducer import TransducerModel


@dataclass
class Hypothesis:
    tokens: tuple[int, ...] = ()
    log_prob: float = 0.0  # acoustic: joiner log-probs, summed over the merged paths
    timestamps: tuple[int, ...] = ()  # encoder frame index at which each token was emitted
    # Decoder output for this hypothesis' context, computed once and reused every frame.
    decoder_out: np.ndarray | None = field(default=None, repr=False, compare=False)
    context_state: ContextState = ROOT  # where the tokens stand in the context graph
    bias: float = 0.0  # context bonus currently included in the ranking score
    # (log_prob, bias, lm_score) just after each token was emitted: splits the score over
    # the words of a lattice path. Merged paths add their probability to `log_prob` only.
    trace: tuple[tuple[float, float, float], ...] = ()
    lm_state: TokenLmState = ()  # where the tokens leave the device LM
    lm_score: float = 0.0  # the device LM's log-prob of the tokens times its scale, plus
    # the search's token bonus per token
    lm_costs: tuple[float, ...] = ()  # the LM's part of lm_score, token by token

    @property
    def score(self) -> float:
        """What the beam search ranks by: acoustic log-prob, LM score and context bonus."""
        return self.log_prob + self.lm_score + self.bias


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


class _Search:
    def __init__(self, model: TransducerModel) -> None:
        self.model = model
        self.blank = model.info.blank_id
        # sherpa-onnx never emits <unk>; neither do we, so both give the same transcripts.
        self.unk = model.tokens.index("<unk>") if "<unk>" in model.tokens else -1
        self.frame_offset = 0  # encoder frames consumed so far (for timestamps)

    def _context(self, tokens: tuple[int, ...]) -> list[int]:
        k = self.model.info.context_size
        ctx = [-1] * (k - 1) + [self.blank] + list(tokens)
        return ctx[-k:]

    def _decoder_out(self, hyps: list[Hypothesis]) -> np.ndarray:
        todo = [h for h in hyps if h.decoder_out is None]
        if todo:
            ctx = np.array([self._context(h.tokens) for h in todo], dtype=np.int64)
            for h, out in zip(todo, self.model.run_decoder(ctx), strict=True):
                h.decoder_out = out
        return np.stack([h.decoder_out for h in hyps])

    def finalize(self) -> None:
        """End of input; a search without context has nothing left to do."""


class GreedySearch(_Search):
    def __init__(self, model: TransducerModel) -> None:
        super().__init__(model)
        self.hyp = Hypothesis()

    def step(self, encoder_out: np.ndarray) -> None:
        """encoder_out: (T', J) frames of one chunk."""
        for frame in encoder_out:
            dec = self._decoder_out([self.hyp])
            logits = self.model.run_joiner(frame[None, :], dec)[0]
            token = int(logits.argmax())
            if token not in (self.blank, self.unk):
                lp = float(log_softmax(logits)[token])
                log_prob = self.hyp.log_prob + lp
                self.hyp = Hypothesis(self.hyp.tokens + (token,), log_prob,
                                      self.hyp.timestamps + (self.frame_offset,),
                                      trace=self.hyp.trace + ((log_prob, 0.0, 0.0),))
            self.frame_offset += 1

    @property
    def nbest(self) -> list[Hypothesis]:
        return [self.hyp]

    ranked = nbest


class ModifiedBeamSearch(_Search):
    def __init__(self, model: TransducerModel, beam: int = 4,
                 context_graph: ContextGraph | None = None, length_norm: bool = True,
                 own_slots: int = 1, lm: TokenLM | None = None, lm_scale: float = 0.0,
                 token_bonus: float = 0.0) -> None:
        super().__init__(model)
        self.beam = beam
        self.lm = lm if lm is not None and lm_scale > 0 else None
        self.lm_scale = lm_scale
        # A reward per token emitted, kept with the LM's score: every LM log-prob is a
        # cost, so with the LM alone the beam would rather drop a word than say it.
        self.token_bonus = token_bonus
        # With a context, this many of the beam's slots go to the pairs the model itself
        # scores best, bonus aside (see _step_frame).
        self.own_slots = max(0, min(own_slots, beam))
        # The n-best is ordered by score per token (sherpa-onnx's GetMostProbable(true) and
        # icefall do the same): raw sums favour short hypotheses, and every token costs
        # log-prob, so without it the beam prefers deleting a word to spelling it.
        self.length_norm = length_norm
        self.hyps = [Hypothesis(lm_state=self.lm.start() if self.lm else ())]
        # An empty graph is no graph, so that it decodes exactly as without context.
        self.context = None if context_graph is None or context_graph.is_empty else context_graph
        if self.context is not None and self.context.vocab_size != model.info.vocab_size:
            raise ValueError(f"context graph is for {self.context.vocab_size} tokens, the model "
                             f"has {model.info.vocab_size}: built with another bpe.model?")
        self.finalized = False
        # With a context the utterance's encoder frames are kept for the name rescue's
        # second pass (name_rescue.py): 1 KB per 40 ms frame.
        self.frames: list[np.ndarray] = []
        # Hypotheses from outside the beam that lead the n-best until the next frame (the
        # rescue's, or a plain search's standing in for it), with the frame offset they
        # were given for, and whether they replace the beam's own or only go first.
        self._leaders: list[Hypothesis] = []
        self._leader_at = -1
        self._stand_in = False

    def step(self, encoder_out: np.ndarray) -> None:
        if self.context is not None:
            self.frames.append(encoder_out)
        for frame in encoder_out:
            self.hyps = self._step_frame(frame)
            self.frame_offset += 1

    @property
    def encoder_out(self) -> np.ndarray:
        """The kept encoder frames (T, J) of the utterance so far (empty without context)."""
        if not self.frames:
            return np.zeros((0, 0), np.float32)
        if len(self.frames) > 1:
            self.frames = [np.concatenate(self.frames)]
        return self.frames[0]

    def lead_with(self, hyp: Hypothesis | None) -> None:
        """Put `hyp` first in the n-best for the frames decoded so far (None: nothing)."""
        self._leaders = [self._scored_by_lm(hyp)] if hyp else []
        self._leader_at, self._stand_in = self.frame_offset, False

    def stand_in(self, hyps: list[Hypothesis]) -> None:
        """Give `hyps` as the n-best, in place of the beam's own, for the frames decoded
        so far (the recognizer's plain search, when the context won nothing)."""
        self._leaders = list(hyps)
        self._leader_at, self._stand_in = self.frame_offset, True

    @property
    def led_at(self) -> int:
        """Frame offset of the last lead_with call (-1: never)."""
        return self._leader_at

    def _step_frame(self, frame: np.ndarray) -> list[Hypothesis]:
        hyps = self.hyps
        dec = self._decoder_out(hyps)
        enc = np.repeat(frame[None, :], len(hyps), axis=0)
        logp = log_softmax(self.model.run_joiner(enc, dec))  # (H, V)
        if self.unk >= 0:
            logp[:, self.unk] = -np.inf
        acoustic = logp + np.array([h.log_prob for h in hyps])[:, None]
        own_score = acoustic  # what the model (and the device LM) score, bonus aside
        lm_logp = None
        if self.lm is not None or self.token_bonus:
            lm_logp = np.stack([self._lm_row(h.lm_state) for h in hyps])
            own_score = acoustic + lm_logp + np.array([h.lm_score for h in hyps])[:, None]
        ranking = own_score
        if self.context is not None:
            # Every (hypothesis, token) pair ranked with the bonus the token would bring, so
            # that a name's low-scoring tokens can enter the beam; a blank changes no bonus.
            deltas = np.stack([self.context.token_deltas(h.context_state) for h in hyps])
            deltas[:, self.blank] = 0.0
            ranking = own_score + deltas + np.array([h.bias for h in hyps])[:, None]
        # The best `beam` (hypothesis, token) pairs over the whole (H, V) grid.
        flat = ranking.ravel()
        k = min(self.beam, flat.size)
        top = np.argpartition(-flat, k - 1)[:k]
        if self.context is not None and k > 1 and self.own_slots:
            # Slots are kept for the pairs the model itself likes best, bonus aside: else a
            # few boosted partial matches can fill the beam, and when the phrase is not
            # completed the path the audio supports is gone (the bonus is given back, but
            # only the truncated or garbled boosted paths are left to choose from).
            n_own = min(self.own_slots, k)
            own = np.argpartition(-own_score.ravel(), n_own - 1)[:n_own]
            missing = [int(i) for i in own if i not in top]
            if missing:  # they replace the lowest-ranked boosted pairs not among them
                spare = [i for i in top[np.argsort(flat[top])] if i not in own]
                top[np.isin(top, spare[:len(missing)])] = missing
        merged: dict[tuple[int, ...], Hypothesis] = {}
        for idx in top[np.argsort(-flat[top])]:
            h, token = divmod(int(idx), logp.shape[1])
            src = hyps[h]
            log_prob = float(acoustic.flat[idx])
            if token == self.blank:
                new = Hypothesis(src.tokens, log_prob, src.timestamps, src.decoder_out,
                                 src.context_state, src.bias, src.trace, src.lm_state,
                                 src.lm_score, src.lm_costs)
            else:
                new = self._emit(src, token, log_prob,
                                 0.0 if lm_logp is None else float(lm_logp[h, token]))
            old = merged.get(new.tokens)
            if old is None:
                merged[new.tokens] = new
            else:  # the same token sequence reached two ways: add the probabilities
                # (the context state is a function of the tokens: the better one's is kept)
                old.log_prob = float(np.logaddexp(old.log_prob, new.log_prob))
        return sorted(merged.values(), key=lambda h: -h.score)

    def _lm_row(self, lm_state: TokenLmState) -> np.ndarray:
        """What the LM side of the score gains with each token from `lm_state`: the scaled
        LM log-prob plus the token bonus (0 for a blank, which says no word)."""
        row = np.full(self.model.info.vocab_size, self.token_bonus, np.float64)
        if self.lm is not None:
            row += self.lm_scale * self.lm.token_logprobs(lm_state)
        row[self.blank] = 0.0
        return row

    def _emit(self, src: Hypothesis, token: int, log_prob: float, lm_logp: float) -> Hypothesis:
        """`src` followed by the non-blank `token`: context, LM and trace moved on."""
        state, bias = src.context_state, src.bias
        lm_state, lm_score, lm_costs = src.lm_state, src.lm_score + lm_logp, src.lm_costs
        if self.lm is not None:
            lm_state = self.lm.advance(lm_state, token)
            lm_costs += (lm_logp - self.token_bonus,)
        if self.context is not None:
            delta, state, matched = self.context.forward_one_step(state, token)
            bias += delta
            if matched is not None and self.lm is not None:
                # A completed phrase of the user's pays the LM for its first token only:
                # the LM spells names from the training names' pieces, and a name the user
                # lists is no less likely for being spelled oddly. On dev_names (held-out
                # names) 8.58 -> 7.77% WER (RESULTS.md, "The device LM").
                n = len(matched.tokens) - 1
                lm_score -= sum(lm_costs[len(lm_costs) - n:])
                lm_costs = lm_costs[:len(lm_costs) - n] + (0.0,) * n
        return Hypothesis(src.tokens + (token,), log_prob, src.timestamps + (self.frame_offset,),
                          None, state, bias, src.trace + ((log_prob, bias, lm_score),),
                          lm_state, lm_score, lm_costs)

    def _scored_by_lm(self, hyp: Hypothesis) -> Hypothesis:
        """`hyp`, found outside this search (the name rescue's), with the LM side of the
        score this search would have given its tokens, so that its lattice path carries
        the device LM's score as the beam's own paths do. Acoustic scores, bias and times
        stay as they were."""
        if self.lm is None and not self.token_bonus:
            return hyp
        walk = Hypothesis(lm_state=self.lm.start() if self.lm else ())
        lm_trace = []
        for token in hyp.tokens:
            walk = self._emit(walk, token, 0.0, float(self._lm_row(walk.lm_state)[token]))
            lm_trace.append(walk.lm_score)
        lm_score = walk.lm_score
        if self.finalized and self.lm is not None:
            lm_score += self.lm_scale * self.lm.end_logprob(walk.lm_state)
        trace = tuple((lp, bias, lm) for (lp, bias, *_), lm in zip(hyp.trace, lm_trace,
                                                                   strict=True))
        return replace(hyp, trace=trace, lm_state=walk.lm_state, lm_score=lm_score,
                       lm_costs=walk.lm_costs)

    def finalize(self) -> None:
        """End of input: unfinished context matches give their bonus back, the device LM
        scores the end of the sentence (a request cut short is unlikely); re-rank once."""
        if self.finalized:
            return
        self.finalized = True
        if self.context is None and self.lm is None:
            return
        for h in self.hyps:
            if self.context is not None:
                h.bias += self.context.finalize(h.context_state)
                h.context_state = ROOT
            if self.lm is not None:
                h.lm_score += self.lm_scale * self.lm.end_logprob(h.lm_state)
        self.hyps.sort(key=lambda h: -h.score)

    @property
    def ranked(self) -> list[Hypothesis]:
        """The beam's own hypotheses, best first (self.hyps stays ranked by raw score)."""
        if not self.length_norm:
            return self.hyps
        # The context's leading slots count as tokens, as in sherpa-onnx, so that an empty
        # hypothesis is not divided by zero and short ones are not over-rewarded.
        k = self.model.info.context_size
        # The acoustic log-prob per token, plus the context bonus over the longest path's
        # length, one length for all. Over each path's own length (sherpa-onnx's score per
        # token), the same bonus is worth more to a shorter path: "dial grandad on" (bonus
        # 18 over 10 tokens) beat "dial grandad on their home phone" (18 over 15) though
        # the audio says the rest. Over the longest, a bonus is never worth more than it
        # was. `edge-asr eval` with the context, own length -> longest (rnnt-v1 as
        # shipped in 834976a): dev WER 6.40 -> 6.09%, name-free 5.71%
        # both; dev_names 10.84 -> 9.22%, name recall 84.2 -> 85.1%. (The beam's mean length
        # put a name into a test_sentences utterance without one.) Without a context every
        # bonus is 0.
        longest = max(len(h.tokens) for h in self.hyps) + k
        # The device LM's score counts per token, as the acoustic one does.
        return sorted(self.hyps, key=lambda h: (h.log_prob + h.lm_score) / (len(h.tokens) + k)
                      + h.bias / longest, reverse=True)

    @property
    def nbest(self) -> list[Hypothesis]:
        """`ranked`, led by the rescued hypothesis while it is current (`lead_with`), or
        the stand-ins instead (`stand_in`)."""
        ranked = self.ranked
        if not self._leaders or self._leader_at != self.frame_offset:
            return ranked
        if self._stand_in:
            return list(self._leaders)
        led = {h.tokens for h in self._leaders}
        return self._leaders + [h for h in ranked if h.tokens not in led]
