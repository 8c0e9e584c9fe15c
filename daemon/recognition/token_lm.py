"""The device's own language model: an n-gram over the acoustic model's subword units.

The beam search adds `scale * ln p(token | previous tokens)` to every token it emits
(shallow fusion, as icefall's `modified_beam_search_lm_shallow_fusion` and sherpa-onnx's
`lm_scale` do with a neural LM). The transducer's stateless decoder sees two tokens back,
so it knows little of the domain's word order; the n-gram sees four ("set an alarm for"
before "one fourteen"). It is trained by `models/device_lm.py` on the training corpus, so it
is small (about a megabyte) and knows nothing the acoustic model was not trained on.

People's names are a class. The word model (lm.arpa.gz) has one word, `<contact>`, for a
whole name, and a small name model (lm_names.arpa.gz, a bigram over the pieces of the
training names) spells it. A token is then either a word's piece, or a name's: its first
piece after p(<contact> | history), a further piece, or, once the name ends, the next
word's piece after "<contact>". The state says whether the tokens so far end inside a name.
So a name the LM never saw costs what a seen one does, spelled piece by piece.

Both files are ARPA back-off models whose words are sentencepiece pieces, kept as flat
arrays (`backoff_tables.BackoffTables`). A search needs, for each hypothesis, the log-prob
of every token at once; in a back-off model that vector is the one of the context's suffix
plus the context's back-off weight, with the n-grams stored for the context put over it,
so it is built with a few array operations per order and cached per context.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_asr.daemon.recognition.backoff_tables import BackoffTables
from edge_asr.daemon.recognition.ngram_arpa import load_arpa_tables
from edge_asr.daemon.recognition.ngram_lm import LmFormatError, NgramLM
from edge_asr.daemon.recognition.transducer import sha256_of

LM_FILE = "lm.arpa.gz"  # in the model folder, beside tokens.txt
NAMES_FILE = "lm_names.arpa.gz"
# LM_FILE's tables as the device keeps them (backoff_tables.py), read instead of it when
# they were made from it: parsing the ARPA text takes a second of the daemon's start.
TABLES_FILE = "lm.tables.npz"
LM_FILES = (LM_FILE, NAMES_FILE, TABLES_FILE)  # what a model folder holds of the LM
CONTACT = "<contact>"  # the word model's word for a person's name
CACHE_SIZE = 8192  # contexts whose vectors are kept (a few hundred per utterance)

# (word model context, name model context or None when not inside a name): LM ids.
TokenLmState = tuple[tuple[int, ...], tuple[int, ...] | None]


class _Vectors:
    """ln p of every model token after a context of one back-off model, cached."""

    def __init__(self, ngram: BackoffTables, tokens: Sequence[str]) -> None:
        known = sum(t in ngram.index for t in tokens)
        if known < (len(ngram.vocab) - 3) // 2:  # pieces of another sentencepiece model
            raise LmFormatError(f"an LM knows {known} of the model's {len(tokens)} tokens: "
                                "trained for another model?")
        self.ngram = ngram
        # Model token id -> LM word id; tokens the LM never saw (blank, <unk>, rare pieces)
        # are scored as the LM's <unk>.
        self.lm_id = np.array([ngram.index.get(t, ngram.unk) for t in tokens], dtype=np.int64)
        self._vectors: dict[tuple[int, ...], np.ndarray] = {}

    def start(self) -> tuple[int, ...]:
        return (self.ngram.bos,) if self.ngram.order > 1 else ()

    def advance(self, context: tuple[int, ...], lm_word: int) -> tuple[int, ...]:
        keep = self.ngram.order - 1
        return (*context, lm_word)[-keep:] if keep else ()

    def lm_vector(self, context: tuple[int, ...]) -> np.ndarray:
        """ln p of every LM word after `context` (LM ids), back-off applied."""
        cached = self._vectors.get(context)
        if cached is not None:
            return cached
        stored = self.ngram.find(context)
        if context:
            vector = self.lm_vector(context[1:])
            if stored is not None:  # else it is the suffix's, shared
                vector = vector + np.float32(stored[2])
        else:  # unigrams: every word has one, except <s>
            vector = np.full(len(self.ngram.vocab), -np.inf, np.float32)
        if stored is not None:
            vector[stored[0]] = stored[1]
        if len(self._vectors) >= CACHE_SIZE:
            self._vectors.clear()  # plain dict operations: streams of several threads share it
        self._vectors[context] = vector
        return vector

    def tokens(self, context: tuple[int, ...]) -> np.ndarray:
        """ln p of every model token after `context`."""
        return self.lm_vector(context)[self.lm_id]

    def word(self, context: tuple[int, ...], lm_word: int) -> float:
        return float(self.lm_vector(context)[lm_word])


def _tables(lm: BackoffTables | NgramLM) -> BackoffTables:
    return lm if isinstance(lm, BackoffTables) else BackoffTables.of(lm)


class TokenLM:
    """ln p of the model's tokens given the tokens before: word model and name class."""

    def __init__(self, words: BackoffTables | NgramLM, tokens: Sequence[str],
                 names: BackoffTables | NgramLM | None = None) -> None:
        words, names = _tables(words), _tables(names) if names is not None else None
        self.words = _Vectors(words, tokens)
        self.contact = words.index.get(CONTACT)
        if (names is None) != (self.contact is None):
            raise LmFormatError(f"a word model with {CONTACT} needs a name model, and a name "
                                "model a word model with it")
        self.names = _Vectors(names, tokens) if names is not None else None
        # A hypothesis keeps its state through every blank frame, and `advance` asks again
        # for the state `token_logprobs` was just asked for: the vectors are kept per state.
        self._by_state: dict[TokenLmState, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    @classmethod
    def load(cls, folder: Path, tokens: Sequence[str]) -> TokenLM:
        """The LM of a model folder: lm.arpa.gz (from lm.tables.npz while that was made from
        it), and lm_names.arpa.gz when it has a class."""
        folder = Path(folder)
        names, tables = folder / NAMES_FILE, folder / TABLES_FILE
        words = BackoffTables.load(tables) if tables.is_file() else None
        if words is None or words.source_sha256 != sha256_of(folder / LM_FILE):
            words = load_arpa_tables(folder / LM_FILE)  # no tables, or another LM's
        return cls(words, tokens, load_arpa_tables(names) if names.is_file() else None)

    def start(self) -> TokenLmState:
        return (self.words.start(), None)

    def _branches(self, state: TokenLmState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ln p of every token as (a word's piece or the end of a name then a word's piece,
        a name's piece, either): the two ways on from `state`, and their sum."""
        cached = self._by_state.get(state)
        if cached is not None:
            return cached
        context, name = state
        if name is None:
            word = self.words.tokens(context)
            if self.names is None:
                in_name = np.full_like(word, -np.inf)
            else:
                enter = self.words.word(context, self.contact)
                in_name = enter + self.names.tokens(self.names.start())
        else:
            after = self.words.advance(context, self.contact)
            leave = self.names.word(name, self.names.ngram.eos)
            word, in_name = leave + self.words.tokens(after), self.names.tokens(name)
        branches = (word, in_name, np.logaddexp(word, in_name))
        if len(self._by_state) >= CACHE_SIZE:
            self._by_state.clear()  # plain dict operations, as in _Vectors
        self._by_state[state] = branches
        return branches

    def token_logprobs(self, state: TokenLmState) -> np.ndarray:
        """ln p of every model token after `state`: shape (vocab_size,), float32."""
        return self._branches(state)[2]

    def advance(self, state: TokenLmState, token: int) -> TokenLmState:
        """The state after the model's token `token`, along the likelier of its two ways."""
        context, name = state
        word, in_name, _ = self._branches(state)
        if in_name[token] > word[token]:
            start = name if name is not None else self.names.start()
            return (context, self.names.advance(start, int(self.names.lm_id[token])))
        if name is not None:
            context = self.words.advance(context, self.contact)
        return (self.words.advance(context, int(self.words.lm_id[token])), None)

    def end_logprob(self, state: TokenLmState) -> float:
        """ln p of the end of the sentence after `state`."""
        context, name = state
        if name is None:
            return self.words.word(context, self.words.ngram.eos)
        after = self.words.advance(context, self.contact)
        return (self.names.word(name, self.names.ngram.eos)
                + self.words.word(after, self.words.ngram.eos))
