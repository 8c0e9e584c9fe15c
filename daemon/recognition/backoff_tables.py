"""A back-off n-gram model in flat arrays, read-only: the form the device keeps in memory.

`ngram_lm.NgramLM` holds one Python dict entry per n-gram (a packed key and a float), which
training fills and the cloud scores word by word; at some 400 bytes an n-gram, with the
follower lists the device built from it, the device LM's 135,000 n-grams took 55 MB of the
daemon's memory. The device asks one thing of its LM (token_lm.py): every word stored after
a context, and the context's back-off weight. Here the contexts of each length are their
packed keys, sorted, each with its back-off and a slice of two flat arrays (the words stored
after it and their ln p): about 17 bytes an n-gram, the contexts included, found by binary
search.

ngram_arpa.load_arpa_tables fills them from an ARPA file line by line, never holding the
dict form; `BackoffTables.of` converts a model in memory (training, tests). Parsing a
5-gram ARPA file of half a million n-grams takes a second, so the recipe also saves the
tables as they lie in memory (`save`, a compressed .npz beside the ARPA file), which `load`
reads in a few milliseconds when the daemon starts.
"""

from __future__ import annotations

import dataclasses
import zipfile
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_asr.daemon.recognition.ngram_lm import BOS, EOS, UNK, LmFormatError, NgramLM, pack

# A found context: the words stored after it, their ln p, and its ln back-off weight.
Followers = tuple[np.ndarray, np.ndarray, float]


@dataclass(frozen=True)
class _Level:
    """The contexts of one length: sorted keys, each with its back-off and its followers
    words[starts[i]:starts[i + 1]]."""

    keys: np.ndarray  # int64, sorted, unique
    backoffs: np.ndarray  # float32, per key (0 where the file gives none)
    starts: np.ndarray  # int64, len(keys) + 1
    words: np.ndarray  # int32
    logprobs: np.ndarray  # float32


class BackoffTables:
    """The model's vocabulary and, per context length 0 .. order - 1, its `_Level`."""

    def __init__(self, vocab: Sequence[str], order: int, levels: list[_Level],
                 source_sha256: str = "") -> None:
        self.vocab = list(vocab)
        self.source_sha256 = source_sha256  # of the ARPA file saved tables were made from
        self.index = {w: i for i, w in enumerate(self.vocab)}
        for special in (BOS, EOS, UNK):
            if special not in self.index:
                raise LmFormatError(f"the vocabulary has no {special}")
        self.order = order
        self.base = len(self.vocab) + 1
        self.bos, self.eos, self.unk = self.index[BOS], self.index[EOS], self.index[UNK]
        self._levels = levels

    @classmethod
    def of(cls, lm: NgramLM) -> BackoffTables:
        """The tables of a model in memory."""
        builder = TableBuilder(lm.vocab, lm.order)
        for n in range(1, lm.order + 1):
            for key, logprob in lm.logprobs[n].items():
                builder.put(n, key, logprob, None)
            for key, backoff in lm.backoffs[n].items():
                builder.put(n, key, None, backoff)
        return builder.finish()

    def save(self, path: Path, source_sha256: str) -> None:
        """Writes the tables, with the sha256 of the ARPA file they stand for: a reader
        can then tell tables left from an earlier LM."""
        arrays = {"vocab": np.array(self.vocab), "order": np.array(self.order),
                  "source_sha256": np.array(source_sha256)}
        for length, level in enumerate(self._levels):
            for field in dataclasses.fields(_Level):
                arrays[f"{length}.{field.name}"] = getattr(level, field.name)
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)

    @classmethod
    def load(cls, path: Path) -> BackoffTables:
        """The tables `save` wrote; LmFormatError says what is wrong."""
        try:
            with np.load(path, allow_pickle=False) as saved:
                vocab, order = [str(w) for w in saved["vocab"]], int(saved["order"])
                source = str(saved["source_sha256"])
                levels = [_Level(*(saved[f"{length}.{field.name}"]
                                   for field in dataclasses.fields(_Level)))
                          for length in range(order)]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            raise LmFormatError(f"cannot read LM tables {path}: {exc}") from exc
        for level in levels:
            if not (len(level.starts) == len(level.keys) + 1 == len(level.backoffs) + 1
                    and len(level.words) == len(level.logprobs) == level.starts[-1]
                    and (len(level.words) == 0 or 0 <= level.words.min()
                         and level.words.max() < len(vocab))):
                raise LmFormatError(f"{path}: tables that do not fit together (corrupt?)")
        return cls(vocab, order, levels, source)

    def find(self, context: Sequence[int]) -> Followers | None:
        """The words stored after `context` (word ids), their ln p and its ln back-off;
        None when the model stores neither for it."""
        if len(context) >= self.order:
            return None
        level = self._levels[len(context)]
        key = pack(context, self.base)
        i = int(np.searchsorted(level.keys, key))
        if i == len(level.keys) or int(level.keys[i]) != key:
            return None
        start, end = level.starts[i], level.starts[i + 1]
        return level.words[start:end], level.logprobs[start:end], float(level.backoffs[i])

    def num_ngrams(self) -> list[int]:
        return [len(level.words) for level in self._levels]

    def nbytes(self) -> int:
        return sum(a.nbytes for level in self._levels for a in
                   (level.keys, level.backoffs, level.starts, level.words, level.logprobs))


