"""Streaming transducer search over encoder frames: greedy and modified beam search.

Both searches are incremental: `step()` takes the encoder frames of one chunk and the
hypotheses carry over to the next chunk, so partial results are available at every chunk.
"Modified" beam search (as in icefall / sherpa-onnx) emits at most one token per frame,
which lets all hypotheses of a frame be scored in one batched joiner call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from edge_asr.daemon.transducer import TransducerModel


@dataclass
class Hypothesis:
    tokens: tuple[int, ...] = ()
    log_prob: float = 0.0
    timestamps: tuple[int, ...] = ()  # encoder frame index at which each token was emitted
    # Decoder output for this hypothesis' context, computed once and reused every frame.
    decoder_out: np.ndarray | None = field(default=None, repr=False, compare=False)


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
                self.hyp = Hypothesis(self.hyp.tokens + (token,), self.hyp.log_prob + lp,
                                      self.hyp.timestamps + (self.frame_offset,))
            self.frame_offset += 1

    @property
    def nbest(self) -> list[Hypothesis]:
        return [self.hyp]


class ModifiedBeamSearch(_Search):
    def __init__(self, model: TransducerModel, beam: int = 4) -> None:
        super().__init__(model)
        self.beam = beam
        self.hyps = [Hypothesis()]

    def step(self, encoder_out: np.ndarray) -> None:
        for frame in encoder_out:
            self.hyps = self._step_frame(frame)
            self.frame_offset += 1

    def _step_frame(self, frame: np.ndarray) -> list[Hypothesis]:
        hyps = self.hyps
        dec = self._decoder_out(hyps)
        enc = np.repeat(frame[None, :], len(hyps), axis=0)
        logp = log_softmax(self.model.run_joiner(enc, dec))  # (H, V)
        if self.unk >= 0:
            logp[:, self.unk] = -np.inf
        scores = logp + np.array([h.log_prob for h in hyps])[:, None]
        # The best `beam` (hypothesis, token) pairs over the whole (H, V) grid.
        flat = scores.ravel()
        k = min(self.beam, flat.size)
        top = np.argpartition(-flat, k - 1)[:k]
        merged: dict[tuple[int, ...], Hypothesis] = {}
        for idx in top[np.argsort(-flat[top])]:
            h, token = divmod(int(idx), logp.shape[1])
            src = hyps[h]
            score = float(flat[idx])
            if token == self.blank:
                new = Hypothesis(src.tokens, score, src.timestamps, src.decoder_out)
            else:
                new = Hypothesis(src.tokens + (token,), score,
                                 src.timestamps + (self.frame_offset,))
            old = merged.get(new.tokens)
            if old is None:
                merged[new.tokens] = new
            else:  # the same token sequence reached two ways: add the probabilities
                old.log_prob = float(np.logaddexp(old.log_prob, new.log_prob))
        return sorted(merged.values(), key=lambda h: -h.log_prob)

    @property
    def nbest(self) -> list[Hypothesis]:
        return self.hyps
