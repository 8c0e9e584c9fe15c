"""What fills the `{slot}`s of the domain's phrasings (corpus.py's sentences).

A slot takes one of four kinds of value: a number, time, duration or digit string said as
words (SPOKEN_FILLERS), a device name (DEVICE_SLOTS), a contact (CONTACT_SLOT), or an entry
of one of the word lists in `lexicon/` (LIST_SLOTS). SLOTS is every slot a phrasing may name.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from edge_asr.daemon.text import digits_to_words, number_to_words

# Digit groups as people read numbers out: a pause after each group but the last.
_DIGIT_GROUPS: dict[int, tuple[int, ...]] = {
    3: (3,), 4: (4,), 5: (2, 3), 6: (3, 3), 7: (3, 4), 8: (4, 4), 9: (3, 3, 3),
    10: (3, 3, 4), 11: (1, 3, 3, 4),
}
_DIGIT_LENGTH_WEIGHTS = {3: 1, 4: 2, 5: 1, 6: 1, 7: 4, 8: 1, 9: 1, 10: 4, 11: 2}
_EXTENSION_LENGTH_WEIGHTS = {3: 2, 4: 3, 5: 1}
# Fixed words of the time and duration phrases; held-out names must avoid them too.
TIME_WORDS = "a m p o'clock noon midnight half past quarter to in the morning evening at night"
DURATION_WORDS = "a an and half hour hours minute minutes second seconds"

CONTACT_SLOT = "contact"
# Device slots by the lexicon's device sections they draw from.
DEVICE_SLOTS: dict[str, tuple[str, ...]] = {
    "light": ("light",), "switch": ("light", "switch"), "climate": ("climate",),
    "lock": ("lock",), "cover": ("cover",),
}
# Word-list slots by the lexicon file stem (or "stem:section") they draw from.
LIST_SLOTS: dict[str, str] = {
    "room": "rooms", "appliance": "appliances", "color": "colors", "phone": "phone_types",
    "message": "messages", "statement": "messages:statement", "timer": "timer_names",
    "day": "days", "weekday": "weekdays",
    "city": "cities", "genre": "genres", "artist": "artists", "playlist": "playlists",
    "item": "items:things", "item2": "items:things", "task": "items:tasks",
    "list": "list_names",
}


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


def _spoken(make: Callable[[random.Random], str]) -> Callable[[random.Random], Filled]:
    return lambda rng: Filled(tuple(make(rng).split()))


SPOKEN_FILLERS: dict[str, Callable[[random.Random], Filled]] = {
    "percent": _spoken(_percent),
    "temp": _spoken(_temperature),
    "step": _spoken(lambda rng: number_to_words(rng.randint(2, 10))),
    "volume": _spoken(lambda rng: number_to_words(rng.randint(0, 10))),
    "duration": _spoken(_duration),
    "timer_length": _spoken(_timer_length),
    "time": _spoken(_time),
    "digits": lambda rng: _digits(rng, _DIGIT_LENGTH_WEIGHTS),
    "extension": lambda rng: _digits(rng, _EXTENSION_LENGTH_WEIGHTS),
}

SLOTS: frozenset[str] = frozenset({*SPOKEN_FILLERS, *DEVICE_SLOTS, *LIST_SLOTS, CONTACT_SLOT})
