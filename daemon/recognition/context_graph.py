"""Contextual biasing by shallow fusion: a token-level Aho-Corasick graph of the user's phrases.

The beam search walks every hypothesis through the graph, one emitted token at a time, and
adds the graph's score delta to the hypothesis' ranking score:

- a token that extends a match of some phrase earns that phrase's `bonus`;
- when the next token leaves a partial match, the bonus earned on the part that is left
  behind is taken back (the failure arc keeps only the longest suffix that is still the
  start of some phrase, so "a b" then "c" can go on as the phrase "b c d");
- a token that completes a phrase keeps the bonus for good, and matching goes on from there
  (a longer phrase, or through the failure arc an overlapping or following phrase);
- at the end of the utterance `finalize` takes back whatever partial match is still open.

So once an utterance is final, its total bias is `bonus` times the number of tokens that lie
inside some complete phrase occurrence; names that were only started earn nothing.

Contacts are also matched right after a carrier word ("call", "text", "messages from"), on
a copy of their paths whose tokens earn `slot_bonus`: a name where the assistant's grammar
puts one is worth more than the same tokens anywhere else (Zhao et al. 2019 gate biasing by
such prefixes). The carrier's own tokens earn nothing.

To do this exactly the state is a trie node plus a bit mask of which positions of the node's
path are already inside a completed phrase ("covered"): those are kept when the path later
fails over, the others are given back.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm

from edge_asr.daemon.text import normalize_text

# Log-prob bonus per matched token. Contacts in their grammar slot earn the (larger) slot
# bonus and the name rescue puts back names the beam lost, so this plain bonus only has to
# tip close calls; larger, a long list's devices take the place of similar words (RecognizerConfig).
DEFAULT_BONUS = 0.75
# Per-user limits, per kind (ARCHITECTURE.md, "The speech domain").
KIND_LIMITS = {"contacts": 1000, "devices": 200, "phrases": 200}
MAX_ENTRIES = sum(KIND_LIMITS.values())
MAX_CHARS = 100
MAX_WORDS = 12
# All entries together: a graph costs about 330 bytes per trie node (about one node per
# character, contacts twice: plain and in their slot), so 1,000 contacts of 100 characters
# took 55 MB each; 16,000 characters (1,000 contacts of 16 on average) bound one at ~10 MB.
MAX_TOTAL_CHARS = 16_000


class ContextError(ValueError):
    """A biasing context that cannot be used; the message names the offending entry."""


@dataclass(frozen=True)
class Phrase:
    tokens: tuple[int, ...]
    text: str = ""  # the display form it came from (the first one, when duplicates merged)
    bonus: float | None = None  # per-token bonus of this phrase; None: the graph's default
    kind: str | None = None  # "contacts", "devices" or "phrases"; None: a flat list's entry

    @property
    def slot(self) -> bool:
        """A contact: also matched, with the slot bonus, right after a carrier word."""
        return self.kind == "contacts"


@dataclass(frozen=True)
class ContextState:
    node: int = 0  # 0 is the root
    covered: int = 0  # bit i set: token i of the node's path is inside a completed phrase


ROOT = ContextState()


class ContextGraph:
    """Prefix trie of phrases with Aho-Corasick failure and output links.

    With slot paths the trie has a second root, `_slot`, holding the slot phrases (contacts)
    again with the slot bonus. It is entered from the last node of a carrier word (carriers
    are paths from the root that end no phrase), and each of its nodes fails over to its twin
    under the root: the same tokens, plain bonus. A node's path, depth and covered bits count
    from whichever root it hangs under, so a slot match never includes the carrier.
    """

    def __init__(self, phrases: Iterable[Phrase | Sequence[int]], bonus: float = DEFAULT_BONUS,
                 vocab_size: int | None = None, slots: Sequence[Sequence[int]] = (),
                 slot_bonus: float = 0.0) -> None:
        self.bonus = bonus
        self.root = ROOT
        # Nodes as parallel lists (one entry per trie node) to keep thousands of names light.
        self._children: list[dict[int, int]] = [{}]
        self._parent = [-1]
        self._token = [-1]  # the token that leads into the node
        self._depth = [0]
        self._token_bonus = [0.0]  # bonus of the token that leads into the node
        self._phrase = [-1]  # index into self.phrases of the phrase ending here, or -1
        self.phrases: list[Phrase] = []
        for p in phrases:
            self._add(p if isinstance(p, Phrase) else Phrase(tuple(int(t) for t in p)))
        self.slots = tuple(tuple(int(t) for t in c) for c in slots if len(c))
        self.slot_bonus = slot_bonus
        self._slot = -1  # the slot root (no node while there are no slot phrases)
        self._carrier_ends: set[int] = set()
        slotted = [(i, p) for i, p in enumerate(self.phrases) if p.slot] if self.slots else []
        if slotted:
            self._slot = self._new_node(-1, -1, 0.0)
            for index, p in slotted:
                per_token = max(self.bonus if p.bonus is None else p.bonus, slot_bonus)
                self._insert(p.tokens, [per_token] * len(p.tokens), index, self._slot)
            # A carrier's tokens earn nothing of their own (a node shared with a phrase's
            # start keeps that phrase's bonus, given back when no phrase follows).
            self._carrier_ends = {self._insert(c, [0.0] * len(c), -1) for c in self.slots}
        self._fail = [0] * len(self._children)
        self._output = [0] * len(self._children)  # nearest proper suffix that ends a phrase
        self._link()
        top = max((t for path in (*(p.tokens for p in self.phrases), *self.slots)
                   for t in path), default=-1)
        self.vocab_size = max(vocab_size or 0, top + 1)
        # Bonus of each token from the root: the row every hypothesis starts from.
        self._root_row = np.zeros(self.vocab_size, np.float64)
        for token, child in self._children[0].items():
            self._root_row[token] = self._token_bonus[child]
        self._rows: dict[ContextState, np.ndarray] = {}

    @property
    def is_empty(self) -> bool:
        return not self.phrases

    @property
    def num_nodes(self) -> int:
        return len(self._children)

    def _add(self, phrase: Phrase) -> None:
        if not phrase.tokens:
            raise ContextError(f"context phrase {phrase.text!r} has no tokens")
        if min(phrase.tokens) < 0:
            raise ContextError(f"context phrase {phrase.text!r} has a negative token id")
        bonus = self.bonus if phrase.bonus is None else phrase.bonus
        end = self._insert(phrase.tokens, [bonus] * len(phrase.tokens), len(self.phrases))
        if self._phrase[end] == len(self.phrases):  # the same token sequence twice is one
            self.phrases.append(phrase)

    def _new_node(self, parent: int, token: int, bonus: float) -> int:
        self._children.append({})
        self._parent.append(parent)
        self._token.append(token)
        self._depth.append(self._depth[parent] + 1 if parent >= 0 else 0)
        self._token_bonus.append(bonus)
        self._phrase.append(-1)
        return len(self._children) - 1

    def _insert(self, tokens: Sequence[int], bonuses: Sequence[float], index: int,
                root: int = 0) -> int:
        """Adds a path under `root` (a token with its bonus at each step) ending in phrase
        `index` (-1: none) unless a phrase ends there already; returns its last node."""
        node = root
        for token, bonus in zip(tokens, bonuses, strict=True):
            child = self._children[node].get(token)
            if child is None:
                child = self._new_node(node, token, bonus)
                self._children[node][token] = child
            else:  # a shared prefix earns the largest bonus of the phrases through it
                self._token_bonus[child] = max(self._token_bonus[child], bonus)
            node = child
        if self._phrase[node] < 0:
            self._phrase[node] = index
        return node

    def _goto(self, node: int, token: int) -> int | None:
        """The node `token` leads to from `node` without failing over, if any: a child, or
        after a carrier word the start of a slot phrase."""
        child = self._children[node].get(token)
        if child is None and node in self._carrier_ends:
            child = self._children[self._slot].get(token)
        return child

    def _twin(self, node: int) -> int:
        """The node under the root with the same path as a node under the slot root."""
        path = []
        while self._depth[node]:
            path.append(self._token[node])
            node = self._parent[node]
        twin = 0
        for token in reversed(path):  # every slot phrase is under the root too
            twin = self._children[twin][token]
        return twin

    def _link(self) -> None:
        """Failure links (longest proper suffix in the trie) and output links, breadth first;
        a slot node fails over to its twin under the root."""
        queue = deque(self._children[0].values())
        while queue:
            node = queue.popleft()
            for token, child in self._children[node].items():
                f = self._fail[node]
                while f and token not in self._children[f]:
                    f = self._fail[f]
                fc = self._children[f].get(token, 0)
                self._fail[child] = fc
                self._output[child] = fc if self._phrase[fc] >= 0 else self._output[fc]
                queue.append(child)
        if self._slot < 0:
            return
        queue = deque(self._children[self._slot].values())
        while queue:
            node = queue.popleft()
            twin = self._twin(node)
            self._fail[node] = twin
            self._output[node] = twin if self._phrase[twin] >= 0 else self._output[twin]
            queue.extend(self._children[node].values())

    def _revocable(self, state: ContextState) -> float:
        """Bonus held on the node's path that is not yet inside a completed phrase."""
        total, node, covered = 0.0, state.node, state.covered
        while self._depth[node]:
            if not covered >> (self._depth[node] - 1) & 1:
                total += self._token_bonus[node]
            node = self._parent[node]
        return total

    def forward_one_step(self, state: ContextState,
                         token: int) -> tuple[float, ContextState, Phrase | None]:
        """Emit `token` in `state`: (score delta, next state, the phrase completed here).

        When several phrases end here ("lamp" inside "the lava lamp"), the longest is returned;
        all of them keep their bonus.
        """
        node = state.node
        nxt = self._goto(node, token)
        while nxt is None and node:
            node = self._fail[node]
            nxt = self._goto(node, token)
        nxt = nxt or 0
        depth = self._depth[nxt]
        # The new path is the last `depth` tokens of (old path + token); positions shift left.
        covered = state.covered >> (self._depth[state.node] + 1 - depth)
        delta = self._revocable(ContextState(nxt, covered)) - self._revocable(state)
        # Every phrase that ends here (the node's own, then shorter ones through output links)
        # turns its tokens into kept bonus.
        end = nxt if self._phrase[nxt] >= 0 else self._output[nxt]
        matched = self.phrases[self._phrase[end]] if end else None
        while end:
            length = self._depth[end]
            covered |= ((1 << length) - 1) << (depth - length)
            end = self._output[end]
        return delta, ContextState(nxt, covered), matched

    def finalize(self, state: ContextState) -> float:
        """Score delta at the end of an utterance: an unfinished match gives its bonus back."""
        return -self._revocable(state)

    def _next_tokens(self, node: int) -> Iterable[int]:
        yield from self._children[node]
        if node in self._carrier_ends:
            yield from self._children[self._slot]

    def token_deltas(self, state: ContextState) -> np.ndarray:
        """forward_one_step's delta for every token at once, (vocab_size,) float64, read-only.

        Lets the beam search rank all (hypothesis, token) pairs with their bonus, so that a
        name's tokens can enter the beam on the bonus. Only tokens that continue a match
        somewhere on the failure chain differ from the root row, so they are computed one by
        one; the rest is one vector operation. Rows are cached per state (states repeat
        across frames: blanks keep them).
        """
        row = self._rows.get(state)
        if row is not None:
            return row
        row = self._root_row - np.float64(self._revocable(state))
        node, seen = state.node, set()
        while node:
            for token in self._next_tokens(node):
                if token not in seen:
                    seen.add(token)
                    row[token] = self.forward_one_step(state, token)[0]
            node = self._fail[node]
        row.flags.writeable = False
        if len(self._rows) >= 256:  # bounded: a long-running daemon visits many states
            self._rows.clear()
        self._rows[state] = row
        return row


