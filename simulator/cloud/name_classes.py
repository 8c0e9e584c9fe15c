"""Name classes: the user's contacts fill the cloud LM's <contact> class at rescoring time.

Most names a user says were never in any corpus, so an LM of words pulls them towards
words it knows ("call benoit leroy" -> "call ben or leroy"). The cloud LM is trained with
a share of the person names replaced by one <contact> token (models/cloud_lm_recipe.py),
so it knows where a name goes; the device sends its contact list with each lattice
(`LatticeUpload.context`), and a path that says one of those names is also read with the
name as <contact>, which costs ln(1 / number of contacts) for the choice within the class.
A path scores the better of its two readings: as words, and with its contacts as the
class (the classic class-based LM, where the class's members come from the user).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edge_asr.daemon.text import normalize_text

CONTACT = "<contact>"
# What the cloud accepts with one lattice: enough for a large address book.
MAX_CONTACTS = 5000
MAX_CONTACT_CHARS = 200


class ContextError(ValueError):
    """A contact list that breaks the limits above."""


@dataclass(frozen=True)
class Contacts:
    """The contact list as word tuples (normalised as recognised text is)."""

    names: frozenset[tuple[str, ...]] = frozenset()
    longest: int = 0

    @classmethod
    def of(cls, entries: Iterable[str]) -> Contacts:
        entries = list(entries)
        if len(entries) > MAX_CONTACTS:
            raise ContextError(f"{len(entries)} contacts, more than the {MAX_CONTACTS} allowed")
        names = set()
        for entry in entries:
            if len(entry) > MAX_CONTACT_CHARS:
                raise ContextError(f"a contact of {len(entry)} characters, more than the "
                                   f"{MAX_CONTACT_CHARS} allowed")
            words = tuple(normalize_text(entry).split())
            if words:
                names.add(words)
        return cls(frozenset(names), max((len(n) for n in names), default=0))

    def __bool__(self) -> bool:
        return bool(self.names)

    @property
    def in_class_logprob(self) -> float:
        """ln p(this name | <contact>): each contact alike."""
        return -math.log(len(self.names))


NO_CONTACTS = Contacts()


def _spans(words: Sequence[str], contacts: Contacts) -> list[tuple[str, ...] | str]:
    """The words, with every contact they say (longest first, left to right) as one tuple."""
    out: list[tuple[str, ...] | str] = []
    i = 0
    while i < len(words):
        for length in range(min(contacts.longest, len(words) - i), 0, -1):
            if tuple(words[i:i + length]) in contacts.names:
                out.append(tuple(words[i:i + length]))
                i += length
                break
        else:
            out.append(words[i])
            i += 1
    return out


def class_reading(words: Sequence[str], contacts: Contacts) -> tuple[tuple[str, ...], int]:
    """The words with every contact they say as <contact>, and how many were replaced (0:
    the words as they are)."""
    spans = _spans(words, contacts)
    return (tuple(CONTACT if isinstance(s, tuple) else s for s in spans),
            sum(isinstance(s, tuple) for s in spans))


def contacts_said(words: Sequence[str], contacts: Contacts) -> frozenset[tuple[str, ...]]:
    """The contacts of the list that the words say."""
    return frozenset(s for s in _spans(words, contacts) if isinstance(s, tuple))
