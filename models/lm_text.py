"""Text for the cloud LM beyond its generated corpus: people's transcripts and public prose.

- Transcripts: the "text" of JSON-lines manifests (the acoustic recipe's NAME_train sets),
  less every sentence of the held-out sets, whose speakers may read the same sentences.
- Prose: plain UTF-8 text in any layout (one verse, paragraph or sentence per line), cut
  into sentences at . ! ? ; : and line ends, normalised as recognised text is. Lines may
  start with a reference such as "Genesis 1:1:" (diatheke's output), which is dropped.
  Its rare words become <unk>: a book's thousand names would grow the LM's vocabulary
  (and the neural LM's output layer) for words no request says.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path

from edge_asr.daemon.recognition.ngram_lm import UNK
from edge_asr.daemon.text import normalize_text

_REFERENCE_RE = re.compile(r"^[^:\n]{0,40}?\d+:\d+:\s*")
_SENTENCE_END_RE = re.compile(r"[.!?;:]+(?=\s|$)|\n")
# A sentence shorter says little about word order; a longer one is a list or a run-on.
MIN_WORDS, MAX_WORDS = 2, 40


def read_manifest_sentences(paths: Sequence[Path]) -> list[list[str]]:
    """The normalised "text" of every line of JSON-lines manifests."""
    sentences = []
    for path in paths:
        for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: expected a JSON object with \"text\": "
                                 f"{exc}") from exc
            words = normalize_text(text).split()
            if words:
                sentences.append(words)
    return sentences


def recorded_text(train: Sequence[Path], exclude: Sequence[Path], repeat: int
                  ) -> list[list[str]]:
    """Training speakers' transcripts, `repeat` times, without any sentence of `exclude`."""
    held = {tuple(s) for s in read_manifest_sentences(exclude)}
    kept = [s for s in read_manifest_sentences(train) if tuple(s) not in held]
    return kept * repeat


def prose_sentences(text: str) -> list[list[str]]:
    """`text` cut into normalised sentences of MIN_WORDS to MAX_WORDS words."""
    out = []
    for line in text.splitlines():
        for piece in _SENTENCE_END_RE.split(_REFERENCE_RE.sub("", line)):
            words = normalize_text(piece).split()
            if MIN_WORDS <= len(words) <= MAX_WORDS:
                out.append(words)
    return out


def public_text(paths: Sequence[Path], known: set[str], vocabulary: int,
                held: Collection[Sequence[str]] = ()) -> list[list[str]]:
    """The sentences of plain-text files but those of `held` (evaluation sentences, which
    public text may hold too), their words outside `known` and outside the `vocabulary`
    most frequent of the files as <unk>."""
    held = {tuple(s) for s in held}
    sentences = []
    for path in paths:
        try:
            sentences += [s for s in prose_sentences(Path(path).read_text(encoding="utf-8"))
                          if tuple(s) not in held]
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not UTF-8 text: {exc}") from exc
    if not sentences:
        raise ValueError(f"no sentences of {MIN_WORDS} words or more in "
                         f"{', '.join(map(str, paths))}")
    counts = Counter(w for s in sentences for w in s)
    kept = known | {w for w, _ in counts.most_common(vocabulary)}
    return [[w if w in kept else UNK for w in s] for s in sentences]
