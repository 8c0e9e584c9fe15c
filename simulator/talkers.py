"""Speech in the room besides the requests themselves: the wake phrase said before each
request, and speech that is not addressed to the device (a TV, other people talking).

The phrase is synthesised in the request's own voice and goes through the request's own
place in the room, so that the device hears one talker say "hey marvin ... turn on the
lights". An `OtherSpeech` source talks from a place of its own, at a set level below the
requests: a TV that fills the session with sentences ("continuous"), or a second person
who starts talking with each request ("over_requests"). Every sentence it says is laid on
the timeline under the source's label, so the report can tell what the device made of the
requests from what it made of speech nobody addressed to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.manifest import read_manifest
from edge_asr.models.augment import SAMPLE_RATE, active_rms, reverberate, simulate_rir

PLACEMENTS = ("continuous", "over_requests")
# What the timeline calls the requests' own speech; a source may not take these names.
RESERVED_LABELS = ("request", "phrase")


@dataclass(frozen=True)
class OtherSpeech:
    """A source of speech not addressed to the device (`[[room.other_speech]]`)."""

    label: str = "tv"  # how the timeline and the report name it
    sentences: list[str] = field(default_factory=list)  # synthesised, in `voices` in turn
    voices: list[str] = field(default_factory=lambda: ["espeak-en-us+m3"])
    manifest: str = ""  # or a manifest's recordings (relative to the scenario file)
    tags: list[str] = field(default_factory=list)  # keep manifest entries with all these
    limit: int = 0  # manifest entries; 0 = every one
    # "continuous": sentence after sentence all session, `gap_s` apart (a TV);
    # "over_requests": one sentence starting with each request (someone talking over it).
    placement: str = "continuous"
    # The requests' speech level over this source's, dB: [min, max], drawn per sentence.
    # A continuous source is held against the requests' median level; one over a request,
    # against that request's level.
    sir_db: list[float] = field(default_factory=lambda: [6.0, 6.0])
    gap_s: list[float] = field(default_factory=lambda: [0.5, 2.0])  # between sentences

    def __post_init__(self) -> None:
        where = f"room.other_speech {self.label!r}"
        if not self.label.strip() or self.label in RESERVED_LABELS:
            raise ValueError(f"room.other_speech.label must name the source and not be "
                             f"{' or '.join(RESERVED_LABELS)}, got {self.label!r}")
        if bool(self.sentences) == bool(self.manifest):
            raise ValueError(f"{where}: give sentences (synthesised) or a manifest, "
                             "exactly one")
        if self.sentences and not self.voices:
            raise ValueError(f"{where}: sentences need at least one voice")
        for v in self.voices:
            voice(v)  # an unknown engine fails here, not halfway through a render
        if self.placement not in PLACEMENTS:
            raise ValueError(f"{where}: placement must be one of {', '.join(PLACEMENTS)}, "
                             f"got {self.placement!r}")
        if len(self.sir_db) != 2 or not -20.0 <= self.sir_db[0] <= self.sir_db[1] <= 40.0:
            raise ValueError(f"{where}: sir_db must be [min, max] dB within [-20, 40], "
                             f"got {self.sir_db!r}")
        if len(self.gap_s) != 2 or not 0.0 <= self.gap_s[0] <= self.gap_s[1]:
            raise ValueError(f"{where}: gap_s must be [min, max] seconds, got {self.gap_s!r}")


@dataclass
class Spoken:
    """A sentence of another source, placed on the session's timeline (seconds)."""

    label: str  # the source's
    text: str
    speech_start: float
    speech_end: float
    source: str  # the voice or file it came from


def voice(voice_id: str):
    """The models/synth.py Voice behind an id like 'flite-rms' or 'espeak-en-us+f3'."""
    from edge_asr.models.synth import Voice, heldout_voices, training_voices

    for v in (*heldout_voices(), *training_voices()):
        if v.id == voice_id:
            return v
    engine, _, name = voice_id.partition("-")
    if engine not in ("espeak", "flite", "piper") or not name:
        raise ValueError(f"unknown voice {voice_id!r}: use an id like 'flite-rms' or "
                         "'espeak-en-us+f3'")
    return Voice(engine, name)


