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

    def __post_init__(self) -> None:
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
    sentences: list[str] = field(default_factory=list)  # synthesised on the fly
    voice: str = "flite-rms"  # voice id for the sentences (models/synth.py ids)
    contacts: list[str] = field(default_factory=list)  # context names besides the manifest's


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

    @property
    def context_names(self) -> list[str]:
        return [name for names in self.context.values() for name in names]


@dataclass
class Session:
    samples: np.ndarray  # float32, 16 kHz mono
    requests: list[Request]
    # What the device played, dry, sample for sample beside `samples`; None if nothing.
    reference: np.ndarray | None = None

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


@dataclass
class _Clip:
    audio: np.ndarray
    text: str
    speech_start: float
    speech_end: float
    tags: list[str]
    context: dict[str, list[str]]  # by kind, as SetContext takes it
    source: str


def _manifest_clips(src: UtteranceSource, base: Path) -> list[_Clip]:
    path = Path(src.manifest).expanduser()
    if not path.is_absolute():
        path = base / path
    entries = [e for e in read_manifest(path) if set(src.tags) <= set(e.tags)]
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
                           str(e.audio_filepath)))
    return clips


def _voice(voice_id: str):
    from edge_asr.models.synth import heldout_voices, training_voices

    for v in (*heldout_voices(), *training_voices()):
        if v.id == voice_id:
            return v
    engine, _, name = voice_id.partition("-")
    if engine not in ("espeak", "flite", "piper") or not name:
        raise ValueError(f"unknown voice {voice_id!r}: use an id like 'flite-rms' or "
                         "'espeak-en-us+f3'")
    from edge_asr.models.synth import Voice

    return Voice(engine, name)


def _synthesised_clips(src: UtteranceSource, rng: np.random.Generator) -> list[_Clip]:
    from edge_asr.models.synth import synthesize

    voice = _voice(src.voice)
    clips = []
    for text in src.sentences:
        audio = synthesize(text, voice, rng)
        clips.append(_Clip(audio, text, 0.0, len(audio) / SAMPLE_RATE, ["synthesised"], {},
                           voice.id))
    return clips


def render_session(source: UtteranceSource, room: RoomConfig, base: Path,
                   seed: int = 0) -> Session:
    """The microphone signal of a whole scenario and where each request lies in it."""
    rng = np.random.default_rng(seed)
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
        audio = clip.audio
        if room.rt60 > 0:  # a new talker position per request
            audio = reverberate(audio, simulate_rir(room.rt60, rng))
        requests.append(Request(i, clip.text, t + clip.speech_start, t + clip.speech_end,
                                clip.tags, clip.context, clip.source))
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
    peak = float(np.max(np.abs(mix))) if len(mix) else 0.0
    if peak > 0.99:  # a real microphone's gain stage would be turned down, not clip
        mix *= np.float32(0.99 / peak)
    return Session(mix.astype(np.float32), requests, reference)


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
