"""What lies between talker and microphone: a room's impulse response (image sources for
the early reflections, a decaying tail after), reverberation, the band of an 8 kHz telephone
or codec, and speaking rate (speed perturbation)."""

from __future__ import annotations

import math

import numpy as np
import soxr

from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.models.levels import EPS, active_rms, as_mono, fast_len, fit_length

_SPEED_OF_SOUND = 343.0  # m/s at ~20 degrees C
# Wall and air absorption grow with frequency, so the tail above ~3 kHz dies out faster.
_HF_RT60_RATIO = 0.7
_EARLY_S = 0.05  # image-source reflections up to 50 ms after the direct sound, then a tail

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
    m = fast_len(tail_n)
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
    x = as_mono(speech)
    h = as_mono(rir)
    n = len(x)
    if n == 0 or len(h) == 0:
        return x.copy()
    h = h[:n]  # later taps cannot reach the first n output samples
    m = fast_len(n + len(h) - 1)  # full linear length, so no circular wrap-around
    y = np.fft.irfft(np.fft.rfft(x, m) * np.fft.rfft(h, m), m)[:n]
    before, after = active_rms(x), active_rms(y)
    return (y * np.float32(before / after)).astype(np.float32) if after > EPS else y


def _bandpass_fft(x: np.ndarray, sr: int, lo: float, hi: float) -> np.ndarray:
    """Zero-phase band-pass by FFT masking with raised-cosine 100 Hz-wide edges."""
    n = len(x)
    if n == 0:
        return x
    m = fast_len(n)
    f = np.fft.rfftfreq(m, 1.0 / sr)
    rise = np.clip((f - (lo - 50.0)) / 100.0, 0.0, 1.0)
    fall = np.clip(((hi + 50.0) - f) / 100.0, 0.0, 1.0)
    mask = (np.sin(np.pi / 2 * rise) * np.sin(np.pi / 2 * fall)) ** 2
    return np.fft.irfft(np.fft.rfft(x, m) * mask.astype(np.float32), m)[:n].astype(np.float32)


def _mu_law(x: np.ndarray, rng: np.random.Generator, mu: float = 255.0) -> np.ndarray:
    """G.711-like 8-bit mu-law companding: quantisation noise that follows the signal level.
    The signal is first placed at a random headroom, as a phone's gain would."""
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak <= EPS:
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
    x = as_mono(x)
    n = len(x)
    if n == 0:
        return x.copy()
    y = soxr.resample(x, SAMPLE_RATE, 8000, quality="HQ")
    if rng.random() < p_bandpass:
        y = _bandpass_fft(y, 8000, 300.0, 3400.0)
    if rng.random() < p_companding:
        y = _mu_law(y, rng)
    z = soxr.resample(np.ascontiguousarray(y, dtype=np.float32), 8000, SAMPLE_RATE, quality="HQ")
    return fit_length(z.astype(np.float32, copy=False), n)


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """Kaldi/Lhotse speed perturbation: play `factor` times faster (tempo and pitch both
    change), i.e. pretend the audio was sampled at factor * 16 kHz and resample to 16 kHz.
    The output has about len(x) / factor samples."""
    if not factor > 0:
        raise ValueError("factor must be > 0")
    x = as_mono(x)
    if len(x) == 0 or factor == 1.0:
        return x.copy()
    return soxr.resample(x, SAMPLE_RATE * factor, SAMPLE_RATE, quality="HQ").astype(np.float32)
