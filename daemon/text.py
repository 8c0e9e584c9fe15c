"""The one text normalisation (ARCHITECTURE.md, "Text normalisation"), shared by the daemon,
the evaluation and the recipe.

References and hypotheses are compared only after `normalize_text`: lower case ASCII words,
no punctuation except an apostrophe inside a word, numbers and digits spelled out as spoken,
single spaces. The function is idempotent: its output normalises to itself.
"""

from __future__ import annotations

import re
import unicodedata

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
_ORDINAL_IRREGULAR = {
    "one": "first", "two": "second", "three": "third", "five": "fifth",
    "eight": "eighth", "nine": "ninth", "twelve": "twelfth",
}

# Letters that NFKD does not decompose into base letter + combining mark.
_LETTER_FOLD = str.maketrans({
    "ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE",
    "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th",
    "ı": "i", "ŋ": "ng", "ħ": "h", "ŧ": "t",
    # Typographic apostrophes and dashes become their ASCII forms so the rules below apply.
    "’": "'", "‘": "'", "ʼ": "'", "ʻ": "'", "`": "'", "´": "'",
    "‐": "-", "‑": "-", "‒": "-", "–": "-", "—": " - ", "−": "-",
})

_DEGREES_RE = re.compile(r"\s*°\s*([cf])?\b", re.IGNORECASE)
_CURRENCY_RE = re.compile(r"([$€£])\s?(\d+)(?:\.(\d{2}))?")
_CURRENCY_NAMES = {"$": ("dollar", "cent"), "€": ("euro", "cent"), "£": ("pound", "penny")}
_PERCENT_RE = re.compile(r"(\d)\s*%")
_PHONE_RE = re.compile(
    r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{3}\)\s?|\b\d{3}[\s.-])\d{3}[\s.-]\d{4}\b"
    r"|\b\d{3}[\s.-]\d{4}\b"
)
_DASHED_DIGITS_RE = re.compile(r"\b\d+(?:-\d+)+\b")
_TIME_RE = re.compile(r"\b(\d{1,2}):(\d{2})(?!\d)(?:\s*([ap])\.?\s?m\b\.?)?")
_AMPM_RE = re.compile(r"(\d)\s*([ap])\.?\s?m\b\.?")
_ORDINAL_RE = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_GROUPED_RE = re.compile(r"\b\d{1,3}(?:,\d{3})+\b")
_DECIMAL_RE = re.compile(r"\b(\d+)\.(\d+)\b")
_NEGATIVE_RE = re.compile(r"(^|\s)-(\d)")
_LETTER_DIGIT_RE = re.compile(r"(?<=[a-z])(?=\d)|(?<=\d)(?=[a-z])")
_INTEGER_RE = re.compile(r"\d+")
_LOOSE_APOSTROPHE_RE = re.compile(r"(?<![a-z])'|'(?![a-z])")
_NOT_WORD_RE = re.compile(r"[^a-z' ]+")
_DIGIT_SEPARATORS = set(" \t-.()+")
# One spelling for words written two ways and said one way, as numbers are spelled out as
# spoken: "ok" and "okay" are the same word to a listener (espeak-ng and flite say them
# alike), so a model cannot be right or wrong between them. Whisper's English normaliser
# maps spelling variants the same way.
_SPELLINGS = {"ok": "okay"}


