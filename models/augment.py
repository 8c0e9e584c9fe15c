"""On-the-fly audio augmentation for training, and deterministic evaluation conditions.

Everything works on float32 mono numpy audio in [-1, 1] at 16 kHz. The training `Augmenter`
runs inside a data loader on a small CPU, so the expensive parts (room impulse responses and
noise beds) are generated into pools once and refreshed a little at a time; a call only
slices, convolves (FFT) and resamples (soxr).

The conditions follow ARCHITECTURE.md ("The speech domain"): speaking
rate 0.8x-1.3x, additive noise at 5-30 dB SNR (fan, babble, music, kitchen), RT60 0.2-0.8 s,
level -35 to -6 dBFS, clipping, 8 kHz band-limited sources and DC offset.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import soxr

from edge_asr.daemon.constants import SAMPLE_RATE

__all__ = [
    "CONDITIONS",
    "NOISE_KINDS",
    "SAMPLE_RATE",
    "AugmentConfig",
    "Augmenter",
    "active_rms",
    "add_dc",
    "add_noise",
    "apply_condition",
    "band_limit_8k",
    "clip",
    "make_babble",
    "make_noise",
    "reverberate",
    "set_level",
    "simulate_rir",
    "speed_perturb",
]

NOISE_KINDS = ("white", "pink", "brown", "fan", "kitchen", "music")
CONDITIONS = ("clean", "snr10", "snr5", "band8k", "reverb", "far_noisy")

_SPEED_OF_SOUND = 343.0  # m/s at ~20 degrees C
_FRAME = 320  # 20 ms analysis frames for the active-speech measurement
_ACTIVE_DB = -40.0  # a frame is "active" within 40 dB of the loud (95th percentile) frames
_EPS = 1e-12
# Wall and air absorption grow with frequency, so the tail above ~3 kHz dies out faster.
_HF_RT60_RATIO = 0.7
_EARLY_S = 0.05  # image-source reflections up to 50 ms after the direct sound, then a tail
_PEAK_LIMIT = 0.99  # leave a hair of headroom so only the deliberate clip step saturates

FloatArray = np.ndarray


# --------------------------------------------------------------------------- helpers


def _as_mono(x: np.ndarray) -> np.ndarray:
    """float32 1-D view/copy of the input; integer PCM is scaled to [-1, 1]."""
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"expected mono 1-D audio, got shape {a.shape}")
    if np.issubdtype(a.dtype, np.unsignedinteger):
        raise ValueError(f"unsigned PCM ({a.dtype}) is not supported")
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.float32) / float(-np.iinfo(a.dtype).min)
    return a.astype(np.float32, copy=False)


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    if len(x) >= n:
        return x[:n]
    return np.concatenate([x, np.zeros(n - len(x), dtype=x.dtype)])


_FAST_LENS: list[int] = sorted(
    2**a * 3**b * 5**c
    for a in range(27)
    for b in range(17)
    for c in range(12)
    if 2**a * 3**b * 5**c <= 2**26
)


def _fast_len(n: int) -> int:
    """Smallest 5-smooth length >= n: FFTs of these sizes are fast in pocketfft."""
    i = int(np.searchsorted(_FAST_LENS, max(n, 1)))
    return _FAST_LENS[i] if i < len(_FAST_LENS) else n


def _frame_powers(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean power per 20 ms frame (last frame may be partial) and each frame's length."""
    n = len(x)
    starts = np.arange(0, n, _FRAME)
    sq = np.square(x, dtype=np.float64)
    sums = np.add.reduceat(sq, starts)
    lens = np.minimum(_FRAME, n - starts)
    return sums / lens, lens


def _active_frames(x: np.ndarray) -> np.ndarray:
    """Boolean mask of frames holding signal (speech), not pauses or leading silence."""
    p, _ = _frame_powers(x)
    ref = float(np.percentile(p, 95))
    if ref <= _EPS:
        return np.ones(len(p), dtype=bool)
    return p >= ref * 10.0 ** (_ACTIVE_DB / 10.0)


def _masked_power(x: np.ndarray, frames: np.ndarray) -> float:
    p, lens = _frame_powers(x)
    w = lens * frames
    total = float(w.sum())
    return float((p * w).sum() / total) if total > 0 else 0.0


def active_rms(x: np.ndarray) -> float:
    """RMS over the active (non-silent) frames: the level measure used throughout."""
    x = _as_mono(x)
    if len(x) == 0:
        return 0.0
    return math.sqrt(_masked_power(x, _active_frames(x)))


