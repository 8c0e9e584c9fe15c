"""Person names for the sentence corpus: which first names and surnames are held out, and
the contact pools (full names, first names, family words) on either side of that split.

Held-out names are what test_names measures: their words occur in no train or dev sentence,
so only the biasing context can teach the model them.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from edge_asr.daemon.text import number_to_words
from edge_asr.models.corpus_lexicon import Lexicon, Phrase
from edge_asr.models.corpus_slots import DURATION_WORDS, TIME_WORDS, Filled

HELDOUT_FRACTION = 0.15
N_TRAIN_FULL_NAMES = 5000
N_HELDOUT_FULL_NAMES = 1200
SAME_GROUP_PROB = 0.7  # most contacts pair a first name and a surname of one language
FAMILY_FIRST_PROB = 0.3  # East Asian and Hungarian names are often said surname first
FAMILY_FIRST_GROUPS = frozenset({"chinese", "vietnamese", "korean", "japanese", "hungarian"})


@dataclass(frozen=True)
class ContactPool:
    """Names a generator may use as {contact}: full names, first names, family words."""

    full: tuple[Phrase, ...]
    first: tuple[Phrase, ...]
    family: tuple[Phrase, ...]

    def pick(self, rng: random.Random) -> Filled:
        r = rng.random()
        if self.family and r < 0.15:
            pool = self.family
        elif r < 0.45:
            pool = self.first
        else:
            pool = self.full
        name = rng.choice(pool)
        return Filled(name.words, entity=name.display, tag="contact")

    @property
    def person_names(self) -> list[str]:
        return [p.display for p in self.full + self.first]


@dataclass(frozen=True)
class NameSplit:
    train: ContactPool
    heldout: ContactPool
    heldout_words: frozenset[str]


def _reserved_words(lex: Lexicon) -> set[str]:
    """Every word train text can contain apart from person names."""
    fixed = [TIME_WORDS, DURATION_WORDS, *(number_to_words(n) for n in range(101))]
    words = {w for phrase in fixed for w in phrase.split()}
    phrases = [*lex.family, *lex.device_names]
    phrases += [p for values in lex.lists.values() for p in values]
    for p in phrases:
        words.update(p.words)
    for t in lex.templates:
        words.update(w for piece in t.pieces if isinstance(piece, tuple) for w in piece)
    for opener in (*lex.prefixes_command, *lex.prefixes_any, *lex.suffixes):
        words.update(opener)
    # "bob's lamp" must also keep "bob" out of the held-out names.
    words.update(w.removesuffix("'s") for w in list(words))
    return words


def _holdout(groups: dict[str, tuple[Phrase, ...]], owners: Counter[str], reserved: set[str],
             rng: random.Random) -> set[Phrase]:
    """About HELDOUT_FRACTION of the names, only among names whose words are theirs alone."""
    names = [p for group in groups.values() for p in group]
    candidates = [p for p in names if all(owners[w] == 1 and w not in reserved for w in p.words)]
    n = round(HELDOUT_FRACTION * len(names))
    if len(candidates) < n:
        raise ValueError(f"only {len(candidates)} names can be held out, need {n}")
    return set(rng.sample(candidates, n))


def _pair_names(firsts: dict[str, tuple[Phrase, ...]], surnames: dict[str, tuple[Phrase, ...]],
                n: int, rng: random.Random) -> tuple[Phrase, ...]:
    """n distinct "first last" names, mostly within one language group."""
    flat = [(g, p) for g, names in firsts.items() for p in names]
    all_surnames = [p for names in surnames.values() for p in names]
    out: dict[tuple[str, ...], Phrase] = {}
    if len(flat) * len(all_surnames) < n:
        raise ValueError(f"cannot make {n} distinct names from {len(flat)} x {len(all_surnames)}")
    while len(out) < n:
        group, first = rng.choice(flat)
        same = bool(surnames.get(group)) and rng.random() < SAME_GROUP_PROB
        last = rng.choice(surnames[group] if same else all_surnames)
        pair = (last, first) if (same and group in FAMILY_FIRST_GROUPS
                                 and rng.random() < FAMILY_FIRST_PROB) else (first, last)
        name = Phrase(f"{pair[0].display} {pair[1].display}", pair[0].words + pair[1].words)
        out.setdefault(name.words, name)
    return tuple(out.values())


def split_names(lex: Lexicon, rng: random.Random) -> NameSplit:
    """Held-out first names and surnames, and the contact pools on either side."""
    # Count every entry, so that a name listed in two groups ("Gudrun", "Guðrún") is shared.
    owners: Counter[str] = Counter()
    for groups in (lex.first_names, lex.surnames):
        for p in (q for g in groups.values() for q in g):
            owners.update(set(p.words))
    reserved = _reserved_words(lex)
    held_first = _holdout(lex.first_names, owners, reserved, rng)
    held_last = _holdout(lex.surnames, owners, reserved, rng)

    def part(groups: dict[str, tuple[Phrase, ...]], held: set[Phrase],
             keep: bool) -> dict[str, tuple[Phrase, ...]]:
        return {g: tuple(p for p in names if (p in held) == keep) for g, names in groups.items()}

    train_first, train_last = part(lex.first_names, held_first, False), part(
        lex.surnames, held_last, False)
    held_first_g, held_last_g = part(lex.first_names, held_first, True), part(
        lex.surnames, held_last, True)
    train = ContactPool(
        full=_pair_names(train_first, train_last, N_TRAIN_FULL_NAMES, rng),
        first=tuple(p for names in train_first.values() for p in names),
        family=lex.family)
    heldout = ContactPool(
        full=_pair_names(held_first_g, held_last_g, N_HELDOUT_FULL_NAMES, rng),
        first=tuple(p for names in held_first_g.values() for p in names),
        family=())
    words = frozenset(w for p in held_first | held_last for w in p.words)
    return NameSplit(train, heldout, words)