def _check_list(value: object, where: str) -> list:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ContextError(f"{where} must be a list of strings, not {type(value).__name__}")
    return list(value)


def context_by_kind(context: Sequence[str] | Mapping[str, Sequence[str]] | None
                    ) -> dict[str, list[str]]:
    """The context as lists by kind. A list without kinds counts as contacts: the
    recognizer lets every entry of such a list fill a name slot, as it does contacts."""
    if not context:
        return {}
    if isinstance(context, Mapping):
        return {kind: list(names) for kind, names in context.items()}
    return {"contacts": list(context)}


def context_entries(context: Sequence[str] | Mapping[str, Sequence[str]]
                    ) -> list[tuple[str, str]]:
    """Checks shape, types and counts; returns (where, entry) pairs, `where` for messages.

    Accepts a flat list (up to 1,400 entries) or {"contacts": [...], "devices": [...],
    "phrases": [...]} with the per-kind limits of `KIND_LIMITS`. Limits count the entries as given,
    duplicates included, so they bound the work before any of it is done.
    """
    if isinstance(context, Mapping):
        unknown = sorted(str(k) for k in context if k not in KIND_LIMITS)
        if unknown:
            raise ContextError(f"unknown context kind(s) {', '.join(map(repr, unknown))}: "
                               f"use {', '.join(KIND_LIMITS)}")
        out = []
        for kind, limit in KIND_LIMITS.items():
            value = context.get(kind)
            items = [] if value is None else _check_list(value, f"context {kind!r}")
            if len(items) > limit:
                raise ContextError(f"context has {len(items)} {kind}, at most {limit} allowed")
            out += [(f"{kind}[{i}]", e) for i, e in enumerate(items)]
    else:
        items = _check_list(context, "context")
        if len(items) > MAX_ENTRIES:
            raise ContextError(f"context has {len(items)} entries, at most {MAX_ENTRIES} "
                               "allowed")
        out = [(f"entry {i}", e) for i, e in enumerate(items)]
    for where, entry in out:
        if not isinstance(entry, str):
            raise ContextError(f"context {where} {_short(entry)} is not a string")
    total = sum(len(entry) for _, entry in out)
    if total > MAX_TOTAL_CHARS:
        raise ContextError(f"context has {total} characters in all, at most {MAX_TOTAL_CHARS} "
                           "allowed")
    return out