def _unit_rms(x: np.ndarray) -> np.ndarray:
    rms = math.sqrt(float(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0
    if rms <= _EPS:
        return x.astype(np.float32)
    return (x / rms).astype(np.float32)


def _peak_limit(x: np.ndarray, peak: float = _PEAK_LIMIT) -> np.ndarray:
    m = float(np.max(np.abs(x))) if len(x) else 0.0
    return x * np.float32(peak / m) if m > peak else x


def _finish(x: np.ndarray) -> np.ndarray:
    x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(x, -1.0, 1.0).astype(np.float32, copy=False)


def _shaped_noise(
    n: int, rng: np.random.Generator, gain: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Gaussian noise with amplitude spectrum `gain(f)`, synthesised directly in the
    frequency domain (one inverse FFT), unit RMS."""
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    m = _fast_len(n)
    f = np.fft.rfftfreq(m, 1.0 / SAMPLE_RATE).astype(np.float32)
    g = gain(f).astype(np.float32)
    re = rng.standard_normal(len(f), dtype=np.float32)
    im = rng.standard_normal(len(f), dtype=np.float32)
    spec = (re + 1j * im).astype(np.complex64) * g
    return _unit_rms(np.fft.irfft(spec, m)[:n])


def _highpass_gain(f: np.ndarray, fc: float) -> np.ndarray:
    # 2nd-order-like high-pass magnitude: removes DC and sub-audio rumble.
    r = (f / fc) ** 2
    return r / (1.0 + r)


def _wavetable(amps: np.ndarray, size: int = 2048) -> np.ndarray:
    """One period of a harmonic waveform (harmonic k has amplitude amps[k-1])."""
    spec = np.zeros(size // 2 + 1, dtype=np.complex128)
    k = min(len(amps), size // 2 - 1)
    spec[1 : k + 1] = -1j * amps[:k] * size / 2  # sine phase
    table = np.fft.irfft(spec, size)
    return np.append(table, table[0]).astype(np.float32)  # wrap sample for interpolation


def _lookup(table: np.ndarray, cycles: np.ndarray) -> np.ndarray:
    """Read a wrapped wavetable at fractional positions `cycles` (in periods), linear interp."""
    size = len(table) - 1
    pos = np.mod(cycles, 1.0) * size
    i = pos.astype(np.int64)
    frac = (pos - i).astype(np.float32)
    lo = table[i]
    return lo + frac * (table[i + 1] - lo)


def _add_at(out: np.ndarray, start: int, sig: np.ndarray) -> None:
    end = min(len(out), start + len(sig))
    if end > start >= 0:
        out[start:end] += sig[: end - start]


# --------------------------------------------------------------------------- noise


def _fan(n: int, rng: np.random.Generator) -> np.ndarray:
    sr = SAMPLE_RATE
    # Broadband air noise, low-passed: fans are loud below ~1 kHz.
    fc = rng.uniform(150.0, 1200.0)
    order = rng.uniform(1.0, 2.5)
    broad = _shaped_noise(
        n, rng, lambda f: (1.0 + (f / fc) ** 2) ** (-order / 2) * _highpass_gain(f, 25.0)
    )
    # Motor / blade-pass hum: harmonic series with a slow wobble of the rotation rate.
    f0 = rng.uniform(20.0, 120.0)
    t = np.arange(n, dtype=np.float64) / sr
    depth = rng.uniform(0.002, 0.02)
    rate = rng.uniform(0.05, 0.5)
    drift_knots = rng.standard_normal(int(n / sr) + 2) * depth * 0.5
    drift = np.interp(t, np.arange(len(drift_knots)), drift_knots)
    inst = f0 * (1.0 + depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)) + drift)
    cycles = np.cumsum(inst) / sr
    n_harm = max(1, min(40, int(2500.0 / f0)))
    k = np.arange(1, n_harm + 1, dtype=np.float64)
    amps = k ** -rng.uniform(0.6, 1.6) * np.exp(rng.normal(0.0, 0.5, n_harm))
    blade = int(rng.integers(2, 8))
    if blade <= n_harm:
        amps[blade - 1 :: blade] *= rng.uniform(2.0, 5.0)  # blade-pass harmonics dominate
    hum = _lookup(_wavetable(amps), cycles)
    am = 1.0 + rng.uniform(0.0, 0.15) * np.sin(2 * np.pi * rng.uniform(0.2, 2.0) * t)
    hum = _unit_rms(hum * am.astype(np.float32))
    return _unit_rms(broad + np.float32(10.0 ** (rng.uniform(-10.0, 4.0) / 20.0)) * hum)


def _kitchen(n: int, rng: np.random.Generator) -> np.ndarray:
    sr = SAMPLE_RATE
    out = _shaped_noise(  # room tone
        n, rng, lambda f: np.maximum(f, 30.0) ** -0.6 * _highpass_gain(f, 40.0)
    )
    # Fridge compressor / mains hum: harmonics of 50 or 60 Hz, 100/120 Hz strongest.
    mains = 50.0 if rng.random() < 0.5 else 60.0
    amps = np.exp(rng.normal(0.0, 0.6, 12)) * np.arange(1, 13) ** -1.0
    amps[1] *= 3.0
    t = np.arange(n, dtype=np.float64) / sr
    hum = _unit_rms(_lookup(_wavetable(amps), mains * t))
    out = out + np.float32(10.0 ** (rng.uniform(-12.0, 0.0) / 20.0)) * hum

    # Running water: band noise with a bubbling envelope, switched on and off.
    if rng.random() < 0.6:
        lo, hi = rng.uniform(300.0, 900.0), rng.uniform(2500.0, 6000.0)
        water = _shaped_noise(
            n, rng, lambda f: np.exp(-0.5 * (np.log(np.maximum(f, 1.0) / math.sqrt(lo * hi))
                                             / (0.5 * math.log(hi / lo))) ** 2)
        )
        knots = rng.uniform(0.3, 1.0, int(n / sr * 25) + 2)  # ~25 Hz gurgle
        env = np.interp(t, np.arange(len(knots)) / 25.0, knots)
        gate = np.zeros(n)
        pos = int(rng.uniform(-3.0, 1.0) * sr)
        while pos < n:  # on for 1-5 s, off for 1-5 s, 100 ms fades
            on = int(rng.uniform(1.0, 5.0) * sr)
            seg = np.ones(on)
            fade = min(int(0.1 * sr), on // 2)
            ramp = np.linspace(0.0, 1.0, fade)
            seg[:fade], seg[on - fade :] = ramp, ramp[::-1]
            s0, s1 = max(pos, 0), min(pos + on, n)
            if s1 > s0:
                gate[s0:s1] = seg[s0 - pos : s1 - pos]
            pos += on + int(rng.uniform(1.0, 5.0) * sr)
        out = out + np.float32(10.0 ** (rng.uniform(0.0, 10.0) / 20.0)) * water * (
            env * gate
        ).astype(np.float32)

    # Clatter: short decaying bursts well above the background (dishes, cutlery, pans).
    n_events = int(rng.poisson(rng.uniform(0.3, 2.0) * n / sr))
    for _ in range(n_events):
        start = int(rng.integers(0, max(n, 1)))
        gain = 10.0 ** (rng.uniform(6.0, 24.0) / 20.0)
        if rng.random() < 0.5:  # clink: a few inharmonic, lightly damped modes
            modes = int(rng.integers(2, 6))
            freqs = rng.uniform(1500.0, 7000.0, modes)
            taus = rng.uniform(0.02, 0.25, modes)
            length = int(min(5 * taus.max(), 1.0) * sr)
            tt = np.arange(length, dtype=np.float32) / sr
            m_amp = rng.uniform(0.3, 1.0, modes)
            burst = np.sum(
                m_amp[:, None]
                * np.exp(-tt[None, :] / taus[:, None])
                * np.sin(2 * np.pi * freqs[:, None] * tt[None, :] + rng.uniform(0, 6.3, modes)[
                    :, None]),
                axis=0,
            )
        else:  # clack: band-limited noise burst, sharp attack, fast decay
            length = int(rng.uniform(0.03, 0.15) * sr)
            fc = rng.uniform(500.0, 5000.0)
            bw = rng.uniform(0.3, 1.0)
            burst = _shaped_noise(
                length,
                rng,
                lambda f, fc=fc, bw=bw: np.exp(-0.5 * (np.log(np.maximum(f, 1.0) / fc) / bw) ** 2),
            )
            tau = rng.uniform(0.005, 0.04)
            burst = burst * np.exp(-np.arange(length) / (tau * sr))
        peak = float(np.max(np.abs(burst))) or 1.0
        _add_at(out, start, (burst * (gain / peak) * 0.3).astype(np.float32))
    return _unit_rms(out)


_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
_MINOR = np.array([0, 2, 3, 5, 7, 8, 10])
# Plausible next chord (scale degree, 0 = tonic) for functional-harmony-like progressions.
_NEXT_CHORD = {0: (3, 4, 5, 1), 1: (4, 6), 2: (5, 3), 3: (4, 0, 1), 4: (0, 5), 5: (3, 1, 4),
               6: (0,)}


def _music(n: int, rng: np.random.Generator) -> np.ndarray:
    sr = SAMPLE_RATE
    beat = 60.0 / rng.uniform(70.0, 150.0) * sr  # samples per beat
    scale = _MINOR if rng.random() < 0.4 else _MAJOR
    root = int(rng.integers(45, 58))  # MIDI note of the key
    beats_per_chord = int(rng.choice([2, 4, 4, 8]))
    chord_style = int(rng.integers(0, 3))  # 0 sustained pad, 1 arpeggio, 2 strummed per beat
    pad = int(2 * sr)
    buses = {name: np.zeros(n + pad, dtype=np.float32) for name in ("chords", "bass", "lead")}

    def instrument() -> tuple[np.ndarray, float, float]:
        n_harm = int(rng.integers(3, 16))
        k = np.arange(1, n_harm + 1, dtype=np.float64)
        amps = k ** -rng.uniform(0.7, 2.0) * np.exp(rng.normal(0.0, 0.3, n_harm))
        if rng.random() < 0.3:
            amps[1::2] *= 0.1  # hollow, clarinet-like: odd harmonics only
        return amps, rng.uniform(0.003, 0.06), rng.uniform(0.15, 2.5)  # amps, attack, decay

    instruments = {name: instrument() for name in buses}
    tables: dict[tuple[str, int], np.ndarray] = {}

    def note(bus: str, start: float, dur: float, midi: int, vel: float) -> None:
        amps, attack, decay = instruments[bus]
        freq = 440.0 * 2.0 ** ((midi - 69) / 12.0)
        n_ok = max(1, min(len(amps), int(7000.0 / freq)))  # stay below Nyquist: no aliasing
        key = (bus, n_ok)
        if key not in tables:
            tables[key] = _wavetable(amps[:n_ok])
        length = int(dur) + int(0.03 * sr)
        tt = np.arange(length, dtype=np.float32) / sr
        env = np.minimum(tt / attack, 1.0) * np.exp(-tt / decay)
        rel = int(0.03 * sr)
        env[-rel:] *= np.linspace(1.0, 0.0, rel, dtype=np.float32)
        cycles = freq * (1.0 + rng.normal(0.0, 0.001)) * tt.astype(np.float64) + rng.random()
        _add_at(buses[bus], int(start), vel * env * _lookup(tables[key], cycles))

    def pitch(degree: int, octave: int) -> int:
        return root + 12 * (octave + degree // 7) + int(scale[degree % 7])

    degree, pos = 0, 0.0
    while pos < n:
        span = beats_per_chord * beat
        tones = [degree, degree + 2, degree + 4] + ([degree + 6] if rng.random() < 0.3 else [])
        if chord_style == 0:
            for d in tones:
                note("chords", pos, span, pitch(d, 0), rng.uniform(0.5, 0.8))
        else:
            step = beat / 2 if chord_style == 1 else beat
            for j in range(int(round(span / step))):
                if chord_style == 1:
                    note("chords", pos + j * step, step, pitch(tones[j % len(tones)], 0),
                         rng.uniform(0.6, 1.0))
                else:
                    for i, d in enumerate(tones):  # strum: a few ms between strings
                        note("chords", pos + j * step + i * 0.012 * sr, step, pitch(d, 0),
                             rng.uniform(0.5, 0.9))
        for b in range(beats_per_chord):
            note("bass", pos + b * beat, beat, pitch(degree, -1), rng.uniform(0.7, 1.0))
        if rng.random() < 0.7:  # melody: chord or scale tones an octave up
            step = beat / 2 if rng.random() < 0.5 else beat
            for j in range(int(round(span / step))):
                if rng.random() < 0.8:
                    d = int(rng.choice(tones)) if rng.random() < 0.6 else int(rng.integers(0, 7))
                    note("lead", pos + j * step, step * rng.uniform(0.6, 1.0), pitch(d, 1),
                         rng.uniform(0.5, 1.0))
        degree = int(rng.choice(_NEXT_CHORD[degree % 7]))
        pos += span

    mix = np.zeros(n, dtype=np.float32)
    for name, lo, hi in (("chords", -3.0, 3.0), ("bass", -6.0, 2.0), ("lead", -8.0, 0.0)):
        mix += np.float32(10.0 ** (rng.uniform(lo, hi) / 20.0)) * _unit_rms(buses[name][:n])

    if rng.random() < 0.8:  # a beat of kick / snare / hat-like clicks
        drums = np.zeros(n + pad, dtype=np.float32)
        tk = np.arange(int(0.3 * sr)) / sr
        kick = np.sin(2 * np.pi * np.cumsum(45.0 + 90.0 * np.exp(-tk / 0.04)) / sr)
        kick = (kick * np.exp(-tk / 0.15)).astype(np.float32)
        th = np.arange(int(0.08 * sr))
        hats = [np.diff(rng.standard_normal(len(th) + 2), 2) * np.exp(-th / (0.012 * sr)) * 0.3
                for _ in range(3)]
        ts = np.arange(int(0.2 * sr)) / sr
        snare = (np.diff(rng.standard_normal(len(ts) + 1)) * 0.5 * np.exp(-ts / 0.06)
                 + np.sin(2 * np.pi * 190.0 * ts) * np.exp(-ts / 0.04))
        every_beat = rng.random() < 0.5
        with_hats, with_snare = rng.random() < 0.7, rng.random() < 0.6
        for b in range(int(n / beat) + 1):
            at = int(b * beat)
            if every_beat or b % 2 == 0:
                _add_at(drums, at, kick * rng.uniform(0.8, 1.0))
            if with_snare and b % 4 in (1, 3):
                _add_at(drums, at, (snare * rng.uniform(0.7, 1.0)).astype(np.float32))
            if with_hats:
                for half in (0, 1):
                    hat = hats[int(rng.integers(0, 3))] * rng.uniform(0.4, 1.0)
                    _add_at(drums, at + int(half * beat / 2), hat.astype(np.float32))
        mix += np.float32(10.0 ** (rng.uniform(-12.0, 0.0) / 20.0)) * _unit_rms(drums[:n])
    return _unit_rms(mix)


def make_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of a noise `kind` (see NOISE_KINDS), float32 with unit RMS."""
    n = int(n)
    if n < 0:
        raise ValueError("n must be >= 0")
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    if kind == "white":
        return _unit_rms(rng.standard_normal(n, dtype=np.float32))
    if kind == "pink":  # power ~ 1/f
        return _shaped_noise(n, rng, lambda f: np.maximum(f, 20.0) ** -0.5 * _highpass_gain(f, 10))
    if kind == "brown":  # power ~ 1/f^2 (integrated white noise)
        return _shaped_noise(n, rng, lambda f: np.maximum(f, 20.0) ** -1.0 * _highpass_gain(f, 10))
    if kind == "fan":
        return _fan(n, rng)
    if kind == "kitchen":
        return _kitchen(n, rng)
    if kind == "music":
        return _music(n, rng)
    hint = " (babble comes from make_babble)" if kind == "babble" else ""
    raise ValueError(f"unknown noise kind {kind!r}{hint}; known: {', '.join(NOISE_KINDS)}")


def make_babble(
    pool: Sequence[np.ndarray],
    n: int,
    rng: np.random.Generator,
    talkers: tuple[int, int] = (3, 7),
) -> np.ndarray:
    """Cocktail-party noise: `talkers` (inclusive range) streams of random pool clips, each
    stream a chain of clips with short gaps, at random relative levels; unit RMS."""
    if len(pool) == 0:
        raise ValueError("make_babble needs a non-empty pool of speech clips")
    clips = [c for c in pool if len(c)]
    if not clips:
        raise ValueError("make_babble: every clip in the pool is empty")
    n = int(n)
    out = np.zeros(n, dtype=np.float32)
    if n == 0:
        return out
    for _ in range(int(rng.integers(talkers[0], talkers[1] + 1))):
        pieces: list[np.ndarray] = []
        have = 0
        skip = -1
        while have < n + max(skip, 0):
            c = _as_mono(clips[int(rng.integers(len(clips)))])
            if skip < 0:
                skip = int(rng.integers(len(c)))  # start somewhere inside the first clip
            pieces.append(_unit_rms(c))
            gap = np.zeros(int(rng.uniform(0.0, 0.3) * SAMPLE_RATE), dtype=np.float32)
            pieces.append(gap)
            have += len(c) + len(gap)
        stream = np.concatenate(pieces)[skip : skip + n]
        out[: len(stream)] += np.float32(10.0 ** (rng.uniform(-6.0, 0.0) / 20.0)) * stream
    return _unit_rms(out)


# --------------------------------------------------------------------------- room


def simulate_rir(
    rt60: float,
    rng: np.random.Generator,
    room: tuple[float, float, float] | None = None,
    *,
    distance: tuple[float, float] = (0.5, 3.0),
) -> np.ndarray:
    """Room impulse response, direct path at sample 0 with amplitude 1 (no propagation
    delay, so reverberation keeps the timing of the dry signal).

    Hybrid model: image sources (Allen & Berkley) for a shoebox room give the first 50 ms of
    reflections; after that a Gaussian-noise tail decays exponentially so that the energy
    falls 60 dB in `rt60` seconds (faster above ~3 kHz). Wall absorption comes from Sabine's
    formula RT60 = 0.161 V / (S a); the tail level from diffuse-field theory: reverberant /
    direct energy = (r / r_c)^2 with critical distance r_c = 0.057 sqrt(V / RT60).
    `room` fixes the (x, y, z) size in metres; `distance` bounds the source-mic distance.
    """
    if not rt60 > 0:
        raise ValueError("rt60 must be > 0")
    sr = SAMPLE_RATE
    dims = np.array(room if room is not None else rng.uniform((3.0, 3.0, 2.4), (9.0, 7.0, 3.5)),
                    dtype=np.float64)
    if dims.shape != (3,) or np.any(dims <= 0.5):
        raise ValueError("room must be three sizes in metres, each > 0.5")
    volume = float(np.prod(dims))
    surface = 2.0 * float(dims[0] * dims[1] + dims[1] * dims[2] + dims[0] * dims[2])
    alpha = float(np.clip(0.161 * volume / (surface * rt60), 0.01, 0.95))  # Sabine
    beta = math.sqrt(1.0 - alpha)  # pressure reflection coefficient of every wall

    # Mic on a table, talker standing or sitting; keep both away from the walls.
    margin = np.minimum(0.3, dims / 4.0)
    lo_mic = np.array([margin[0], margin[1], min(0.6, dims[2] / 2)])
    hi_mic = np.array([dims[0] - margin[0], dims[1] - margin[1], min(1.5, dims[2] - margin[2])])
    lo_src = np.array([margin[0], margin[1], min(1.1, dims[2] / 2)])
    hi_src = np.array([dims[0] - margin[0], dims[1] - margin[1], min(1.9, dims[2] - margin[2])])
    mics = rng.uniform(lo_mic, hi_mic, (64, 3))
    srcs = rng.uniform(lo_src, hi_src, (64, 3))
    d = np.linalg.norm(srcs - mics, axis=1)
    miss = np.maximum(distance[0] - d, 0.0) + np.maximum(d - distance[1], 0.0)
    best = int(np.argmin(miss))  # first pair inside the range, else the closest to it
    mic, src = mics[best], srcs[best]
    d0 = max(float(d[best]), 0.1)

    early_n = int(_EARLY_S * sr)
    length = early_n + int(math.ceil(rt60 * sr))
    reach = d0 + _SPEED_OF_SOUND * _EARLY_S  # path lengths that matter for the early part
    axes = []
    for a in range(3):
        orders = np.arange(-int(reach / (2 * dims[a])) - 2, int(reach / (2 * dims[a])) + 3)
        pos = np.concatenate([2 * orders * dims[a] + src[a], 2 * orders * dims[a] - src[a]])
        refl = np.concatenate([2 * np.abs(orders), np.abs(orders - 1) + np.abs(orders)])
        axes.append((pos - mic[a], refl))
    (dx, kx), (dy, ky), (dz, kz) = axes
    dist = np.sqrt(dx[:, None, None] ** 2 + dy[None, :, None] ** 2 + dz[None, None, :] ** 2)
    k = kx[:, None, None] + ky[None, :, None] + kz[None, None, :]
    delay = np.rint((dist - d0) / _SPEED_OF_SOUND * sr).astype(np.int64).ravel()
    keep = delay < early_n
    amp = (beta ** k.ravel()[keep]) * d0 / dist.ravel()[keep]  # 1/r spreading, beta per bounce
    h = np.bincount(delay[keep], weights=amp, minlength=length)[:length]

    # Late tail, two bands with their own decay, power-complementary crossover 2-4 kHz.
    tail_n = length - early_n
    m = _fast_len(tail_n)
    f = np.fft.rfftfreq(m, 1.0 / sr)
    theta = np.clip((f - 2000.0) / 2000.0, 0.0, 1.0) * (np.pi / 2)
    spec = np.fft.rfft(rng.standard_normal(m))
    low = np.fft.irfft(spec * np.cos(theta), m)[:tail_n]
    high = np.fft.irfft(spec * np.sin(theta), m)[:tail_n]
    t = (early_n + np.arange(tail_n)) / sr
    decay = 3.0 * math.log(10.0) / rt60  # amplitude rate: energy -60 dB at t = rt60
    tail = low * np.exp(-decay * t) + high * np.exp(-decay / _HF_RT60_RATIO * t)
    r_c = 0.057 * math.sqrt(volume / rt60)  # critical distance
    # Integrating g^2 exp(-2 decay t) from t=0 gives the whole reverberant energy (d0/r_c)^2.
    g = (d0 / r_c) * math.sqrt(2.0 * decay / sr)
    ramp = min(int(0.0025 * sr), tail_n)
    tail[:ramp] *= np.linspace(0.0, 1.0, ramp)
    h[early_n:] += g * tail
    h /= h[0]
    return h.astype(np.float32)


def reverberate(speech: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with `rir` by FFT; same length as the input (tail truncated) and the same
    active-part level."""
    x = _as_mono(speech)
    h = _as_mono(rir)
    n = len(x)
    if n == 0 or len(h) == 0:
        return x.copy()
    h = h[:n]  # later taps cannot reach the first n output samples
    m = _fast_len(n + len(h) - 1)  # full linear length, so no circular wrap-around
    y = np.fft.irfft(np.fft.rfft(x, m) * np.fft.rfft(h, m), m)[:n]
    before, after = active_rms(x), active_rms(y)
    return (y * np.float32(before / after)).astype(np.float32) if after > _EPS else y


# --------------------------------------------------------------------------- level / mixing


def add_noise(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """speech + noise scaled so that, over the speech's active frames, speech power / noise
    power = snr_db. Pauses do not dilute the speech level, and non-stationary noise is
    measured where it masks speech. `noise` must be at least as long (extra is ignored)."""
    x = _as_mono(speech)
    v = _as_mono(noise)
    if len(v) < len(x):
        raise ValueError(f"noise has {len(v)} samples, speech {len(x)}")
    v = v[: len(x)]
    if len(x) == 0:
        return x.copy()
    frames = _active_frames(x)
    ps = _masked_power(x, frames)
    pn = _masked_power(v, frames)
    if pn <= _EPS:  # noise silent under the speech: fall back to its overall power
        pn = float(np.mean(np.square(v, dtype=np.float64)))
    if ps <= _EPS or pn <= _EPS:
        return x.copy()
    scale = math.sqrt(ps / (pn * 10.0 ** (snr_db / 10.0)))
    return (x + np.float32(scale) * v).astype(np.float32)


def set_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    """Scale so the active part's RMS is `dbfs` (0 dBFS = RMS 1.0). Pure gain: loud targets
    can push peaks past full scale; the caller decides whether to limit or clip."""
    x = _as_mono(x)
    rms = active_rms(x)
    if rms <= _EPS:
        return x.copy()
    return (x * np.float32(10.0 ** (dbfs / 20.0) / rms)).astype(np.float32)


def clip(x: np.ndarray, level: float) -> np.ndarray:
    """Hard clipping at +-level (a saturated ADC or preamp)."""
    return np.clip(_as_mono(x), -abs(level), abs(level)).astype(np.float32)


def add_dc(x: np.ndarray, offset: float) -> np.ndarray:
    """Constant DC offset (cheap ADCs, missing high-pass)."""
    return (_as_mono(x) + np.float32(offset)).astype(np.float32)


def _bandpass_fft(x: np.ndarray, sr: int, lo: float, hi: float) -> np.ndarray:
    """Zero-phase band-pass by FFT masking with raised-cosine 100 Hz-wide edges."""
    n = len(x)
    if n == 0:
        return x
    m = _fast_len(n)
    f = np.fft.rfftfreq(m, 1.0 / sr)
    rise = np.clip((f - (lo - 50.0)) / 100.0, 0.0, 1.0)
    fall = np.clip(((hi + 50.0) - f) / 100.0, 0.0, 1.0)
    mask = (np.sin(np.pi / 2 * rise) * np.sin(np.pi / 2 * fall)) ** 2
    return np.fft.irfft(np.fft.rfft(x, m) * mask.astype(np.float32), m)[:n].astype(np.float32)


def _mu_law(x: np.ndarray, rng: np.random.Generator, mu: float = 255.0) -> np.ndarray:
    """G.711-like 8-bit mu-law companding: quantisation noise that follows the signal level.
    The signal is first placed at a random headroom, as a phone's gain would."""
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak <= _EPS:
        return x
    g = rng.uniform(0.2, 0.9) / peak
    y = np.clip(x * g, -1.0, 1.0)
    c = np.sign(y) * np.log1p(mu * np.abs(y)) / math.log1p(mu)
    q = np.round(c * 127.0) / 127.0
    e = np.sign(q) * np.expm1(np.abs(q) * math.log1p(mu)) / mu
    return (e / g).astype(np.float32)


def band_limit_8k(
    x: np.ndarray,
    rng: np.random.Generator,
    *,
    p_bandpass: float = 0.5,
    p_companding: float = 0.5,
) -> np.ndarray:
    """A narrowband (telephone / Bluetooth SCO) channel: resample to 8 kHz, optionally
    band-pass 300-3400 Hz and mu-law compand, resample back to 16 kHz; same length.
    soxr's anti-aliasing filter removes what lies above 4 kHz."""
    x = _as_mono(x)
    n = len(x)
    if n == 0:
        return x.copy()
    y = soxr.resample(x, SAMPLE_RATE, 8000, quality="HQ")
    if rng.random() < p_bandpass:
        y = _bandpass_fft(y, 8000, 300.0, 3400.0)
    if rng.random() < p_companding:
        y = _mu_law(y, rng)
    z = soxr.resample(np.ascontiguousarray(y, dtype=np.float32), 8000, SAMPLE_RATE, quality="HQ")
    return _fit_length(z.astype(np.float32, copy=False), n)


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """Kaldi/Lhotse speed perturbation: play `factor` times faster (tempo and pitch both
    change), i.e. pretend the audio was sampled at factor * 16 kHz and resample to 16 kHz.
    The output has about len(x) / factor samples."""
    if not factor > 0:
        raise ValueError("factor must be > 0")
    x = _as_mono(x)
    if len(x) == 0 or factor == 1.0:
        return x.copy()
    return soxr.resample(x, SAMPLE_RATE * factor, SAMPLE_RATE, quality="HQ").astype(np.float32)


# --------------------------------------------------------------------------- training chain


def _check_range(name: str, r: tuple[float, float]) -> None:
    if len(r) != 2 or r[0] > r[1]:
        raise ValueError(f"{name} must be a (low, high) pair with low <= high, got {r}")


@dataclass
class AugmentConfig:
    """Probabilities and ranges of the training chain; defaults follow ARCHITECTURE.md,
    "The speech domain"."""

    p_speed: float = 0.6
    speed: tuple[float, float] = (0.8, 1.3)
    p_reverb: float = 0.4
    rt60: tuple[float, float] = (0.2, 0.8)
    source_distance: tuple[float, float] = (0.3, 3.0)  # metres, talker to device
    p_noise: float = 0.7
    snr_db: tuple[float, float] = (5.0, 30.0)
    noise_kinds: tuple[str, ...] = ("white", "pink", "brown", "fan", "kitchen", "music",
                                    "babble")
    # When no noise is drawn, a faint floor (mic self-noise) still goes in: real recordings
    # never contain digital silence, and the padding must not be a give-away.
    floor_snr_db: tuple[float, float] = (45.0, 70.0)
    level_dbfs: tuple[float, float] = (-35.0, -6.0)
    # Speech RMS near -6 dBFS puts peaks (crest factor 15-20 dB) past full scale. True: scale
    # such signals down to a 0.99 peak (a device AGC / limiter), so only the clip step clips;
    # False: let them saturate at full scale.
    limit_peaks: bool = True
    p_clip: float = 0.05
    clip_quantile: tuple[float, float] = (0.9, 0.995)  # threshold as a quantile of |x|
    p_band8k: float = 0.15
    p_dc: float = 0.05
    dc_offset: tuple[float, float] = (0.005, 0.05)  # magnitude, sign is random
    lead_silence: tuple[float, float] = (0.05, 0.6)  # seconds, filled with the same noise
    trail_silence: tuple[float, float] = (0.2, 0.8)
    # Pools: generation is expensive, so keep ready-made RIRs and noise beds and regenerate
    # one item with probability pool_refresh_p per call (from that call's rng).
    rir_pool_size: int = 48
    noise_beds_per_kind: int = 3
    noise_bed_seconds: float = 12.0
    pool_refresh_p: float = 0.05
    babble_pool_size: int = 200
    babble_clip_seconds: float = 5.0  # longer clips are cut, to bound memory
    babble_talkers: tuple[int, int] = (3, 7)

    def __post_init__(self) -> None:
        for name in ("p_speed", "p_reverb", "p_noise", "p_clip", "p_band8k", "p_dc",
                     "pool_refresh_p"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        for name in ("speed", "rt60", "source_distance", "snr_db", "floor_snr_db", "level_dbfs",
                     "clip_quantile", "dc_offset", "lead_silence", "trail_silence",
                     "babble_talkers"):
            _check_range(name, getattr(self, name))
        if self.speed[0] <= 0 or self.rt60[0] <= 0:
            raise ValueError("speed and rt60 must be positive")
        known = (*NOISE_KINDS, "babble")
        bad = [k for k in self.noise_kinds if k not in known]
        if bad:
            raise ValueError(f"unknown noise kinds {bad}; known: {', '.join(known)}")
        if self.rir_pool_size < 1 or self.noise_beds_per_kind < 1 or self.noise_bed_seconds <= 0:
            raise ValueError("pool sizes and noise_bed_seconds must be positive")


class Augmenter:
    """Random training chain: speed -> silence padding -> reverb -> noise -> band-limit ->
    level -> clip -> dc. Output is float32, finite and within [-1, 1].

    All per-call randomness (pool refreshes included) comes from the `rng` passed in, so the
    output is a function of (seed, the calls made so far, rng): two Augmenters built with the
    same seed and fed the same calls give identical audio.
    """

    def __init__(
        self,
        config: AugmentConfig | None = None,
        babble_pool: Sequence[np.ndarray] = (),
        seed: int = 0,
    ) -> None:
        self.config = config if config is not None else AugmentConfig()
        self._rng = np.random.default_rng(seed)  # pools and babble-pool replacement only
        cfg = self.config
        self._bed_len = int(cfg.noise_bed_seconds * SAMPLE_RATE)
        self._kinds = tuple(k for k in cfg.noise_kinds if k != "babble")
        self._beds: dict[str, list[np.ndarray]] = {
            k: [make_noise(k, self._bed_len, self._rng) for _ in range(cfg.noise_beds_per_kind)]
            for k in self._kinds
        }
        # rt60 spread evenly over the range so a small pool still covers it.
        lo, hi = cfg.rt60
        self._rt60s = [lo + (hi - lo) * (i + 0.5) / cfg.rir_pool_size
                       for i in range(cfg.rir_pool_size)]
        self._rirs = [simulate_rir(r, self._rng, distance=cfg.source_distance)
                      for r in self._rt60s]
        self._babble: list[np.ndarray] = []
        for c in babble_pool:
            self.add_to_babble_pool(c)

    # ------------------------------------------------------------------ pools

    @property
    def babble_pool_len(self) -> int:
        return len(self._babble)

    def add_to_babble_pool(self, clip: np.ndarray) -> None:
        """Offer an utterance for babble; once the pool is full a random clip is replaced.
        Clips are kept as peak-normalised int16 to halve memory (make_babble renormalises
        each clip's RMS anyway)."""
        x = _as_mono(clip)[: int(self.config.babble_clip_seconds * SAMPLE_RATE)]
        peak = float(np.max(np.abs(x))) if len(x) else 0.0
        if len(x) < SAMPLE_RATE // 4 or not np.isfinite(peak) or peak <= 1e-4:
            return  # too short or silent to be useful
        stored = np.round(x * (32000.0 / peak)).astype(np.int16)
        if len(self._babble) < self.config.babble_pool_size:
            self._babble.append(stored)
        else:
            self._babble[int(self._rng.integers(len(self._babble)))] = stored

    def _maybe_refresh(self, rng: np.random.Generator) -> None:
        if rng.random() >= self.config.pool_refresh_p:
            return
        # A child generator takes a fixed number of draws from the call's rng, however much
        # the generation itself consumes.
        child = np.random.default_rng(int(rng.integers(2**63)))
        n_beds = len(self._kinds) * self.config.noise_beds_per_kind
        i = int(child.integers(len(self._rirs) + n_beds))
        if i < len(self._rirs):
            self._rirs[i] = simulate_rir(self._rt60s[i], child,
                                         distance=self.config.source_distance)
        else:
            kind, j = divmod(i - len(self._rirs), self.config.noise_beds_per_kind)
            self._beds[self._kinds[kind]][j] = make_noise(self._kinds[kind], self._bed_len,
                                                          child)

    def _noise(self, kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
        if kind == "babble":
            return make_babble(self._babble, n, rng, self.config.babble_talkers)
        bed = self._beds[kind][int(rng.integers(len(self._beds[kind])))]
        if n <= len(bed):
            start = int(rng.integers(len(bed) - n + 1))
            return bed[start : start + n]
        # Longer than a bed: chain random beds with 20 ms crossfades.
        fade = int(0.02 * SAMPLE_RATE)
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        out = bed.copy()
        while len(out) < n:
            nxt = self._beds[kind][int(rng.integers(len(self._beds[kind])))]
            out[-fade:] = out[-fade:] * ramp[::-1] + nxt[:fade] * ramp
            out = np.concatenate([out, nxt[fade:]])
        return out[:n]

    # ------------------------------------------------------------------ chain

    def __call__(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cfg = self.config
        x = _as_mono(audio)
        self._maybe_refresh(rng)

        if rng.random() < cfg.p_speed:
            x = speed_perturb(x, rng.uniform(*cfg.speed))
        lead = int(rng.uniform(*cfg.lead_silence) * SAMPLE_RATE)
        trail = int(rng.uniform(*cfg.trail_silence) * SAMPLE_RATE)
        x = np.concatenate([np.zeros(lead, np.float32), x, np.zeros(trail, np.float32)])
        n = len(x)

        if rng.random() < cfg.p_reverb:
            x = reverberate(x, self._rirs[int(rng.integers(len(self._rirs)))])

        kinds = [k for k in cfg.noise_kinds
                 if k != "babble" or len(self._babble) >= cfg.babble_talkers[0]]
        if kinds and rng.random() < cfg.p_noise:
            kind = kinds[int(rng.integers(len(kinds)))]
            snr = rng.uniform(*cfg.snr_db)
        else:
            kind = "white" if "white" in self._beds else "floor"
            snr = rng.uniform(*cfg.floor_snr_db)
        noise = (self._noise(kind, n, rng) if kind != "floor"
                 else rng.standard_normal(n, dtype=np.float32))
        # Pads are filled by the same noise because it spans the padded signal.
        x = add_noise(x, noise, snr)

        if rng.random() < cfg.p_band8k:
            x = band_limit_8k(x, rng)

        x = set_level(x, rng.uniform(*cfg.level_dbfs))
        if cfg.limit_peaks:
            x = _peak_limit(x)

        if rng.random() < cfg.p_clip and n:
            q = rng.uniform(*cfg.clip_quantile)
            x = clip(x, float(np.quantile(np.abs(x), q)))
        if rng.random() < cfg.p_dc:
            x = add_dc(x, rng.uniform(*cfg.dc_offset) * (1.0 if rng.random() < 0.5 else -1.0))
        return _finish(x)


# --------------------------------------------------------------------------- evaluation


def apply_condition(audio: np.ndarray, condition: str, rng: np.random.Generator) -> np.ndarray:
    """Deterministic (given rng) evaluation condition. Length and timing are preserved (no
    speed change, no padding, RIR direct path at lag 0), so speech_start / speech_end in the
    evaluation manifests stay valid."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; known: {', '.join(CONDITIONS)}")
    x = _as_mono(audio)
    n = len(x)
    if condition == "clean" or n == 0:
        return _finish(x.copy())
    if condition in ("snr10", "snr5"):
        kind = NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))]
        y = add_noise(x, make_noise(kind, n, rng), 10.0 if condition == "snr10" else 5.0)
    elif condition == "band8k":
        y = band_limit_8k(x, rng)
    elif condition == "reverb":
        y = reverberate(x, simulate_rir(rng.uniform(0.3, 0.7), rng))
    else:  # far_noisy: a distant talker in a live room, some noise, quiet capture
        y = reverberate(x, simulate_rir(rng.uniform(0.4, 0.8), rng, distance=(2.5, 4.5)))
        kind = NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))]
        y = set_level(add_noise(y, make_noise(kind, n, rng), 15.0), rng.uniform(-35.0, -28.0))
    # A uniform gain keeps the SNR exact while staying inside full scale.
    return _finish(_peak_limit(y))


# --------------------------------------------------------------------------- benchmark


def _synthetic_speech(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Speech-like test signal: voiced syllables (harmonics of a gliding f0 under formant-ish
    envelopes) separated by pauses."""
    sr = SAMPLE_RATE
    n = int(seconds * sr)
    out = np.zeros(n, dtype=np.float32)
    pos = int(0.1 * sr)
    while pos < n - int(0.1 * sr):
        dur = int(rng.uniform(0.12, 0.35) * sr)
        t = np.arange(dur) / sr
        f0 = rng.uniform(90.0, 240.0) * (1.0 + 0.1 * np.sin(2 * np.pi * 3.0 * t))
        amps = np.exp(-0.5 * ((np.arange(1, 31) * 180.0 - rng.uniform(400, 900)) / 500.0) ** 2)
        syl = _lookup(_wavetable(amps + 0.02), np.cumsum(f0) / sr) * np.hanning(dur)
        _add_at(out, pos, (syl * rng.uniform(0.1, 0.4)).astype(np.float32))
        pos += dur + int(rng.uniform(0.02, 0.3) * sr)
    return out


def _benchmark() -> None:
    import time

    rng = np.random.default_rng(1)
    clips = [_synthetic_speech(rng.uniform(1.5, 5.0), rng) for _ in range(40)]
    t0 = time.process_time()
    aug = Augmenter(AugmentConfig(), babble_pool=clips[:30], seed=0)
    print(f"Augmenter() with pools: {time.process_time() - t0:.2f} s CPU")
    for c in clips[:5]:  # warm-up
        aug(c, rng)
    secs_in = secs_out = 0.0
    t0 = time.process_time()
    for i in range(300):
        c = clips[i % len(clips)]
        y = aug(c, rng)
        secs_in += len(c) / SAMPLE_RATE
        secs_out += len(y) / SAMPLE_RATE
    cpu = time.process_time() - t0
    print(f"Augmenter: {1000 * cpu / secs_in:.2f} ms CPU per second of input audio, "
          f"{1000 * cpu / secs_out:.2f} ms per second of output audio (300 calls)")
    x = clips[0]
    sec = len(x) / SAMPLE_RATE
    stages: dict[str, tuple[Callable[[], object], float]] = {
        "speed_perturb": (lambda: speed_perturb(x, 1.1), sec),
        "reverberate": (lambda: reverberate(x, aug._rirs[-1]), sec),
        "add_noise(bed)": (lambda: add_noise(x, aug._noise("pink", len(x), rng), 10.0), sec),
        "add_noise(babble)": (lambda: add_noise(x, aug._noise("babble", len(x), rng), 10.0), sec),
        "band_limit_8k": (lambda: band_limit_8k(x, rng), sec),
        "set_level": (lambda: set_level(x, -20.0), sec),
        "simulate_rir(0.8)": (lambda: simulate_rir(0.8, rng), 0.8),
    }
    for kind in NOISE_KINDS:
        stages[f"make_noise({kind})"] = (lambda k=kind: make_noise(k, 12 * SAMPLE_RATE, rng), 12.0)
    for name, (fn, dur) in stages.items():
        t0 = time.process_time()
        for _ in range(10):
            fn()
        ms = 1000 * (time.process_time() - t0) / 10
        print(f"  {name:20s} {ms:7.2f} ms per call, {ms / dur:5.2f} ms per second of audio")


if __name__ == "__main__":
    _benchmark()
