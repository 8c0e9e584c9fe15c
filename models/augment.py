"""On-the-fly audio augmentation for training, and deterministic evaluation conditions.

Everything works on float32 mono numpy audio in [-1, 1] at 16 kHz. The training `Augmenter`
runs inside a data loader on a small CPU, so the expensive parts (room impulse responses and
noise beds) are generated into pools once and refreshed a little at a time; a call only
slices, convolves (FFT) and resamples (soxr).

The conditions follow ARCHITECTURE.md ("The speech domain"): speaking
rate 0.8x-1.3x, additive noise at 5-30 dB SNR (fan, babble, music, kitchen), RT60 0.2-0.8 s,
level -35 to -6 dBFS, clipping, 8 kHz band-limited sources and DC offset.

The signal parts live beside it: levels.py (levels and mixing), noise.py (noise and
babble), channel.py (rooms, band-limiting, speed); this module chains them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.models.channel import band_limit_8k, reverberate, simulate_rir, speed_perturb
from edge_asr.models.levels import (
    active_rms,
    add_dc,
    add_noise,
    as_mono,
    clip,
    finish,
    peak_limit,
    set_level,
)
from edge_asr.models.noise import NOISE_KINDS, add_at, lookup, make_babble, make_noise, wavetable

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

CONDITIONS = ("clean", "snr10", "snr5", "band8k", "reverb", "far_noisy")

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
        x = as_mono(clip)[: int(self.config.babble_clip_seconds * SAMPLE_RATE)]
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
        x = as_mono(audio)
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
            x = peak_limit(x)

        if rng.random() < cfg.p_clip and n:
            q = rng.uniform(*cfg.clip_quantile)
            x = clip(x, float(np.quantile(np.abs(x), q)))
        if rng.random() < cfg.p_dc:
            x = add_dc(x, rng.uniform(*cfg.dc_offset) * (1.0 if rng.random() < 0.5 else -1.0))
        return finish(x)


# --------------------------------------------------------------------------- evaluation


def apply_condition(audio: np.ndarray, condition: str, rng: np.random.Generator) -> np.ndarray:
    """Deterministic (given rng) evaluation condition. Length and timing are preserved (no
    speed change, no padding, RIR direct path at lag 0), so speech_start / speech_end in the
    evaluation manifests stay valid."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; known: {', '.join(CONDITIONS)}")
    x = as_mono(audio)
    n = len(x)
    if condition == "clean" or n == 0:
        return finish(x.copy())
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
    return finish(peak_limit(y))


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
        syl = lookup(wavetable(amps + 0.02), np.cumsum(f0) / sr) * np.hanning(dur)
        add_at(out, pos, (syl * rng.uniform(0.1, 0.4)).astype(np.float32))
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
