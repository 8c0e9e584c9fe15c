"""A word n-gram language model with interpolated modified Kneser-Ney smoothing.

Trained from sentences (Chen & Goodman's modified Kneser-Ney: three discounts per order
from the count-of-counts, continuation counts for the lower orders except for n-grams that
start with <s>, and the unigrams interpolated with the uniform distribution), saved and
loaded in ARPA format, and queried word by word with an `LmState`, so that a lattice
search can carry the state along a path.

An interpolated model is exactly an ARPA back-off model: an n-gram seen in training stores
its interpolated probability, and the back-off weight of a context is its interpolation
weight gamma. Scores are natural logs in memory and log10 in the ARPA file.

Every probability distribution is over the vocabulary without <s>: all words, </s> and
<unk>. Words outside the vocabulary are scored as <unk>.
"""

from __future__ import annotations

import gzip
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
LN10 = math.log(10.0)
ARPA_NO_PROB = -99.0  # what ARPA files write as the log10 probability of <s>
# Discounts when the count-of-counts cannot give them (a tiny corpus): D_k stays below k.
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)

LmState = tuple[int, ...]  # word ids of the context the next word is scored in


class LmFormatError(ValueError):
    """An ARPA file, or the sentences to train on, are not what the model needs."""


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


class NgramLM:
    """Back-off tables: per order, packed n-gram key -> ln p, and context key -> ln bow."""

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
        self._logprobs = logprobs  # [0] unused; [n] holds the n-grams
        self._backoffs = backoffs
        self.bos, self.eos, self.unk = self.index[BOS], self.index[EOS], self.index[UNK]

    # -- keys ---------------------------------------------------------------------------

    def _key(self, ids: Sequence[int]) -> int:
        key = 0
        for i in ids:
            key = key * self._base + i + 1
        return key

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
            logprob = self._logprobs[len(context) + 1].get(self._key((*context, word)))
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
        return self._backoffs[len(context)].get(self._key(context), 0.0)

    def followers(self) -> dict[tuple[int, ...], tuple[list[int], list[float]]]:
        """Every context that stores n-grams (word ids) -> the words stored after it and
        their ln p. Grouped on the packed keys (a key's context is key // base), so that
        only the contexts are spelled out, not every n-gram: this runs at daemon start."""
        grouped: dict[tuple[int, ...], tuple[list[int], list[float]]] = {}
        for n in range(1, self.order + 1):
            by_context: dict[int, tuple[list[int], list[float]]] = {}
            for key, logprob in self._logprobs[n].items():
                context, word = divmod(key, self._base)
                entry = by_context.get(context)
                if entry is None:
                    entry = by_context[context] = ([], [])
                entry[0].append(word - 1)
                entry[1].append(logprob)
            for context, entry in by_context.items():
                grouped[tuple(self._ids_of_key(context, n - 1))] = entry
        return grouped

    def predictable_ids(self) -> list[int]:
        """The ids every distribution covers: the vocabulary without <s>."""
        return [i for i in range(len(self.vocab)) if i != self.bos]

    def num_ngrams(self) -> list[int]:
        return [len(table) for table in self._logprobs[1:]]

    # -- ARPA ---------------------------------------------------------------------------

    def _ids_of_key(self, key: int, n: int) -> list[int]:
        ids = []
        for _ in range(n):
            key, digit = divmod(key, self._base)
            ids.append(digit - 1)
        return ids[::-1]

    def save_arpa(self, path: Path) -> None:
        """Writes the model as ARPA text (gzip-compressed when the name ends in .gz)."""
        path = Path(path)
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "wt", encoding="utf-8") as f:
            f.write("\n\\data\\\n")
            for n, count in enumerate(self.num_ngrams(), start=1):
                f.write(f"ngram {n}={count + (1 if n == 1 else 0)}\n")
            for n in range(1, self.order + 1):
                f.write(f"\n\\{n}-grams:\n")
                if n == 1:
                    bow = self.backoff((self.bos,))
                    f.write(f"{ARPA_NO_PROB:.1f}\t{BOS}\t{bow / LN10:.7g}\n")
                backoffs = self._backoffs[n] if n < self.order else {}
                table = self._logprobs[n]
                # Unigrams in id order, so a loaded model numbers its words the same way.
                keys = ([self._key((i,)) for i in self.predictable_ids()] if n == 1
                        else list(table))
                for key in keys:
                    logprob = table[key]
                    words = " ".join(self.vocab[i] for i in self._ids_of_key(key, n))
                    line = f"{logprob / LN10:.7g}\t{words}"
                    if key in backoffs:
                        line += f"\t{backoffs[key] / LN10:.7g}"
                    f.write(line + "\n")
            f.write("\n\\end\\\n")

    @classmethod
    def load_arpa(cls, path: Path) -> NgramLM:
        path = Path(path)
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rt", encoding="utf-8") as f:
                return _read_arpa(f, str(path))
        except (OSError, UnicodeDecodeError, EOFError) as exc:
            raise LmFormatError(f"cannot read ARPA file {path}: {exc}") from exc


_SECTION = re.compile(r"^\\(\d+)-grams:$")
_COUNT = re.compile(r"^ngram (\d+)=(\d+)$")


