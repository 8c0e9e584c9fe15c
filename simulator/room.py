"""The room around the device's microphone: what it hears during a scenario.

`render_session` lays the scenario's utterances out on one timeline with pauses between
them, puts each talker somewhere in the room (a simulated impulse response), and mixes in
the room's noise beds (a kitchen, a party's babble, music) at signal-to-noise ratios
relative to the speech. It returns the audio and the ground truth: where each utterance's
speech starts and ends on the timeline, which is what every latency is measured from.

When the device itself plays something (`Playback`: music from its own loudspeaker), the
microphone hears that through the room too, a few centimetres from the loudspeaker and a
little late (the output buffer), while the device knows the dry signal it played: the
session carries that as the reference the daemon's echo canceller gets, in step with the
microphone from the first sample.

With a wake word the talker says the phrase before each request, and other sources (a TV,
a second person) may talk in the room without addressing the device (simulator/talkers.py);
`Session.timeline` labels every stretch of speech with what it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.manifest import read_manifest
from edge_asr.daemon.recognition.context_graph import ContextError, context_entries
from edge_asr.models.augment import (
    NOISE_KINDS,
    SAMPLE_RATE,
    active_rms,
    make_babble,
    make_noise,
    reverberate,
    simulate_rir,
)
from edge_asr.simulator.talkers import (
    OtherSpeech,
    Spoken,
    render_other_speech,
    say_phrase,
    voice,
)


@dataclass(frozen=True)
class NoiseBed:
    kind: str  # one of augment.NOISE_KINDS, or "babble" (other talkers: a party)
    snr_db: float  # speech level over this bed's level

    def __post_init__(self) -> None:
        if self.kind not in (*NOISE_KINDS, "babble"):
            raise ValueError(f"room.noise: unknown kind {self.kind!r}; known: "
                             f"{', '.join((*NOISE_KINDS, 'babble'))}")


@dataclass(frozen=True)
class Playback:
    """What the device's own loudspeaker plays during the session ("" = nothing)."""

    kind: str = ""  # one of augment.NOISE_KINDS: "music" is a device playing a song
    snr_db: float = 10.0  # speech level over the playback's echo at the microphone
    rt60: float = 0.4  # of the path from loudspeaker to microphone (the same room)
    distance_m: float = 0.1  # loudspeaker to microphone, the direct path
    # From the reference handed to the canceller to the sound leaving the loudspeaker: the
    # output buffer and converter. Real devices see tens of milliseconds.
    delay_ms: float = 30.0
    level_dbfs: float = -20.0  # RMS of the reference, the digital signal played

    def __post_init__(self) -> None:
        if self.kind and self.kind not in NOISE_KINDS:
            raise ValueError(f"room.playback: unknown kind {self.kind!r}; known: "
                             f"{', '.join(NOISE_KINDS)}")
        if not 0.0 < self.rt60 <= 2.0:
            raise ValueError(f"room.playback.rt60 must be in (0, 2] seconds, got {self.rt60!r}")
        if not 0.0 <= self.delay_ms <= 500.0:
            raise ValueError(f"room.playback.delay_ms must be in [0, 500], "
                             f"got {self.delay_ms!r}")


@dataclass(frozen=True)
class RoomConfig:
    rt60: float = 0.0  # reverberation time in seconds; 0 = the talker is at the microphone
    noise: list[NoiseBed] = field(default_factory=list)
    gap_s: list[float] = field(default_factory=lambda: [1.5, 2.5])  # pause between requests
    lead_s: float = 1.0  # room sound before the first request
    # A microphone is never digitally silent: its self-noise (and the room's) sits about
    # 70 dB below full scale, as in the bundled clips. Digital zeros between requests would
    # also mislead the VAD, which adapts its noise floor to what it hears.
    mic_noise_dbfs: float = -70.0
    playback: Playback = field(default_factory=Playback)  # the device's own loudspeaker
    # speech not addressed to the device: a TV, other people (simulator/talkers.py)
    other_speech: list[OtherSpeech] = field(default_factory=list)

    def __post_init__(self) -> None:
        labels = [o.label for o in self.other_speech]
        if len(set(labels)) != len(labels):
            raise ValueError(f"room.other_speech: each source needs its own label, got "
                             f"{labels}")
        if not 0.0 <= self.rt60 <= 2.0:
            raise ValueError(f"room.rt60 must be in [0, 2] seconds, got {self.rt60!r}")
        if len(self.gap_s) != 2 or not 0 <= self.gap_s[0] <= self.gap_s[1]:
            raise ValueError(f"room.gap_s must be [min, max] seconds, got {self.gap_s!r}")


