"""Noise the device hears, generated: white, pink and brown noise, a fan, a kitchen, music,
and babble of several talkers; each a seeded function of its length."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.models.levels import as_mono, fast_len, unit_rms

NOISE_KINDS = ("white", "pink", "brown", "fan", "kitchen", "music")

def _shaped_noise(
    n: int, rng: np.random.Generator, gain: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Gaussian noise with amplitude spectrum `gain(f)`, synthesised directly in the
    frequency domain (one inverse FFT), unit RMS."""
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    m = fast_len(n)
    f = np.fft.rfftfreq(m, 1.0 / SAMPLE_RATE).astype(np.float32)
    g = gain(f).astype(np.float32)
    re = rng.standard_normal(len(f), dtype=np.float32)
    im = rng.standard_normal(len(f), dtype=np.float32)
    spec = (re + 1j * im).astype(np.complex64) * g
    return unit_rms(np.fft.irfft(spec, m)[:n])


def _highpass_gain(f: np.ndarray, fc: float) -> np.ndarray:
    # 2nd-order-like high-pass magnitude: removes DC and sub-audio rumble.
    r = (f / fc) ** 2
    return r / (1.0 + r)


def wavetable(amps: np.ndarray, size: int = 2048) -> np.ndarray:
    """One period of a harmonic waveform (harmonic k has amplitude amps[k-1])."""
    spec = np.zeros(size // 2 + 1, dtype=np.complex128)
    k = min(len(amps), size // 2 - 1)
    spec[1 : k + 1] = -1j * amps[:k] * size / 2  # sine phase
    table = np.fft.irfft(spec, size)
    return np.append(table, table[0]).astype(np.float32)  # wrap sample for interpolation


def lookup(table: np.ndarray, cycles: np.ndarray) -> np.ndarray:
    """Read a wrapped wavetable at fractional positions `cycles` (in periods), linear interp."""
    size = len(table) - 1
    pos = np.mod(cycles, 1.0) * size
    i = pos.astype(np.int64)
    frac = (pos - i).astype(np.float32)
    lo = table[i]
    return lo + frac * (table[i + 1] - lo)


def add_at(out: np.ndarray, start: int, sig: np.ndarray) -> None:
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
    hum = lookup(wavetable(amps), cycles)
    am = 1.0 + rng.uniform(0.0, 0.15) * np.sin(2 * np.pi * rng.uniform(0.2, 2.0) * t)
    hum = unit_rms(hum * am.astype(np.float32))
    return unit_rms(broad + np.float32(10.0 ** (rng.uniform(-10.0, 4.0) / 20.0)) * hum)


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
    hum = unit_rms(lookup(wavetable(amps), mains * t))
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
        add_at(out, start, (burst * (gain / peak) * 0.3).astype(np.float32))
    return unit_rms(out)


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
            tables[key] = wavetable(amps[:n_ok])
        length = int(dur) + int(0.03 * sr)
        tt = np.arange(length, dtype=np.float32) / sr
        env = np.minimum(tt / attack, 1.0) * np.exp(-tt / decay)
        rel = int(0.03 * sr)
        env[-rel:] *= np.linspace(1.0, 0.0, rel, dtype=np.float32)
        cycles = freq * (1.0 + rng.normal(0.0, 0.001)) * tt.astype(np.float64) + rng.random()
        add_at(buses[bus], int(start), vel * env * lookup(tables[key], cycles))

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
        mix += np.float32(10.0 ** (rng.uniform(lo, hi) / 20.0)) * unit_rms(buses[name][:n])

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
                add_at(drums, at, kick * rng.uniform(0.8, 1.0))
            if with_snare and b % 4 in (1, 3):
                add_at(drums, at, (snare * rng.uniform(0.7, 1.0)).astype(np.float32))
            if with_hats:
                for half in (0, 1):
                    hat = hats[int(rng.integers(0, 3))] * rng.uniform(0.4, 1.0)
                    add_at(drums, at + int(half * beat / 2), hat.astype(np.float32))
        mix += np.float32(10.0 ** (rng.uniform(-12.0, 0.0) / 20.0)) * unit_rms(drums[:n])
    return unit_rms(mix)


def make_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of a noise `kind` (see NOISE_KINDS), float32 with unit RMS."""
    n = int(n)
    if n < 0:
        raise ValueError("n must be >= 0")
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    if kind == "white":
        return unit_rms(rng.standard_normal(n, dtype=np.float32))
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
            c = as_mono(clips[int(rng.integers(len(clips)))])
            if skip < 0:
                skip = int(rng.integers(len(c)))  # start somewhere inside the first clip
            pieces.append(unit_rms(c))
            gap = np.zeros(int(rng.uniform(0.0, 0.3) * SAMPLE_RATE), dtype=np.float32)
            pieces.append(gap)
            have += len(c) + len(gap)
        stream = np.concatenate(pieces)[skip : skip + n]
        out[: len(stream)] += np.float32(10.0 ** (rng.uniform(-6.0, 0.0) / 20.0)) * stream
    return unit_rms(out)
