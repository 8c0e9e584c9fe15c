"""Levels and mixing of float32 mono audio in [-1, 1] at 16 kHz: the active-speech level
(frames within 40 dB of the loud ones, so pauses do not dilute it), mixing at an SNR
measured where noise masks speech, gain to a dBFS level, peak limiting, clipping and DC."""

from __future__ import annotations

import math

import numpy as np

_FRAME = 320  # 20 ms analysis frames for the active-speech measurement
_ACTIVE_DB = -40.0  # a frame is "active" within 40 dB of the loud (95th percentile) frames
EPS = 1e-12
_PEAK_LIMIT = 0.99  # leave a hair of headroom so only the deliberate clip step saturates

def as_mono(x: np.ndarray) -> np.ndarray:
    """float32 1-D view/copy of the input; integer PCM is scaled to [-1, 1]."""
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"expected mono 1-D audio, got shape {a.shape}")
    if np.issubdtype(a.dtype, np.unsignedinteger):
        raise ValueError(f"unsigned PCM ({a.dtype}) is not supported")
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.float32) / float(-np.iinfo(a.dtype).min)
    return a.astype(np.float32, copy=False)


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
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


def fast_len(n: int) -> int:
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
    if ref <= EPS:
        return np.ones(len(p), dtype=bool)
    return p >= ref * 10.0 ** (_ACTIVE_DB / 10.0)


def _masked_power(x: np.ndarray, frames: np.ndarray) -> float:
    p, lens = _frame_powers(x)
    w = lens * frames
    total = float(w.sum())
    return float((p * w).sum() / total) if total > 0 else 0.0


def active_rms(x: np.ndarray) -> float:
    """RMS over the active (non-silent) frames: the level measure used throughout."""
    x = as_mono(x)
    if len(x) == 0:
        return 0.0
    return math.sqrt(_masked_power(x, _active_frames(x)))


def unit_rms(x: np.ndarray) -> np.ndarray:
    rms = math.sqrt(float(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0
    if rms <= EPS:
        return x.astype(np.float32)
    return (x / rms).astype(np.float32)


def peak_limit(x: np.ndarray, peak: float = _PEAK_LIMIT) -> np.ndarray:
    m = float(np.max(np.abs(x))) if len(x) else 0.0
    return x * np.float32(peak / m) if m > peak else x


def finish(x: np.ndarray) -> np.ndarray:
    x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(x, -1.0, 1.0).astype(np.float32, copy=False)


def add_noise(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """speech + noise scaled so that, over the speech's active frames, speech power / noise
    power = snr_db. Pauses do not dilute the speech level, and non-stationary noise is
    measured where it masks speech. `noise` must be at least as long (extra is ignored)."""
    x = as_mono(speech)
    v = as_mono(noise)
    if len(v) < len(x):
        raise ValueError(f"noise has {len(v)} samples, speech {len(x)}")
    v = v[: len(x)]
    if len(x) == 0:
        return x.copy()
    frames = _active_frames(x)
    ps = _masked_power(x, frames)
    pn = _masked_power(v, frames)
    if pn <= EPS:  # noise silent under the speech: fall back to its overall power
        pn = float(np.mean(np.square(v, dtype=np.float64)))
    if ps <= EPS or pn <= EPS:
        return x.copy()
    scale = math.sqrt(ps / (pn * 10.0 ** (snr_db / 10.0)))
    return (x + np.float32(scale) * v).astype(np.float32)


def set_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    """Scale so the active part's RMS is `dbfs` (0 dBFS = RMS 1.0). Pure gain: loud targets
    can push peaks past full scale; the caller decides whether to limit or clip."""
    x = as_mono(x)
    rms = active_rms(x)
    if rms <= EPS:
        return x.copy()
    return (x * np.float32(10.0 ** (dbfs / 20.0) / rms)).astype(np.float32)


def clip(x: np.ndarray, level: float) -> np.ndarray:
    """Hard clipping at +-level (a saturated ADC or preamp)."""
    return np.clip(as_mono(x), -abs(level), abs(level)).astype(np.float32)


def add_dc(x: np.ndarray, offset: float) -> np.ndarray:
    """Constant DC offset (cheap ADCs, missing high-pass)."""
    return (as_mono(x) + np.float32(offset)).astype(np.float32)