@dataclass(frozen=True)
class UtteranceSource:
    """Where the requests come from: a manifest, sentences to synthesise, or both."""

    manifest: str = ""  # relative to the scenario file
    tags: list[str] = field(default_factory=list)  # keep manifest entries with all these tags
    limit: int = 0  # 0 = every entry
    skip: int = 0  # entries passed over first (a development scenario takes other requests)
    sentences: list[str] = field(default_factory=list)  # synthesised on the fly
    voice: str = "flite-rms"  # voice id for the sentences (models/synth.py ids)
    contacts: list[str] = field(default_factory=list)  # context names besides the manifest's
    # With a wake word: the pause between the phrase and the request, [min, max] seconds.
    # The phrase is said in the request's voice (a manifest entry's "voice" when it names
    # one the simulator can synthesise, else `voice`).
    wake_pause_s: list[float] = field(default_factory=lambda: [0.1, 0.5])

    def __post_init__(self) -> None:
        if len(self.wake_pause_s) != 2 or not 0 <= self.wake_pause_s[0] \
                <= self.wake_pause_s[1] <= 3.0:
            raise ValueError(f"utterances.wake_pause_s must be [min, max] seconds within "
                             f"[0, 3], got {self.wake_pause_s!r}")
        if self.skip < 0 or self.limit < 0:
            raise ValueError(f"utterances.skip and utterances.limit must be >= 0, got "
                             f"{self.skip} and {self.limit}")


@dataclass
class Request:
    """One utterance placed on the session's timeline (seconds from the session start)."""

    index: int
    text: str
    speech_start: float
    speech_end: float
    tags: list[str]
    context: dict[str, list[str]]  # the biasing context by kind, as the manifest gave it
    source: str  # the file or voice it came from
    phrase: str = ""  # the wake phrase said before it, if any
    phrase_start: float | None = None  # where the phrase's speech lies on the timeline
    phrase_end: float | None = None

    @property
    def context_names(self) -> list[str]:
        return [name for names in self.context.values() for name in names]

    @property
    def start(self) -> float:
        """Where the talker began: at the phrase, if one was said."""
        return self.speech_start if self.phrase_start is None else self.phrase_start

    @property
    def said(self) -> str:
        """Everything the talker said: the phrase (if any), then the request."""
        return f"{self.phrase} {self.text}" if self.phrase else self.text


@dataclass
class Session:
    samples: np.ndarray  # float32, 16 kHz mono
    requests: list[Request]
    # What the device played, dry, sample for sample beside `samples`; None if nothing.
    reference: np.ndarray | None = None
    others: list[Spoken] = field(default_factory=list)  # speech not addressed to the device

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    def timeline(self) -> list[dict]:
        """Every stretch of speech, in order, labelled: "phrase" (the wake phrase),
        "request", or the label of the source that said it ("tv")."""
        rows = []
        for r in self.requests:
            if r.phrase_start is not None:
                rows.append({"kind": "phrase", "request": r.index, "text": r.phrase,
                             "start": r.phrase_start, "end": r.phrase_end})
            rows.append({"kind": "request", "request": r.index, "text": r.text,
                         "start": r.speech_start, "end": r.speech_end})
        rows += [{"kind": o.label, "request": None, "text": o.text, "start": o.speech_start,
                  "end": o.speech_end} for o in self.others]
        return sorted(rows, key=lambda row: row["start"])


@dataclass
class _Clip:
    audio: np.ndarray
    text: str
    speech_start: float
    speech_end: float
    tags: list[str]
    context: dict[str, list[str]]  # by kind, as SetContext takes it
    source: str
    voice: str = ""  # the voice id that spoke it, if the simulator can speak it too


def _manifest_clips(src: UtteranceSource, base: Path) -> list[_Clip]:
    path = Path(src.manifest).expanduser()
    if not path.is_absolute():
        path = base / path
    entries = [e for e in read_manifest(path) if set(src.tags) <= set(e.tags)]
    entries = entries[src.skip:]
    if src.limit:
        entries = entries[: src.limit]
    if not entries:
        raise ValueError(f"{path}: no manifest entries with tags {src.tags}")
    clips = []
    for e in entries:
        try:  # the daemon's own check, before a session is built around a bad context
            context_entries(e.context)
        except ContextError as err:
            raise ValueError(f"{path}: {e.audio_filepath}: {err}") from err
        audio = read_audio(e.audio_filepath)
        start = e.speech_start if e.speech_start is not None else 0.0
        end = e.speech_end if e.speech_end is not None else len(audio) / SAMPLE_RATE
        clips.append(_Clip(audio, e.text, start, end, list(e.tags), e.context_by_kind,
                           str(e.audio_filepath), _speakable(e.extra.get("voice"))))
    return clips


def _speakable(voice_id: object) -> str:
    """`voice_id` if the simulator can synthesise it (a recording's person it cannot)."""
    if not isinstance(voice_id, str):
        return ""
    try:
        voice(voice_id)
    except ValueError:
        return ""
    return voice_id


def _synthesised_clips(src: UtteranceSource, rng: np.random.Generator) -> list[_Clip]:
    from edge_asr.models.synth import synthesize

    spoken_by = voice(src.voice)
    clips = []
    for text in src.sentences:
        audio = synthesize(text, spoken_by, rng)
        clips.append(_Clip(audio, text, 0.0, len(audio) / SAMPLE_RATE, ["synthesised"], {},
                           spoken_by.id, spoken_by.id))
    return clips


