"""Trains the word n-gram model (daemon/recognition/ngram_lm.py) from sentences, with
interpolated modified Kneser-Ney smoothing.

Chen & Goodman's modified Kneser-Ney: three discounts per order from the count-of-counts,
continuation counts for the lower orders except for n-grams that start with <s>, and the
unigrams interpolated with the uniform distribution. The device LM's recipe (device_lm.py)
and the cloud LM's (cloud_lm_recipe.py) train with it and save the result as ARPA
(daemon/recognition/ngram_arpa.py); the daemon and the cloud only load it.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edge_asr.daemon.recognition.ngram_lm import BOS, EOS, UNK, LmFormatError, NgramLM

# Discounts when the count-of-counts cannot give them (a tiny corpus): D_k stays below k.
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


@dataclass(frozen=True)
class NgramOptions:
    order: int = 4
    # Words seen fewer times than this become <unk> in training, so that <unk> gets real
    # contexts to learn from.
    min_count: int = 1
    # Count cutoffs (SRILM's -gt3min, -gt4min, ...): n-grams of order 3, 4, ... seen fewer
    # times than this are not stored and their mass backs off; the last value also holds for
    # the orders above. They may not decrease with the order, so that every stored n-gram's
    # prefix and suffix are stored too. Unigrams and bigrams are never cut.
    cutoffs: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if any(c < 1 for c in self.cutoffs) or list(self.cutoffs) != sorted(self.cutoffs):
            raise LmFormatError(f"cutoffs must be >= 1 and not decrease, got {self.cutoffs}")

    def cutoff(self, n: int) -> int:
        """The fewest times an n-gram of order n must be seen to be stored."""
        if n < 3 or not self.cutoffs:
            return 1
        return self.cutoffs[min(n - 3, len(self.cutoffs) - 1)]


def _modified_kn_discounts(adjusted: Iterable[int]) -> tuple[float, float, float]:
    """D1, D2, D3+ from the count-of-counts n1..n4 (Chen & Goodman 1998, eq. 26)."""
    n = Counter(c for c in adjusted if c <= 4)
    n1, n2, n3, n4 = (n[k] for k in (1, 2, 3, 4))
    if min(n1, n2, n3, n4) == 0:
        return FALLBACK_DISCOUNTS
    y = n1 / (n1 + 2 * n2)
    discounts = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    if not all(0 < d < k for k, d in enumerate(discounts, start=1)):
        return FALLBACK_DISCOUNTS
    return discounts


def build_vocab(sentences: Iterable[Sequence[str]], min_count: int = 1) -> list[str]:
    """<s>, </s>, <unk>, then the words seen at least min_count times, most frequent first."""
    counts = Counter(w for sentence in sentences for w in sentence)
    for special in (BOS, EOS, UNK):
        counts.pop(special, None)
    words = sorted((w for w, c in counts.items() if c >= min_count),
                   key=lambda w: (-counts[w], w))
    return [BOS, EOS, UNK, *words]


def _raw_counts(sentences: Iterable[Sequence[str]], index: dict[str, int],
                order: int) -> list[Counter[tuple[int, ...]]]:
    counts: list[Counter[tuple[int, ...]]] = [Counter() for _ in range(order + 1)]
    unk = index[UNK]
    for sentence in sentences:
        ids = [index[BOS], *(index.get(w, unk) for w in sentence), index[EOS]]
        for n in range(1, order + 1):
            table = counts[n]
            for i in range(len(ids) - n + 1):
                table[tuple(ids[i:i + n])] += 1
    counts[1].pop((index[BOS],), None)  # <s> is never predicted
    return counts


def _adjusted_counts(raw: list[Counter[tuple[int, ...]]], bos: int
                     ) -> list[dict[tuple[int, ...], int]]:
    """Raw counts at the top order and for n-grams starting with <s>; elsewhere the number
    of distinct words seen before the n-gram (continuation counts)."""
    order = len(raw) - 1
    adjusted: list[dict[tuple[int, ...], int]] = [{} for _ in range(order + 1)]
    adjusted[order] = dict(raw[order])
    for n in range(order - 1, 0, -1):
        continuation: Counter[tuple[int, ...]] = Counter()
        for gram in raw[n + 1]:
            continuation[gram[1:]] += 1
        adjusted[n] = {gram: (count if gram[0] == bos else continuation[gram])
                       for gram, count in raw[n].items()}
    return adjusted


def train_ngram(sentences: Sequence[Sequence[str]], options: NgramOptions = NgramOptions()
                ) -> NgramLM:
    """Interpolated modified Kneser-Ney from tokenised sentences (no <s>/</s> in them).

    With count cutoffs, discounts, continuation counts and context totals still come from
    all n-grams; a cut n-gram gives its whole count to its context's back-off weight
    instead of its discount only, so every context still sums to one. Raw counts never
    grow with the order, so cutoffs that do not decrease keep each stored n-gram's prefix
    (its context) and suffix (its back-off) stored.
    """
    if options.order < 1:
        raise LmFormatError(f"order must be at least 1, got {options.order}")
    if not any(sentences):
        raise LmFormatError("no words to train on")
    vocab = build_vocab(sentences, options.min_count)
    lm = NgramLM(vocab, options.order, [{} for _ in range(options.order + 1)],
                 [{} for _ in range(options.order + 1)])
    raw = _raw_counts(sentences, lm.index, options.order)
    adjusted = _adjusted_counts(raw, lm.bos)
    uniform = 1.0 / (len(vocab) - 1)  # every word but <s>
    lower: dict[tuple[int, ...], float] = {}  # probabilities of the order below
    for n in range(1, options.order + 1):
        discounts = _modified_kn_discounts(adjusted[n].values())
        cutoff = options.cutoff(n)
        by_context: dict[tuple[int, ...], list[tuple[int, int, bool]]] = defaultdict(list)
        for gram, count in adjusted[n].items():
            by_context[gram[:-1]].append((gram[-1], count, raw[n][gram] >= cutoff))
        if n == 1:  # words never seen (<unk> at least) get the uniform share of gamma
            by_context[()].extend((word, 0, True) for word in lm.predictable_ids()
                                  if (word,) not in adjusted[1])
        probs: dict[tuple[int, ...], float] = {}
        for context, followers in by_context.items():
            total = sum(count for _, count, _ in followers)
            left_over = sum(discounts[min(count, 3) - 1] if kept else count
                            for _, count, kept in followers if count)
            gamma = left_over / total
            for word, count, kept in followers:
                if not kept:
                    continue
                below = uniform if n == 1 else lower[(*context[1:], word)]
                discounted = max(count - discounts[min(count, 3) - 1], 0.0) if count else 0.0
                probs[(*context, word)] = discounted / total + gamma * below
            # When every follower was cut, gamma is exactly 1: no back-off weight to store.
            if context and any(kept for _, _, kept in followers):
                lm.backoffs[n - 1][lm.key(context)] = math.log(gamma)
        for gram, prob in probs.items():
            lm.logprobs[n][lm.key(gram)] = math.log(prob)
        lower = probs
    return lm