def _short(entry: object) -> str:
    text = repr(entry)
    return text if len(text) <= 60 else text[:57] + "..."


# Contact-list sizes at which the slot bonus is given in full and at its large-list value.
SHORT_LIST, LARGE_LIST = 25, 400


def slot_bonus_for(names: int, short: float, large: float, floor: float) -> float:
    """The slot bonus per token for a context with `names` slot phrases: `short` up to
    SHORT_LIST of them, `large` at LARGE_LIST, falling with the log of the count between
    and beyond, never below `floor` (the plain bonus). The more names a slot may hold, the
    less any one of them is expected there (a class-based language model gives each 1/N),
    and the more partial matches compete for the beam."""
    if names <= SHORT_LIST:
        return short
    fall = (short - large) * math.log(names / SHORT_LIST) / math.log(LARGE_LIST / SHORT_LIST)
    return max(floor, short - fall)


class ContextBuilder:
    """Turns display forms into a ContextGraph with the model's own sentencepiece model."""

    def __init__(self, sp: spm.SentencePieceProcessor | str | Path | bytes,
                 bonus: float = DEFAULT_BONUS, slot_words: Sequence[str] = (),
                 slot_bonus: float = 0.0, slot_bonus_large: float | None = None) -> None:
        if isinstance(sp, bytes):  # the model's serialised proto (a packed bpe.model)
            sp = spm.SentencePieceProcessor(model_proto=sp)
        elif isinstance(sp, str | Path):
            sp = spm.SentencePieceProcessor(model_file=str(sp))
        self.sp = sp
        self.bonus = bonus
        self.unk = sp.unk_id()
        # Carrier words spelled as the search will emit them (ContextGraph's slot paths).
        self.slot_bonus = slot_bonus
        self.slot_bonus_large = slot_bonus if slot_bonus_large is None else slot_bonus_large
        self.slot_words = [sp.encode(w) for w in slot_words]

    def encode(self, where: str, entry: object) -> tuple[str, list[int]]:
        """Normalised text and token ids of one entry, or a ContextError naming it."""
        if not isinstance(entry, str):
            raise ContextError(f"context {where} {_short(entry)} is not a string")
        if len(entry.strip()) > MAX_CHARS:
            raise ContextError(f"context {where} {_short(entry)} is longer than "
                               f"{MAX_CHARS} characters")
        text = normalize_text(entry)
        if not text:
            raise ContextError(f"context {where} {_short(entry)} is empty after normalisation")
        if len(text.split()) > MAX_WORDS:
            raise ContextError(f"context {where} {_short(entry)} is longer than {MAX_WORDS} "
                               "words")
        ids = self.sp.encode(text)
        if self.unk in ids:  # the search never emits <unk>, so such a phrase could never match
            raise ContextError(f"context {where} {_short(entry)} cannot be spelled with the "
                               "model's tokens")
        return text, ids

    def build(self, context: Sequence[str] | Mapping[str, Sequence[str]]) -> ContextGraph:
        phrases: dict[str, Phrase] = {}
        for where, entry in context_entries(context):
            text, ids = self.encode(where, entry)
            # Only contacts fill the grammar's name slots: a device behind a carrier ("send
            # the cellar hatch") would pay the search to turn "set" into "send".
            kind = where.split("[")[0] if "[" in where else None
            # Duplicates (also "Zoë" and "Zoe", equal once normalised) merge into one phrase,
            # a contact if any of them is.
            known = phrases.get(text)
            if known is None or (kind == "contacts" and not known.slot):
                phrases[text] = Phrase(tuple(ids), known.text if known else entry, kind=kind)
        slot_bonus = slot_bonus_for(sum(p.slot for p in phrases.values()), self.slot_bonus,
                                    self.slot_bonus_large, self.bonus)
        # No slot paths while the slot bonus would add nothing.
        slots = self.slot_words if slot_bonus > self.bonus else []
        return ContextGraph(phrases.values(), self.bonus, self.sp.get_piece_size(),
                            slots, slot_bonus)


def build_context_graph(entries: Sequence[str] | Mapping[str, Sequence[str]],
                        sp: spm.SentencePieceProcessor | str | Path,
                        bonus: float = DEFAULT_BONUS) -> ContextGraph:
    """ContextGraph of display-form entries (flat list or by kind), tokenised with `sp`."""
    return ContextBuilder(sp, bonus).build(entries)
