"""A word n-gram language model with back-off, queried word by word.

The model's tables are what an ARPA file holds (read and written by ngram_arpa.py; trained
with interpolated modified Kneser-Ney by models/ngram_train.py), queried with an
`LmState` so that a lattice search can carry the state along a path.

An interpolated model is exactly an ARPA back-off model: an n-gram seen in training stores
its interpolated probability, and the back-off weight of a context is its interpolation
weight gamma. Scores are natural logs in memory and log10 in the ARPA file.

Every probability distribution is over the vocabulary without <s>: all words, </s> and
<unk>. Words outside the vocabulary are scored as <unk>.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

BOS, EOS, UNK = "<s>", "</s>", "<unk>"

LmState = tuple[int, ...]  # word ids of the context the next word is scored in


def pack(ids: Sequence[int], base: int) -> int:
    """An n-gram's table key: its word ids packed into one integer, digits id + 1 in
    `base` (the vocabulary's size + 1), so that the context of a key is key // base."""
    key = 0
    for i in ids:
        key = key * base + i + 1
    return key


class LmFormatError(ValueError):
    """An ARPA file, or the sentences to train on, are not what the model needs."""


class NgramLM:
    """Back-off tables: per order, packed n-gram key -> ln p, and context key -> ln bow.

    The reader and the trainer fill `logprobs` and `backoffs` in place, keyed by `key`;
    nothing else writes them."""

    def __init__(self, vocab: Sequence[str], order: int,
                 logprobs: list[dict[int, float]], backoffs: list[dict[int, float]]) -> None:
        if order < 1:
            raise LmFormatError(f"order must be at least 1, got {order}")
        for special in (BOS, EOS, UNK):
            if special not in vocab:
                raise LmFormatError(f"the vocabulary has no {special}")
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.order = order
        self._base = len(self.vocab) + 1
        self.logprobs = logprobs  # [0] unused; [n] holds the n-grams
        self.backoffs = backoffs
        self.bos, self.eos, self.unk = self.index[BOS], self.index[EOS], self.index[UNK]

    # -- keys ---------------------------------------------------------------------------

    def key(self, ids: Sequence[int]) -> int:
        """The table key of an n-gram (word ids): the ids packed into one integer."""
        return pack(ids, self._base)

    def ids_of_key(self, key: int, n: int) -> list[int]:
        """The word ids of an n-gram's key."""
        ids = []
        for _ in range(n):
            key, digit = divmod(key, self._base)
            ids.append(digit - 1)
        return ids[::-1]

    def word_id(self, word: str) -> int:
        return self.index.get(word, self.unk)

    # -- queries ------------------------------------------------------------------------

    def begin_state(self) -> LmState:
        return (self.bos,)

    def score_id(self, state: LmState, word: int) -> tuple[float, LmState]:
        """ln p(word | state) and the state after it. `word` must not be <s>."""
        context = state
        penalty = 0.0
        while True:
            logprob = self.logprobs[len(context) + 1].get(self.key((*context, word)))
            if logprob is not None:
                break
            if not context:
                raise LmFormatError(f"word id {word} ({self.vocab[word]!r}) has no unigram")
            penalty += self.backoff(context)
            context = context[1:]
        # Every suffix of a stored n-gram is stored, so the found n-gram's tail is the
        # longest history that can still matter.
        found = (*context, word)
        return penalty + logprob, found[-(self.order - 1):] if self.order > 1 else ()

    def score(self, state: LmState, word: str) -> tuple[float, LmState]:
        return self.score_id(state, self.word_id(word))

    def end_score(self, state: LmState) -> float:
        return self.score_id(state, self.eos)[0]

    def sentence_logprob(self, words: Sequence[str], end: bool = True) -> float:
        """ln p of the words after <s>, with </s> unless end is False."""
        state, total = self.begin_state(), 0.0
        for word in words:
            logprob, state = self.score(state, word)
            total += logprob
        return total + (self.end_score(state) if end else 0.0)

    def word_logprobs(self, words: Sequence[str]) -> list[float]:
        """ln p of each word in turn, then of </s>."""
        state, out = self.begin_state(), []
        for word in words:
            logprob, state = self.score(state, word)
            out.append(logprob)
        out.append(self.end_score(state))
        return out

    def backoff(self, context: Sequence[int]) -> float:
        """ln back-off weight of `context` (word ids): 0 for a context that stores none."""
        return self.backoffs[len(context)].get(self.key(context), 0.0)

    def predictable_ids(self) -> list[int]:
        """The ids every distribution covers: the vocabulary without <s>."""
        return [i for i in range(len(self.vocab)) if i != self.bos]

    def num_ngrams(self) -> list[int]:
        return [len(table) for table in self.logprobs[1:]]


def perplexity(lm: NgramLM, sentences: Iterable[Sequence[str]]) -> float:
    """Per-word perplexity with </s> counted as a word and unknown words as <unk>."""
    total, count = 0.0, 0
    for sentence in sentences:
        total += lm.sentence_logprob(sentence)
        count += len(sentence) + 1
    if count == 0:
        raise LmFormatError("no sentences to measure perplexity on")
    return math.exp(-total / count)