def _read_arpa(lines: Iterable[str], name: str) -> NgramLM:
    """Parses ARPA text; n-grams may only use words of the unigram section.

    One pass, each n-gram put in its table as it is read: the daemon loads a megabyte of
    ARPA text at start, and a list of every parsed line first cost 70 MB at its peak."""
    declared: dict[int, int] = {}
    unigrams: list[tuple[str, float, float | None]] = []
    lm: NgramLM | None = None
    read = [0]  # n-grams read per order
    section = None  # "data", or the order being read
    ended = False
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if isinstance(section, int) and line[0] != "\\":  # most lines: an n-gram
            words, log10p, log10bow = _arpa_entry(line, section, name, number)
            read[section] += 1
            if section == 1:
                unigrams.append((words[0], log10p, log10bow))
                continue
            try:
                key = lm._key([lm.index[w] for w in words])
            except KeyError as exc:
                raise LmFormatError(f"{name}: {section}-gram {' '.join(words)!r} uses "
                                    f"{exc.args[0]!r}, which is not a unigram") from None
            lm._logprobs[section][key] = log10p * LN10
            if log10bow is not None and log10bow != 0.0:
                lm._backoffs[section][key] = log10bow * LN10
            continue
        where = f"{name}:{number}"
        if line == "\\data\\":
            section = "data"
        elif line == "\\end\\":
            ended = True
            break
        elif match := _SECTION.match(line):
            section = int(match.group(1))
            if section != len(read):
                raise LmFormatError(f"{where}: \\{section}-grams: out of order")
            if section not in declared:
                raise LmFormatError(f"{where}: the header declares no {section}-grams")
            read.append(0)
            if section == 2:
                lm = _with_unigrams(unigrams, declared, name)
        elif section == "data":
            if not (match := _COUNT.match(line)):
                raise LmFormatError(f"{where}: expected 'ngram N=COUNT', got {line!r}")
            declared[int(match.group(1))] = int(match.group(2))
        elif section is None:
            raise LmFormatError(f"{where}: text before \\data\\: {line!r}")
        else:
            raise LmFormatError(f"{where}: not an ARPA line: {line!r}")
    if not ended:
        raise LmFormatError(f"{name}: no \\end\\ line (truncated file?)")
    order = len(read) - 1
    if order < 1 or sorted(declared) != list(range(1, order + 1)):
        raise LmFormatError(f"{name}: the header declares orders {sorted(declared)} but the "
                            f"file has sections 1..{order}")
    for n in range(1, order + 1):
        if declared[n] != read[n]:
            raise LmFormatError(f"{name}: header says {declared[n]} {n}-grams, "
                                f"the file has {read[n]}")
    if lm is None:  # a unigram model
        lm = _with_unigrams(unigrams, declared, name)
    return lm


def _with_unigrams(unigrams: list[tuple[str, float, float | None]], declared: dict[int, int],
                   name: str) -> NgramLM:
    """The model with its vocabulary and unigram tables; the higher orders are filled in
    by the caller, up to the order the header declares."""
    vocab = [word for word, _, _ in unigrams]
    if len(set(vocab)) != len(vocab):
        raise LmFormatError(f"{name}: a word is listed twice among the unigrams")
    order = max(declared, default=1)
    lm = NgramLM(vocab, order, [{} for _ in range(order + 1)], [{} for _ in range(order + 1)])
    for i, (word, log10p, log10bow) in enumerate(unigrams):
        key = lm._key([i])
        if word != BOS:
            lm._logprobs[1][key] = log10p * LN10
        if log10bow is not None and log10bow != 0.0:
            lm._backoffs[1][key] = log10bow * LN10
    return lm


def _arpa_entry(line: str, n: int, name: str, number: int
                ) -> tuple[list[str], float, float | None]:
    """One n-gram line: log10 p, n words (tab- or space-separated), optional log10 bow."""
    fields = line.split("\t") if "\t" in line else line.split()
    if len(fields) in (2, 3) and len(words := fields[1].split()) == n:
        rest = fields[2:]  # as written here: log10 p, the words, the back-off, by tabs
    elif len(fields) in (n + 1, n + 2):
        words, rest = fields[1:n + 1], fields[n + 1:]
    else:
        raise LmFormatError(f"{name}:{number}: not an ARPA {n}-gram line")
    try:
        log10p = float(fields[0])
        log10bow = float(rest[0]) if rest else None
    except ValueError as exc:
        raise LmFormatError(f"{name}:{number}: bad number: {exc}") from None
    if not math.isfinite(log10p) or log10p > 0 or (log10bow is not None
                                                    and not math.isfinite(log10bow)):
        raise LmFormatError(f"{name}:{number}: probability or back-off out of range")
    return words, log10p, log10bow


# -- training ---------------------------------------------------------------------------

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
                lm._backoffs[n - 1][lm._key(context)] = math.log(gamma)
        for gram, prob in probs.items():
            lm._logprobs[n][lm._key(gram)] = math.log(prob)
        lower = probs
    return lm


def perplexity(lm: NgramLM, sentences: Iterable[Sequence[str]]) -> float:
    """Per-word perplexity with </s> counted as a word and unknown words as <unk>."""
    total, count = 0.0, 0
    for sentence in sentences:
        total += lm.sentence_logprob(sentence)
        count += len(sentence) + 1
    if count == 0:
        raise LmFormatError("no sentences to measure perplexity on")
    return math.exp(-total / count)
