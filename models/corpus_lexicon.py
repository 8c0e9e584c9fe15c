"""The domain's word lists and phrasings, read from `models/lexicon/` once per process.

`templates.txt` holds the phrasings under `[intent tag...]` headers, with `{slot}`s that
corpus_slots.py says how to fill, and the openers and closers people put around a request;
the other files are the slot values (names by language group, devices by capability, rooms,
playlists...). corpus.py makes the sentence corpus from them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from edge_asr.daemon.text import normalize_text
from edge_asr.models.corpus_slots import LIST_SLOTS, SLOTS

LEXICON_DIR = Path(__file__).with_name("lexicon")

# Share of requests per intent; call/message and dial are the hard parts, so they get more.
INTENT_WEIGHTS: dict[str, float] = {
    "smart_home_onoff": 12, "smart_home_set": 9, "locks_covers": 7, "call": 15, "dial": 15,
    "timers": 10, "media": 10, "information": 10, "lists": 7, "conversation": 5,
}
INTENTS: tuple[str, ...] = tuple(INTENT_WEIGHTS)

_SLOT_RE = re.compile(r"\{(\w+)\}")


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
            if part not in SLOTS:
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
    for stem in sorted({key.split(":")[0] for key in LIST_SLOTS.values()}):
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
