"""ARPA files for the n-gram model: the reader the daemon and the cloud load their LMs
with, and the writer the recipes save them with.

Scores are log10 in the file and natural logs in the model (ngram_lm.py). Both take plain
or gzip-compressed text (a name ending in .gz).
"""

from __future__ import annotations

import gzip
import io
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from edge_asr.daemon.recognition.backoff_tables import BackoffTables, TableBuilder
from edge_asr.daemon.recognition.ngram_lm import BOS, LmFormatError, NgramLM

LN10 = math.log(10.0)
ARPA_NO_PROB = -99.0  # what ARPA files write as the log10 probability of <s>


class _Builder(Protocol):
    """What the reader fills: n-grams by packed key, ln p and ln back-off (None: none)."""

    index: dict[str, int]

    def key(self, ids: list[int]) -> int: ...

    def put(self, n: int, key: int, logprob: float | None, backoff: float | None) -> None: ...

    def finish(self) -> NgramLM | BackoffTables: ...


_SECTION = re.compile(r"^\\(\d+)-grams:$")
_COUNT = re.compile(r"^ngram (\d+)=(\d+)$")


def save_arpa(lm: NgramLM, path: Path) -> None:
    """Writes the model as ARPA text (gzip-compressed when the name ends in .gz)."""
    path = Path(path)
    # No time stamp in the gzip header: the same model makes the same bytes (and sha256).
    with (io.TextIOWrapper(gzip.GzipFile(path, "wb", mtime=0), encoding="utf-8")
          if path.suffix == ".gz" else open(path, "w", encoding="utf-8")) as f:
        f.write("\n\\data\\\n")
        for n, count in enumerate(lm.num_ngrams(), start=1):
            f.write(f"ngram {n}={count + (1 if n == 1 else 0)}\n")
        for n in range(1, lm.order + 1):
            f.write(f"\n\\{n}-grams:\n")
            if n == 1:
                bow = lm.backoff((lm.bos,))
                f.write(f"{ARPA_NO_PROB:.1f}\t{BOS}\t{bow / LN10:.7g}\n")
            backoffs = lm.backoffs[n] if n < lm.order else {}
            table = lm.logprobs[n]
            # Unigrams in id order, so a loaded model numbers its words the same way.
            keys = [lm.key((i,)) for i in lm.predictable_ids()] if n == 1 else list(table)
            for key in keys:
                logprob = table[key]
                words = " ".join(lm.vocab[i] for i in lm.ids_of_key(key, n))
                line = f"{logprob / LN10:.7g}\t{words}"
                if key in backoffs:
                    line += f"\t{backoffs[key] / LN10:.7g}"
                f.write(line + "\n")
        f.write("\n\\end\\\n")


def load_arpa(path: Path) -> NgramLM:
    """The model an ARPA file (plain or .gz) holds; LmFormatError says what is wrong."""
    return _load(path, _DictBuilder)


def load_arpa_tables(path: Path) -> BackoffTables:
    """The same model as read-only flat arrays (backoff_tables.py): what the device keeps,
    a thirtieth of the memory."""
    return _load(path, TableBuilder)


class _DictBuilder:
    """Fills an NgramLM's dicts, as `TableBuilder` fills its arrays."""

    def __init__(self, vocab: list[str], order: int) -> None:
        self.lm = NgramLM(vocab, order, [{} for _ in range(order + 1)],
                          [{} for _ in range(order + 1)])
        self.index = self.lm.index

    def key(self, ids: list[int]) -> int:
        return self.lm.key(ids)

    def put(self, n: int, key: int, logprob: float | None, backoff: float | None) -> None:
        if logprob is not None:
            self.lm.logprobs[n][key] = logprob
        if backoff:
            self.lm.backoffs[n][key] = backoff

    def finish(self) -> NgramLM:
        return self.lm


def _load(path: Path, builder: Callable[[list[str], int], _Builder]):
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return _read_arpa(f, str(path), builder)
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise LmFormatError(f"cannot read ARPA file {path}: {exc}") from exc


def _read_arpa(lines: Iterable[str], name: str, builder: Callable[[list[str], int], _Builder]):
    """Parses ARPA text into what `builder(vocab, order)` makes; n-grams may only use words
    of the unigram section.

    One pass, each n-gram put in its table as it is read: the daemon loads a megabyte of
    ARPA text at start, and a list of every parsed line first cost 70 MB at its peak."""
    declared: dict[int, int] = {}
    unigrams: list[tuple[str, float, float | None]] = []
    tables: _Builder | None = None
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
                key = tables.key([tables.index[w] for w in words])
            except KeyError as exc:
                raise LmFormatError(f"{name}: {section}-gram {' '.join(words)!r} uses "
                                    f"{exc.args[0]!r}, which is not a unigram") from None
            tables.put(section, key, log10p * LN10,
                       log10bow * LN10 if log10bow is not None else None)
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
                tables = _with_unigrams(unigrams, declared, name, builder)
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
    if tables is None:  # a unigram model
        tables = _with_unigrams(unigrams, declared, name, builder)
    return tables.finish()


def _with_unigrams(unigrams: list[tuple[str, float, float | None]], declared: dict[int, int],
                   name: str, builder: Callable[[list[str], int], _Builder]) -> _Builder:
    """The builder with the vocabulary and the unigrams; the higher orders are put in by
    the caller, up to the order the header declares."""
    vocab = [word for word, _, _ in unigrams]
    if len(set(vocab)) != len(vocab):
        raise LmFormatError(f"{name}: a word is listed twice among the unigrams")
    tables = builder(vocab, max(declared, default=1))  # LmFormatError if <s>... missing
    for i, (word, log10p, log10bow) in enumerate(unigrams):
        tables.put(1, tables.key([i]), log10p * LN10 if word != BOS else None,
                   log10bow * LN10 if log10bow is not None else None)
    return tables


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
