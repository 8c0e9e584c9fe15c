"""A rule-based NLU: the best path's words -> an intent of the domain and its slots.

It stands for the downstream work a real assistant starts on a speculative result: the
cloud runs it on the best rescored path of the speculative lattice, cancels it when the
device sends RESET, and runs it again on the revised lattice. Its cost is configurable
(`NluOptions.cost_s`) to emulate a real service; the wait is cancellable at any moment.

Intents are the corpus's (`edge_asr.models.corpus_lexicon.INTENTS`): smart_home_onoff,
smart_home_set, locks_covers, call (calls and messages), dial, timers, media, information,
lists, conversation; "unknown" when no rule matches. Rules are ordered regular expressions
over the normalised words with politeness openers and closers removed; slot values come
from named groups and from the domain's gazetteers (devices, rooms, genres, artists,
cities, list names, timer names, days), longest match first.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

from edge_asr.models.corpus_lexicon import load_lexicon

UNKNOWN = "unknown"

_OPENERS = sorted(["please", "could you please", "can you please", "would you please",
                   "could you", "can you", "would you", "hey could you", "hey can you",
                   "hey please", "okay", "ok", "hey", "um", "uh", "so", "alright",
                   "i need you to", "go ahead and", "excuse me", "quick question"],
                  key=len, reverse=True)
_CLOSERS = sorted(["please", "for me", "now", "thanks", "thank you", "right now",
                   "for me please"], key=len, reverse=True)
_DIGIT = r"(?:zero|oh|one|two|three|four|five|six|seven|eight|nine)"
_DIGITS = rf"{_DIGIT}(?: {_DIGIT}){{2,10}}"
_NUMBER_WORD = (r"(?:zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
                r"thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|"
                r"thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|a hundred)")
_NUMBER = rf"{_NUMBER_WORD}(?: {_NUMBER_WORD})*"
_DURATION = (rf"(?:(?:{_NUMBER}|an?|half an?)(?: and a half)? "
             r"(?:seconds?|minutes?|hours?)(?: and (?:a half|{n} (?:seconds?|minutes?)))?"
             r"|an hour and a half|a minute and a half|half an hour)").replace("{n}", _NUMBER)
_TIME = (rf"(?:noon|midnight|(?:half|quarter) past {_NUMBER}|quarter to {_NUMBER}"
         rf"|{_NUMBER}(?: o'clock)?(?: [ap] m| in the (?:morning|evening)| at night)?)")

# (intent, pattern): the first pattern that matches the whole request wins.
_RULES: list[tuple[str, str]] = [
    # Whole-request phrases first: "cancel" alone is conversation, "cancel the timer" not.
    ("conversation", r"(?:stop|cancel|never mind|repeat that|say that again|start over|"
                     r"go ahead|hold on|wait|be quiet|stop talking|cancel that|forget it|help|"
                     r"yes|no|thank you|thanks|that's all|that's it|what did you say|"
                     r"what can you do|that's wrong|not that one|sorry i didn't mean that|"
                     r"i said no|yes that's right|yes please|no thanks|no thank you)"),
    # dial before call: "call five five five ..." is a number, "call mom" a contact.
    ("dial", rf"(?:dial|call|ring|phone|punch in|enter|dial out to|redial|call this number"
             rf"|make a call to|place a call to|dial the number|call the number"
             rf"|the number is|my code is) (?P<digits>{_DIGITS})(?: for me| on speaker)?"),
    ("dial", rf"(?:dial|call) extension (?P<digits>{_DIGIT}(?: {_DIGIT}){{2,4}})"),
    ("timers", r"(?:how much time is left|how long until|what alarms|what time is my alarm|"
               r"snooze|remind me|wake me|(?:set|start|cancel|stop|pause|resume|delete|turn off)"
               r" (?:a|an|the|my)\b.*\b(?:timer|alarm)|set (?:a|an|my) .*(?:timer|alarm)|"
               r"timer for|add .* to the .*timer|.*\btimer\b.*).*"),
    ("media", r"(?:play|put on some|shuffle|pause|resume|next|skip|previous|go back a song|"
              r"louder|quieter|mute|unmute|like this song|who sings this|what song is this|"
              r"who is this|volume|(?:stop|pause|resume) the music|set the volume|"
              r"turn (?:it|the volume) (?:up|down|to)|stop the music).*"),
    ("lists", r"(?:add|put|remove|take|cross|clear|read my|create a|start a new|is|do i have"
              r"|how many things are on).* (?:list|to do list)\b.*"),
    ("lists", r"(?:what's on (?:my|the) (?!calendar).*list|we're out of .+|i need (?!to ).+|"
              r"add .+|put .+ on the list|take .+ off the list|cross off .+)"),
    ("information", r"(?:is it going to rain|will it rain|(?:tell|give) me the (?:weather|"
                    r"forecast|news)|what's the weather|what can you do).*"),
    ("call", r"(?:text|message|tell|let|reply to|send|read (?:my|the last) messages?|"
             r"any new messages|did .+ text me|what did .+ say\b).*"),
    ("call", r"(?:call|phone|ring|give .+ a (?:call|ring)|get .+ on the phone|video call|"
             r"start a video call|put me through to|dial|i want to talk to|i need to call|"
             r"when did .+ call|did .+ call me).*"),
    ("smart_home_set", r"(?:raise|lower) the temperature.*|.* degrees"),
    ("locks_covers", r"(?:lock|unlock|open|close|shut (?!off)|raise|lower|draw|pull down|is .+ "
                     r"(?:locked|unlocked|open|closed)|did i lock|are (?:the|all the) .+"
                     r"(?:closed|locked)).*"),
    ("smart_home_set", r"(?:dim|brighten|set|change|make|raise the temperature|warm up|cool"
                       r" down|i'm cold|it's too hot|it's freezing|turn .* (?:up|down|to) .*"
                       r"(?:percent|degrees|\d)|turn the heat (?:up|down)|turn .+ (?:{colors})$"
                       r"|turn .+ (?:up|down) (?:by )?.+ degrees).*"),
    ("smart_home_onoff", r"(?:turn|switch|shut off|power|start|kill|leave|get|lights|is .+ on"
                         r"|did i leave|i want .+ on|it's too dark|.+ (?:on|off) in the).*"),
    ("information", r"(?:what's|what|will it|is it going to|how|do i need|when|read me|tell me|"
                    r"give me the forecast|check my calendar|do i have anything).*"),
]


@dataclass(frozen=True)
class NluOptions:
    cost_s: float = 0.0  # emulated service time per request; the wait is cancellable


@dataclass(frozen=True)
class NluResult:
    intent: str
    slots: dict[str, str] = field(default_factory=dict)


class NluCancelled(Exception):
    """The request was cancelled (a RESET) before the NLU finished."""


@dataclass(frozen=True)
class _Gazetteer:
    """Slot values by slot name, each a tuple of word tuples, longest first."""

    entries: dict[str, tuple[tuple[str, ...], ...]]
    colors: tuple[str, ...]
    openable: frozenset[str]  # names of locks and covers ("set the blinds to ...")


@cache
def _gazetteer() -> _Gazetteer:
    lexicon = load_lexicon()

    def words(phrases: Sequence) -> tuple[tuple[str, ...], ...]:
        unique = {p.words for p in phrases}
        return tuple(sorted(unique, key=len, reverse=True))

    devices = [p for section in lexicon.devices.values() for p in section]
    lists = lexicon.lists
    entries = {
        "device": words(devices) + tuple(
            ("the", *w) for w in words(lists["appliances"])) + words(lists["appliances"]),
        "room": words(lists["rooms"]), "genre": words(lists["genres"]),
        "artist": words(lists["artists"]), "playlist": words(lists["playlists"]),
        "city": words(lists["cities"]), "day": words([*lists["days"], *lists["weekdays"]]),
        "list_name": words(lists["list_names"]), "timer_name": words(lists["timer_names"]),
        "phone_type": words(lists["phone_types"]), "color": words(lists["colors"]),
        "item": words(lists["items"]),
    }
    openable = frozenset(" ".join(p.words) for kind in ("lock", "cover")
                         for p in lexicon.devices[kind])
    return _Gazetteer(entries, tuple(" ".join(w) for w in entries["color"]), openable)


@cache
def _compiled_rules() -> tuple[tuple[str, re.Pattern[str]], ...]:
    colors = "|".join(re.escape(c) for c in _gazetteer().colors)
    return tuple((intent, re.compile(pattern.replace("{colors}", colors)))
                 for intent, pattern in _RULES)


def _strip_politeness(text: str) -> str:
    changed = True
    while changed:
        changed = False
        for opener in _OPENERS:
            if text.startswith(opener + " "):
                text, changed = text[len(opener) + 1:], True
                break
        for closer in _CLOSERS:
            if text.endswith(" " + closer):
                text, changed = text[:-len(closer) - 1], True
                break
    return text


def _find(words: list[str], values: tuple[tuple[str, ...], ...]) -> str | None:
    """The longest gazetteer value that occurs in the words, first occurrence."""
    for value in values:  # longest first
        n = len(value)
        for start in range(len(words) - n + 1):
            if tuple(words[start:start + n]) == value:
                return " ".join(value)
    return None


_SLOT_PATTERNS: dict[str, dict[str, str]] = {
    "smart_home_set": {"number": rf"\b(?:to|by|up|down) (?P<v>{_NUMBER})\b",
                       "unit": r"\b(?P<v>percent|degrees)\b"},
    "locks_covers": {"number": rf"\b(?P<v>{_NUMBER}) percent\b"},
    "media": {"number": rf"\bvolume (?:to )?(?P<v>{_NUMBER})\b"},
    "timers": {"duration": rf"\b(?:for|in|add) (?P<v>{_DURATION})",
               "time": rf"\b(?:at|for|my) (?P<v>{_TIME})(?: alarm| [a-z]+day| tomorrow|$)"},
    "call": {"message": r"\b(?:that|saying) (?P<v>.+)$",
             "contact": r"^(?:call back|call|phone|ring|give|get|video call|start a video call "
                        r"with|put me through to|dial|i want to talk to|i need to call|when did|"
                        r"did|text|message|tell|let|reply to|send a text to|send a message to|"
                        r"send|read my messages from|read the last message from|any new "
                        r"messages from|what did) (?P<v>.+?)(?: on (?:their|the|her|his)? ?\w+"
                        r"(?: phone)?| at (?:home|work)| now| back| on speaker| a (?:call|ring|"
                        r"text|message).*| on the phone| that .+| saying .+| know .+| call( me)?"
                        r"| text me| say)?$"},
}
_GAZETTEER_SLOTS: dict[str, tuple[str, ...]] = {
    "smart_home_onoff": ("device", "room"),
    "smart_home_set": ("device", "room", "color"),
    "locks_covers": ("device", "room"),
    "call": ("phone_type",),
    "timers": ("timer_name", "day"),
    "media": ("genre", "artist", "playlist", "room"),
    "information": ("day", "city"),
    "lists": ("item", "list_name"),
}


def understand(words: Sequence[str]) -> NluResult:
    """Intent and slots of normalised words (no cost, no cancellation: see run_nlu)."""
    text = _strip_politeness(" ".join(words).strip())
    if not text:
        return NluResult(UNKNOWN)
    for intent, pattern in _compiled_rules():
        match = pattern.fullmatch(text)
        if match:
            slots = _slots(intent, text, match)
            if intent == "smart_home_set" and slots.get("device") in _gazetteer().openable:
                intent = "locks_covers"  # "set the blinds to fifty percent" opens a cover
                slots = _slots(intent, text, match)
            return NluResult(intent, slots)
    return NluResult(UNKNOWN)


def _slots(intent: str, text: str, match: re.Match[str]) -> dict[str, str]:
    slots = {k: v for k, v in match.groupdict().items() if v}
    for name, pattern in _SLOT_PATTERNS.get(intent, {}).items():
        if name not in slots and (found := re.search(pattern, text)):
            slots[name] = found.group("v")
    words = text.split()
    gazetteer = _gazetteer().entries
    for name in _GAZETTEER_SLOTS.get(intent, ()):
        if name not in slots and (value := _find(words, gazetteer[name])):
            slots[name] = value
    if intent == "call":
        if "message" in slots or words[0] in ("text", "message", "tell", "let", "reply",
                                              "send", "read", "any"):
            slots["action"] = "message"
        else:
            slots["action"] = "call"
        if slots.get("contact") in ("a text", "a message", "me"):
            del slots["contact"]
    return slots


def run_nlu(words: Sequence[str], options: NluOptions = NluOptions(),
            cancel: threading.Event | None = None) -> NluResult:
    """understand() at the configured cost; raises NluCancelled if `cancel` is set first."""
    cancel = cancel or threading.Event()
    deadline = time.monotonic() + options.cost_s
    if cancel.is_set():
        raise NluCancelled()
    result = understand(words)
    remaining = deadline - time.monotonic()
    if (remaining > 0 and cancel.wait(remaining)) or cancel.is_set():
        raise NluCancelled()
    return result
