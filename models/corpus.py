"""Sentence corpus for the household assistant domain (ARCHITECTURE.md, "The speech domain").

Sentences come from the phrasings in `lexicon/templates.txt` filled with slot values from the
other word lists in `lexicon/`. The splits are built so that evaluation measures what matters:

- train: distinct sentences over the training names, devices and other slot values.
- dev, test_sentences: sentences never seen in train, over the same slot values.
- test_names: call and message requests with held-out person names, whose words never occur in
  train or dev; only the biasing context can teach the model those names.

Every dev/test utterance carries a biasing `context` of about 30 display-form entries.
`python -m edge_asr.models.corpus --out DIR` writes the splits as JSON Lines.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

from edge_asr.daemon.text import digits_to_words, normalize_text, number_to_words

LEXICON_DIR = Path(__file__).with_name("lexicon")

# Share of requests per intent; call/message and dial are the hard parts, so they get more.
INTENT_WEIGHTS: dict[str, float] = {
    "smart_home_onoff": 12, "smart_home_set": 9, "locks_covers": 7, "call": 15, "dial": 15,
    "timers": 10, "media": 10, "information": 10, "lists": 7, "conversation": 5,
}
INTENTS: tuple[str, ...] = tuple(INTENT_WEIGHTS)

HELDOUT_FRACTION = 0.15
CONTEXT_SIZE = 30
CONTEXT_DEVICES_TEST_NAMES = 5  # devices in a test_names context; the rest are held-out names
CONTEXT_DEVICES_SENTENCES = 10  # devices in a dev/test_sentences context
N_TRAIN_FULL_NAMES = 5000
N_HELDOUT_FULL_NAMES = 1200
SAME_GROUP_PROB = 0.7  # most contacts pair a first name and a surname of one language
FAMILY_FIRST_PROB = 0.3  # East Asian and Hungarian names are often said surname first
FAMILY_FIRST_GROUPS = frozenset({"chinese", "vietnamese", "korean", "japanese", "hungarian"})
PREFIX_PROB = 0.3
SUFFIX_PROB = 0.12
MAX_WORDS = 15

_SLOT_RE = re.compile(r"\{(\w+)\}")
# Digit groups as people read numbers out: a pause after each group but the last.
_DIGIT_GROUPS: dict[int, tuple[int, ...]] = {
    3: (3,), 4: (4,), 5: (2, 3), 6: (3, 3), 7: (3, 4), 8: (4, 4), 9: (3, 3, 3),
    10: (3, 3, 4), 11: (1, 3, 3, 4),
}
_DIGIT_LENGTH_WEIGHTS = {3: 1, 4: 2, 5: 1, 6: 1, 7: 4, 8: 1, 9: 1, 10: 4, 11: 2}
_EXTENSION_LENGTH_WEIGHTS = {3: 2, 4: 3, 5: 1}
# Fixed words of the time and duration phrases; held-out names must avoid them too.
_TIME_WORDS = "a m p o'clock noon midnight half past quarter to in the morning evening at night"
_DURATION_WORDS = "a an and half hour hours minute minutes second seconds"
_DEVICE_SLOTS: dict[str, tuple[str, ...]] = {
    "light": ("light",), "switch": ("light", "switch"), "climate": ("climate",),
    "lock": ("lock",), "cover": ("cover",),
}
_LIST_SLOTS: dict[str, str] = {
    "room": "rooms", "appliance": "appliances", "color": "colors", "phone": "phone_types",
    "message": "messages", "statement": "messages:statement", "timer": "timer_names",
    "day": "days", "weekday": "weekdays",
    "city": "cities", "genre": "genres", "artist": "artists", "playlist": "playlists",
    "item": "items:things", "item2": "items:things", "task": "items:tasks",
    "list": "list_names",
}


@dataclass(frozen=True)
class Utterance:
    text: str  # normalised with daemon.text.normalize_text
    intent: str  # one of INTENTS
    entities: tuple[str, ...]  # contact / device names in it, display form
    pause_after: tuple[int, ...]  # word indices after which a speaker naturally pauses
    context: tuple[str, ...] = ()  # biasing list for evaluation; empty for train
    tags: tuple[str, ...] = ()  # e.g. ("contact",), ("digits",), ("device",)


@dataclass
class CorpusSplits:
    train: list[Utterance]
    dev: list[Utterance]
    test_sentences: list[Utterance]
    test_names: list[Utterance]
    train_names: list[str]  # display-form person names the train split draws from
    heldout_names: list[str]  # display-form person names only test_names uses


@dataclass(frozen=True)
class Phrase:
    """A slot value: how it is displayed (context lists) and its normalised words."""

    display: str
    words: tuple[str, ...]

    @classmethod
    def of(cls, display: str) -> Phrase:
        return cls(display, tuple(normalize_text(display).split()))


@dataclass(frozen=True)
class Template:
    intent: str
    tags: tuple[str, ...]
    command: bool  # commands take "could you ..." openers and closers; questions do not
    pieces: tuple[tuple[str, ...] | str, ...]  # literal words, or a slot name


@dataclass(frozen=True)
class Lexicon:
    first_names: dict[str, tuple[Phrase, ...]]  # by language group
    surnames: dict[str, tuple[Phrase, ...]]
    family: tuple[Phrase, ...]
    devices: dict[str, tuple[Phrase, ...]]  # by capability: light, switch, climate, lock, cover
    lists: dict[str, tuple[Phrase, ...]]  # other slot lists by file stem, or "stem:section"
    templates: tuple[Template, ...]
    prefixes_command: tuple[tuple[str, ...], ...]
    prefixes_any: tuple[tuple[str, ...], ...]
    suffixes: tuple[tuple[str, ...], ...]

    @property
    def device_names(self) -> tuple[Phrase, ...]:
        return _unique(p for section in self.devices.values() for p in section)

    def templates_for(self, intent: str) -> tuple[Template, ...]:
        return tuple(t for t in self.templates if t.intent == intent)


# ---------------------------------------------------------------- lexicon files

def _read_sections(name: str) -> dict[str, list[str]]:
    """A lexicon file: one entry a line, `#` comments, optional `[section]` headers."""
    sections: dict[str, list[str]] = {"": []}
    current = ""
    for raw in (LEXICON_DIR / name).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
            sections.setdefault(current, [])
        else:
            sections[current].append(line)
    return sections


def _unique(phrases: Iterable[Phrase]) -> tuple[Phrase, ...]:
    """First phrase of each distinct spoken form ("Inés" and "Inês" say the same)."""
    seen: dict[tuple[str, ...], Phrase] = {}
    for p in phrases:
        if p.words:
            seen.setdefault(p.words, p)
    return tuple(seen.values())


def _phrases(lines: Iterable[str]) -> tuple[Phrase, ...]:
    return _unique(Phrase.of(line) for line in lines)


def _grouped(name: str) -> dict[str, tuple[Phrase, ...]]:
    return {group: _phrases(lines) for group, lines in _read_sections(name).items() if lines}


def _parse_template(intent: str, tags: tuple[str, ...], line: str) -> Template:
    command = not line.startswith("? ")
    body = line if command else line[2:]
    parts = _SLOT_RE.split(body)
    pieces: list[tuple[str, ...] | str] = []
    for i, part in enumerate(parts):
        if i % 2:
            if part not in _LIST_SLOTS and part not in _SLOT_FILLERS:
                raise ValueError(f"unknown slot {{{part}}} in template {line!r}")
            pieces.append(part)
        elif words := tuple(normalize_text(part).split()):
            pieces.append(words)
    return Template(intent, tags, command, tuple(pieces))


def _templates(sections: dict[str, list[str]]) -> tuple[Template, ...]:
    out = []
    for header, lines in sections.items():
        intent, *tags = header.split() or [""]
        if intent in INTENT_WEIGHTS:
            out.extend(_parse_template(intent, tuple(tags), line) for line in lines)
    return tuple(out)


@cache
def load_lexicon() -> Lexicon:
    """All word lists and phrasings; read once per process (the data never changes)."""
    phrasings = _read_sections("templates.txt")

    def words_of(key: str) -> tuple[tuple[str, ...], ...]:
        return tuple(tuple(normalize_text(line).split()) for line in phrasings.get(key, []))

    lists: dict[str, tuple[Phrase, ...]] = {}
    for stem in sorted({key.split(":")[0] for key in _LIST_SLOTS.values()}):
        sections = _read_sections(f"{stem}.txt")
        lists[stem] = _phrases(line for lines in sections.values() for line in lines)
        lists.update({f"{stem}:{name}": _phrases(lines)
                      for name, lines in sections.items() if name})
    return Lexicon(
        first_names=_grouped("first_names.txt"),
        surnames=_grouped("surnames.txt"),
        family=_phrases(_read_sections("family.txt")[""]),
        devices=_grouped("devices.txt"),
        lists=lists,
        templates=_templates(phrasings),
        prefixes_command=words_of("prefix:command"),
        prefixes_any=words_of("prefix:any"),
        suffixes=words_of("suffix:command"),
    )


# ---------------------------------------------------------------- slot values

@dataclass(frozen=True)
class Filled:
    """One filled slot: its words, pauses inside it, and what it adds to the utterance."""

    words: tuple[str, ...]
    pauses: tuple[int, ...] = ()  # relative word indices
    entity: str | None = None
    tag: str | None = None


def _percent(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.6:
        return number_to_words(rng.randrange(10, 101, 10))
    if r < 0.8:
        return number_to_words(rng.randrange(5, 100, 10))
    return number_to_words(rng.randint(0, 100))


def _temperature(rng: random.Random) -> str:
    # Fahrenheit room temperatures mostly, Celsius ones sometimes.
    return number_to_words(rng.randint(60, 80) if rng.random() < 0.7 else rng.randint(16, 30))


def _count_unit(n: int, unit: str) -> str:
    return f"{number_to_words(n)} {unit}{'' if n == 1 else 's'}"


def _duration(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.5:
        n = rng.choice((1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 25, 30, 40, 45, 60, 90))
        if rng.random() < 0.3:
            n = rng.randint(1, 59)
        return "a minute" if n == 1 and rng.random() < 0.5 else _count_unit(n, "minute")
    if kind < 0.65:
        return _count_unit(rng.choice((10, 15, 20, 30, 40, 45, 90)), "second")
    if kind < 0.8:
        n = rng.randint(1, 8)
        return "an hour" if n == 1 and rng.random() < 0.5 else _count_unit(n, "hour")
    if kind < 0.9:
        return rng.choice(("half an hour", "an hour and a half", "a minute and a half",
                           "one and a half hours", "two and a half minutes", "a half hour"))
    hours = rng.randint(1, 3)
    head = "an hour" if hours == 1 else _count_unit(hours, "hour")
    return f"{head} and {_count_unit(rng.choice((5, 10, 15, 20, 30, 45)), 'minute')}"


def _timer_length(rng: random.Random) -> str:
    """A duration said before "timer": "a ten minute timer", "a one hour timer"."""
    unit = rng.choices(("minute", "second", "hour"), weights=(6, 2, 2))[0]
    n = {"minute": rng.randint(1, 90), "second": rng.choice((10, 15, 20, 30, 45, 90)),
         "hour": rng.randint(1, 4)}[unit]
    return f"{number_to_words(n)} {unit}"


def _clock(rng: random.Random) -> str:
    hour = rng.randint(1, 12)
    r = rng.random()
    if r < 0.35:
        minute = 0
    elif r < 0.65:
        minute = rng.choice((15, 30, 45))
    else:
        minute = rng.randint(1, 59)
    words = number_to_words(hour)
    if minute == 0 and rng.random() < 0.3:
        words += " o'clock"
    elif 0 < minute < 10:
        words += " oh " + number_to_words(minute)
    elif minute:
        words += " " + number_to_words(minute)
    if rng.random() < 0.65 and not words.endswith("o'clock"):
        words += rng.choice((" a m", " p m"))
    return words


def _time(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.8:
        return _clock(rng)
    if r < 0.86:
        return rng.choice(("noon", "midnight"))
    hour = number_to_words(rng.randint(1, 12))
    return rng.choice((f"half past {hour}", f"quarter past {hour}", f"quarter to {hour}",
                       f"{hour} in the morning", f"{hour} in the evening", f"{hour} at night"))


def _digits(rng: random.Random, length_weights: dict[int, int]) -> Filled:
    n = rng.choices(list(length_weights), weights=list(length_weights.values()))[0]
    digits = "".join(rng.choice("0123456789") for _ in range(n))
    pauses, end = [], 0
    for size in _DIGIT_GROUPS[n][:-1]:
        end += size
        pauses.append(end - 1)
    return Filled(tuple(digits_to_words(digits).split()), tuple(pauses), tag="digits")


def _number_filler(make: Callable[[random.Random], str]) -> Callable[..., Filled]:
    return lambda rng, lex, contacts: Filled(tuple(make(rng).split()))


_SLOT_FILLERS: dict[str, Callable[[random.Random, Lexicon, ContactPool], Filled]] = {
    "percent": _number_filler(_percent),
    "temp": _number_filler(_temperature),
    "step": _number_filler(lambda rng: number_to_words(rng.randint(2, 10))),
    "volume": _number_filler(lambda rng: number_to_words(rng.randint(0, 10))),
    "duration": _number_filler(_duration),
    "timer_length": _number_filler(_timer_length),
    "time": _number_filler(_time),
    "digits": lambda rng, lex, contacts: _digits(rng, _DIGIT_LENGTH_WEIGHTS),
    "extension": lambda rng, lex, contacts: _digits(rng, _EXTENSION_LENGTH_WEIGHTS),
    "contact": lambda rng, lex, contacts: contacts.pick(rng),
}


def _device_filler(sections: tuple[str, ...]) -> Callable[..., Filled]:
    def fill(rng: random.Random, lex: Lexicon, contacts: ContactPool) -> Filled:
        device = rng.choice([p for s in sections for p in lex.devices[s]])
        return Filled(device.words, entity=device.display, tag="device")
    return fill


_SLOT_FILLERS.update({slot: _device_filler(s) for slot, s in _DEVICE_SLOTS.items()})


# ---------------------------------------------------------------- person names

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
    fixed = [_TIME_WORDS, _DURATION_WORDS, *(number_to_words(n) for n in range(101))]
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


# ---------------------------------------------------------------- sentences

class SentenceGenerator:
    """Random utterances for one contact pool; `sample` keeps them distinct."""

    def __init__(self, lex: Lexicon, contacts: ContactPool,
                 intents: Sequence[str] = INTENTS) -> None:
        self._lex = lex
        self._contacts = contacts
        self._intents = list(intents)
        self._weights = [INTENT_WEIGHTS[i] for i in self._intents]
        self._templates = {i: lex.templates_for(i) for i in self._intents}

    def _fill(self, slot: str, rng: random.Random, used: dict[str, tuple[str, ...]]) -> Filled:
        if slot in _SLOT_FILLERS:
            return _SLOT_FILLERS[slot](rng, self._lex, self._contacts)
        values = self._lex.lists[_LIST_SLOTS[slot]]
        value = rng.choice(values)
        # "add {item} and {item2}" wants two different things.
        while slot == "item2" and value.words == used.get("item") and len(values) > 1:
            value = rng.choice(values)
        return Filled(value.words)

    def render(self, template: Template, rng: random.Random) -> Utterance:
        words: list[str] = []
        pauses: list[int] = []
        entities: list[str] = []
        tags = dict.fromkeys(template.tags)
        used: dict[str, tuple[str, ...]] = {}
        if rng.random() < PREFIX_PROB:
            words.extend(rng.choice(self._lex.prefixes_command if template.command
                                    else self._lex.prefixes_any))
        for piece in template.pieces:
            if isinstance(piece, tuple):
                words.extend(piece)
                continue
            filled = self._fill(piece, rng, used)
            used[piece] = filled.words
            if filled.tag == "contact" and words:
                pauses.append(len(words) - 1)  # people hesitate before a name
            pauses.extend(len(words) + p for p in filled.pauses)
            words.extend(filled.words)
            if filled.entity:
                entities.append(filled.entity)
            if filled.tag:
                tags[filled.tag] = None
        if template.command and rng.random() < SUFFIX_PROB:
            suffix = rng.choice(self._lex.suffixes)
            if "please" not in words or "please" not in suffix:  # one "please" is enough
                words.extend(suffix)
        return Utterance(" ".join(words), template.intent, tuple(dict.fromkeys(entities)),
                         tuple(sorted(set(pauses))), tags=tuple(tags))

    def random_utterance(self, rng: random.Random, intent: str | None = None) -> Utterance:
        if intent is None:
            intent = rng.choices(self._intents, weights=self._weights)[0]
        return self.render(rng.choice(self._templates[intent]), rng)

    def _draw(self, n: int, rng: random.Random, exclude: set[str], attempts: int,
              intent: str | None = None) -> list[Utterance]:
        """Up to n new distinct utterances within `attempts` tries; `exclude` grows with them."""
        out: list[Utterance] = []
        for _ in range(attempts):
            if len(out) == n:
                break
            utt = self.random_utterance(rng, intent)
            if utt.text in exclude or len(utt.text.split()) > MAX_WORDS:
                continue
            exclude.add(utt.text)
            out.append(utt)
        return out

    def sample(self, n: int, rng: random.Random, exclude: set[str]) -> list[Utterance]:
        """n distinct utterances not in `exclude`, shuffled, intents in INTENT_WEIGHTS' mix.

        An intent with few possible sentences (conversation control) stops early rather than
        filling its share with odd opener and closer combinations; others make up the rest.
        """
        total = sum(self._weights)
        quotas = [int(n * w / total) for w in self._weights]
        for i in range(n - sum(quotas)):
            quotas[i % len(quotas)] += 1
        out: list[Utterance] = []
        for intent, quota in zip(self._intents, quotas, strict=True):
            out += self._draw(quota, rng, exclude, 4 * quota + 200, intent)
        missing = n - len(out)
        out += self._draw(missing, rng, exclude, 30 * missing + 10_000)
        if len(out) < n:
            raise RuntimeError(f"only {len(out)} of {n} distinct sentences could be made")
        rng.shuffle(out)
        return out


def _with_context(utts: list[Utterance], rng: random.Random, names: Sequence[str],
                  devices: Sequence[str], n_devices: int, extra_tags: tuple[str, ...] = (),
                  ) -> list[Utterance]:
    """Each utterance gets its own entities plus random held-out names and devices, ~30 in all."""
    out = []
    for u in utts:
        own = list(u.entities)
        others_devices = [d for d in rng.sample(devices, n_devices + len(own)) if d not in own]
        n_names = CONTEXT_SIZE - len(own) - n_devices
        others_names = [p for p in rng.sample(names, n_names + len(own)) if p not in own]
        context = own + others_devices[:n_devices] + others_names[:n_names]
        rng.shuffle(context)
        out.append(Utterance(u.text, u.intent, u.entities, u.pause_after, tuple(context),
                             u.tags + extra_tags))
    return out


def build_corpus(seed: int = 0, n_train: int = 40000, n_dev: int = 400,
                 n_test_sentences: int = 500, n_test_names: int = 400) -> CorpusSplits:
    """All four splits, deterministic for a seed."""
    lex = load_lexicon()
    names = split_names(lex, random.Random(f"{seed}:names"))
    train_gen = SentenceGenerator(lex, names.train)
    names_gen = SentenceGenerator(lex, names.heldout, intents=("call",))
    seen: set[str] = set()
    train = train_gen.sample(n_train, random.Random(f"{seed}:train"), seen)
    dev = train_gen.sample(n_dev, random.Random(f"{seed}:dev"), seen)
    test_sentences = train_gen.sample(n_test_sentences, random.Random(f"{seed}:test"), seen)
    test_names = names_gen.sample(n_test_names, random.Random(f"{seed}:names_test"), seen)
    _check_heldout_absent([*train, *dev], names.heldout_words)

    heldout_names = names.heldout.person_names
    devices = [p.display for p in lex.device_names]
    ctx_rng = random.Random(f"{seed}:context")
    return CorpusSplits(
        train=train,
        dev=_with_context(dev, ctx_rng, heldout_names, devices, CONTEXT_DEVICES_SENTENCES),
        test_sentences=_with_context(test_sentences, ctx_rng, heldout_names, devices,
                                     CONTEXT_DEVICES_SENTENCES),
        test_names=_with_context(test_names, ctx_rng, heldout_names, devices,
                                 CONTEXT_DEVICES_TEST_NAMES, extra_tags=("heldout_name",)),
        train_names=names.train.person_names,
        heldout_names=heldout_names,
    )


def _check_heldout_absent(utts: Iterable[Utterance], heldout_words: frozenset[str]) -> None:
    for u in utts:
        if leaked := heldout_words.intersection(u.text.split()):
            raise AssertionError(f"held-out name words {sorted(leaked)} in {u.text!r}")


# ---------------------------------------------------------------- output

SPLIT_FILES = ("train", "dev", "test_sentences", "test_names")


def write_corpus(splits: CorpusSplits, out_dir: Path) -> None:
    """One JSON Lines file per split plus the two name lists, UTF-8."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in SPLIT_FILES:
        with (out_dir / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for utt in getattr(splits, name):
                f.write(json.dumps(asdict(utt), ensure_ascii=False) + "\n")
    for name, values in (("names_train", splits.train_names),
                         ("names_heldout", splits.heldout_names)):
        (out_dir / f"{name}.txt").write_text("".join(v + "\n" for v in values), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the sentence corpus of the domain.")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=40000)
    parser.add_argument("--n-dev", type=int, default=400)
    parser.add_argument("--n-test-sentences", type=int, default=500)
    parser.add_argument("--n-test-names", type=int, default=400)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    splits = build_corpus(args.seed, args.n_train, args.n_dev, args.n_test_sentences,
                          args.n_test_names)
    write_corpus(splits, args.out)
    for name in SPLIT_FILES:
        utts = getattr(splits, name)
        mix = Counter(u.intent for u in utts)
        top = ", ".join(f"{k} {v}" for k, v in mix.most_common())
        print(f"{name}: {len(utts)} utterances ({top})")
    print(f"names: {len(splits.train_names)} train, {len(splits.heldout_names)} held out; "
          f"{time.perf_counter() - start:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