class TableBuilder:
    """Collects n-grams by packed key (as ngram_arpa's reader or a model in memory give
    them) in typed arrays, then sorts them into `BackoffTables`."""

    def __init__(self, vocab: Sequence[str], order: int) -> None:
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.order = order
        self.base = len(self.vocab) + 1
        if self.base ** max(order - 1, 1) >= 2 ** 63:
            raise LmFormatError(f"{len(self.vocab)} words to the order {order} do not fit "
                                "the tables' 64-bit context keys")
        lengths = range(order + 1)
        self._context = [array("q") for _ in lengths]  # per order: each n-gram's context
        self._word = [array("i") for _ in lengths]
        self._logprob = [array("f") for _ in lengths]
        self._backoff_key = [array("q") for _ in lengths]
        self._backoff = [array("f") for _ in lengths]

    def key(self, ids: Sequence[int]) -> int:
        return pack(ids, self.base)

    def put(self, n: int, key: int, logprob: float | None, backoff: float | None) -> None:
        """An n-gram by its packed key: its ln p (None: none, as for <s>) and its ln
        back-off weight as a context (None or 0: none)."""
        if logprob is not None:
            context, word = divmod(key, self.base)
            self._context[n].append(context)
            self._word[n].append(word - 1)
            self._logprob[n].append(logprob)
        if backoff:
            self._backoff_key[n].append(key)
            self._backoff[n].append(backoff)

    def finish(self) -> BackoffTables:
        levels = []
        for length in range(self.order):
            contexts = np.frombuffer(self._context[length + 1], np.int64)
            by_context = np.argsort(contexts, kind="stable")
            contexts = contexts[by_context]
            backoff_keys = np.frombuffer(self._backoff_key[length], np.int64)
            keys = np.unique(np.concatenate([contexts, backoff_keys]))
            backoffs = np.zeros(len(keys), np.float32)
            backoffs[np.searchsorted(keys, backoff_keys)] = np.frombuffer(
                self._backoff[length], np.float32)
            starts = np.append(np.searchsorted(contexts, keys), len(contexts))
            words = np.frombuffer(self._word[length + 1], np.int32)[by_context]
            logprobs = np.frombuffer(self._logprob[length + 1], np.float32)[by_context]
            levels.append(_Level(keys, backoffs, starts.astype(np.int64), words, logprobs))
        return BackoffTables(self.vocab, self.order, levels)