def _with_phrase(clip: _Clip, phrase: str, source: UtteranceSource,
                 rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """The clip with `phrase` said, at its level, where its speech begins; the phrase's
    length and the phrase's plus the pause's (seconds)."""
    start = int(round(clip.speech_start * SAMPLE_RATE))
    level = active_rms(clip.audio[start:int(round(clip.speech_end * SAMPLE_RATE))])
    said, pause = say_phrase(phrase, clip.voice or source.voice, level, rng,
                             source.wake_pause_s)
    audio = np.concatenate((clip.audio[:start], said, pause, clip.audio[start:]))
    return audio, len(said) / SAMPLE_RATE, (len(said) + len(pause)) / SAMPLE_RATE


def render_session(source: UtteranceSource, room: RoomConfig, base: Path,
                   seed: int = 0, wake_phrase: str = "") -> Session:
    """The microphone signal of a whole scenario and where each request lies in it. With
    `wake_phrase` the talker says it before each request."""
    rng = np.random.default_rng(seed)
    # The phrase and the other sources draw from generators of their own, so that the
    # rest of the session (positions, pauses, noise) stays as it is without them.
    phrase_rng = np.random.default_rng([seed, 1])
    clips = []
    if source.manifest:
        clips += _manifest_clips(source, base)
    if source.sentences:
        clips += _synthesised_clips(source, rng)
    if not clips:
        raise ValueError("the scenario has no utterances: give utterances.manifest or "
                         "utterances.sentences")
    pieces: list[np.ndarray] = [np.zeros(int(room.lead_s * SAMPLE_RATE), np.float32)]
    requests = []
    t = room.lead_s
    for i, clip in enumerate(clips):
        audio, said, lead = clip.audio, 0.0, 0.0
        if wake_phrase:
            audio, said, lead = _with_phrase(clip, wake_phrase, source, phrase_rng)
        if room.rt60 > 0:  # a new talker position per request (the phrase's too)
            audio = reverberate(audio, simulate_rir(room.rt60, rng))
        request = Request(i, clip.text, t + clip.speech_start + lead,
                          t + clip.speech_end + lead, clip.tags, clip.context, clip.source)
        if wake_phrase:
            request.phrase = wake_phrase
            request.phrase_start = t + clip.speech_start
            request.phrase_end = request.phrase_start + said
        requests.append(request)
        gap = np.zeros(int(rng.uniform(*room.gap_s) * SAMPLE_RATE), np.float32)
        pieces += [audio.astype(np.float32), gap]
        t += (len(audio) + len(gap)) / SAMPLE_RATE
    speech = np.concatenate(pieces)
    level = float(np.median([active_rms(c.audio) for c in clips]))
    mix = speech + make_noise("pink", len(speech), rng) * np.float32(
        10 ** (room.mic_noise_dbfs / 20))
    for bed in room.noise:
        if bed.kind == "babble":
            noise = make_babble([c.audio for c in clips], len(speech), rng)
        else:
            noise = make_noise(bed.kind, len(speech), rng)
        mix += noise * np.float32(level / 10 ** (bed.snr_db / 20))
    reference = None
    if room.playback.kind:  # drawn last, so the rest of the session stays as without it
        reference, echo = render_playback(room.playback, len(speech), rng)
        mix += echo * np.float32(level / 10 ** (room.playback.snr_db / 20))
    others: list[Spoken] = []
    levels = [(r.speech_start, active_rms(c.audio)) for r, c in zip(requests, clips,
                                                                     strict=True)]
    for k, other in enumerate(room.other_speech):
        track, spoken = render_other_speech(other, len(speech), levels, base, room.rt60,
                                            np.random.default_rng([seed, 2 + k]))
        mix += track
        others += spoken
    peak = float(np.max(np.abs(mix))) if len(mix) else 0.0
    if peak > 0.99:  # a real microphone's gain stage would be turned down, not clip
        mix *= np.float32(0.99 / peak)
    return Session(mix.astype(np.float32), requests, reference,
                   sorted(others, key=lambda o: o.speech_start))


def render_playback(playback: Playback, n: int, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
    """The dry signal the device plays (its reference) and its echo at the microphone:
    through the room from a loudspeaker `distance_m` away, `delay_ms` after the reference,
    at unit RMS like a noise bed, so that `snr_db` means what it means for a bed."""
    dry = make_noise(playback.kind, n, rng)
    reference = (dry * np.float32(10 ** (playback.level_dbfs / 20))).astype(np.float32)
    rir = simulate_rir(playback.rt60, rng, distance=(playback.distance_m,
                                                     playback.distance_m + 0.1))
    delay = int(round(playback.delay_ms / 1000 * SAMPLE_RATE))
    echo = np.concatenate((np.zeros(delay, np.float32), reverberate(dry, rir)))[:n]
    rms = float(np.sqrt(np.mean(np.square(echo, dtype=np.float64)))) if n else 0.0
    return reference, (echo / np.float32(rms) if rms > 0 else echo).astype(np.float32)
