"""Does a hypothesis look like a finished request? A rule-based score for the end-pointer.

`looks_complete(text)` reads a normalised hypothesis (lower case, numbers spelled out:
ARCHITECTURE.md, "Text normalisation") and returns a score in [0, 1]: about 0.1 when the
words clearly stop mid-request ("call", "dial five five five", "add milk to my"), about
0.9 when they clearly end one ("turn the lights off", "set a timer for ten minutes"), 0.5
when unsure. The final end-pointer waits longer on low scores, so that the pauses people
make before a name or between digit groups are not cut (up to 700 ms: ARCHITECTURE.md,
"The speech domain").

The rules follow the domain's phrasings: what may follow a verb, a preposition, a
particle ("turn on" vs "turn the fan on"), and how long digit strings are grouped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

UNFINISHED = 0.1  # the words stop where a request cannot end
LIKELY_UNFINISHED = 0.25
UNSURE = 0.5
LIKELY_COMPLETE = 0.7  # ends on a content word and no rule objects
COMPLETE = 0.9  # ends the way requests of this domain end

Words = Sequence[str]

# Openers and closers of the domain's phrasings; they carry no request of their own.
_PREFIXES = tuple(tuple(p.split()) for p in sorted((
    "please", "could you", "can you", "would you", "could you please", "can you please",
    "would you please", "hey could you", "hey can you", "hey please", "okay", "ok", "hey",
    "um", "uh", "er", "erm", "so", "alright", "i need you to", "go ahead and", "excuse me",
    "quick question",
), key=lambda p: -len(p.split())))
_POLITE_CLOSERS = tuple(tuple(p.split()) for p in (
    "for me please", "thank you", "thanks", "please", "for me",
))
_TIME_CLOSERS = (("right", "now"), ("now",))  # "call mom now": judged without "now"
_REPLIES = frozenset({"okay", "ok", "alright"})  # alone they may be a whole answer

# Whole requests that end complete even though their last word often dangles.
_WHOLE_REQUESTS = frozenset((
    "never mind", "repeat that", "say that again", "start over", "go ahead", "hold on",
    "be quiet", "stop talking", "cancel that", "forget it", "help", "yes", "no", "yes please",
    "no thanks", "no thank you", "thank you", "thanks", "that's all", "that's it",
    "what did you say", "what can you do", "that's wrong", "not that one", "i said no",
    "sorry i didn't mean that", "yes that's right", "next song", "next track",
    "previous song", "volume up", "volume down", "louder", "quieter", "mute", "unmute",
    "lock up", "what time is it", "what day is it", "who is this", "who sings this",
    "what song is this", "skip this song", "play that again", "make it warmer",
    "turn the volume up", "turn the volume down",
    "make it cooler", "turn it up", "turn it down", "like this song",
))
# One-word commands that are whole but may also take an object ("stop the music").
_BARE_COMMANDS = frozenset((
    "stop", "cancel", "pause", "resume", "skip", "snooze", "wait", "redial", "shuffle",
))

# Verbs that cannot end a request when nothing follows them.
_VERBS_NEEDING_OBJECT = frozenset((
    "call", "text", "message", "dial", "phone", "ring", "tell", "send", "give", "get", "let",
    "reply", "set", "turn", "switch", "power", "shut", "add", "remove", "take", "put", "make",
    "dim", "brighten", "change", "raise", "lower", "open", "close", "lock", "unlock", "remind",
    "wake", "read", "check", "create", "clear", "enter", "punch", "show", "find", "kill",
    "leave", "draw", "pull", "cross", "delete", "start", "video", "play", "talk",
))
# Verbs that dangle wherever they stand ("i need to call" is unfinished too).
_ALWAYS_TRANSITIVE = frozenset((
    "dial", "turn", "set", "add", "remind", "tell", "put", "give", "let", "remove",
    "brighten", "dim", "punch",
))
_CONTACT_VERBS = frozenset(("call", "text", "message", "phone", "ring"))

# Function words after which a request always goes on.
_DANGLING = frozenset((
    # articles, determiners, possessives
    "the", "a", "an", "my", "your", "his", "her", "their", "our", "these", "those", "some",
    "any", "every", "each", "another",
    # prepositions and conjunctions
    "to", "at", "for", "from", "with", "by", "of", "into", "in", "about", "than", "until",
    "till", "and", "or", "but", "if", "because", "saying", "called", "named",
    # auxiliaries, question words, pronoun subjects
    "is", "are", "was", "were", "will", "did", "would", "should", "can", "could", "does",
    "what", "what's", "whats", "when", "where", "who", "who's", "which", "whose", "how",
    "how's", "i", "i'm", "it's", "we're", "there's", "we", "they",
    # words that announce what comes next
    "need", "want", "going", "gonna", "much", "many", "too", "very", "bit", "latest", "new",
    # hesitations: the speaker is still thinking
    "um", "uh", "er", "erm", "hmm", "mm",
    # the first half of "a m" / "p m"
    "p",
))
# Words that end requests of this domain: units, list and media nouns, phone types,
# days and times, comparatives.
_STRONG_ENDINGS = frozenset((
    "percent", "degrees", "degree", "minutes", "hours", "seconds", "list", "playlist",
    "radio", "m", "o'clock", "noon", "midnight", "today", "tonight", "tomorrow", "weekend",
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "morning",
    "evening", "night", "afternoon", "mobile", "cell", "phone", "home", "work", "speaker",
    "halfway", "again", "brighter", "dimmer", "warmer", "cooler", "louder", "quieter",
    "locked", "unlocked", "closed", "music", "news", "weather", "forecast", "umbrella",
    "sunset", "left", "done",
))

_DIGITS = frozenset((
    "zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
))
_NUMBERS = _DIGITS | frozenset((
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen", "twenty", "thirty", "forty", "fifty", "sixty", "seventy",
    "eighty", "ninety", "hundred", "thousand",
))
_UNITS_SINGULAR = frozenset(("minute", "second", "hour"))
# The word right before a digit string that makes it a number to dial.
_DIAL_CUES = frozenset((
    "dial", "call", "ring", "phone", "redial", "number", "enter", "in", "to", "is",
))
_EXTENSION_CUES = frozenset(("extension", "ext"))


def looks_complete(text: str) -> float:
    """Score in [0, 1]: how much `text` looks like a finished request of the domain."""
    words = text.split()
    if not words:
        return UNSURE  # nothing decoded yet: no evidence either way
    if " ".join(words) in _WHOLE_REQUESTS:
        return COMPLETE
    core = _strip_prefixes(words)
    if not core:
        return UNSURE if words[-1] in _REPLIES else UNFINISHED  # "hey", "could you"
    core, closed = _strip_closers(core)
    if closed:
        return COMPLETE  # a closing "please" or "thanks" means the speaker is done
    return _judge(core)


def _strip_prefixes(words: Words) -> list[str]:
    out = list(words)
    stripped = True
    while stripped and out:
        stripped = False
        for prefix in _PREFIXES:
            if tuple(out[: len(prefix)]) == prefix:
                out = out[len(prefix):]
                stripped = True
                break
    return out


def _strip_closers(core: list[str]) -> tuple[list[str], bool]:
    for closer in _POLITE_CLOSERS:
        if len(core) > len(closer) and tuple(core[-len(closer):]) == closer:
            return core[: -len(closer)], True
    for closer in _TIME_CLOSERS:
        if len(core) > len(closer) and tuple(core[-len(closer):]) == closer:
            return core[: -len(closer)], False
    return core, False


def _judge(core: list[str]) -> float:
    """The first rule with an opinion decides; content words that no rule flags
    end most requests of this domain."""
    phrase = " ".join(core)
    if phrase in _WHOLE_REQUESTS:
        return COMPLETE
    if len(core) == 1:
        return _one_word(core[0])
    for rule in _RULES:
        score = rule(core)
        if score is not None:
            return score
    return LIKELY_COMPLETE


def _one_word(word: str) -> float:
    if word in _BARE_COMMANDS:
        return LIKELY_COMPLETE
    if word == "play":
        return 0.4  # "play" alone may mean resume, but usually a title follows
    if word in _VERBS_NEEDING_OBJECT or word in _DANGLING:
        return UNFINISHED
    if word in _NUMBERS:
        return LIKELY_UNFINISHED  # a lone number is rarely a request ("dial" may be lost)
    if word in _STRONG_ENDINGS:
        return LIKELY_COMPLETE
    return UNSURE


# ---------------------------------------------------------------- rules
# Each rule looks at the words after the opener (at least two) and returns a score,
# or None when it has no opinion.

def _digit_string(core: Words) -> float | None:
    """A number being dialled: complete only at a length where numbers end, and unlikely
    at a length where people pause between digit groups (3-3-4, 1-3-3-4)."""
    n = 0
    while n < len(core) and core[-1 - n] in _DIGITS:
        n += 1
    if n == 0 or n == len(core):
        return None
    cue = core[-1 - n]
    if cue in _EXTENSION_CUES:
        return UNFINISHED if n < 3 else COMPLETE  # extensions: 3 to 5 digits, no pauses
    if cue not in _DIAL_CUES or not _dial_context(core[: len(core) - n]):
        return None
    digits = core[len(core) - n:]
    leading_one = digits[0] == "one"
    if n <= 2:
        return UNFINISHED
    if n == 3:
        # N11 service numbers are whole; any other three digits are most often an area
        # code or exchange with a pause after it.
        return COMPLETE if digits[1:] == ["one", "one"] else UNFINISHED
    if n == 4:
        # Four digits end a PIN ("my code is ..."), but after a dialling cue they are
        # most often the first group of an 8-digit number (4-4) or "one" plus an area
        # code (1-3-3-4). At 0.4 these pauses made 3 of rnnt-v1's 12 premature cuts on
        # test_voices, test_sentences and test_names.
        return 0.4 if "code" in core and not leading_one else 0.15
    if n == 5:
        return 0.6
    if n == 6:
        return 0.15  # 3-3 of a ten-digit number
    if n == 7:
        return 0.15 if leading_one else 0.8  # 1-3-3 of an eleven-digit number
    if n == 10 and leading_one:
        return LIKELY_UNFINISHED  # 1 + ten digits needs eleven
    return 0.85 if n < 11 else COMPLETE


def _dial_context(before: Words) -> bool:
    """The digits follow a dialling verb, "the number (is)" or "my code is"."""
    return any(w in ("dial", "call", "ring", "phone", "redial", "number", "code", "enter",
                     "punch") for w in before)


def _particle(core: Words) -> float | None:
    """"on", "off", "up", "down", "out": complete after an object ("turn the fan on"),
    unfinished right after the verb ("turn on ...")."""
    last, before = core[-1], core[-2]
    if last == "back":
        if before in _VERBS_NEEDING_OBJECT or before == "go" or core[0] in ("turn", "switch"):
            return LIKELY_UNFINISHED  # "call back ...", "go back a song", "turn it back on"
        return 0.85  # "call mom back"
    if last not in ("on", "off", "up", "down", "out"):
        return None
    if last == "out":
        return UNFINISHED if before in ("dial", "we're", "run", "ran") else COMPLETE
    if before in _VERBS_NEEDING_OBJECT or before in ("warm", "cool", "wake"):
        return UNFINISHED  # "turn on", "put on", "warm up", "cross off"
    if last == "on" and (before in ("what's", "whats", "is", "anything", "something")
                         or core[0] in _CONTACT_VERBS):
        return UNFINISHED  # "what's on ...", "do i have anything on ...", "call mom on ..."
    if last in ("up", "down") and before == "me":
        return LIKELY_UNFINISHED  # "wake me up" wants a time
    if last == "off" and core[0] in ("take", "cross"):
        return LIKELY_UNFINISHED  # "take milk off" usually names the list
    if last in ("up", "down") and core[0] == "turn" and before != "it":
        return 0.6  # "turn the heat up" may go on "to seventy"
    return 0.85


def _me_or_it(core: Words) -> float | None:
    last, before = core[-1], core[-2]
    if last == "me":
        # "remind me", "wake me", "tell me", "put me" need more; "did mom call me" not.
        if before in ("remind", "wake", "tell", "give", "show", "put", "let", "send", "read"):
            return UNFINISHED
        return 0.8
    if last == "it":
        if before in ("turn", "make", "set", "put", "will", "switch"):
            return LIKELY_UNFINISHED  # "turn it ...", "will it ..."
        return 0.8  # "what time is it", "forget it"
    if last == "you":
        if before in ("can", "could", "would", "will", "do", "did"):
            return UNFINISHED  # "what can you ..."
        return 0.8
    return None


def _verb_at_end(core: Words) -> float | None:
    last, before = core[-1], core[-2]
    if last == "phone":
        # A verb only right after these; otherwise the noun: "on her cell phone".
        return UNFINISHED if before in ("to", "and", "please", "video") else COMPLETE
    if last in _CONTACT_VERBS:
        if core[0] in ("when", "did", "has", "who"):
            return 0.75  # "when did mom call"
        if before in ("a", "the", "my", "last", "new"):
            return LIKELY_COMPLETE  # "give mom a call", "send a text", "read the last message"
        return UNFINISHED  # "i need to call", "video call"
    if last in _ALWAYS_TRANSITIVE:
        return UNFINISHED
    if last in _VERBS_NEEDING_OBJECT and before in ("to", "and", "please", "just"):
        return UNFINISHED  # "i want to play", "go and get"
    return None


def _connectives(core: Words) -> float | None:
    """Words that end requests in some phrasings and dangle in others."""
    last, before = core[-1], core[-2]
    if last == "that":
        # "text diego that ..." and "let ana know that ..." dictate a message next.
        if any(w in ("text", "tell", "message", "know") for w in core[:-1]):
            return UNFINISHED
        return 0.8  # "repeat that", "cancel that"
    if last == "this":
        return 0.85 if before == "is" else UNSURE  # "who is this" vs "call this ..."
    if last in ("number", "extension"):
        return UNFINISHED if _dial_context(core) or core[0] == "the" else UNSURE
    if last == "know" and "let" in core:
        return UNFINISHED  # "let ana know ..."
    if last == "do":
        return 0.8 if before == "you" else UNFINISHED  # "what can you do" vs "what do"
    if last == "have":
        return LIKELY_UNFINISHED if list(core[:-1]) == ["do", "i"] else 0.8
    if last == "time":
        return LIKELY_UNFINISHED if before in ("what", "much") else None
    if last == "long":
        return UNFINISHED if before == "how" else None
    if last == "half":
        return UNFINISHED if before in ("for", "at", "in") else None
    if last == "next":
        return LIKELY_UNFINISHED  # "what's my next ..." ("next" alone is a whole command)
    if last in ("last", "all") and before in ("the", "off", "on"):
        return LIKELY_UNFINISHED  # "read the last ...", "turn off all ..."
    if last in ("timer", "alarm") and before in ("a", "an") and core[0] in ("set", "start"):
        return LIKELY_UNFINISHED  # "set a timer" usually goes on "for ..."
    return None


def _dangling_word(core: Words) -> float | None:
    return UNFINISHED if core[-1] in _DANGLING else None


def _strong_ending(core: Words) -> float | None:
    return COMPLETE if core[-1] in _STRONG_ENDINGS else None


def _number_at_end(core: Words) -> float | None:
    """A number or a singular unit: complete as a setting, not yet as a duration."""
    last = core[-1]
    if last in _UNITS_SINGULAR:
        n = _number_run(core[:-1])
        # "set a ten minute ..." is followed by "timer"; "in a minute" is whole.
        if n and len(core) > n + 1 and core[-2 - n] in ("a", "an"):
            return LIKELY_UNFINISHED
        return COMPLETE
    n = _number_run(core)
    if n == 0 or n == len(core):
        return None
    cue = core[-1 - n]
    if cue in ("for", "in") or "timer" in core or "snooze" in core:
        return LIKELY_UNFINISHED  # "set a timer for ten" wants its unit
    if last in ("hundred", "thousand"):
        return UNSURE
    if cue == "at":
        return 0.6  # a clock time may go on with "a m" or "thirty"
    return 0.75  # "set the volume to four", "thermostat to seventy two"


def _number_run(words: Words) -> int:
    n = 0
    while n < len(words) and words[-1 - n] in _NUMBERS:
        n += 1
    return n


_RULES: tuple[Callable[[Words], float | None], ...] = (
    _digit_string, _particle, _me_or_it, _verb_at_end, _connectives, _dangling_word,
    _strong_ending, _number_at_end,
)