def speak(text: str, voice_id: str, rng: np.random.Generator) -> np.ndarray:
    from edge_asr.models.synth import synthesize

    return synthesize(text, voice(voice_id), rng).astype(np.float32)


def say_phrase(phrase: str, voice_id: str, level: float, rng: np.random.Generator,
               pause_s: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """The phrase at the request's active `level`, and the pause after it."""
    said = speak(phrase, voice_id, rng)
    rms = active_rms(said)
    if rms > 0:
        said = (said * np.float32(level / rms)).astype(np.float32)
    return said, np.zeros(int(rng.uniform(*pause_s) * SAMPLE_RATE), np.float32)


@dataclass
class _Sentence:
    audio: np.ndarray
    text: str
    start: float  # speech within the clip
    end: float
    source: str


def _sentences(src: OtherSpeech, base: Path, rng: np.random.Generator) -> list[_Sentence]:
    if src.sentences:
        out = []
        for i, text in enumerate(src.sentences):
            v = src.voices[i % len(src.voices)]
            audio = speak(text, v, rng)
            out.append(_Sentence(audio, text, 0.0, len(audio) / SAMPLE_RATE, v))
        return out
    path = Path(src.manifest).expanduser()
    path = path if path.is_absolute() else base / path
    entries = [e for e in read_manifest(path) if set(src.tags) <= set(e.tags)]
    entries = entries[: src.limit] if src.limit else entries
    if not entries:
        raise ValueError(f"room.other_speech {src.label!r}: {path}: no manifest entries "
                         f"with tags {src.tags}")
    out = []
    for e in entries:
        audio = read_audio(e.audio_filepath)
        end = e.speech_end if e.speech_end is not None else len(audio) / SAMPLE_RATE
        out.append(_Sentence(audio, e.text, e.speech_start or 0.0, end, e.audio_filepath))
    return out


def _audible(pool: list[_Sentence], label: str) -> list[_Sentence]:
    kept = [s for s in pool if len(s.audio) and active_rms(s.audio) > 0]
    if not kept:
        raise ValueError(f"room.other_speech {label!r}: every sentence is silent")
    return kept


def render_other_speech(src: OtherSpeech, n: int, requests: list[tuple[float, float]],
                        base: Path, rt60: float, rng: np.random.Generator
                        ) -> tuple[np.ndarray, list[Spoken]]:
    """`n` samples of what `src` says, and its sentences on the timeline. `requests` are
    (speech start in seconds, active level) of each request, in order."""
    pool = _audible(_sentences(src, base, rng), src.label)
    track = np.zeros(n, np.float32)
    spoken: list[Spoken] = []

    def place(i: int, t: float, level: float) -> float:
        """Sentence `i` of the pool from second `t`; returns where its audio ends."""
        s = pool[i % len(pool)]
        first = int(round(t * SAMPLE_RATE))
        audio = s.audio[: max(0, n - first)]  # the session's end cuts the last one short
        gain = level / active_rms(s.audio) / 10 ** (rng.uniform(*src.sir_db) / 20)
        track[first:first + len(audio)] += audio * np.float32(gain)
        end = min(t + s.end, n / SAMPLE_RATE)
        if t + s.start < end:
            spoken.append(Spoken(src.label, s.text, t + s.start, end, s.source))
        return t + len(s.audio) / SAMPLE_RATE

    if src.placement == "over_requests":
        for i, (start, level) in enumerate(requests):
            # the clip's own lead-in ahead, so its words begin with the request's
            place(i, max(0.0, start - pool[i % len(pool)].start), level)
    else:
        level = float(np.median([lv for _, lv in requests])) if requests else 0.1
        t, i = rng.uniform(*src.gap_s), 0
        while t < n / SAMPLE_RATE:
            t = place(i, t, level) + rng.uniform(*src.gap_s)
            i += 1
    if rt60 > 0:  # one place in the room for the whole source: a TV does not move
        track = reverberate(track, simulate_rir(rt60, rng))
    return track, spoken