def number_to_words(n: int) -> str:
    """Cardinal number as spoken, without "and": 105 -> "one hundred five"."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (" " + _ONES[ones] if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + (" " + number_to_words(rest) if rest else "")
    for scale, name in _SCALES:
        if n >= scale:
            head, rest = divmod(n, scale)
            if head >= 1000:
                raise ValueError(f"number too large to spell: {n}")
            return number_to_words(head) + " " + name + (
                " " + number_to_words(rest) if rest else "")
    raise AssertionError("unreachable")


def ordinal_to_words(n: int) -> str:
    """Ordinal as spoken: 21 -> "twenty first"."""
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def digits_to_words(s: str) -> str:
    """Each digit spoken on its own ("0192" -> "zero one nine two"); phone separators ignored."""
    words = []
    for ch in s:
        if ch.isdigit() and ch.isascii():
            words.append(_ONES[int(ch)])
        elif ch not in _DIGIT_SEPARATORS:
            raise ValueError(f"not a digit string: {s!r}")
    return " ".join(words)


def _fold_to_ascii(text: str) -> str:
    """Accents off ("Zoë" -> "Zoe"); any other non-ASCII character becomes a space."""
    text = unicodedata.normalize("NFKD", text.translate(_LETTER_FOLD))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return "".join(ch if ch.isascii() else " " for ch in text)


def _degrees(m: re.Match[str]) -> str:
    scale = {"c": " celsius", "f": " fahrenheit"}.get((m.group(1) or "").lower(), "")
    return " degrees" + scale + " "


def _currency(m: re.Match[str]) -> str:
    unit, sub_unit = _CURRENCY_NAMES[m.group(1)]
    amount = int(m.group(2))
    words = f"{number_to_words(amount)} {unit}{'' if amount == 1 else 's'}"
    if m.group(3) and int(m.group(3)):
        cents = int(m.group(3))
        plural = "pence" if sub_unit == "penny" else "cents"
        words += f" and {number_to_words(cents)} {sub_unit if cents == 1 else plural}"
    return f" {words} "


def _time(m: re.Match[str]) -> str:
    hour, minute, half = int(m.group(1)), int(m.group(2)), m.group(3)
    words = number_to_words(hour)
    if minute == 0 and not half:
        words += " o'clock" if 1 <= hour <= 12 else " hundred"
    elif 0 < minute < 10:
        words += " oh " + number_to_words(minute)
    elif minute:
        words += " " + number_to_words(minute)
    if half:
        words += f" {half} m"
    return f" {words} "


def _phone(m: re.Match[str]) -> str:
    return f" {digits_to_words(m.group(0))} "


def _dashed_digits(m: re.Match[str]) -> str:
    # Long dash-joined groups are phone-like ("555-0192"); short ones are ranges ("3-4").
    digits = m.group(0).replace("-", "")
    return f" {digits_to_words(digits)} " if len(digits) >= 5 else m.group(0).replace("-", " ")


def _integer(m: re.Match[str]) -> str:
    digits = m.group(0)
    # Long strings and leading zeros are read digit by digit, as people read numbers and codes.
    if len(digits) >= 5 or (len(digits) > 1 and digits[0] == "0"):
        return f" {digits_to_words(digits)} "
    return f" {number_to_words(int(digits))} "


def _spell_numbers(text: str) -> str:
    """Every digit sequence in lower-case ASCII text replaced by words, most specific rule first."""
    text = _PERCENT_RE.sub(r"\1 percent ", text).replace("%", " percent ")
    text = _PHONE_RE.sub(_phone, text)
    text = _DASHED_DIGITS_RE.sub(_dashed_digits, text)
    text = _TIME_RE.sub(_time, text)
    text = _AMPM_RE.sub(r"\1 \2 m ", text)
    text = _ORDINAL_RE.sub(lambda m: f" {ordinal_to_words(int(m.group(1)))} ", text)
    text = _GROUPED_RE.sub(lambda m: f" {number_to_words(int(m.group(0).replace(',', '')))} ",
                           text)
    text = _DECIMAL_RE.sub(
        lambda m: f" {number_to_words(int(m.group(1)))} point {digits_to_words(m.group(2))} ",
        text)
    text = _NEGATIVE_RE.sub(r"\1minus \2", text)
    text = _LETTER_DIGIT_RE.sub(" ", text)
    return _INTEGER_RE.sub(_integer, text)


def normalize_text(text: str) -> str:
    """The normalisation: "Dim the lamp to 30%!" -> "dim the lamp to thirty percent"."""
    text = _DEGREES_RE.sub(_degrees, text)
    text = _CURRENCY_RE.sub(_currency, text)
    text = _fold_to_ascii(text).lower()
    text = _spell_numbers(text.replace("&", " and ").replace("@", " at "))
    text = _LOOSE_APOSTROPHE_RE.sub(" ", text)
    text = _NOT_WORD_RE.sub(" ", text)  # hyphens and all other punctuation become spaces
    return " ".join(_SPELLINGS.get(w, w) for w in text.split())
