"""From token hypotheses to words with times and scores (what lattices and clients see)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_asr.daemon.recognition.search import Hypothesis
from edge_asr.daemon.uplink.lattice import Path, WordArc

WORD_START = "\u2581"  # sentencepiece's word-boundary marker


def hypothesis_path(hyp: Hypothesis, pieces: list[str], frame_s: float) -> Path:
    """Words of a hypothesis, times in seconds from the start of its stream.

    A word runs from its first token's frame to the end of its last token's frame. Its
    acoustic score is the growth of the hypothesis' log-prob from the previous word's last
    token to its own last token (the blank frames before it are its own), so a word's
    score ends where the word does: two hypotheses that end a word at the same time can be
    joined there without counting a frame twice or not at all (daemon/uplink/word_lattice.py).
    What follows the last token (trailing blanks, probability added by merged paths) goes
    to the last word, so the path's scores add up to the hypothesis' score. The context
    bonus and the device LM's score are split the same way.
    """
    groups: list[list[int]] = []  # token positions of each word
    for i, token in enumerate(hyp.tokens):
        piece = pieces[token]
        starts_word = piece.startswith(WORD_START) and (
            not groups or pieces[hyp.tokens[groups[-1][-1]]] != WORD_START)
        if not groups or starts_word:
            groups.append([i])
        else:
            groups[-1].append(i)
    words: list[WordArc] = []
    prev_lp, prev_bias, prev_lm = 0.0, 0.0, 0.0
    for k, group in enumerate(groups):
        text = "".join(pieces[hyp.tokens[i]] for i in group).replace(WORD_START, "")
        last = group[-1]
        # Both searches record a trace entry per token; the last word takes the full score.
        lp, bias, lm = (hyp.log_prob, hyp.bias, hyp.lm_score) if k == len(groups) - 1 \
            else hyp.trace[last]
        start = hyp.timestamps[group[0]] * frame_s
        end = (hyp.timestamps[last] + 1) * frame_s
        if k + 1 < len(groups):  # a rescued name's tokens may share frames with the next
            end = max(start, min(end, hyp.timestamps[groups[k + 1][0]] * frame_s))
        if text:
            words.append(WordArc(text, start, end, lp - prev_lp, bias - prev_bias, lm - prev_lm,
                                 len(group)))
            prev_lp, prev_bias, prev_lm = lp, bias, lm
    return Path(words)


def stable_prefix(texts: list[str]) -> str:
    """The words every hypothesis of the beam agrees on: they will not change any more."""
    if not texts:
        return ""
    split = [t.split() for t in texts]
    common = []
    for column in zip(*split, strict=False):
        if any(w != column[0] for w in column):
            break
        common.append(column[0])
    # The last common word may still grow ("five" -> "fifty"): only words followed by more
    # words in every hypothesis count as stable.
    if common and any(len(s) == len(common) for s in split):
        common = common[:-1]
    return " ".join(common)


def no_words_share(has_words: Sequence[bool], log_probs: Sequence[float]) -> float:
    """The share of the n-best's acoustic probability held by hypotheses without words.
    Over speech the empty hypothesis is all but impossible (blank through every word);
    over music or a door the beam keeps it beside the words it guesses."""
    if not has_words:
        return 0.0
    lp = np.asarray(log_probs, np.float64)
    posterior = np.exp(lp - np.logaddexp.reduce(lp))
    return float(sum(p for p, words in zip(posterior, has_words, strict=True) if not words))
